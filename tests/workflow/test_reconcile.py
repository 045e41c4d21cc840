"""The reconciler in the sandbox: after each kind of drift, one reconciliation (and the
workflows it starts) restores "every InService instance has exactly one pool ENI, and no pool
ENI sits on an instance outside the group"."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner
from conftest import (
    group_instances,
    in_service,
    launch_waiting_for_its_agent,
    path_of,
    pool_enis_on,
    wait_until,
)

from enipin.cli import main
from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def reconcile(sb: Sandbox, *flags: str, exit_code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["--region", "us-east-1", "reconcile", "--json", *flags])
    assert result.exit_code == exit_code, result.output
    # The reconciler runs in this process: its EMF metric lines (one line each) share the
    # captured stdout with the CLI's indented JSON, which starts on a line of its own.
    lines = result.stdout.splitlines()
    data: dict[str, Any] = json.loads("\n".join(lines[lines.index("{") :]))
    return data


def assert_converged(sb: Sandbox) -> None:
    members = group_instances(sb)
    for instance_id, member in members.items():
        if member["LifecycleState"] == "InService":
            assert len(pool_enis_on(sb, instance_id)) == 1, instance_id
    enis = sb.client("ec2").describe_network_interfaces(
        Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
    )["NetworkInterfaces"]
    holders = {e["Attachment"]["InstanceId"] for e in enis if e.get("Attachment")}
    assert holders <= set(members), holders - set(members)


def kinds(result: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((r["kind"], r["instanceId"]) for r in result["repairs"])


def test_a_group_whose_instances_predate_the_hooks_gets_every_instance_pinned(
    sandbox: Factory,
) -> None:
    # GIVEN a group that scaled out before enipin was deployed: no hook held its instances
    sb = sandbox(azs=2, pool_per_az=2, deploy=False)
    sb.scale_out(3)
    wait_until(lambda: len(in_service(sb)) == 3, sb)
    sb.stack = sb.deploy(sb.template)
    # WHEN the reconciler runs
    result = reconcile(sb)
    sb.settle()
    # THEN it pinned each of them through the launch workflow, completing no action
    assert kinds(result) == sorted(("PIN", i) for i in in_service(sb))
    assert_converged(sb)
    for execution in sb.executions():
        assert "-launch-repair-" in execution["name"]
        assert "CompleteLaunch" not in path_of(sb, execution["executionArn"])
    assert kinds(reconcile(sb)) == []  # converged: the next round has nothing to do


def test_a_dropped_launch_event_is_recovered(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=2)
    sb.autoscaling.drop_next(1, LAUNCHING)
    sb.scale_out(1)
    wait_until(lambda: len(group_instances(sb)) == 1, sb)
    (instance_id,) = group_instances(sb)
    assert group_instances(sb)[instance_id]["LifecycleState"] == "Pending:Wait"
    assert sb.executions() == []
    assert kinds(reconcile(sb)) == [("RESUME", instance_id)]
    sb.settle()
    # the workflow it started completed the waiting action by instance id
    assert in_service(sb) == [instance_id]
    (run,) = sb.executions()
    assert path_of(sb, run["executionArn"])[-2:] == ["CompleteLaunch", "LaunchPinned"]
    assert_converged(sb)


def test_a_managed_name_with_no_group_behind_it_does_not_stop_the_round(
    sandbox: Factory,
) -> None:
    # GIVEN the stack manages the selftest's group, which exists only while a selftest runs,
    # and a launch event of the real group was lost
    sb = sandbox(azs=1, pool_per_az=2, parameters={"SelftestGroupName": "enipin-selftest"})
    sb.autoscaling.drop_next(1, LAUNCHING)
    sb.scale_out(1)
    wait_until(lambda: len(group_instances(sb)) == 1, sb)
    (instance_id,) = group_instances(sb)
    # WHEN the reconciler runs, THEN it reads the groups that exist (DescribeWarmPool would
    # refuse the missing one) and still recovers the real group's launch
    assert kinds(reconcile(sb)) == [("RESUME", instance_id)]
    sb.settle()
    assert in_service(sb) == [instance_id]
    assert_converged(sb)


def test_an_eni_detached_by_hand_is_attached_again(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    (eni,) = pool_enis_on(sb, instance_id)
    ec2 = sb.client("ec2")
    ec2.detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"])
    wait_until(lambda: pool_enis_on(sb, instance_id) == [], sb)
    assert kinds(reconcile(sb)) == [("PIN", instance_id)]
    sb.settle()
    (again,) = pool_enis_on(sb, instance_id)
    assert again["MacAddress"] == eni["MacAddress"]  # the pool's only ENI, so the same MAC
    assert_converged(sb)


def test_an_eni_left_on_a_stopped_instance_is_released(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=2)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    (eni,) = pool_enis_on(sb, instance_id)
    sb.client("ec2").stop_instances(InstanceIds=[instance_id])
    result = reconcile(sb)
    assert [(r["kind"], r["eniId"]) for r in result["repairs"]] == [
        ("RELEASE", eni["NetworkInterfaceId"])
    ]
    wait_until(lambda: pool_enis_on(sb, instance_id) == [], sb)


def test_a_reconciliation_during_a_running_launch_leaves_that_instance_alone(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=2, agent_delay=300)
    instance_id = launch_waiting_for_its_agent(sb)
    result = reconcile(sb)
    assert result["repairs"] == []
    assert result["busy"] == [instance_id]
    sb.settle()
    assert len(sb.executions()) == 1  # still the one launch, which pinned it
    assert_converged(sb)


def test_a_dry_run_lists_the_repairs_and_changes_nothing(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=2, deploy=False)
    sb.scale_out(1)
    wait_until(lambda: len(in_service(sb)) == 1, sb)
    sb.stack = sb.deploy(sb.template)
    result = reconcile(sb, "--dry-run")
    assert result["dryRun"] is True
    assert [(r["kind"], r["outcome"]) for r in result["repairs"]] == [("PIN", "planned")]
    sb.settle()
    assert sb.executions() == []
    assert pool_enis_on(sb, in_service(sb)[0]) == []


def test_on_its_schedule_the_reconciler_recovers_a_dropped_launch_event(
    sandbox: Factory,
) -> None:
    """EventBridge fires the stack's scheduled rules: nobody invokes the reconciler."""
    sb = sandbox(azs=1, pool_per_az=2)
    sb.autoscaling.drop_next(1, LAUNCHING)
    sb.run_schedules()
    sb.scale_out(1)
    wait_until(lambda: len(group_instances(sb)) == 1, sb)
    (instance_id,) = group_instances(sb)

    wait_until(lambda: in_service(sb) == [instance_id], sb, aws_seconds=900)

    (run,) = sb.executions()
    assert path_of(sb, run["executionArn"])[-2:] == ["CompleteLaunch", "LaunchPinned"]
    (ended,) = sb.autoscaling.ended_actions()
    assert ended["how"] == "CompleteLifecycleAction"
    assert ended["ended"] >= 120.0  # the first round: one period (2 minutes) after the deploy
    assert_converged(sb)


def test_a_resumed_action_gets_a_heartbeat_before_its_workflow_starts(sandbox: Factory) -> None:
    """The event was lost 200 s ago with a 240 s heartbeat timeout, and the agent needs 330 s:
    the workflow's own first heartbeat (half a timeout into it) would come after the hook had
    already given up, so the round heartbeats the action as it resumes it."""
    sb = sandbox(azs=1, pool_per_az=2, agent_delay=330, parameters={"HookHeartbeatTimeout": 240})
    sb.autoscaling.drop_next(1, LAUNCHING)
    sb.scale_out(1)
    wait_until(lambda: len(group_instances(sb)) == 1, sb)
    (instance_id,) = group_instances(sb)
    sb.clock.sleep(200)

    assert kinds(reconcile(sb)) == [("RESUME", instance_id)]
    sb.settle()

    assert in_service(sb) == [instance_id]
    (ended,) = sb.autoscaling.ended_actions()
    assert (ended["how"], ended["result"]) == ("CompleteLifecycleAction", "CONTINUE")
    assert_converged(sb)
