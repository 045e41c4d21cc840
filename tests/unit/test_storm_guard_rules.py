"""The storm guard's counting rules on Auto Scaling's tags (moto): what counts, for how long,
and what a trip leaves on the group."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from guard_launch_storm import guard
from moto import mock_aws

from enipin_core.stormguard import (
    FAILED_PREFIX,
    TRIPPED_KEY,
    GuardSettings,
    read,
    record_failure,
    release,
)

GROUP = "workers"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SETTINGS = GuardSettings(failures=3, window_minutes=60)


@pytest.fixture(scope="module")
def moto_subnet() -> Iterator[str]:
    """One moto account for the module (starting one costs a second): a subnet and a template."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        ec2.create_launch_template(
            LaunchTemplateName="workers-lt", LaunchTemplateData={"ImageId": "ami-12c6146b"}
        )
        yield subnet


@pytest.fixture
def autoscaling(moto_subnet: str) -> Iterator[Any]:
    """A fresh group (no instances) with one tag of the user's own."""
    client = boto3.client("autoscaling", region_name="us-east-1")
    client.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        LaunchTemplate={"LaunchTemplateName": "workers-lt"},
        VPCZoneIdentifier=moto_subnet,
        Tags=[{"Key": "team", "Value": "licences", "PropagateAtLaunch": True}],
    )
    yield client
    client.delete_auto_scaling_group(AutoScalingGroupName=GROUP, ForceDelete=True)


def suspended(autoscaling: Any) -> list[str]:
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])[
        "AutoScalingGroups"
    ]
    return [p["ProcessName"] for p in group["SuspendedProcesses"]]


def tags(autoscaling: Any) -> dict[str, str]:
    found = autoscaling.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": [GROUP]}])
    return {t["Key"]: t["Value"] for t in found["Tags"]}


def run_state(outcome: str = "COMPLETED", result: str = "ABANDON", **extra: Any) -> dict[str, Any]:
    return {
        "instanceId": "i-1",
        "lifecycle": {"groupName": GROUP, "instanceId": "i-1", "hookName": "h", "token": "t"},
        "lifecycleResult": result,
        "lifecycleOutcome": outcome,
        **extra,
    }


def test_the_threshold_within_the_window_suspends_launch_and_says_why(autoscaling: Any) -> None:
    for n, instance_id in enumerate(("i-1", "i-2"), start=1):
        state = record_failure(autoscaling, GROUP, instance_id, NOW, SETTINGS)
        assert (len(state.failures), state.tripped) == (n, None)
    assert suspended(autoscaling) == []
    state = record_failure(autoscaling, GROUP, "i-3", NOW, SETTINGS)
    assert state.tripped_now and suspended(autoscaling) == ["Launch"]
    # the count is cleared at the trip; the user's own tags are left alone
    assert set(tags(autoscaling)) == {"team", TRIPPED_KEY}
    assert "3 launches given up in 60 min" in tags(autoscaling)[TRIPPED_KEY]
    assert f"enipin guard release --asg {GROUP}" in tags(autoscaling)[TRIPPED_KEY]


class _DeletesAfter:
    """An Auto Scaling client whose first DeleteTags waits for ``first`` to run whole."""

    def __init__(self, client: Any, first: Callable[[], object]) -> None:
        self._client, self._first = client, first

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def delete_tags(self, **kwargs: Any) -> Any:
        first, self._first = self._first, lambda: None
        first()
        return self._client.delete_tags(**kwargs)


def test_two_failures_at_the_threshold_at_once_both_trip_and_nothing_is_lost(
    autoscaling: Any,
) -> None:
    # GIVEN one failure short of the threshold, and two more counted at once: i-4 writes its tag
    # and reads the count while i-3, having read it too, has not yet cleared it (tags have no
    # conditional write, so neither can know the other tripped)
    record_failure(autoscaling, GROUP, "i-1", NOW, SETTINGS)
    record_failure(autoscaling, GROUP, "i-2", NOW, SETTINGS)
    autoscaling.create_or_update_tags(
        Tags=[
            {
                "ResourceId": GROUP,
                "ResourceType": "auto-scaling-group",
                "Key": FAILED_PREFIX + "i-4",
                "Value": "2026-11-30T12:00:00Z",
                "PropagateAtLaunch": False,
            }
        ]
    )
    second: list[Any] = []
    racing = _DeletesAfter(
        autoscaling,
        lambda: second.append(record_failure(autoscaling, GROUP, "i-4", NOW, SETTINGS)),
    )
    first = record_failure(racing, GROUP, "i-3", NOW, SETTINGS)
    # THEN both trip (at least once is the promise: a lost trip would let the loop run), Launch
    # is suspended, the group says why, and the count is gone: no failure left to trip again
    assert first.tripped_now and second[0].tripped_now
    assert len(first.failures) == len(second[0].failures) == 4
    assert suspended(autoscaling) == ["Launch"]
    assert set(tags(autoscaling)) == {"team", TRIPPED_KEY}


