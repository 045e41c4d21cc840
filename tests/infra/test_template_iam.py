"""The IAM of infra/template.yaml as CloudFormation would create it (SAM transform, Fn::ForEach
expanded for two groups), held to least privilege:

* ec2:Attach/DetachNetworkInterface only on ENIs carrying the pool tag and on instances of the
  named groups (aws:autoscaling:groupName), each by a resource-tag condition;
* ssm:SendCommand only with the stack's document, only on those instances;
* autoscaling:CompleteLifecycleAction/RecordLifecycleActionHeartbeat only on the named groups;
* no wildcard action; Resource "*" only on an action for which AWS offers no resource scope
  (AWS's own authorization data, as cfn-lint ships it, says which), and then only if it reads,
  or is one of the few writes AWS takes on "*" only (X-Ray, log delivery); no other Region or
  account; no AWS-managed policy but the X-Ray one SAM adds to the state machines' roles.

``violations`` is that list of rules; the mutation tests loosen a copy of the template one way
each and prove that every rule bites.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cfnlint.data.AdditionalSpecs
import pytest
from iam_grants import Grant, document_of, grants, listed, roles

from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.deploy import Stack
from enipin_lab.sandbox.sam import resolve, transform
from enipin_lab.sandbox.template import load

TEMPLATE = Path(__file__).parents[2] / "infra" / "template.yaml"
GROUPS = ("web-a", "web-b")
TAG_KEY, TAG_VALUE = "enipin:pool", "blue"
PARAMETERS = {"GroupName": ",".join(GROUPS), "PoolTagKey": TAG_KEY, "PoolTagValue": TAG_VALUE}

# AWS's service authorization data: the resource types each action acts on (none: the action
# has no resource scope), and the ARN formats and condition keys of each resource type.
AUTHORIZATION: dict[str, Any] = json.loads(
    (Path(cfnlint.data.AdditionalSpecs.__file__).parent / "Policies.json").read_text()
)
# Writes that AWS authorizes on Resource "*" only, and why a role here needs them.
UNSCOPED_WRITES = {
    "xray:PutTraceSegments": "upload the caller's own trace segments",
    "xray:PutTelemetryRecords": "upload the X-Ray daemon's telemetry",
    "logs:CreateLogDelivery": "Step Functions execution logging (vended log delivery)",
    "logs:UpdateLogDelivery": "Step Functions execution logging",
    "logs:DeleteLogDelivery": "Step Functions execution logging",
    "logs:PutResourcePolicy": "Step Functions execution logging",
}
TRUSTED_SERVICES = {"lambda.amazonaws.com", "states.amazonaws.com"}

ARN = f"arn:aws:{{}}:{REGION}:{ACCOUNT_ID}:"
POOL_ENIS = ARN.format("ec2") + "network-interface/*"
INSTANCES = ARN.format("ec2") + "instance/*"
GROUP_ARNS = {
    ARN.format("autoscaling") + f"autoScalingGroup:*:autoScalingGroupName/{g}" for g in GROUPS
}
ENI_ACTIONS = {"ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"}
LIFECYCLE_ACTIONS = {
    "autoscaling:CompleteLifecycleAction",
    "autoscaling:RecordLifecycleActionHeartbeat",
}


# ---- the rules ---------------------------------------------------------------------------


def violations(resources: dict[str, Any], stack: Stack, document: str) -> list[str]:
    found, problems = grants(resources, stack)
    for name, role in roles(resources).items():
        problems += _trust_violations(name, role["Properties"]["AssumeRolePolicyDocument"])
    for grant in found:
        problems += _statement_violations(grant)
        problems += _scope_violations(grant, document)
    return problems


def _trust_violations(role: str, document: Any) -> list[str]:
    problems = []
    for statement in document_of(document)["Statement"]:
        services = set(listed(statement.get("Principal", {}).get("Service")))
        if set(statement.get("Principal", {})) != {"Service"} or not services <= TRUSTED_SERVICES:
            problems.append(f"{role}: assumable by {statement.get('Principal')}")
    return problems


def _statement_violations(grant: Grant) -> list[str]:
    """Wildcards, unknown actions, other Regions and accounts, "*" where AWS offers a scope."""
    problems = [
        f"{grant.where()}: {key}" for key in ("NotAction", "NotResource") if key in grant.statement
    ]
    for action in grant.actions:
        if "*" in action or "?" in action:
            problems.append(f"{grant.where()}: wildcard action {action}")
            continue
        service, _, operation = action.partition(":")
        scope = AUTHORIZATION.get(service, {}).get("Actions", {}).get(operation.lower())
        if scope is None:
            problems.append(f"{grant.where()}: {action} is not an AWS action")
            continue
        for resource in grant.resources:
            problems += _resource_violations(grant, action, scope.get("Resources", []), resource)
    return problems


def _resource_violations(grant: Grant, action: str, types: list[str], resource: str) -> list[str]:
    where = f"{grant.where()}: {action} on {resource}"
    if resource == "*":
        if types:
            return [f"{where}, although AWS scopes it to {', '.join(types)}"]
        reads = re.match(r"^[a-z0-9-]+:(Describe|List|Get)", action)
        if not reads and action not in UNSCOPED_WRITES:
            return [f"{where}: a write on every resource"]
        return []
    parts = resource.split(":", 5)
    if len(parts) < 6 or parts[1] != "aws" or parts[3] not in ("", REGION):
        return [f"{where}: not this partition and Region"]
    if parts[4] not in ("", ACCOUNT_ID) or parts[5].startswith("*"):
        return [f"{where}: not this account, or every resource of the service"]
    service = action.split(":")[0]
    formats = [
        f
        for t in types
        for f in AUTHORIZATION[service]["Resources"].get(t.lower(), {}).get("ARNFormats", [])
    ]
    if not any(re.fullmatch(re.sub(r"\$\{\w+\}", "[^:]*", f), resource) for f in formats):
        return [f"{where}: not a resource {action} acts on ({', '.join(types)})"]
    return []


def _scope_violations(grant: Grant, document: str) -> list[str]:
    """The issue's three properties, each on every statement that grants the action."""
    actions = set(grant.actions)
    problems = []
    if actions & ENI_ACTIONS:
        problems += [
            f"{grant.where()}: {sorted(actions & ENI_ACTIONS)} on {r} {_why_not_scoped(grant, r)}"
            for r in grant.resources
            if _why_not_scoped(grant, r)
        ]
    if "ssm:SendCommand" in actions:
        document_arn = ARN.format("ssm") + f"document/{document}"
        for r in grant.resources:
            why = _why_not_scoped(grant, r) if r == INSTANCES else "is not the stack's document"
            if r != document_arn and why:
                problems.append(f"{grant.where()}: ssm:SendCommand on {r} {why}")
    if actions & LIFECYCLE_ACTIONS:
        problems += [
            f"{grant.where()}: {sorted(actions & LIFECYCLE_ACTIONS)} on {r}, not a named group"
            for r in grant.resources
            if r not in GROUP_ARNS
        ]
    return problems


