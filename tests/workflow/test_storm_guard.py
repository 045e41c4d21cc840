"""The storm guard (``GuardLaunchStorm``, ``enipin guard``): a group whose every launch fails
stops launching at the threshold and says why on the group itself; released by one command once
the cause is fixed, it launches what it lacks and pins it; a healthy burst never trips it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result
from conftest import assert_pinned, in_service, path_of, wait_until

from enipin.cli import main
from enipin_core.stormguard import FAILED_PREFIX, TRIPPED_KEY
from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
REGION = "us-east-1"
THRESHOLD = 3


def guard(*args: str) -> Result:
    return CliRunner().invoke(main, ["--region", REGION, "guard", *args])


def launch_suspended(sb: Sandbox) -> bool:
    (group,) = sb.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[sb.group_name]
    )["AutoScalingGroups"]
    return any(p["ProcessName"] == "Launch" for p in group["SuspendedProcesses"])


def guard_tags(sb: Sandbox) -> dict[str, str]:
    found = sb.client("autoscaling").describe_tags(
        Filters=[{"Name": "auto-scaling-group", "Values": [sb.group_name]}]
    )["Tags"]
    return {
        t["Key"]: t["Value"]
        for t in found
        if t["Key"] == TRIPPED_KEY or t["Key"].startswith(FAILED_PREFIX)
    }


def launches(sb: Sandbox) -> int:
    """Instances the group launched (each held by the launch hook once)."""
    actions = sb.autoscaling.ended_actions() + sb.autoscaling.pending_actions()
    return len({a["instance_id"] for a in actions if a["transition"].endswith("LAUNCHING")})


def guard_outputs(sb: Sandbox) -> list[dict[str, Any]]:
    """What GuardLaunchStorm handed on, per run that entered it."""
    sfn = sb.client("stepfunctions")
    found = []
    for execution in sb.executions():
        events = sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
        for event in events:
            details = event.get("stateExitedEventDetails", {})
            if details.get("name") == "GuardLaunchStorm":
                found.append(json.loads(details["output"])["stormGuard"])
    return found


def failing_group(sandbox: Factory) -> Sandbox:
    """Two launches at a time, every one failing: the guest's NIC never comes up."""
    sb = sandbox(azs=1, pool_per_az=4, max_size=4, parameters={"StormGuardFailures": THRESHOLD})
    sb.guests.set_default_faults({"nic_absent"})
    sb.scale_out(2)
    wait_until(lambda: launch_suspended(sb), sb)
    sb.settle()
    return sb


def test_a_group_whose_every_launch_fails_stops_launching_at_the_threshold(
    sandbox: Factory,
) -> None:
    sb = failing_group(sandbox)
    # THEN the third given-up launch suspended Launch; the one in flight beside it failed too
    # (and tripped it again if it counted before the first trip cleared the count), and nothing
    # launched after
    failed = [e for e in sb.executions() if e["status"] == "FAILED"]
    assert THRESHOLD <= len(failed) == launches(sb) <= THRESHOLD + 1
    outputs = guard_outputs(sb)
    tripping = [o["failures"] for o in outputs if o["trippedNow"]]
    assert 1 <= len(tripping) <= 2 and min(tripping) >= THRESHOLD
    assert len(outputs) == len(failed)
    for run in failed:
        assert path_of(sb, run["executionArn"])[-3:] == [
            "AbandonLaunch",
            "GuardLaunchStorm",
            "LaunchFailed",
        ]
    # the group says why; its count was cleared at the trip (the run in flight counted after)
    tags = guard_tags(sb)
    assert f"{THRESHOLD} launches given up in 60 min" in tags[TRIPPED_KEY]
    assert len([k for k in tags if k.startswith(FAILED_PREFIX)]) <= 1
    # AND twenty minutes on it still launches nothing: the loop is cut, nothing left behind
    before = launches(sb)
    sb.clock.sleep(1200)
    sb.settle()
    assert launches(sb) == before and in_service(sb) == []
    assert not sb.autoscaling.pending_actions()
    assert all(a["how"] == "CompleteLifecycleAction" for a in sb.autoscaling.ended_actions())
    assert sb.ec2.left_on_termination == []


def test_released_by_one_command_once_fixed_the_group_launches_and_pins(
    sandbox: Factory,
) -> None:
    sb = failing_group(sandbox)
    status = guard("status", "--json")
    assert status.exit_code == 1, status.output
    (row,) = json.loads(status.stdout)
    assert row["guard"] == "TRIPPED" and row["launchSuspended"] is True
    # WHEN the cause is fixed and the guard released
    sb.guests.set_default_faults(set())
    released = guard("release", "--asg", sb.group_name)
    assert released.exit_code == 0, released.output
    assert "launches resumed" in released.stdout
    sb.settle()
    # THEN the group launched the two it lacked, and pinned them; the guard is armed again
    serving = in_service(sb)
    assert len(serving) == 2
    for instance_id in serving:
        assert_pinned(sb, instance_id)
    assert guard_tags(sb) == {} and not launch_suspended(sb)
    assert guard("status").exit_code == 0


def test_a_foreign_group_is_refused_by_name(sandbox: Factory) -> None:
    sandbox(azs=1, pool_per_az=1)
    result = guard("release", "--asg", "someone-elses")
    assert result.exit_code == 2
    assert "not managed by stack" in result.output


def test_a_healthy_burst_of_fifty_never_trips_the_guard(sandbox: Factory) -> None:
    # GIVEN the default guard, 50 simultaneous launches over 3 AZs, and throttling on the way
    sb = sandbox(azs=3, pool_per_az=18, max_size=50, fast=False)  # 50 runs: real time
    sb.ledger.throttle("ec2", "AttachNetworkInterface", rate=0.2)
    sb.scale_out(50)
    sb.settle()
    # THEN every one is pinned, nothing was given up, nothing counted, nothing suspended
    assert len(in_service(sb)) == 50
    assert {e["status"] for e in sb.executions()} == {"SUCCEEDED"}
    assert guard_outputs(sb) == []
    assert guard_tags(sb) == {} and not launch_suspended(sb)
