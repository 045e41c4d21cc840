"""Reading the workflows' executions back for operators, and deciding how to replay one.

Everything here reads live AWS state: Step Functions for what ran, Auto Scaling and EC2 for
where the instance and its lifecycle action stand now.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from botocore.exceptions import ClientError

from enipin.deployment import Deployment
from enipin.errors import OperatorError
from enipin_core.lifecycle import is_leaving, is_waiting
from enipin_core.names import TRANSITIONS, instance_in_name

FINAL_FAILURES = ("FAILED", "ABORTED", "TIMED_OUT")
STATUSES = ("RUNNING", "SUCCEEDED", *FINAL_FAILURES, "PENDING_REDRIVE")


@dataclass(frozen=True)
class Execution:
    arn: str
    name: str
    workflow: str  # launch or terminate (names.KINDS): the state machine it ran in
    status: str
    start: datetime
    stop: datetime | None = None
    instance: str | None = None
    failed_state: str | None = None  # where the error came from
    stopped_in: str | None = None  # where the run ended: a redrive resumes here
    error: str | None = None
    cause: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    redrive_status: str | None = None
    redrive_count: int = 0

    def row(self) -> dict[str, Any]:
        keys = ("name", "instance", "workflow", "status", "failed_state", "error", "start")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    state: str
    kind: str
    entered: datetime
    seconds: float | None
    outcome: str


# -- finding executions ---------------------------------------------------------------------


def list_executions(
    dep: Deployment, status: str | None, since: timedelta | None
) -> list[Execution]:
    """Newest first, across both workflows; failures carry their failed state and error."""
    sfn = dep.client("stepfunctions")
    cutoff = datetime.now(UTC) - since if since else None
    found: list[Execution] = []
    for workflow, machine in dep.state_machines().items():
        kwargs: dict[str, Any] = {"stateMachineArn": machine}
        if status:
            kwargs["statusFilter"] = status
        found += _listed(sfn, workflow, kwargs, cutoff)
    return sorted(found, key=lambda e: e.start, reverse=True)


def _listed(
    sfn: Any, workflow: str, kwargs: dict[str, Any], cutoff: datetime | None
) -> list[Execution]:
    """Step Functions lists newest first: stop paging at the first run before the cutoff."""
    found: list[Execution] = []
    for page in sfn.get_paginator("list_executions").paginate(**kwargs):
        for item in page["executions"]:
            if cutoff and item["startDate"] < cutoff:
                return found
            found.append(_summary(sfn, workflow, item))
    return found


def _summary(sfn: Any, workflow: str, item: dict[str, Any]) -> Execution:
    named = instance_in_name(item["name"])
    if named and item["status"] not in FINAL_FAILURES:
        return Execution(
            arn=item["executionArn"],
            name=item["name"],
            workflow=workflow,
            status=item["status"],
            start=item["startDate"],
            stop=item.get("stopDate"),
            instance=named,
        )
    return describe(sfn, item["executionArn"], workflow)


def describe(sfn: Any, arn: str, workflow: str) -> Execution:
    desc = sfn.describe_execution(executionArn=arn)
    data = json.loads(desc.get("input") or "{}")
    failed_state = stopped_in = None
    if desc["status"] in FINAL_FAILURES:
        failed_state, stopped_in = _failure_points(history(sfn, arn), desc.get("error"))
    return Execution(
        arn=arn,
        name=desc["name"],
        workflow=workflow,
        status=desc["status"],
        start=desc["startDate"],
        stop=desc.get("stopDate"),
        instance=(data.get("detail") or {}).get("EC2InstanceId"),
        failed_state=failed_state,
        stopped_in=stopped_in,
        error=desc.get("error"),
        cause=_readable_cause(desc.get("cause")),
        input=data,
        redrive_status=desc.get("redriveStatus"),
        redrive_count=int(desc.get("redriveCount", 0)),
    )


def find(dep: Deployment, ref: str) -> Execution:
    """An execution by ARN, or by name in either workflow."""
    sfn = dep.client("stepfunctions")
    machines = dep.state_machines()
    if ref.startswith("arn:"):
        machine_name = ref.split(":")[-2]
        for workflow, machine in machines.items():
            if machine.split(":")[-1] == machine_name:
                return _describe_or_none(sfn, ref, workflow) or _unknown(ref)
        raise OperatorError(f"{ref} is not an execution of stack {dep.stack}'s workflows")
    for workflow, machine in machines.items():
        arn = machine.replace(":stateMachine:", ":execution:") + f":{ref}"
        found = _describe_or_none(sfn, arn, workflow)
        if found:
            return found
    return _unknown(ref)


def _describe_or_none(sfn: Any, arn: str, workflow: str) -> Execution | None:
    try:
        return describe(sfn, arn, workflow)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ExecutionDoesNotExist", "InvalidArn"):
            return None
        raise


def _unknown(ref: str) -> NoReturn:
    raise OperatorError(f"execution {ref} not found in the launch or terminate workflow")


# -- history ------------------------------------------------------------------------------


def history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
    return [event for page in pages for event in page["events"]]


def _failure_points(events: list[dict[str, Any]], error: str | None) -> tuple[str, str]:
    """The state that raised the run's error (a Catch may have moved on to cleanup since),
    and the state the run ended in: the last one entered and never exited."""
    current = raised = None
    still_in: list[str] = []  # states entered and not yet exited, matched by name
    for event in events:
        entered = event.get("stateEnteredEventDetails")
        if entered:
            current = str(entered["name"])
            still_in.append(current)
        exited = event.get("stateExitedEventDetails")
        if exited and exited["name"] in still_in:
            still_in.remove(exited["name"])
        failure = event.get("taskFailedEventDetails") or event.get(
            "lambdaFunctionFailedEventDetails"
        )
        if failure and failure.get("error") == error:
            raised = current
    stopped_in = still_in[-1] if still_in else "-"
    return raised or stopped_in, stopped_in


def path(sfn: Any, arn: str) -> list[Step]:
    """Each state entered, in order, with how long it took and how it ended."""
    events = history(sfn, arn)
    steps: list[Step] = []
    open_at: dict[str, tuple[int, datetime, str]] = {}
    outcome: dict[int, str] = {}
    exits: dict[int, datetime] = {}
    for event in events:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            open_at[name] = (len(steps), event["timestamp"], kind.removesuffix("StateEntered"))
            steps.append(
                Step(name, kind.removesuffix("StateEntered"), event["timestamp"], None, "")
            )
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            index, _, _ = open_at.pop(name, (-1, event["timestamp"], ""))
            if index >= 0:
                exits[index] = event["timestamp"]
        elif kind in ("TaskFailed", "LambdaFunctionFailed", "ExecutionFailed") and open_at:
            last = max(i for i, _, _ in open_at.values())
            detail: dict[str, Any] = next(
                (v for k, v in event.items() if k.endswith("EventDetails")), {}
            )
            outcome[last] = f"failed: {detail.get('error', '?')}"
    result = []
    for i, step in enumerate(steps):
        end = exits.get(i)
        seconds = (end - step.entered).total_seconds() if end else None
        result.append(
            Step(
                step.state,
                step.kind,
                step.entered,
                seconds,
                outcome.get(i, "ok" if end else "did not finish"),
            )
        )
    return result


def _readable_cause(cause: str | None) -> str | None:
    """Lambda errors arrive as the runtime's JSON error document: keep its message."""
    if not cause:
        return cause
    try:
        doc = json.loads(cause)
    except json.JSONDecodeError:
        return cause
    if isinstance(doc, dict) and "errorMessage" in doc:
        return f"{doc.get('errorType', 'Error')}: {doc['errorMessage']}"
    return cause