def _why_not_scoped(grant: Grant, resource: str) -> str:
    """'' when ``resource`` is pool ENIs or the groups' instances under exactly that condition."""
    condition = grant.statement.get("Condition", {})
    if resource == POOL_ENIS:
        wanted = {"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": TAG_VALUE}}
        if _normal(condition) != _normal(wanted):
            return f"without exactly the pool tag condition {wanted}: {condition}"
        return ""
    if resource == INSTANCES:
        values = condition.get("StringEquals", {}).get("aws:ResourceTag/aws:autoscaling:groupName")
        named = set(listed(values))
        if set(condition) != {"StringEquals"} or len(condition["StringEquals"]) != 1:
            return f"with a condition other than the group tag alone: {condition}"
        if not named or not named <= set(GROUPS):
            return f"for instances of groups {sorted(named)}, not the named {list(GROUPS)}"
        return ""
    return "(neither pool ENIs nor the groups' instances)"


def _normal(condition: dict[str, Any]) -> dict[str, Any]:
    return {op: {k: sorted(listed(v)) for k, v in keys.items()} for op, keys in condition.items()}


# ---- fixtures ----------------------------------------------------------------------------


def deployed(template: dict[str, Any]) -> tuple[dict[str, Any], Stack]:
    return resolve(transform(template, PARAMETERS), PARAMETERS)


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load(TEMPLATE)


@pytest.fixture(scope="module")
def stack(source: dict[str, Any]) -> tuple[dict[str, Any], Stack]:
    return deployed(source)


def judge(resources: dict[str, Any], stack: Stack) -> list[str]:
    return violations(resources, stack, stack.physical["VerifyNicDocument"])


# ---- the template as it is ---------------------------------------------------------------


def test_the_template_grants_nothing_beyond_least_privilege(
    stack: tuple[dict[str, Any], Stack],
) -> None:
    assert judge(*stack) == []


