"""Pins the Auto Scaling behaviours the sandbox restores: AZ balancing, hooks, actions, events."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from enipin_lab.sandbox.autoscaling import LAUNCHING, TERMINATING, AutoScalingFidelity
from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.clock import FAST_SCALE, Clock

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
T = TypeVar("T")


@dataclass
class Aws:
    ec2: Any
    asg: Any
    events: Any
    sqs: Any
    subnets: dict[str, str]  # AZ -> subnet id


@dataclass
class Rig(Aws):
    clock: Clock
    fidelity: AutoScalingFidelity
    group: str


class _SteppedClock(Clock):
    """The sandbox clock plus a manual jump forward, for waits of a hundred heartbeats."""

    def __init__(self, scale: float) -> None:
        super().__init__(scale)
        self._offset = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    # One moto rig per module (starting one costs about a second); each test gets its
    # own group, clock and freshly installed adaptation.
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = {
            zone: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)[
                "Subnet"
            ]["SubnetId"]
            for i, zone in enumerate(ZONES)
        }
        ec2.create_launch_template(
            LaunchTemplateName="workers-lt",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
        )
        yield Aws(
            ec2,
            boto3.client("autoscaling", region_name=REGION),
            boto3.client("events", region_name=REGION),
            boto3.client("sqs", region_name=REGION),
            subnets,
        )


@contextmanager
def _rig(aws: Aws, clock: Clock, group: str) -> Iterator[Rig]:
    try:
        with ExitStack() as stack:
            fidelity = AutoScalingFidelity(clock, replacement_backoff=10.0)
            fidelity.install(stack)
            rig = Rig(**vars(aws), clock=clock, fidelity=fidelity, group=group)
            try:
                yield rig
            finally:
                if _instances(rig) is not None:
                    rig.asg.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)
    finally:
        clock.close()


@pytest.fixture
def w(aws: Aws, request: pytest.FixtureRequest) -> Iterator[Rig]:
    with _rig(aws, Clock(FAST_SCALE), _group_name(request)) as rig:
        yield rig


def _group_name(request: pytest.FixtureRequest) -> str:
    return "g-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]


def _hook(
    name: str = "attach-eni",
    transition: str = LAUNCHING,
    heartbeat: int = 300,
    default: str = "ABANDON",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "LifecycleHookName": name,
        "LifecycleTransition": transition,
        "HeartbeatTimeout": heartbeat,
        "DefaultResult": default,
        **extra,
    }


def _create_group(
    w: Rig, desired: int, hooks: list[dict[str, Any]] | None = None, *, max_size: int = 10
) -> None:
    w.asg.create_auto_scaling_group(
        AutoScalingGroupName=w.group,
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=desired,
        LaunchTemplate={"LaunchTemplateName": "workers-lt"},
        VPCZoneIdentifier=",".join(w.subnets.values()),
        LifecycleHookSpecificationList=hooks or [],
    )


def _instances(w: Rig) -> list[dict[str, Any]] | None:
    """The group's instances as describe_auto_scaling_groups shows them (None: no group)."""
    groups = w.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[w.group])
    return groups["AutoScalingGroups"][0]["Instances"] if groups["AutoScalingGroups"] else None


def _states(w: Rig) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in _instances(w) or []}


def _group_instances(w: Rig) -> list[dict[str, Any]]:
    """The group's instances as describe_auto_scaling_instances shows them."""
    described = w.asg.describe_auto_scaling_instances()["AutoScalingInstances"]
    return [i for i in described if i["AutoScalingGroupName"] == w.group]


