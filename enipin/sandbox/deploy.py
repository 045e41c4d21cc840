"""Deploying a SAM template into the sandbox: functions, state machines, rules, documents, hooks.

What the sandbox has no model for (alarms, topics, dashboards, log groups) is recorded with a
physical id so references to it resolve, as they would after ``sam deploy``.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from enipin.sandbox.base import ACCOUNT_ID, REGION
from enipin.sandbox.lambdas import FunctionCode, LambdaRuntime
from enipin.sandbox.template import Resolver, TemplateError, load

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
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

    def arn(self, logical_id: str) -> str:
        return self.arns[logical_id]


class Deployer:
    def __init__(self, runtime: LambdaRuntime) -> None:
        self.runtime = runtime
        self._session = boto3.session.Session(region_name=REGION)

    def deploy(
        self, template_path: Path, stack_name: str, parameters: dict[str, Any] | None = None
    ) -> Stack:
        template = load(template_path)
        stack = Stack(stack_name, template_path, self._parameters(template, parameters or {}))
        resources: dict[str, Any] = template["Resources"]
        for logical, res in resources.items():
            stack.types[logical] = res["Type"]
            stack.physical[logical] = self._physical_name(stack_name, logical, res)
            stack.arns[logical] = self._arn(res["Type"], stack.physical[logical])
        resolver = self._resolver(stack, resources, template.get("Conditions", {}))
        role = self._role(stack_name)
        globals_fn = template.get("Globals", {}).get("Function", {})
        for kind, create in (
            ("AWS::SSM::Document", self._document),
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
            self._session.client("cloudformation").create_stack(
                StackName=stack.name, TemplateBody=json.dumps(record)
            )
        stack.outputs = {k: str(v) for k, v in values.items()}

    @staticmethod
    def _parameters(template: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        declared: dict[str, Any] = template.get("Parameters", {})
        unknown = set(given) - set(declared)
        if unknown:
            raise TemplateError(f"parameters not declared by the template: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in given:
                values[name] = str(given[name])
            elif "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                raise TemplateError(f"parameter {name} has no value and no default")
            if spec.get("Type") == "CommaDelimitedList":
                values[name] = [v.strip() for v in values[name].split(",")]
            if "AllowedValues" in spec and values[name] not in [
                str(v) for v in spec["AllowedValues"]
            ]:
                raise TemplateError(f"parameter {name}={values[name]!r} not in AllowedValues")
        return values

    @staticmethod
    def _physical_name(stack: str, logical: str, res: dict[str, Any]) -> str:
        props = res.get("Properties", {})
        for key in ("FunctionName", "Name", "StateMachineName", "LifecycleHookName"):
            if isinstance(props.get(key), str):
                return str(props[key])
        return f"{stack}-{logical}"[:64]

    @staticmethod
    def _arn(kind: str, name: str) -> str:
        prefix = f"arn:aws:{{}}:{REGION}:{ACCOUNT_ID}:"
        return {
            "AWS::Serverless::Function": prefix.format("lambda") + f"function:{name}",
            "AWS::Serverless::StateMachine": prefix.format("states") + f"stateMachine:{name}",
            "AWS::Events::Rule": prefix.format("events") + f"rule/{name}",
            "AWS::SNS::Topic": prefix.format("sns") + name,
        }.get(kind, prefix.format("cloudformation") + f"resource/{name}")

    def _resolver(
        self, stack: Stack, resources: dict[str, Any], conditions: dict[str, Any]
    ) -> Resolver:
        def ref(name: str) -> str:
            if name not in resources:
                raise TemplateError(f"Ref to unknown resource or parameter {name}")
            if stack.types[name] in ("AWS::Serverless::StateMachine", "AWS::SNS::Topic"):
                return stack.arns[name]
            return stack.physical[name]

        def get_att(name: str, attr: str) -> str:
            if name not in resources:
                raise TemplateError(f"GetAtt on unknown resource {name}")
            if attr == "Arn":
                return stack.arns[name]
            if attr == "Name":
                return stack.physical[name]
            raise TemplateError(f"GetAtt {name}.{attr}: attribute not modelled by the sandbox")

        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::StackName": stack.name,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack.name}/0",
        }
        return Resolver(stack.parameters, pseudo, ref, get_att, conditions)

    @staticmethod
    def _wanted(res: dict[str, Any], resolver: Resolver) -> bool:
        return "Condition" not in res or resolver.condition(res["Condition"])

    def _role(self, stack_name: str) -> str:
        iam = self._session.client("iam")
        name = f"{stack_name}-sandbox-role"
        try:
            return str(iam.get_role(RoleName=name)["Role"]["Arn"])
        except iam.exceptions.NoSuchEntityException:
            return str(
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=_ROLE_POLICY)["Role"]["Arn"]
            )

    # -- resource kinds ----------------------------------------------------------------------

    def _document(self, stack: Stack, logical: str, props: dict[str, Any], *_: Any) -> None:
        self._session.client("ssm").create_document(
            Name=stack.physical[logical],
            DocumentType=props.get("DocumentType", "Command"),
            DocumentFormat="JSON",
            Content=json.dumps(props["Content"]),
        )

    def _function(
        self, stack: Stack, logical: str, props: dict[str, Any], resolver: Resolver, role: str
    ) -> None:
        code_dir = (stack.template_path.parent / props["CodeUri"]).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"{logical}: CodeUri {props['CodeUri']} is not a directory")
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
        self._session.client("lambda").create_function(
            FunctionName=name,
            Runtime=props["Runtime"],
            Role=role,
            Handler=props["Handler"],
            Code={"ZipFile": _placeholder_zip()},
            Environment={"Variables": env},
            MemorySize=int(props.get("MemorySize", 128)),
            Timeout=int(props.get("Timeout", 3)),
        )
        for event in props.get("Events", {}).values():
            if event.get("Type") == "EventBridgeRule":
                self._put_rule(f"{name}-rule", event["Properties"], stack.arns[logical])

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
        self._session.client("stepfunctions").create_state_machine(
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
        events = self._session.client("events")
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

    def _put_rule(self, name: str, props: dict[str, Any], target_arn: str) -> None:
        events = self._session.client("events")
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
        self._session.client("autoscaling").put_lifecycle_hook(**kwargs)


def _merge_globals(globals_fn: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    merged = {**globals_fn, **props}
    env = {
        **globals_fn.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    if env:
        merged["Environment"] = {"Variables": env}
    return merged


def _placeholder_zip() -> bytes:
    """moto stores a code package; the sandbox runs the CodeUri directory itself."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("README.txt", "code runs from the CodeUri directory in the sandbox\n")
    return buf.getvalue()