def can(resources: dict[str, Any], stack: Stack, role: str, action: str) -> set[str]:
    """The resources ``role`` may apply ``action`` to."""
    return {
        r
        for g in grants(resources, stack)[0]
        if g.role == role and action in g.actions
        for r in g.resources
    }


@pytest.mark.parametrize(
    ("role", "action", "resources"),
    [
        ("AttachEniRole", "ec2:AttachNetworkInterface", {POOL_ENIS, INSTANCES}),
        ("ReleaseEniRole", "ec2:DetachNetworkInterface", {POOL_ENIS, INSTANCES}),
        ("DetachEnisRole", "ec2:DetachNetworkInterface", {POOL_ENIS, INSTANCES}),
        ("SendVerificationRole", "ssm:SendCommand", {"document", INSTANCES}),
        ("CompleteLaunchRole", "autoscaling:CompleteLifecycleAction", GROUP_ARNS),
        ("AbandonLaunchRole", "autoscaling:CompleteLifecycleAction", GROUP_ARNS),
        ("CompleteTerminationRole", "autoscaling:CompleteLifecycleAction", GROUP_ARNS),
        ("RecordHeartbeatRole", "autoscaling:RecordLifecycleActionHeartbeat", GROUP_ARNS),
        ("ReconcilerRole", "autoscaling:RecordLifecycleActionHeartbeat", GROUP_ARNS),
        ("DispatchEventRole", "states:StartExecution", {"launch", "terminate"}),
        ("LaunchStateMachineRole", "logs:CreateLogDelivery", {"*"}),
        ("TerminateStateMachineRole", "xray:PutTraceSegments", {"*"}),
    ],
)
def test_each_role_may_do_what_its_step_needs_on_every_resource_it_needs(
    stack: tuple[dict[str, Any], Stack], role: str, action: str, resources: set[str]
) -> None:
    allowed = can(*stack, role, action)
    named = {
        "document": ARN.format("ssm") + f"document/{stack[1].physical['VerifyNicDocument']}",
        "launch": stack[1].arns["LaunchStateMachine"],
        "terminate": stack[1].arns["TerminateStateMachine"],
    }
    assert allowed == {named.get(r, r) for r in resources}


def test_every_function_has_its_own_role_and_no_role_is_shared(
    stack: tuple[dict[str, Any], Stack],
) -> None:
    resources, _ = stack
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    used = [f["Properties"]["Role"] for f in functions.values()]
    assert len(set(used)) == len(functions) == 20
    assert all(
        role.endswith(f"role/enipin-{name[: -len('Function')]}Role")
        for name, role in zip(functions, used, strict=True)
    )


# ---- loosened copies: each rule bites ----------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def resource(template: dict[str, Any], logical: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][logical]["Properties"]
    return found


def statement(template: dict[str, Any], role: str, sid: str) -> dict[str, Any]:
    for policy in resource(template, role).get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            if st.get("Sid") == sid:
                found: dict[str, Any] = st
                return found
    raise KeyError(f"{role} has no statement {sid}")


def group_policy(template: dict[str, Any], name: str) -> dict[str, Any]:
    loop = template["Resources"]["Fn::ForEach::ManagedGroups"][2]
    found: dict[str, Any] = loop[name]["Properties"]["PolicyDocument"]["Statement"][0]
    return found


def sub_document(template: dict[str, Any], logical: str, old: str, new: str) -> None:
    props = resource(template, logical)
    text = props["PolicyDocument"]["Fn::Sub"]
    assert old in text
    props["PolicyDocument"]["Fn::Sub"] = text.replace(old, new)


def add_statement(role: str, st: dict[str, Any]) -> Edit:
    def edit(t: dict[str, Any]) -> None:
        resource(t, role).setdefault("Policies", []).append(
            {
                "PolicyName": "loosened",
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [st]},
            }
        )

    return edit


