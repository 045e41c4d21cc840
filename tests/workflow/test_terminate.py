"""The terminate workflow, driven by the group's own lifecycle events in the sandbox: it takes
the pool ENIs off the instance, waits until they are back in the pool, and never blocks the
termination."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from conftest import (
    assert_no_eni_doubled,
    describe,
    executions_for,
    finish,
    group_instances,
    in_service,
    instance_state,
    load_event,
    path_of,
    pool_enis_on,
    wait_until,
)

from enipin_core.errors import ALL_ERRORS
from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
TERMINATE = "TerminateStateMachine"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


def macs_in_use(sb: Sandbox) -> set[str]:
    return {e["MacAddress"] for i in in_service(sb) for e in pool_enis_on(sb, i)}


def pool_statuses(sb: Sandbox) -> list[str]:
    enis = sb.client("ec2").describe_network_interfaces(
        Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
    )["NetworkInterfaces"]
    return sorted(e["Status"] for e in enis)


def test_scale_in_releases_the_enis_and_the_next_scale_out_reuses_the_same_macs(
    sandbox: Factory,
) -> None:
    # GIVEN a pool of exactly three ENIs, and an EC2 that would take hours to free them itself
    sb = sandbox(azs=3, pool_per_az=1, release_delay=36_000)
    sb.scale_out(3)
    sb.settle()
    first = macs_in_use(sb)
    assert len(first) == 3
    # WHEN the group scales in to zero
    sb.scale_in(3)
    sb.settle()
    # THEN every ENI came back to the pool through the terminate workflow, before termination
    assert pool_statuses(sb) == ["available"] * 3
    runs = sb.executions(TERMINATE)
    assert [r["status"] for r in runs] == ["SUCCEEDED"] * 3
    for run in runs:
        path = path_of(sb, run["executionArn"])
        assert path[:5] == [
            "ValidateEvent",
            "IsTerminationToRelease?",
            "FindPoolEnis",
            "HasPoolEnis?",
            "DetachEnis",
        ]
        assert path[-2:] == ["CompleteTermination", "EnisReleased"]
        assert "ForceDetachEnis" not in path
        output = json.loads(describe(sb, run["executionArn"])["output"])
        assert output["lifecycleResult"] == "CONTINUE"
        assert instance_state(sb, output["instanceId"]) == "terminated"
    # AND the next scale-out gets exactly the same MAC addresses back
    sb.scale_out(3)
    sb.settle()
    assert macs_in_use(sb) == first
    assert_no_eni_doubled(sb)


def scale_in_a_guest_holding_its_eni(sb: Sandbox) -> tuple[str, str, dict[str, Any]]:
    """One pinned instance whose guest will not let go of its ENI, scaled in; its run."""
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    (eni,) = pool_enis_on(sb, instance_id)
    sb.ec2.hold_in_guest(eni["NetworkInterfaceId"])
    sb.scale_in(1)
    sb.settle()
    (run,) = executions_for(sb, instance_id, TERMINATE)
    return instance_id, eni["NetworkInterfaceId"], run


def test_a_detach_the_guest_holds_up_is_forced_after_the_grace_period(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, release_delay=36_000, parameters={"DetachGraceSeconds": 20})
    _, _, run = scale_in_a_guest_holding_its_eni(sb)
    assert run["status"] == "SUCCEEDED"
    path = path_of(sb, run["executionArn"])
    graceful, forced = path.index("DetachEnis"), path.index("ForceDetachEnis")
    assert graceful < forced < path.index("CompleteTermination")
    assert path.count("CheckDetached") >= 4  # polled through the 20 s grace period first
    assert pool_statuses(sb) == ["available"]


def test_a_failed_release_still_lets_the_termination_go_on_and_fails_with_a_named_error(
    sandbox: Factory,
) -> None:
    # GIVEN a guest that holds on to its ENI, and a wait too short to ever reach the forced detach
    sb = sandbox(
        azs=1,
        pool_per_az=1,
        release_delay=60,
        parameters={"DetachGraceSeconds": 600, "DetachWaitSeconds": 30},
    )
    instance_id, eni_id, run = scale_in_a_guest_holding_its_eni(sb)
    assert run["status"] == "FAILED"
    assert run["error"] == "EniStuckDetaching"
    assert eni_id in run["cause"]
    assert path_of(sb, run["executionArn"])[-2:] == [
        "ContinueTerminationAfterFailure",
        "ReleaseFailed",
    ]
    # the termination was not held: the instance is gone and no action is pending
    assert instance_state(sb, instance_id) == "terminated"
    assert sb.autoscaling.pending_actions() == []
    # and EC2 itself hands the ENI back once the instance is gone
    wait_until(lambda: pool_statuses(sb) == ["available"], sb)


def test_a_terminate_event_before_the_launch_finished_leaves_no_eni_behind(
    sandbox: Factory,
) -> None:
    # GIVEN a launch that has attached its ENI and waits for a slow SSM agent
    sb = sandbox(azs=1, pool_per_az=2, agent_delay=400, release_delay=36_000)
    sb.scale_out(1)
    wait_until(lambda: len(group_instances(sb)) == 1, sb)
    (instance_id,) = group_instances(sb)
    wait_until(lambda: bool(pool_enis_on(sb, instance_id)), sb)
    # WHEN the instance is terminated while the launch still runs
    sb.client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
    )
    sb.settle()
    # THEN the terminate workflow released the ENI and let the termination go on
    (release,) = executions_for(sb, instance_id, TERMINATE)
    assert release["status"] == "SUCCEEDED"
    assert "DetachEnis" in path_of(sb, release["executionArn"])
    # AND the launch ended without putting anything back on the dying instance
    (launch,) = executions_for(sb, instance_id)
    assert launch["status"] == "FAILED"
    # which check noticed first depends on timing; it is always one of our named errors
    assert launch["error"] in {error.__name__ for error in ALL_ERRORS}
    assert instance_state(sb, instance_id) == "terminated"
    assert pool_enis_on(sb, instance_id) == []
    assert pool_statuses(sb) == ["available", "available"]
    assert sb.autoscaling.pending_actions() == []


def test_a_duplicated_terminate_event_starts_one_execution(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, release_delay=36_000)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    sb.autoscaling.duplicate_next(1, TERMINATING)
    sb.scale_in(1)
    sb.settle()
    assert sb.ledger.invocations["enipin-DispatchEventFunction"] == 3  # launch + two copies
    (run,) = executions_for(sb, instance_id, TERMINATE)
    assert run["status"] == "SUCCEEDED"
    assert run["name"].startswith(f"{instance_id}-terminate-")
    assert pool_statuses(sb) == ["available"]


def test_a_late_terminate_event_is_a_no_op(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, release_delay=36_000)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    sb.scale_in(1)
    sb.settle()
    (first,) = executions_for(sb, instance_id, TERMINATE)
    detaches = sb.ledger.by_operation()["ec2.DetachNetworkInterface"]
    # the same event again, long after the action finished
    event = json.loads(first["input"])
    late = sb.client("stepfunctions").start_execution(
        stateMachineArn=sb.state_machine_arn(TERMINATE), input=json.dumps(event)
    )
    run = finish(sb, late["executionArn"])
    assert run["status"] == "SUCCEEDED"
    assert path_of(sb, run["executionArn"])[-4:] == [
        "FindPoolEnis",
        "HasPoolEnis?",
        "CompleteTermination",
        "EnisReleased",
    ]
    assert sb.ledger.by_operation()["ec2.DetachNetworkInterface"] == detaches
    assert pool_statuses(sb) == ["available"]


def test_the_terminate_workflow_ignores_a_launch_event(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    run = finish(
        sb,
        sb.client("stepfunctions").start_execution(
            stateMachineArn=sb.state_machine_arn(TERMINATE),
            input=json.dumps(load_event("launch-lifecycle-action")),
        )["executionArn"],
    )
    assert run["status"] == "SUCCEEDED"
    assert path_of(sb, run["executionArn"]) == [
        "ValidateEvent",
        "IsTerminationToRelease?",
        "EventIgnored",
    ]
    assert sb.ledger.by_operation() == {}