def _ec2_state(w: Rig, instance_id: str) -> str:
    reservations = w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def _wait_for(probe: Callable[[], T | None], timeout: float = 3.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` real seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


def _only_instance(w: Rig) -> str:
    (instance_id,) = _states(w)
    return instance_id


def _action(w: Rig, instance_id: str, transition: str = LAUNCHING) -> dict[str, Any]:
    return _wait_for(
        lambda: next(
            (
                a
                for a in w.fidelity.pending_actions()
                if a["instance_id"] == instance_id and a["transition"] == transition
            ),
            None,
        )
    )


def _complete(w: Rig, result: str, hook: str = "attach-eni", **target: str) -> None:
    w.asg.complete_lifecycle_action(
        AutoScalingGroupName=w.group, LifecycleHookName=hook, LifecycleActionResult=result, **target
    )


def _event_queue(w: Rig, detail_type: str) -> str:
    url = w.sqs.create_queue(QueueName=w.group)["QueueUrl"]
    arn = w.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["aws.autoscaling"], "detail-type": [detail_type]}
    w.events.put_rule(Name=w.group, EventPattern=json.dumps(pattern))
    w.events.put_targets(Rule=w.group, Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def _drain(w: Rig, url: str) -> list[dict[str, Any]]:
    """Every message on the queue, once no event copy is still on its way."""
    _wait_for(lambda: w.fidelity.events_in_flight() == 0)
    bodies = []
    while messages := w.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        bodies += [json.loads(m["Body"]) for m in messages]
        for message in messages:
            w.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


# ------------------------------------------------------------------ AZ balancing


def test_new_instances_are_spread_evenly_over_the_groups_availability_zones(w: Rig) -> None:
    _create_group(w, desired=6)

    instances = _group_instances(w)
    assert [i["AvailabilityZone"] for i in instances] == [
        i["AvailabilityZone"] for i in _instances(w) or []
    ]
    reservations = w.ec2.describe_instances(InstanceIds=[i["InstanceId"] for i in instances])
    ec2_instances = {
        i["InstanceId"]: i for r in reservations["Reservations"] for i in r["Instances"]
    }
    assert Counter(i["AvailabilityZone"] for i in instances) == {zone: 2 for zone in ZONES}
    for instance in instances:
        ec2_instance = ec2_instances[instance["InstanceId"]]
        zone = ec2_instance["Placement"]["AvailabilityZone"]
        assert zone == instance["AvailabilityZone"]
        assert ec2_instance["SubnetId"] == w.subnets[zone]


def test_scale_in_terminates_from_the_fullest_availability_zone(w: Rig) -> None:
    _create_group(w, desired=4)  # a, b, c, a

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=3)

    instances = _group_instances(w)
    assert sorted(i["AvailabilityZone"] for i in instances) == list(ZONES)


# ------------------------------------------------------------------ launch hooks


def test_launch_hook_holds_a_running_instance_in_pending_wait(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook()])

    instance_id = _only_instance(w)
    assert _states(w) == {instance_id: "Pending:Wait"}
    described = w.asg.describe_auto_scaling_instances(InstanceIds=[instance_id])
    assert described["AutoScalingInstances"][0]["LifecycleState"] == "Pending:Wait"
    assert _ec2_state(w, instance_id) == "running"


def test_completing_a_launch_action_with_continue_puts_the_instance_in_service(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    instance_id = _only_instance(w)

    _complete(w, "CONTINUE", LifecycleActionToken=_action(w, instance_id)["token"])

    assert _states(w) == {instance_id: "InService"}
    assert w.fidelity.pending_actions() == []


def test_abandoning_a_launch_action_terminates_the_instance_and_replaces_it_after_backoff(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    first = _only_instance(w)

    abandoned_at = w.clock.monotonic()
    _complete(w, "ABANDON", InstanceId=first)

    assert _ec2_state(w, first) == "terminated"
    replacement = _wait_for(lambda: next((i for i in _states(w) if i != first), None))
    assert w.clock.monotonic() - abandoned_at >= 10.0  # replacement_backoff
    assert first not in _states(w)
    assert _states(w)[replacement] == "Pending:Wait"


def test_every_launch_hook_must_complete_before_the_instance_goes_in_service(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook("attach-eni"), _hook("configure-os")])
    instance_id = _only_instance(w)
    _wait_for(lambda: len(w.fidelity.pending_actions()) == 2)

    _complete(w, "CONTINUE", "attach-eni", InstanceId=instance_id)
    assert _states(w) == {instance_id: "Pending:Wait"}

    _complete(w, "CONTINUE", "configure-os", InstanceId=instance_id)
    assert _states(w) == {instance_id: "InService"}


# ------------------------------------------------------------------ action API errors


def test_completing_an_unknown_or_finished_action_fails_with_no_active_lifecycle_action(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    instance_id = _only_instance(w)
    token = _action(w, instance_id)["token"]
    unknown = "87654321-4321-4321-4321-210987654321"

    assert _error(lambda: _complete(w, "CONTINUE", LifecycleActionToken=unknown)) == (
        "ValidationError",
        f"No active Lifecycle Action found with token {unknown}",
    )
    _complete(w, "CONTINUE", LifecycleActionToken=token)
    assert _error(lambda: _complete(w, "CONTINUE", LifecycleActionToken=token)) == (
        "ValidationError",
        f"No active Lifecycle Action found with token {token}",
    )
    assert _error(lambda: _complete(w, "CONTINUE", InstanceId=instance_id)) == (
        "ValidationError",
        f"No active Lifecycle Action found with instance ID {instance_id}",
    )


def test_completing_with_a_wrong_group_or_hook_name_fails_with_validation_error(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    instance_id = _only_instance(w)
    token = _action(w, instance_id)["token"]

    wrong_hook = _error(lambda: _complete(w, "CONTINUE", "other-hook", LifecycleActionToken=token))
    wrong_group = _error(
        lambda: w.asg.complete_lifecycle_action(
            AutoScalingGroupName="other-group",
            LifecycleHookName="attach-eni",
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )
    )

    assert wrong_hook == ("ValidationError", f"No active Lifecycle Action found with token {token}")
    assert wrong_group == (
        "ValidationError",
        f"No active Lifecycle Action found with instance ID {instance_id}",
    )
    assert _states(w) == {instance_id: "Pending:Wait"}


def test_concurrent_completions_of_one_action_take_effect_exactly_once(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    instance_id = _only_instance(w)
    token = _action(w, instance_id)["token"]

    def complete(result: str) -> str:
        try:
            _complete(w, result, LifecycleActionToken=token)
        except ClientError as error:
            return str(error.response["Error"]["Message"])
        return result

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(complete, ["CONTINUE", "ABANDON"] * 4))

    winners = [o for o in outcomes if o in ("CONTINUE", "ABANDON")]
    assert len(winners) == 1
    assert outcomes.count(f"No active Lifecycle Action found with token {token}") == 7
    expected = "running" if winners == ["CONTINUE"] else "terminated"
    assert _ec2_state(w, instance_id) == expected


# ------------------------------------------------------------------ timeouts and heartbeats


@pytest.mark.parametrize(("default", "outcome"), [("CONTINUE", "InService"), ("ABANDON", None)])
def test_heartbeat_timeout_applies_the_hooks_default_result(
    w: Rig, default: str, outcome: str | None
) -> None:
    _create_group(w, desired=1, hooks=[_hook(heartbeat=30, default=default)])
    instance_id = _only_instance(w)
    deadline = _action(w, instance_id)["deadline"]

    _wait_for(lambda: _states(w).get(instance_id) != "Pending:Wait")

    assert w.clock.monotonic() >= deadline
    assert _states(w).get(instance_id) == outcome
    assert _ec2_state(w, instance_id) == ("running" if outcome else "terminated")


def test_how_each_action_ended_is_recorded_as_scaling_activities_would_say(w: Rig) -> None:
    """DescribeScalingActivities tells a completed action from one that timed out."""
    _create_group(w, desired=2, hooks=[_hook(heartbeat=30, default="CONTINUE")])
    completed, timed_out = sorted(_states(w))
    token = _action(w, completed)["token"]
    _complete(w, "CONTINUE", LifecycleActionToken=token)

    _wait_for(lambda: _states(w).get(timed_out) == "InService")

    ended = {a["instance_id"]: a for a in w.fidelity.ended_actions()}
    assert ended[completed]["how"] == "CompleteLifecycleAction"
    assert ended[completed]["token"] == token
    assert ended[timed_out]["how"] == "HeartbeatTimeout"
    assert ended[timed_out]["result"] == "CONTINUE"
    assert ended[timed_out]["ended"] >= ended[timed_out]["deadline"]


def test_heartbeat_extends_the_wait_by_one_heartbeat_timeout(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook(heartbeat=30)])
    instance_id = _only_instance(w)
    first_deadline = _action(w, instance_id)["deadline"]

    before = w.clock.monotonic()
    w.asg.record_lifecycle_action_heartbeat(
        AutoScalingGroupName=w.group, LifecycleHookName="attach-eni", InstanceId=instance_id
    )
    after = w.clock.monotonic()

    extended = _action(w, instance_id)["deadline"]
    assert before + 30 <= extended <= after + 30
    assert extended > first_deadline
    _wait_for(lambda: _states(w).get(instance_id) is None)  # DefaultResult ABANDON
    assert w.clock.monotonic() >= extended


def test_heartbeat_for_an_unknown_action_fails_with_no_active_lifecycle_action(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    unknown = "87654321-4321-4321-4321-210987654321"

    error = _error(
        lambda: w.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=w.group,
            LifecycleHookName="attach-eni",
            LifecycleActionToken=unknown,
        )
    )

    assert error == ("ValidationError", f"No active Lifecycle Action found with token {unknown}")


def test_global_timeout_is_the_smaller_of_48_hours_and_100_heartbeats(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook("short", heartbeat=30), _hook("long", heartbeat=7200)])
    _wait_for(lambda: len(w.fidelity.pending_actions()) == 2)

    spans = {
        a["hook_name"]: a["global_deadline"] - a["started"] for a in w.fidelity.pending_actions()
    }
    hooks = w.asg.describe_lifecycle_hooks(AutoScalingGroupName=w.group)["LifecycleHooks"]

    assert spans == pytest.approx({"short": 3000, "long": 172800})
    assert {h["LifecycleHookName"]: h["GlobalTimeout"] for h in hooks} == {
        "short": 3000,
        "long": 172800,
    }


def test_heartbeats_cannot_extend_a_wait_past_the_global_timeout(
    aws: Aws, request: pytest.FixtureRequest
) -> None:
    clock = _SteppedClock(1.0)  # real time, so only the jumps below move the wait on
    with _rig(aws, clock, _group_name(request)) as w:
        _create_group(w, desired=1, hooks=[_hook(heartbeat=30, default="CONTINUE")])
        instance_id = _only_instance(w)
        global_deadline = _action(w, instance_id)["global_deadline"]

        deadlines = []
        while clock.monotonic() < global_deadline - 15:
            clock.advance(min(20, global_deadline - 5 - clock.monotonic()))  # inside the wait
            w.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=w.group, LifecycleHookName="attach-eni", InstanceId=instance_id
            )
            deadlines.append(_action(w, instance_id)["deadline"])
        assert max(deadlines) == deadlines[-1] == global_deadline
        assert _states(w) == {instance_id: "Pending:Wait"}

        clock.advance(global_deadline - clock.monotonic() + 1)
        error = _error(
            lambda: w.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=w.group, LifecycleHookName="attach-eni", InstanceId=instance_id
            )
        )
        assert error == (
            "ValidationError",
            f"No active Lifecycle Action found with instance ID {instance_id}",
        )
        assert _states(w) == {instance_id: "InService"}  # DefaultResult CONTINUE


# ------------------------------------------------------------------ terminate hooks


def _scale_in_by_desired_capacity(w: Rig, instance_id: str) -> None:
    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=0)


def _scale_in_by_max_size(w: Rig, instance_id: str) -> None:
    w.asg.update_auto_scaling_group(AutoScalingGroupName=w.group, MinSize=0, MaxSize=0)


def _scale_in_by_terminate_instance(w: Rig, instance_id: str) -> None:
    w.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
    )


@pytest.mark.parametrize(
    "scale_in",
    [_scale_in_by_desired_capacity, _scale_in_by_max_size, _scale_in_by_terminate_instance],
)
@pytest.mark.parametrize("result", ["CONTINUE", "ABANDON"])
def test_terminate_hook_holds_a_running_instance_in_terminating_wait_until_completed(
    w: Rig, scale_in: Callable[[Rig, str], None], result: str
) -> None:
    _create_group(w, desired=1, hooks=[_hook("release-eni", TERMINATING)])
    instance_id = _only_instance(w)

    scale_in(w, instance_id)

    assert _states(w) == {instance_id: "Terminating:Wait"}
    assert _ec2_state(w, instance_id) == "running"
    _complete(
        w, result, "release-eni", LifecycleActionToken=_action(w, instance_id, TERMINATING)["token"]
    )
    assert _states(w) == {}
    assert _ec2_state(w, instance_id) == "terminated"


def test_terminate_hook_timeout_terminates_the_instance(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook("release-eni", TERMINATING, heartbeat=30)])
    instance_id = _only_instance(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=0)
    assert _states(w) == {instance_id: "Terminating:Wait"}
    deadline = _action(w, instance_id, TERMINATING)["deadline"]

    _wait_for(lambda: _states(w) == {})
    assert w.clock.monotonic() >= deadline
    assert _ec2_state(w, instance_id) == "terminated"


def test_terminating_without_decrement_launches_a_replacement_while_the_old_one_waits(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook("release-eni", TERMINATING)])
    old = _only_instance(w)

    w.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=old, ShouldDecrementDesiredCapacity=False
    )

    states = _states(w)
    assert states.pop(old) == "Terminating:Wait"
    assert list(states.values()) == ["InService"]


def test_scale_in_without_hooks_terminates_at_once(w: Rig) -> None:
    _create_group(w, desired=2)
    instance_ids = list(_states(w))

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=0)

    assert _states(w) == {}
    assert {_ec2_state(w, i) for i in instance_ids} == {"terminated"}


# ------------------------------------------------------------------ events


def test_launch_action_sends_aws_shaped_event_to_a_matching_eventbridge_rule(w: Rig) -> None:
    url = _event_queue(w, "EC2 Instance-launch Lifecycle Action")

    _create_group(w, desired=1, hooks=[_hook(NotificationMetadata='{"pool": "data"}')])
    instance_id = _only_instance(w)
    token = _action(w, instance_id)["token"]
    (event,) = _drain(w, url)

    group_arn = w.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[w.group])[
        "AutoScalingGroups"
    ][0]["AutoScalingGroupARN"]
    envelope = {k: v for k, v in event.items() if k not in ("id", "time")}
    assert envelope == {
        "version": "0",
        "detail-type": "EC2 Instance-launch Lifecycle Action",
        "source": "aws.autoscaling",
        "account": ACCOUNT_ID,
        "region": REGION,
        "resources": [group_arn],
        "detail": {
            "LifecycleActionToken": token,
            "AutoScalingGroupName": w.group,
            "LifecycleHookName": "attach-eni",
            "EC2InstanceId": instance_id,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "NotificationMetadata": '{"pool": "data"}',
            "Origin": "EC2",
            "Destination": "AutoScalingGroup",
        },
    }
    assert event["id"] and event["time"].endswith("Z")


def test_terminate_action_sends_terminate_event_without_absent_metadata(w: Rig) -> None:
    url = _event_queue(w, "EC2 Instance-terminate Lifecycle Action")
    _create_group(w, desired=1, hooks=[_hook("release-eni", TERMINATING)])
    instance_id = _only_instance(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=0)
    (event,) = _drain(w, url)

    assert event["detail-type"] == "EC2 Instance-terminate Lifecycle Action"
    assert event["detail"] == {
        "LifecycleActionToken": _action(w, instance_id, TERMINATING)["token"],
        "AutoScalingGroupName": w.group,
        "LifecycleHookName": "release-eni",
        "EC2InstanceId": instance_id,
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "Origin": "AutoScalingGroup",
        "Destination": "EC2",
    }


def test_dropped_events_are_lost_and_duplicated_events_arrive_twice_with_one_token(
    w: Rig,
) -> None:
    url = _event_queue(w, "EC2 Instance-launch Lifecycle Action")
    w.fidelity.drop_next(1, LAUNCHING)
    w.fidelity.duplicate_next(1, LAUNCHING, delay=5.0)

    _create_group(w, desired=2, hooks=[_hook()])
    events = _drain(w, url)

    log = {entry["instance_id"]: entry["copies"] for entry in w.fidelity.event_log()}
    assert sorted(log.values()) == [0, 2]
    doubled = next(i for i, copies in log.items() if copies == 2)
    assert [e["detail"]["EC2InstanceId"] for e in events] == [doubled, doubled]
    assert len({e["detail"]["LifecycleActionToken"] for e in events}) == 1
    assert len(w.fidelity.pending_actions()) == 2  # a lost event does not end the wait


# ------------------------------------------------------------------ hooks declared with the group


def test_hooks_declared_with_the_group_hold_its_first_instances(w: Rig) -> None:
    _create_group(w, desired=2, hooks=[_hook()])

    assert set(_states(w).values()) == {"Pending:Wait"}


def test_hook_put_after_creation_holds_only_instances_launched_after_it(w: Rig) -> None:
    _create_group(w, desired=2)
    first = set(_states(w))

    w.asg.put_lifecycle_hook(
        AutoScalingGroupName=w.group,
        LifecycleHookName="attach-eni",
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=300,
    )
    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=3)

    states = _states(w)
    assert {states[i] for i in first} == {"InService"}
    assert [s for i, s in states.items() if i not in first] == ["Pending:Wait"]


def test_deleting_a_hook_abandons_its_outstanding_launch_actions(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    instance_id = _only_instance(w)

    w.asg.delete_lifecycle_hook(AutoScalingGroupName=w.group, LifecycleHookName="attach-eni")

    assert _ec2_state(w, instance_id) == "terminated"
    assert w.fidelity.pending_actions() == []


def test_the_group_settles_once_every_action_is_done(w: Rig) -> None:
    _create_group(w, desired=1, hooks=[_hook()])
    instance_id = _only_instance(w)
    assert not w.fidelity.settled()

    _complete(w, "CONTINUE", InstanceId=instance_id)

    _wait_for(w.fidelity.settled)


# ------------------------------------------------------------------ warm pools


def _put_warm_pool(w: Rig, **config: Any) -> None:
    w.asg.put_warm_pool(AutoScalingGroupName=w.group, **config)


def _warm_instances(w: Rig) -> list[dict[str, Any]]:
    """The warm pool's instances as DescribeWarmPool shows them, every page."""
    instances: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"AutoScalingGroupName": w.group}
    while True:
        page = w.asg.describe_warm_pool(**kwargs)
        instances += page["Instances"]
        if not page.get("NextToken"):
            return instances
        kwargs["NextToken"] = page["NextToken"]


def _warm_states(w: Rig) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in _warm_instances(w)}


def _lifecycle_queue(w: Rig) -> str:
    """A queue for the group's lifecycle events from now on, launch and terminate alike."""
    _wait_for(lambda: w.fidelity.events_in_flight() == 0)  # earlier events stay out
    url = w.sqs.create_queue(QueueName=w.group)["QueueUrl"]
    arn = w.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": [w.group]}}
    w.events.put_rule(Name=w.group, EventPattern=json.dumps(pattern))
    w.events.put_targets(Rule=w.group, Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def _routes(events: list[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """Instance id -> (transition, Origin, Destination) of each event."""
    return {
        e["detail"]["EC2InstanceId"]: (
            e["detail"]["LifecycleTransition"],
            e["detail"]["Origin"],
            e["detail"]["Destination"],
        )
        for e in events
    }


def _complete_all(w: Rig, instance_ids: list[str], transition: str = LAUNCHING) -> None:
    hook = "attach-eni" if transition == LAUNCHING else "release-eni"
    for instance_id in instance_ids:
        token = _action(w, instance_id, transition)["token"]
        _complete(w, "CONTINUE", hook, LifecycleActionToken=token)


def _group_description(w: Rig) -> dict[str, Any]:
    groups = w.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[w.group])
    return dict(groups["AutoScalingGroups"][0])


@pytest.mark.parametrize(
    ("pool_state", "ec2_state"),
    [("Stopped", "stopped"), ("Running", "running"), ("Hibernated", "stopped")],
)
def test_warm_pool_fills_to_its_size_with_warm_pool_events_and_enters_its_pool_state_on_continue(
    w: Rig, pool_state: str, ec2_state: str
) -> None:
    _create_group(w, desired=1, hooks=[_hook()], max_size=4)
    (in_group,) = _states(w)
    _complete_all(w, [in_group])
    url = _lifecycle_queue(w)

    _put_warm_pool(w, PoolState=pool_state)

    warm = _warm_states(w)
    assert list(warm.values()) == ["Warmed:Pending:Wait"] * 3  # MaxSize 4 - desired 1
    assert {_ec2_state(w, i) for i in warm} == {"running"}
    assert sorted(i["AvailabilityZone"] for i in _warm_instances(w)) == list(ZONES)
    assert _routes(_drain(w, url)) == {i: (LAUNCHING, "EC2", "WarmPool") for i in warm}
    assert _states(w) == {in_group: "InService"}  # not in the group, not in its capacity
    assert _group_description(w)["DesiredCapacity"] == 1

    _complete_all(w, list(warm))

    assert _warm_states(w) == {i: f"Warmed:{pool_state}" for i in warm}
    assert {_ec2_state(w, i) for i in warm} == {ec2_state}
    assert _group_description(w)["WarmPoolSize"] == 3


@pytest.mark.parametrize(
    ("config", "size"),
    [
        ({}, 4),
        ({"MaxGroupPreparedCapacity": -1}, 4),
        ({"MaxGroupPreparedCapacity": 3}, 1),
        ({"MaxGroupPreparedCapacity": 1}, 0),
        ({"MaxGroupPreparedCapacity": 1, "MinSize": 2}, 2),
        ({"MinSize": 5}, 5),
    ],
)
def test_warm_pool_size_is_prepared_capacity_minus_desired_and_at_least_min_size(
    w: Rig, config: dict[str, int], size: int
) -> None:
    _create_group(w, desired=2, max_size=6)

    _put_warm_pool(w, **config)

    assert list(_warm_states(w).values()) == ["Warmed:Stopped"] * size
    assert len(_states(w)) == 2


def test_scale_out_draws_from_the_warm_pool_and_starts_its_stopped_instances(w: Rig) -> None:
    _create_group(w, desired=0, hooks=[_hook()], max_size=2)
    _put_warm_pool(w)
    warm = list(_warm_states(w))
    _complete_all(w, warm)
    url = _lifecycle_queue(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=1)

    (started,) = _states(w)
    assert started in warm
    assert _states(w) == {started: "Pending:Wait"}
    assert _ec2_state(w, started) == "running"
    assert _routes(_drain(w, url)) == {started: (LAUNCHING, "WarmPool", "AutoScalingGroup")}
    assert _warm_states(w) == {i: "Warmed:Stopped" for i in warm if i != started}
    _complete_all(w, [started])
    assert _states(w) == {started: "InService"}


def test_scale_out_beyond_the_warm_pool_launches_the_rest_directly(w: Rig) -> None:
    _create_group(w, desired=0, hooks=[_hook()], max_size=4)
    _put_warm_pool(w, MaxGroupPreparedCapacity=1)
    (warm,) = _warm_states(w)
    _complete_all(w, [warm])
    url = _lifecycle_queue(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=3)

    routes = _routes(_drain(w, url))
    assert set(routes) == set(_states(w))
    assert routes.pop(warm) == (LAUNCHING, "WarmPool", "AutoScalingGroup")
    assert list(routes.values()) == [(LAUNCHING, "EC2", "AutoScalingGroup")] * 2
    assert sorted(i["AvailabilityZone"] for i in _instances(w) or []) == list(ZONES)
    assert _warm_states(w) == {}  # max(0, 1 - 3)


def test_scale_in_with_reuse_returns_the_instance_to_the_warm_pool_where_it_ends_stopped(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook("release-eni", TERMINATING)], max_size=1)
    _put_warm_pool(w, InstanceReusePolicy={"ReuseOnScaleIn": True})
    instance_id = _only_instance(w)
    url = _lifecycle_queue(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=0)

    assert _states(w) == {}
    assert _warm_states(w) == {instance_id: "Warmed:Pending:Wait"}
    assert _ec2_state(w, instance_id) == "running"
    (event,) = _drain(w, url)
    assert event["detail-type"] == "EC2 Instance-terminate Lifecycle Action"
    assert _routes([event]) == {instance_id: (TERMINATING, "AutoScalingGroup", "WarmPool")}

    _complete_all(w, [instance_id], TERMINATING)

    assert _warm_states(w) == {instance_id: "Warmed:Stopped"}
    assert _ec2_state(w, instance_id) == "stopped"
    assert [(i["InstanceId"], i["LifecycleState"]) for i in _group_instances(w)] == [
        (instance_id, "Warmed:Stopped")
    ]
    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=1)
    assert _states(w) == {instance_id: "InService"}  # reused on the next scale-out
    assert _ec2_state(w, instance_id) == "running"


def test_scale_in_without_reuse_terminates_the_instance_and_the_warm_pool_refills(
    w: Rig,
) -> None:
    _create_group(w, desired=1, hooks=[_hook("release-eni", TERMINATING)], max_size=1)
    _put_warm_pool(w)
    instance_id = _only_instance(w)
    url = _lifecycle_queue(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=0)

    assert _states(w) == {instance_id: "Terminating:Wait"}
    assert _routes(_drain(w, url)) == {instance_id: (TERMINATING, "AutoScalingGroup", "EC2")}
    _complete_all(w, [instance_id], TERMINATING)
    assert _ec2_state(w, instance_id) == "terminated"
    (fresh,) = _warm_states(w).items()
    assert fresh[0] != instance_id
    assert fresh[1] == "Warmed:Stopped"


def test_describe_warm_pool_pages_its_instances_which_describe_auto_scaling_instances_lists(
    w: Rig,
) -> None:
    _create_group(w, desired=1, max_size=4)

    _put_warm_pool(w, MinSize=1, InstanceReusePolicy={"ReuseOnScaleIn": True})

    first = w.asg.describe_warm_pool(AutoScalingGroupName=w.group, MaxRecords=2)
    second = w.asg.describe_warm_pool(
        AutoScalingGroupName=w.group, MaxRecords=2, NextToken=first["NextToken"]
    )
    assert first["WarmPoolConfiguration"] == {
        "MinSize": 1,
        "PoolState": "Stopped",
        "InstanceReusePolicy": {"ReuseOnScaleIn": True},
    }
    assert (len(first["Instances"]), len(second["Instances"])) == (2, 1)
    assert "NextToken" not in second
    warm = first["Instances"] + second["Instances"]
    assert {i["LifecycleState"] for i in warm} == {"Warmed:Stopped"}
    assert {i["HealthStatus"] for i in warm} == {"Healthy"}
    assert {i["LaunchTemplate"]["LaunchTemplateName"] for i in warm} == {"workers-lt"}
    group = _group_description(w)
    assert (group["DesiredCapacity"], len(group["Instances"]), group["WarmPoolSize"]) == (1, 1, 3)
    listed = {i["InstanceId"]: i["LifecycleState"] for i in _group_instances(w)}
    assert listed == {**_states(w), **{i["InstanceId"]: "Warmed:Stopped" for i in warm}}


def test_abandoning_a_warm_pool_launch_terminates_the_instance_and_refills_after_backoff(
    w: Rig,
) -> None:
    _create_group(w, desired=0, hooks=[_hook()], max_size=1)
    _put_warm_pool(w)
    (first,) = _warm_states(w)

    abandoned_at = w.clock.monotonic()
    _complete(w, "ABANDON", InstanceId=first)

    assert _ec2_state(w, first) == "terminated"
    assert _warm_states(w) == {}
    refill = _wait_for(lambda: next(iter(_warm_states(w)), None))
    assert w.clock.monotonic() - abandoned_at >= 10.0  # replacement_backoff
    assert refill != first
    assert _warm_states(w) == {refill: "Warmed:Pending:Wait"}


def test_warm_pool_launch_heartbeat_timeout_applies_the_hooks_default_result(w: Rig) -> None:
    _create_group(w, desired=0, hooks=[_hook(heartbeat=30, default="CONTINUE")], max_size=1)
    _put_warm_pool(w)
    (instance_id,) = _warm_states(w)
    deadline = _action(w, instance_id)["deadline"]

    _wait_for(lambda: _warm_states(w)[instance_id] == "Warmed:Stopped")

    assert w.clock.monotonic() >= deadline
    assert _ec2_state(w, instance_id) == "stopped"


def test_lowering_max_size_shrinks_the_warm_pool_newest_first(w: Rig) -> None:
    _create_group(w, desired=0, max_size=3)
    _put_warm_pool(w)
    oldest, *newer = _warm_states(w)

    w.asg.update_auto_scaling_group(AutoScalingGroupName=w.group, MaxSize=1)

    assert _warm_states(w) == {oldest: "Warmed:Stopped"}
    assert {_ec2_state(w, i) for i in newer} == {"terminated"}


def test_force_deleting_the_warm_pool_terminates_its_instances_at_once(w: Rig) -> None:
    _create_group(w, desired=0, hooks=[_hook("release-eni", TERMINATING)], max_size=2)
    _put_warm_pool(w)
    warm = list(_warm_states(w))

    w.asg.delete_warm_pool(AutoScalingGroupName=w.group, ForceDelete=True)

    assert {_ec2_state(w, i) for i in warm} == {"terminated"}
    described = w.asg.describe_warm_pool(AutoScalingGroupName=w.group)
    assert "WarmPoolConfiguration" not in described
    assert described["Instances"] == []
    assert "WarmPoolSize" not in _group_description(w)
    assert w.fidelity.pending_actions() == []


def test_deleting_the_warm_pool_is_pending_until_terminate_hooks_let_its_instances_go(
    w: Rig,
) -> None:
    _create_group(w, desired=0, hooks=[_hook("release-eni", TERMINATING)], max_size=1)
    _put_warm_pool(w)
    (instance_id,) = _warm_states(w)
    url = _lifecycle_queue(w)

    w.asg.delete_warm_pool(AutoScalingGroupName=w.group)

    described = w.asg.describe_warm_pool(AutoScalingGroupName=w.group)
    assert described["WarmPoolConfiguration"]["Status"] == "PendingDelete"
    assert _warm_states(w) == {instance_id: "Warmed:Terminating:Wait"}
    assert _routes(_drain(w, url)) == {instance_id: (TERMINATING, "WarmPool", "EC2")}
    _complete_all(w, [instance_id], TERMINATING)
    assert _ec2_state(w, instance_id) == "terminated"
    assert "WarmPoolConfiguration" not in w.asg.describe_warm_pool(AutoScalingGroupName=w.group)


def test_scale_out_while_the_warm_pool_initialises_launches_directly_and_trims_the_pool(
    w: Rig,
) -> None:
    _create_group(w, desired=0, hooks=[_hook()], max_size=2)
    _put_warm_pool(w)
    oldest, newest = _warm_states(w)  # both still in Warmed:Pending:Wait
    url = _lifecycle_queue(w)

    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=1)

    (launched,) = _states(w)
    assert _routes(_drain(w, url)) == {launched: (LAUNCHING, "EC2", "AutoScalingGroup")}
    assert _warm_states(w) == {oldest: "Warmed:Pending:Wait"}  # MaxSize 2 - desired 1
    assert _ec2_state(w, newest) == "terminated"
    assert {a["instance_id"] for a in w.fidelity.pending_actions()} == {oldest, launched}


def test_a_group_with_launch_suspended_launches_nothing_until_resumed(w: Rig) -> None:
    """AWS: with Launch suspended the group cannot scale out, nor replace what it terminates
    (warm pool included); resuming Launch replaces at once what the group lacks."""
    _create_group(w, 1)
    (first,) = _states(w)
    w.asg.suspend_processes(AutoScalingGroupName=w.group, ScalingProcesses=["Launch"])
    # WHEN the group scales out and loses an instance while Launch is suspended
    w.asg.set_desired_capacity(AutoScalingGroupName=w.group, DesiredCapacity=3)
    w.asg.terminate_instance_in_auto_scaling_group(
        InstanceId=first, ShouldDecrementDesiredCapacity=False
    )
    w.clock.sleep(30)  # past the replacement back-off
    # THEN nothing launched, desired stays 3
    assert _states(w) == {}
    group = w.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[w.group])
    assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 3
    # WHEN Launch is resumed, THEN the group launches the three it lacks at once
    w.asg.resume_processes(AutoScalingGroupName=w.group, ScalingProcesses=["Launch"])
    assert len(_states(w)) == 3


# -- instance refresh and the instance maintenance policy --------------------------------------


def _refresh(w: Rig) -> dict[str, Any]:
    """The group's newest instance refresh, as DescribeInstanceRefreshes lists it."""
    return w.asg.describe_instance_refreshes(AutoScalingGroupName=w.group)["InstanceRefreshes"][0]


def _watch_refresh(w: Rig, timeout: float = 20.0) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Poll the group until its refresh ends; return the refresh and every state seen."""
    seen: list[dict[str, str]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen.append(_states(w))
        refresh = _refresh(w)
        if refresh["Status"] in {"Successful", "Failed", "Cancelled"}:
            return refresh, seen
        time.sleep(0.005)
    raise AssertionError(f"refresh still {_refresh(w)['Status']}")


def _serving(states: dict[str, str]) -> int:
    return sum(1 for s in states.values() if s.startswith("Pending") or s == "InService")


def test_a_launch_first_refresh_launches_a_batch_before_terminating_within_max_healthy(
    w: Rig,
) -> None:
    """AWS (instance-refresh-overview): with MaxHealthyPercentage above 100 the refresh
    launches new instances first, up to that share of desired capacity, and terminates old
    ones only once the new ones are InService and warmed up."""
    _create_group(w, 6)
    old = set(_states(w))
    w.asg.start_instance_refresh(
        AutoScalingGroupName=w.group,
        Preferences={
            "MinHealthyPercentage": 100,
            "MaxHealthyPercentage": 150,
            "InstanceWarmup": 30,
        },
    )
    refresh, seen = _watch_refresh(w)
    assert refresh["Status"] == "Successful", refresh
    assert (refresh["PercentageComplete"], refresh["InstancesToUpdate"]) == (100, 0)
    # never more than 150% of desired serving, never fewer than 100% in service
    assert max(_serving(s) for s in seen) == 9
    assert min(sum(1 for v in s.values() if v == "InService") for s in seen) >= 6
    final = _states(w)
    assert len(final) == 6 and not set(final) & old
    assert {_ec2_state(w, i) for i in old} == {"terminated"}


def test_a_terminate_first_refresh_replaces_batches_within_min_healthy(w: Rig) -> None:
    """AWS: at MaxHealthyPercentage 100 the refresh terminates first, desired minus
    MinHealthyPercentage at a time, and launches the replacements at once."""
    _create_group(w, 6)
    old = set(_states(w))
    w.asg.start_instance_refresh(
        AutoScalingGroupName=w.group,
        Preferences={"MinHealthyPercentage": 50, "MaxHealthyPercentage": 100, "InstanceWarmup": 30},
    )
    refresh, seen = _watch_refresh(w)
    assert refresh["Status"] == "Successful", refresh
    assert max(_serving(s) for s in seen) == 6
    # batches of 3 (half of 6): the old instances go three at a time, 30 s warm-up apart
    old_left = [6] + [len(set(s) & old) for s in seen]
    assert list(dict.fromkeys(old_left)) == [6, 3, 0]
    assert not set(_states(w)) & old and len(_states(w)) == 6


def test_a_refresh_fails_when_its_replacements_keep_being_abandoned(w: Rig) -> None:
    """AWS (StartInstanceRefresh): a refresh can fail on EC2 launch failures; here its
    replacements' launch hooks ABANDON, the group replaces them, and the refresh fails
    (after three in a row) with a reason, back at desired with its old instances serving."""
    _create_group(w, 2, [_hook()])
    for instance_id in _states(w):
        _complete(w, "CONTINUE", InstanceId=instance_id)
    old = set(_states(w))
    w.asg.start_instance_refresh(
        AutoScalingGroupName=w.group,
        Preferences={"MinHealthyPercentage": 100, "MaxHealthyPercentage": 150, "InstanceWarmup": 0},
    )
    abandoned: set[str] = set()
    end = time.monotonic() + 20
    while _refresh(w)["Status"] not in {"Failed", "Successful"} and time.monotonic() < end:
        for action in w.fidelity.pending_actions():
            if action["instance_id"] not in old and action["instance_id"] not in abandoned:
                _complete(w, "ABANDON", InstanceId=action["instance_id"])
                abandoned.add(action["instance_id"])
        time.sleep(0.005)
    refresh = _refresh(w)
    assert refresh["Status"] == "Failed", refresh
    assert "3 replacement instances in a row" in refresh["StatusReason"]
    assert len(abandoned) == 3
    _wait_for(lambda: set(_states(w)) == old)  # the surge is gone, the old ones serve


def test_one_refresh_at_a_time_cancel_and_the_maintenance_policy_in_describe(w: Rig) -> None:
    """AWS: a second StartInstanceRefresh while one is active fails with
    InstanceRefreshInProgress; CancelInstanceRefresh ends it (ActiveInstanceRefreshNotFound
    with none); the group's InstanceMaintenancePolicy is validated, shown, and the refresh's
    default."""
    w.asg.create_auto_scaling_group(
        AutoScalingGroupName=w.group,
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=2,
        LaunchTemplate={"LaunchTemplateName": "workers-lt"},
        VPCZoneIdentifier=",".join(w.subnets.values()),
        InstanceMaintenancePolicy={"MinHealthyPercentage": 100, "MaxHealthyPercentage": 110},
        DefaultInstanceWarmup=600,
    )
    group = w.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[w.group])
    described = group["AutoScalingGroups"][0]
    assert described["InstanceMaintenancePolicy"] == {
        "MinHealthyPercentage": 100,
        "MaxHealthyPercentage": 110,
    }
    with pytest.raises(ClientError, match="cannot be greater than 100"):
        w.asg.update_auto_scaling_group(
            AutoScalingGroupName=w.group,
            InstanceMaintenancePolicy={"MinHealthyPercentage": 0, "MaxHealthyPercentage": 150},
        )
    w.asg.start_instance_refresh(AutoScalingGroupName=w.group)
    assert _refresh(w)["Preferences"]["MaxHealthyPercentage"] == 110  # the policy's
    assert _refresh(w)["Preferences"]["InstanceWarmup"] == 600  # DefaultInstanceWarmup
    with pytest.raises(ClientError) as second:
        w.asg.start_instance_refresh(AutoScalingGroupName=w.group)
    assert second.value.response["Error"]["Code"] == "InstanceRefreshInProgress"
    w.asg.cancel_instance_refresh(AutoScalingGroupName=w.group)
    _wait_for(lambda: _refresh(w)["Status"] == "Cancelled")
    with pytest.raises(ClientError) as none:
        w.asg.cancel_instance_refresh(AutoScalingGroupName=w.group)
    assert none.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"
    _wait_for(lambda: _serving(_states(w)) == 2)  # the cancelled surge does not stay


def test_a_refresh_replaces_nothing_while_launch_is_suspended_and_goes_on_once_resumed(
    w: Rig,
) -> None:
    """AWS (how suspended processes affect other processes): with Launch suspended
    "InstanceRefresh does not replace instances"; the paused refresh stays InProgress (the
    sandbox counts it settled: only a person moves it) and finishes once Launch resumes."""
    _create_group(w, 2)
    old = set(_states(w))
    w.asg.suspend_processes(AutoScalingGroupName=w.group, ScalingProcesses=["Launch"])
    w.asg.start_instance_refresh(
        AutoScalingGroupName=w.group,
        Preferences={"MinHealthyPercentage": 50, "MaxHealthyPercentage": 100, "InstanceWarmup": 0},
    )
    w.clock.sleep(60)  # twelve of the refresh's looks
    assert _refresh(w)["Status"] == "InProgress"
    assert set(_states(w)) == old  # nothing terminated, nothing launched
    assert w.fidelity.settled()
    w.asg.resume_processes(AutoScalingGroupName=w.group, ScalingProcesses=["Launch"])
    assert not w.fidelity.settled()
    refresh, _ = _watch_refresh(w)
    assert refresh["Status"] == "Successful"
    assert not set(_states(w)) & old