def test_failures_past_the_window_do_not_count_and_are_forgotten(autoscaling: Any) -> None:
    record_failure(autoscaling, GROUP, "i-1", NOW - timedelta(minutes=90), SETTINGS)
    record_failure(autoscaling, GROUP, "i-2", NOW - timedelta(minutes=61), SETTINGS)
    state = record_failure(autoscaling, GROUP, "i-3", NOW, SETTINGS)
    assert len(state.failures) == 1 and state.tripped is None
    assert suspended(autoscaling) == []
    assert [k for k in tags(autoscaling) if k.startswith(FAILED_PREFIX)] == [FAILED_PREFIX + "i-3"]


def test_one_instance_counts_once_however_often_its_failure_is_recorded(autoscaling: Any) -> None:
    for _ in range(5):  # a retried invocation, a redrive
        state = record_failure(autoscaling, GROUP, "i-1", NOW, SETTINGS)
    assert len(state.failures) == 1 and suspended(autoscaling) == []


def test_launch_resumed_by_hand_leaves_the_guard_armed(autoscaling: Any) -> None:
    for instance_id in ("i-1", "i-2", "i-3"):
        record_failure(autoscaling, GROUP, instance_id, NOW, SETTINGS)
    # an operator resumes Launch in the console, the trip tag left on the group
    autoscaling.resume_processes(AutoScalingGroupName=GROUP, ScalingProcesses=["Launch"])
    for instance_id in ("i-4", "i-5"):
        assert not record_failure(autoscaling, GROUP, instance_id, NOW, SETTINGS).tripped_now
    assert suspended(autoscaling) == []
    assert record_failure(autoscaling, GROUP, "i-6", NOW, SETTINGS).tripped_now
    assert suspended(autoscaling) == ["Launch"]


def test_release_resumes_launch_and_clears_only_the_guards_tags(autoscaling: Any) -> None:
    for instance_id in ("i-1", "i-2", "i-3"):
        record_failure(autoscaling, GROUP, instance_id, NOW, SETTINGS)
    released = release(autoscaling, GROUP)
    assert released.tripped is not None
    assert suspended(autoscaling) == [] and set(tags(autoscaling)) == {"team"}
    assert read(autoscaling, GROUP, NOW, 60).failures == ()


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (run_state(outcome="ALREADY_FINISHED"), "the action had ended without this run"),
        (run_state(result="CONTINUE"), "LaunchFailureResult=CONTINUE: the instance serves"),
        (run_state(lifecycle=None), "a replay or repair gives no action up"),
    ],
    ids=["already-finished", "continue", "no-action"],
)
def test_only_an_abandon_this_run_delivered_counts(
    autoscaling: Any, state: dict[str, Any], why: str
) -> None:
    out = guard(autoscaling, state, NOW, GuardSettings(failures=1, window_minutes=60))
    assert out["stormGuard"] is None, why
    assert set(tags(autoscaling)) == {"team"} and suspended(autoscaling) == []


def test_a_delivered_abandon_counts_and_zero_turns_the_guard_off(autoscaling: Any) -> None:
    off = guard(autoscaling, run_state(), NOW, GuardSettings(failures=0, window_minutes=60))
    assert off["stormGuard"] is None and set(tags(autoscaling)) == {"team"}
    on = guard(autoscaling, run_state(), NOW, GuardSettings(failures=1, window_minutes=60))
    assert on["stormGuard"]["trippedNow"] is True and suspended(autoscaling) == ["Launch"]