ENIS_SUB = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:network-interface/*"
POOL_CONDITION = (
    '"Condition": {"StringEquals": {"aws:ResourceTag/${PoolTagKey}": "${PoolTagValue}"}}'
)
LOOSENED: dict[str, tuple[Edit, str]] = {
    "attach without the pool tag condition": (
        lambda t: sub_document(t, "AttachPoolEnisPolicy", POOL_CONDITION, '"Condition": {}'),
        "without exactly the pool tag condition",
    ),
    "detach matching any tag value": (
        lambda t: sub_document(
            t,
            "DetachPoolEnisPolicy",
            POOL_CONDITION,
            '"Condition": {"StringLike": {"aws:ResourceTag/${PoolTagKey}": "*"}}',
        ),
        "without exactly the pool tag condition",
    ),
    "attach on every ENI": (
        lambda t: sub_document(t, "AttachPoolEnisPolicy", f'"{ENIS_SUB}"', '"*"'),
        "AWS scopes it to",
    ),
    "attach to instances of any group": (
        lambda t: statement(t, "AttachEniRole", "AttachOnlyToTheGroupsInstances").pop("Condition"),
        "with a condition other than the group tag alone",
    ),
    "detach from instances of another group": (
        lambda t: statement(t, "DetachEnisRole", "DetachOnlyFromTheGroupsInstances")["Condition"][
            "StringEquals"
        ].update({"aws:ResourceTag/aws:autoscaling:groupName": "someone-elses"}),
        "not the named",
    ),
    "detach from instances in another Region": (
        lambda t: statement(t, "ReleaseEniRole", "DetachOnlyFromTheGroupsInstances").update(
            Resource="arn:aws:ec2:*:*:instance/*"
        ),
        "not this partition and Region",
    ),
    "send any document": (
        lambda t: statement(t, "SendVerificationRole", "OnlyTheVerificationDocument").update(
            Resource={
                "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:document/*"
            }
        ),
        "is not the stack's document",
    ),
    "send to any instance": (
        lambda t: statement(t, "SendVerificationRole", "OnlyTheGroupsInstances").pop("Condition"),
        "ssm:SendCommand on",
    ),
    "complete the actions of every group": (
        lambda t: group_policy(t, "CompleteLifecycleActionPolicy&{Group}").update(
            Resource={
                "Fn::Sub": "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}"
                ":autoScalingGroup:*:autoScalingGroupName/*"
            }
        ),
        "not a named group",
    ),
    "heartbeat on every group": (
        lambda t: group_policy(t, "HeartbeatPolicy&{Group}").update(Resource="*"),
        "AWS scopes it to",
    ),
    "Action *": (
        add_statement("ValidateEventRole", {"Effect": "Allow", "Action": "*", "Resource": "*"}),
        "wildcard action *",
    ),
    "every EC2 action on the pool": (
        add_statement(
            "AttachEniRole",
            {"Effect": "Allow", "Action": "ec2:*", "Resource": {"Fn::Sub": ENIS_SUB}},
        ),
        "wildcard action ec2:*",
    ),
    "a write on Resource * next to the describes": (
        lambda t: statement(t, "FindFreeEniRole", "DescribeHasNoResourceScope")["Action"].append(
            "ec2:DeleteNetworkInterface"
        ),
        "ec2:DeleteNetworkInterface on *, although AWS scopes it",
    ),
    "a describe that has a resource scope on *": (
        lambda t: statement(t, "CheckSsmAgentRole", "DescribeHasNoResourceScope")["Action"].append(
            "ssm:DescribeDocument"
        ),
        "ssm:DescribeDocument on *, although AWS scopes it to document",
    ),
    "log writes to every log group": (
        lambda t: resource(t, "FunctionLogsAndTracesPolicy")["PolicyDocument"]["Statement"][
            0
        ].update(Resource="*"),
        "logs:PutLogEvents on *, although AWS scopes it",
    ),
    "AWS's basic execution role": (
        lambda t: resource(t, "DescribeInstanceRole")["ManagedPolicyArns"].append(
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        ),
        "of unknown content",
    ),
    "a role anyone may assume": (
        lambda t: resource(t, "CheckDetachedRole")["AssumeRolePolicyDocument"]["Statement"][
            0
        ].update(Principal={"AWS": "*"}),
        "assumable by",
    ),
    "a misspelt action": (
        lambda t: statement(t, "CheckAttachmentRole", "DescribeHasNoResourceScope").update(
            Action=["ec2:DescribeNetworkInterface"]
        ),
        "is not an AWS action",
    ),
}


@pytest.mark.parametrize("loosening", sorted(LOOSENED))
def test_a_loosened_template_is_reported(source: dict[str, Any], loosening: str) -> None:
    edit, expected = LOOSENED[loosening]
    template = copy.deepcopy(source)
    edit(template)
    problems = judge(*deployed(template))
    assert problems, f"{loosening}: not reported"
    assert any(expected in p for p in problems), problems


def test_the_loosenings_cover_every_property_of_the_issue() -> None:
    """One loosening at least per property: ENI tag, group instances, document, groups,
    wildcard action, Resource * on a write, managed policies, trust."""
    covered = " ".join(LOOSENED)
    for word in (
        "pool tag",
        "instances",
        "document",
        "every group",
        "Action *",
        "Resource *",
        "basic execution role",
        "assume",
    ):
        assert word in covered, word
