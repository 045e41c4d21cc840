"""Shared test helpers: event fixtures, sandbox factories and reading executions back."""

from __future__ import annotations

import copy
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enipin_lab.sandbox import Sandbox

EVENTS = Path(__file__).parent / "events"
# Unit tests import Task modules the way the Lambda runtime does: from the CodeUri, tasks/.
sys.path.append(str(Path(__file__).parents[1] / "tasks"))


def asl_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state of an ASL definition, those inside a Parallel's branches or a Map's
    processor too."""
    for name, state in states.items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from asl_states(branch["States"])
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from asl_states(state[key]["States"])


def load_event(name: str, **detail: Any) -> dict[str, Any]:
    """An event fixture shaped exactly like AWS's, with ``detail`` fields overridden."""
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    if detail:
        event = copy.deepcopy(event)
        event["detail"].update(detail)
    return event


def wait_until(predicate: Callable[[], bool], sb: Sandbox, aws_seconds: float = 3600) -> None:
    """Poll ``predicate`` until it holds; ``aws_seconds`` of sandbox time at most."""
    deadline = sb.clock.monotonic() + aws_seconds
    while not predicate():
        if sb.clock.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def rival_instance(sb: Sandbox, az: str = "us-east-1a") -> str:
    """An instance outside the group, in ``az``, once EC2 runs it (a launch is pending first):
    a rival for the pool's ENIs, or someone's own server."""
    ec2 = sb.client("ec2")
    instance_id = str(
        ec2.run_instances(
            ImageId=ec2.describe_images()["Images"][0]["ImageId"],
            MinCount=1,
            MaxCount=1,
            SubnetId=sb.world.subnets[az],
        )["Instances"][0]["InstanceId"]
    )
    wait_until(lambda: sb.guests.is_running(instance_id), sb)
    return instance_id


def launch_waiting_for_its_agent(sb: Sandbox) -> str:
    """Scale out one instance and return it once its launch run has attached a pool ENI and
    waits for the (slow) SSM agent the sandbox was made with."""
    sb.scale_out(1)
    wait_until(lambda: len(sb.executions()) == 1, sb)
    (instance_id,) = group_instances(sb)
    wait_until(lambda: bool(pool_enis_on(sb, instance_id)), sb)
    return instance_id


def describe(sb: Sandbox, execution_arn: str) -> dict[str, Any]:
    return dict(sb.client("stepfunctions").describe_execution(executionArn=execution_arn))


def path_of(sb: Sandbox, execution_arn: str) -> list[str]:
    """The names of the states the execution entered, in order (as the console shows them)."""
    events = sb.client("stepfunctions").get_execution_history(
        executionArn=execution_arn, maxResults=1000
    )["events"]
    return [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]


def history_errors(sb: Sandbox, execution_arn: str) -> list[str]:
    events = sb.client("stepfunctions").get_execution_history(
        executionArn=execution_arn, maxResults=1000
    )["events"]
    return [e["taskFailedEventDetails"]["error"] for e in events if "taskFailedEventDetails" in e]


def executions_for(
    sb: Sandbox, instance_id: str, machine: str = "LaunchStateMachine"
) -> list[dict[str, Any]]:
    """The executions (launch by default) whose input names ``instance_id``, oldest first."""
    found = []
    for execution in sb.executions(machine):
        desc = describe(sb, execution["executionArn"])
        detail = json.loads(desc["input"]).get("detail", {})
        if detail.get("EC2InstanceId") == instance_id:
            found.append(desc)
    return sorted(found, key=lambda d: d["startDate"])


def start(sb: Sandbox, event: dict[str, Any]) -> str:
    """Start the launch workflow by hand, as an operator replaying an input would."""
    return str(
        sb.client("stepfunctions").start_execution(
            stateMachineArn=sb.state_machine_arn(), input=json.dumps(event)
        )["executionArn"]
    )


def finish(sb: Sandbox, execution_arn: str) -> dict[str, Any]:
    wait_until(lambda: describe(sb, execution_arn)["status"] != "RUNNING", sb)
    return describe(sb, execution_arn)


def group_instances(sb: Sandbox) -> dict[str, dict[str, Any]]:
    asg = sb.client("autoscaling").describe_auto_scaling_instances()["AutoScalingInstances"]
    return {i["InstanceId"]: i for i in asg if i["AutoScalingGroupName"] == sb.group_name}


def at_the_pool_look(sb: Sandbox, act: Callable[[], None]) -> None:
    """Run ``act`` once, as a run's look at its AZ's pool (DescribeInstance's or FindFreeEni's
    describe) is about to go out; other describes pass by."""

    def actor(params: dict[str, list[str]]) -> None:
        if "availability-zone" not in str(params):  # not the pool's look: wait for that one
            sb.ledger.before("ec2", "DescribeNetworkInterfaces", actor)
            return
        act()

    sb.ledger.before("ec2", "DescribeNetworkInterfaces", actor)


def attach_the_pool_eni_by_hand(sb: Sandbox) -> str:
    """Attach the one pool ENI of the one AZ to the group's one instance at device index 1, as a
    duplicate run (or an operator) would; its id."""
    (instance_id,) = group_instances(sb)
    (eni_id,) = sb.world.pool["us-east-1a"]
    sb.client("ec2").attach_network_interface(
        NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=1
    )
    return eni_id


def pool_enis_on(sb: Sandbox, instance_id: str) -> list[dict[str, Any]]:
    return list(
        sb.client("ec2").describe_network_interfaces(
            Filters=[
                {"Name": "tag:Type", "Values": ["Dedicated-ENI"]},
                {"Name": "attachment.instance-id", "Values": [instance_id]},
            ]
        )["NetworkInterfaces"]
    )


def instance_state(sb: Sandbox, instance_id: str) -> str:
    reservations = sb.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def in_service(sb: Sandbox) -> list[str]:
    return [i for i, d in group_instances(sb).items() if d["LifecycleState"] == "InService"]


def assert_pinned(sb: Sandbox, instance_id: str) -> dict[str, Any]:
    enis = pool_enis_on(sb, instance_id)
    assert len(enis) == 1, f"{instance_id} carries {len(enis)} pool ENIs"
    eni = enis[0]
    assert eni["Attachment"]["DeviceIndex"] == 1
    assert eni["AvailabilityZone"] == group_instances(sb)[instance_id]["AvailabilityZone"]
    return eni


def assert_no_eni_doubled(sb: Sandbox) -> None:
    """No instance carries two pool ENIs, and no pool ENI sits on a terminated instance."""
    enis = sb.client("ec2").describe_network_interfaces(
        Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
    )["NetworkInterfaces"]
    owners = Counter(e["Attachment"]["InstanceId"] for e in enis if e.get("Attachment"))
    assert all(n == 1 for n in owners.values()), owners
    dead = [i for i in owners if instance_state(sb, i) == "terminated"]
    assert not dead, f"pool ENIs left on terminated instances {dead}"


@pytest.fixture
def sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Open sandboxes on demand; each closes at the end of the test."""
    opened: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        sb = Sandbox(**kwargs).__enter__()
        opened.append(sb)
        return sb

    yield make
    for sb in reversed(opened):
        sb.__exit__(None, None, None)