# -- where the instance stands now -----------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    instance: str
    ec2_state: str | None
    group: str | None
    lifecycle_state: str | None
    pool_enis: list[dict[str, str]]

    def action_pending(self, kind: str) -> bool:
        """May an action of the ``kind`` (launch, terminate) workflow still hold the instance?"""
        return is_waiting(self.lifecycle_state, TRANSITIONS[kind])

    @property
    def gone(self) -> bool:
        return self.ec2_state in (None, "shutting-down", "terminated") or is_leaving(
            self.lifecycle_state
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def standing(dep: Deployment, instance_id: str) -> Standing:
    ec2 = dep.client("ec2")
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if "NotFound" not in exc.response.get("Error", {}).get("Code", ""):
            raise
        reservations = []
    data = reservations[0]["Instances"][0] if reservations else None
    asg = dep.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance_id])
    membership = asg["AutoScalingInstances"][0] if asg["AutoScalingInstances"] else None
    key, value = dep.pool_tag
    # every page: without one of the few filters EC2 indexes, one answer may not hold them all
    pages = ec2.get_paginator("describe_network_interfaces").paginate(
        Filters=[
            {"Name": f"tag:{key}", "Values": [value]},
            {"Name": "attachment.instance-id", "Values": [instance_id]},
        ]
    )
    enis = [e for page in pages for e in page["NetworkInterfaces"]]
    return Standing(
        instance=instance_id,
        ec2_state=data["State"]["Name"] if data else None,
        group=membership["AutoScalingGroupName"] if membership else None,
        lifecycle_state=membership["LifecycleState"] if membership else None,
        pool_enis=[{"eni": e["NetworkInterfaceId"], "mac": e["MacAddress"]} for e in enis],
    )
