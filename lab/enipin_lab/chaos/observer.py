"""The run's eyes on the sandbox: the state shared by the faults and the invariants, and what
EC2, Auto Scaling and Step Functions say through their APIs (plus what Auto Scaling and EC2 record
of how things ended)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from enipin import guard
from enipin.deployment import Deployment, connect
from enipin_lab.chaos.planning import SECOND_GROUP, Shape
from enipin_lab.chaos.results import Violation

if TYPE_CHECKING:  # the sandbox (moto) is imported when a run starts, not with the CLI
    from enipin_lab.sandbox import Sandbox


REGION, STACK_NAME = "us-east-1", "enipin"  # the sandbox's Region and stack
# The run's own calls retry like an operator's tooling: a throttling burst is for the stack.
OBSERVER = Config(retries={"mode": "standard", "max_attempts": 20})


class _Observer:
    """The state a run keeps, and its reads of the sandbox through the AWS APIs."""

    def __init__(self, sb: Sandbox, shape: Shape | None = None) -> None:
        self.sb = sb
        self.shape = shape or Shape()
        self.ec2 = _client("ec2")
        self.asg = _client("autoscaling")
        self.sfn = _client("stepfunctions")
        self.injected: list[str] = []
        self.notes: list[str] = []
        self.violations: list[Violation] = []
        self.seen: set[tuple[str, str]] = set()  # (invariant, detail) already reported
        self.by_hand: set[str] = set()  # instances terminated through EC2 by the run
        self.eni_by_hand: set[str] = set()  # instances whose pool ENI the run took by hand
        self.pool_ids = {e["NetworkInterfaceId"] for e in self.pool()}

    # -- reading AWS -------------------------------------------------------------------

    def groups(self) -> list[str]:
        return [self.sb.group_name] + ([SECOND_GROUP] if self.shape.second_group else [])

    def members(self, groups: list[str] | None = None) -> dict[str, str]:
        """Instance id -> lifecycle state, for the instances of the sandbox's group (or of
        ``groups``); warm instances are not members."""
        found = self.asg.describe_auto_scaling_groups(
            AutoScalingGroupNames=groups or [self.sb.group_name]
        )["AutoScalingGroups"]
        return {i["InstanceId"]: i["LifecycleState"] for g in found for i in g["Instances"]}

    def warm(self) -> dict[str, str]:
        """Instance id -> lifecycle state, for the warm pool's instances."""
        if not self.shape.warm_pool:
            return {}
        pool = self.asg.describe_warm_pool(AutoScalingGroupName=self.sb.group_name)
        return {i["InstanceId"]: i["LifecycleState"] for i in pool.get("Instances", [])}

    def pool(self) -> list[dict[str, Any]]:
        tag = self.sb.spec
        pages = self.ec2.get_paginator("describe_network_interfaces").paginate(
            Filters=[{"Name": f"tag:{tag.pool_tag_key}", "Values": [tag.pool_tag_value]}]
        )
        return [eni for page in pages for eni in page["NetworkInterfaces"]]

    def instances(self) -> Iterator[dict[str, Any]]:
        for page in self.ec2.get_paginator("describe_instances").paginate():
            for reservation in page["Reservations"]:
                yield from reservation["Instances"]

    def eni_status(self, eni_id: str) -> str | None:
        return next(
            (str(e["Status"]) for e in self.pool() if e["NetworkInterfaceId"] == eni_id), None
        )

    def evidence(self) -> dict[str, Any]:
        """What happened, for a violating run: a seed fixes the plan, not the interleaving,
        so its replay may pass. Every execution's history, the ledger of calls with their
        times and parameters, and Auto Scaling's and EC2's records of endings and releases."""
        executions = []
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            for execution in self.sb.executions(machine):
                pages = self.sfn.get_paginator("get_execution_history").paginate(
                    executionArn=execution["executionArn"]
                )
                events = [e for page in pages for e in page["events"]]
                executions.append({**execution, "history": events})
        calls = [
            {
                "at": c.at,
                "service": c.service,
                "operation": c.operation,
                "caller": c.caller,
                "outcome": c.outcome,
                "params": c.params,
            }
            for c in list(self.sb.ledger.calls)
        ]
        return {
            "executions": executions,
            "calls": calls,
            "lifecycle_actions_ended": self.sb.autoscaling.ended_actions(),
            "lifecycle_actions_pending": self.sb.autoscaling.pending_actions(),
            "lifecycle_events": self.sb.autoscaling.event_log(),
            "enis_released_by_ec2_on_termination": list(self.sb.ec2.left_on_termination),
            "notes": list(self.notes),
        }

    def execution_statuses(self) -> dict[str, int]:
        statuses: Counter[str] = Counter()
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            statuses.update(e["status"] for e in self.sb.executions(machine))
        return dict(sorted(statuses.items()))

    def wait(self, predicate: Callable[[], bool], aws_seconds: float) -> bool:
        return self.wait_for(lambda: predicate() or None, aws_seconds) is not None

    def wait_for(self, probe: Callable[[], Any], aws_seconds: float) -> Any:
        deadline = self.sb.clock.monotonic() + aws_seconds
        while self.sb.clock.monotonic() < deadline:
            found = probe()
            if found:
                return found
            self.sb.clock.sleep(1.0)
        return None

    def release_storm_guard(self) -> str:
        """What ``enipin guard release`` does for each group the guard holds, through the
        operations layer; a note naming them, or empty when it held none."""
        dep = self._deployment()
        held = [
            row["groupName"]
            for row in guard.status(dep)
            if row["guard"] == "TRIPPED" or row["launchSuspended"]
        ]
        for group in held:
            guard.release_group(dep, group)
        return f"storm guard released on {', '.join(held)}" if held else ""

    def _deployment(self) -> Deployment:
        return connect(None, REGION, STACK_NAME)


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION, config=OBSERVER)


def _holder(eni: dict[str, Any]) -> str | None:
    return (eni.get("Attachment") or {}).get("InstanceId")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
