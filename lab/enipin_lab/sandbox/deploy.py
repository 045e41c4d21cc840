"""Deploying a SAM template into the sandbox: functions, state machines, rules, documents, hooks.

``Fn::ForEach`` is expanded first, with the deploy's parameters, as ``AWS::LanguageExtensions``
does. What the sandbox has no model for (roles and policies, alarms, topics, queues, dashboards,
log groups, permissions) is recorded with a physical id and the ARN AWS would give it, so a
``Ref`` or ``Fn::GetAtt`` to it resolves as it would after ``sam deploy``, and a reference to
an attribute AWS does not have fails the same way.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3

from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.lambdas import FunctionCode, LambdaRuntime
from enipin_lab.sandbox.template import (
    Resolver,
    TemplateError,
    check_rules,
    expand_for_each,
    load,
    parameter_values,
)

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# The property that names a resource, per type; without it CloudFormation makes a name up.
_NAME_PROPERTIES: dict[str, tuple[str, ...]] = {
    "AWS::Serverless::Function": ("FunctionName",),
    "AWS::Serverless::StateMachine": ("Name",),
    "AWS::Lambda::Function": ("FunctionName",),
    "AWS::StepFunctions::StateMachine": ("StateMachineName",),
    "AWS::Events::Rule": ("Name",),
    "AWS::SSM::Document": ("Name",),
    "AWS::AutoScaling::LifecycleHook": ("LifecycleHookName",),
    "AWS::Logs::LogGroup": ("LogGroupName",),
    "AWS::SNS::Topic": ("TopicName",),
    "AWS::SQS::Queue": ("QueueName",),
    "AWS::CloudWatch::Alarm": ("AlarmName",),
    "AWS::CloudWatch::Dashboard": ("DashboardName",),
    "AWS::IAM::Role": ("RoleName",),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName",),
    "AWS::IAM::Policy": ("PolicyName",),
}
# The ARN AWS gives each type, from its physical name.
_ARNS: dict[str, str] = {
    "AWS::Serverless::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::Serverless::StateMachine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::StepFunctions::StateMachine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "AWS::Events::Rule": "arn:aws:events:{region}:{account}:rule/{name}",
    "AWS::SNS::Topic": "arn:aws:sns:{region}:{account}:{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}:*",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::IAM::ManagedPolicy": "arn:aws:iam::{account}:policy/{name}",
    "AWS::CloudWatch::Alarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
    "AWS::SSM::Document": "arn:aws:ssm:{region}:{account}:document/{name}",
    "AWS::Serverless::LayerVersion": "arn:aws:lambda:{region}:{account}:layer:{name}:1",
}
# Types whose Ref is their ARN (most give their name); an SQS queue's Ref is its URL.
_REF_IS_ARN = {
    "AWS::Serverless::StateMachine",
    "AWS::StepFunctions::StateMachine",
    "AWS::SNS::Topic",
    "AWS::IAM::ManagedPolicy",
    "AWS::Serverless::LayerVersion",
}
# Types AWS gives no Arn attribute.
_NO_ARN = {
    "AWS::AutoScaling::LifecycleHook",
    "AWS::CloudWatch::Dashboard",
    "AWS::IAM::Policy",
    "AWS::Lambda::Permission",
    "AWS::SNS::Subscription",
    "AWS::SQS::QueuePolicy",
    "AWS::SSM::Document",
}
_NAME_ATTRIBUTES = {"AWS::SQS::Queue": ("QueueName",), "AWS::SNS::Topic": ("TopicName",)}
_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


@dataclass
class Stack:
    """What one deploy created: logical id -> physical id, ARNs, and the rules it wired."""

    name: str
    template_path: Path
    parameters: dict[str, Any]
    physical: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)  # SAM's rule id -> expression
    schedule_targets: dict[str, str] = field(default_factory=dict)  # rule id -> function ARN
    layers: set[str] = field(default_factory=set)  # layer version ARNs

    def arn(self, logical_id: str) -> str:
        return self.arns[logical_id]

    def ref(self, name: str) -> str:
        kind = self._kind(name)
        if kind in _REF_IS_ARN:
            return self.arns[name]
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{self.physical[name]}"
        return self.physical[name]

    def get_att(self, name: str, attr: str) -> str:
        kind = self._kind(name)
        if attr == "Arn" and kind not in _NO_ARN:
            return self.arns[name]
        if attr in _NAME_ATTRIBUTES.get(kind, ("Name",)):
            return self.physical[name]
        if (kind, attr) == ("AWS::SQS::Queue", "QueueUrl"):
            return self.ref(name)
        if (kind, attr) == ("AWS::SNS::Topic", "TopicArn"):
            return self.arns[name]
        raise TemplateError(f"GetAtt {name}.{attr}: {kind} has no such attribute here")

    def _kind(self, name: str) -> str:
        if name not in self.types:
            raise TemplateError(f"reference to unknown resource or parameter {name}")
        return self.types[name]


class Deployer:
    def __init__(self, runtime: LambdaRuntime) -> None:
        self.runtime = runtime
        self._session = boto3.session.Session(region_name=REGION)
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        """One client per service for the deploy (a client costs ~50 ms to build)."""
        if service not in self._clients:
            self._clients[service] = self._session.client(service)
        return self._clients[service]

    def deploy(
        self, template_path: Path, stack_name: str, parameters: dict[str, Any] | None = None
    ) -> Stack:
        template = load(template_path)
        values = parameter_values(template, parameters or {})
        check_rules(template, values)
        template = expand_for_each(template, values)
        resources: dict[str, Any] = template["Resources"]
        stack, resolver = bind(template, values, stack_name, template_path)
        role = self._role(stack_name)
        globals_fn = template.get("Globals", {}).get("Function", {})
        for kind, create in (
            ("AWS::SSM::Document", self._document),
            ("AWS::SQS::Queue", self._queue),
            ("AWS::Serverless::LayerVersion", self._layer),
            ("AWS::Serverless::Function", self._function),
            ("AWS::Serverless::StateMachine", self._state_machine),
            ("AWS::Events::Rule", self._rule),
            ("AWS::AutoScaling::LifecycleHook", self._hook),
        ):
            for logical, res in resources.items():
                if res["Type"] != kind or not self._wanted(res, resolver):
                    continue
                props = res.get("Properties", {})
                if kind == "AWS::Serverless::Function":
                    props = _merge_globals(globals_fn, props)
                create(stack, logical, resolver.resolve(props), resolver, role)
        self._record(stack, resolver.resolve(template.get("Outputs", {})))
        return stack

    # -- helpers -------------------------------------------------------------------------

    def _record(self, stack: Stack, outputs: dict[str, Any]) -> None:
        """Register the stack with CloudFormation, its parameters and resolved outputs, as
        ``sam deploy`` leaves it: operator tools find the deployment by stack name."""
        values = {k: v["Value"] for k, v in outputs.items()}
        params = {k: ",".join(v) if isinstance(v, list) else v for k, v in stack.parameters.items()}
        record = {
            "Parameters": {k: {"Type": "String", "Default": v} for k, v in params.items()},
            # CloudFormation needs one resource; the real ones were created above.
            "Resources": {"Deployed": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {k: {"Value": str(v)} for k, v in values.items()},
        }
        with warnings.catch_warnings():  # moto notes it has no model for the placeholder
            warnings.simplefilter("ignore", UserWarning)
            self._client("cloudformation").create_stack(
                StackName=stack.name, TemplateBody=json.dumps(record)
            )
        stack.outputs = {k: str(v) for k, v in values.items()}

    @staticmethod
    def _wanted(res: dict[str, Any], resolver: Resolver) -> bool:
        return "Condition" not in res or resolver.condition(res["Condition"])

    def _role(self, stack_name: str) -> str:
        iam = self._client("iam")
        name = f"{stack_name}-sandbox-role"
        try:
            return str(iam.get_role(RoleName=name)["Role"]["Arn"])
        except iam.exceptions.NoSuchEntityException:
            return str(
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=_ROLE_POLICY)["Role"]["Arn"]
            )

    # -- resource kinds ----------------------------------------------------------------------

    def _document(self, stack: Stack, logical: str, props: dict[str, Any], *_: Any) -> None:
        self._client("ssm").create_document(
            Name=stack.physical[logical],
            DocumentType=props.get("DocumentType", "Command"),
            DocumentFormat="JSON",
            Content=json.dumps(props["Content"]),
        )

    def _layer(self, stack: Stack, logical: str, props: dict[str, Any], *_: Any) -> None:
        """A layer ``sam build`` makes from a requirements file: the sandbox runs its functions
        in this interpreter, so each pin must be what is installed here."""
        content = (stack.template_path.parent / props["ContentUri"]).resolve()
        requirements = content / "requirements.txt"
        if not requirements.is_file():
            raise TemplateError(f"{logical}: ContentUri {props['ContentUri']} has no requirements")
        for name, pinned in pinned_requirements(requirements).items():
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                raise TemplateError(f"{logical}: {name} is not installed") from None
            if installed != pinned:
                raise TemplateError(f"{logical}: pins {name}=={pinned}, {installed} runs here")
        stack.layers.add(stack.arns[logical])

    def _function(
        self, stack: Stack, logical: str, props: dict[str, Any], resolver: Resolver, role: str
    ) -> None:
        code_dir = (stack.template_path.parent / props["CodeUri"]).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"{logical}: CodeUri {props['CodeUri']} is not a directory")
        for layer in props.get("Layers", []):
            if layer not in stack.layers:
                raise TemplateError(f"{logical}: layer {layer} is not in the stack")
        env = {k: str(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
        name = stack.physical[logical]
        self.runtime.register(
            name,
            FunctionCode(
                code_dir=code_dir,
                handler=props["Handler"],
                environment=env,
                memory_mb=int(props.get("MemorySize", 128)),
                timeout_s=int(props.get("Timeout", 3)),
            ),
        )
        self._client("lambda").create_function(
            FunctionName=name,
            Runtime=props["Runtime"],
            Role=role,
            Handler=props["Handler"],
            Code={"ZipFile": _placeholder_zip()},
            Environment={"Variables": env},
            MemorySize=int(props.get("MemorySize", 128)),
            Timeout=int(props.get("Timeout", 3)),
        )
        for event_name, event in props.get("Events", {}).items():
            if event.get("Type") == "EventBridgeRule":
                self._put_rule(f"{name}-rule", event["Properties"], stack.arns[logical])
            elif event.get("Type") == "Schedule":
                # recorded, not put as a moto rule (it would match every event on the bus);
                # Sandbox.run_schedules() keeps time for it when a scenario asks
                stack.schedules[f"{logical}{event_name}"] = event["Properties"]["Schedule"]
                stack.schedule_targets[f"{logical}{event_name}"] = stack.arns[logical]

    def _state_machine(
        self, stack: Stack, logical: str, props: dict[str, Any], resolver: Resolver, role: str
    ) -> None:
        path = (stack.template_path.parent / props["DefinitionUri"]).resolve()
        definition = path.read_text()
        substitutions = {k: str(v) for k, v in props.get("DefinitionSubstitutions", {}).items()}

        def substitute(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in substitutions:
                raise TemplateError(f"{path.name}: ${{{key}}} has no DefinitionSubstitutions entry")
            return substitutions[key]

        definition = _PLACEHOLDER.sub(substitute, definition)
        self._client("stepfunctions").create_state_machine(
            name=stack.physical[logical],
            definition=definition,
            roleArn=role,
            type=props.get("Type", "STANDARD"),
        )
        for event_name, event in props.get("Events", {}).items():
            if event.get("Type") == "EventBridgeRule":
                rule = f"{stack.physical[logical]}-{event_name}"[:64]
                self._put_rule(rule, event["Properties"], stack.arns[logical])

    def _rule(self, stack: Stack, logical: str, props: dict[str, Any], *_: Any) -> None:
        events = self._client("events")
        name = stack.physical[logical]
        kwargs: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
        if "EventPattern" in props:
            kwargs["EventPattern"] = json.dumps(props["EventPattern"])
        if "ScheduleExpression" in props:
            kwargs["ScheduleExpression"] = props["ScheduleExpression"]
        events.put_rule(**kwargs)
        targets = [{"Id": t["Id"], "Arn": t["Arn"]} for t in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, Targets=targets)

    def _queue(self, stack: Stack, logical: str, props: dict[str, Any], *_: Any) -> None:
        """The queue itself (its URL is what Ref gives): operators read and purge it."""
        retention = props.get("MessageRetentionPeriod")
        attributes = {"MessageRetentionPeriod": str(retention)} if retention else {}
        self._client("sqs").create_queue(QueueName=stack.physical[logical], Attributes=attributes)

    def _put_rule(self, name: str, props: dict[str, Any], target_arn: str) -> None:
        events = self._client("events")
        events.put_rule(Name=name, EventPattern=json.dumps(props["Pattern"]), State="ENABLED")
        events.put_targets(Rule=name, Targets=[{"Id": "target", "Arn": target_arn}])

    def _hook(self, stack: Stack, logical: str, props: dict[str, Any], *_: Any) -> None:
        kwargs = {
            "LifecycleHookName": stack.physical[logical],
            "AutoScalingGroupName": props["AutoScalingGroupName"],
            "LifecycleTransition": props["LifecycleTransition"],
            "HeartbeatTimeout": int(props.get("HeartbeatTimeout", 3600)),
            "DefaultResult": props.get("DefaultResult", "ABANDON"),
        }
        if "NotificationMetadata" in props:
            kwargs["NotificationMetadata"] = props["NotificationMetadata"]
        self._client("autoscaling").put_lifecycle_hook(**kwargs)


def bind(
    template: dict[str, Any], values: dict[str, Any], stack_name: str, path: Path
) -> tuple[Stack, Resolver]:
    """Name every resource of a (``Fn::ForEach``-expanded) template as CloudFormation would,
    and the resolver that evaluates its intrinsic functions against those names."""
    resources: dict[str, Any] = template["Resources"]
    stack = Stack(stack_name, path, values)
    for logical, res in resources.items():
        _check_depends_on(logical, res, resources)
        stack.types[logical] = res["Type"]
        stack.physical[logical] = f"{stack_name}-{logical}"[:64]
        stack.arns[logical] = _arn(res["Type"], stack.physical[logical])
    pseudo = {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT_ID,
        "AWS::Partition": "aws",
        "AWS::StackName": stack_name,
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack_name}/0",
    }
    resolver = Resolver(values, pseudo, stack.ref, stack.get_att, template.get("Conditions", {}))
    for logical, res in resources.items():  # a name may be built with !Sub
        stack.physical[logical] = _physical_name(stack, logical, res, resolver)
        stack.arns[logical] = _arn(res["Type"], stack.physical[logical])
    return stack, resolver


def _physical_name(stack: Stack, logical: str, res: dict[str, Any], resolver: Resolver) -> str:
    """The name the template gives the resource, or the one CloudFormation would make up."""
    props = res.get("Properties", {})
    for key in _NAME_PROPERTIES.get(res["Type"], ()):
        if key in props:
            return str(resolver.resolve(props[key]))
    return f"{stack.name}-{logical}"[:64]


def _arn(kind: str, name: str) -> str:
    template = _ARNS.get(kind, "arn:aws:cloudformation:{region}:{account}:resource/{name}")
    return template.format(region=REGION, account=ACCOUNT_ID, name=name)


def _check_depends_on(logical: str, res: dict[str, Any], resources: dict[str, Any]) -> None:
    depends = res.get("DependsOn", [])
    for name in [depends] if isinstance(depends, str) else depends:
        if name not in resources:
            raise TemplateError(f"{logical}: DependsOn unknown resource {name}")


def _merge_globals(globals_fn: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    merged = {**globals_fn, **props}
    env = {
        **globals_fn.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    if env:
        merged["Environment"] = {"Variables": env}
    return merged


def pinned_requirements(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file (extras dropped), by normalized name."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise TemplateError(f"{path}: {line!r} is not pinned with ==")
        name, version = line.split("==", 1)
        pins[re.sub(r"[-_.]+", "-", name.split("[", 1)[0].strip().lower())] = version.strip()
    return pins


def _placeholder_zip() -> bytes:
    """moto stores a code package; the sandbox runs the CodeUri directory itself."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("README.txt", "code runs from the CodeUri directory in the sandbox\n")
    return buf.getvalue()
