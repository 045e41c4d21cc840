"""Rolling updates: an instance refresh of a pinned group, launch-first and terminate-first.

Every replacement goes through the launch hook (pinned, verified in the guest, CONTINUE) and
every old instance through the terminate hook (its ENI back in the pool), so the pool's MACs
carry over to the new instances: no ENI made, none lost, none left on a terminated instance.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import (
    assert_no_eni_doubled,
    assert_pinned,
    executions_for,
    in_service,
    path_of,
    wait_until,
)

from enipin.cli import main
from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.base import REGION

GROUP_SIZE = 12

LAUNCH_FIRST = {"MinHealthyPercentage": 100, "MaxHealthyPercentage": 125, "InstanceWarmup": 60}
TERMINATE_FIRST = {"MinHealthyPercentage": 75, "MaxHealthyPercentage": 100, "InstanceWarmup": 60}


def pool(sb: Sandbox) -> dict[str, dict[str, Any]]:
    enis = sb.client("ec2").describe_network_interfaces(
        Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
    )["NetworkInterfaces"]
    return {e["NetworkInterfaceId"]: e for e in enis}


def latest_refresh(sb: Sandbox) -> dict[str, Any]:
    refreshes = sb.client("autoscaling").describe_instance_refreshes(
        AutoScalingGroupName=sb.group_name
    )["InstanceRefreshes"]
    return dict(refreshes[0])


@pytest.mark.parametrize(
    ("preferences", "pool_per_az"),
    # launch-first: 4 per AZ plus a spare each, which a batch of 3 (125% of 12) takes;
    # terminate-first: no spare at all, each replacement waits for its old instance's ENI
    [(LAUNCH_FIRST, 5), (TERMINATE_FIRST, 4)],
    ids=["launch-first", "terminate-first"],
)
def test_a_refreshed_group_of_twelve_ends_replaced_pinned_verified_with_its_macs(
    sandbox: Any, preferences: dict[str, int], pool_per_az: int
) -> None:
    sb = sandbox(azs=3, pool_per_az=pool_per_az)
    sb.scale_out(GROUP_SIZE)
    sb.settle()
    old = set(in_service(sb))
    before = pool(sb)
    macs_before = {e["MacAddress"] for e in before.values()}
    assert len(old) == GROUP_SIZE

    sb.client("autoscaling").start_instance_refresh(
        AutoScalingGroupName=sb.group_name, Preferences=preferences
    )
    wait_until(lambda: latest_refresh(sb)["Status"] not in {"Pending", "InProgress"}, sb)
    sb.settle()

    refresh = latest_refresh(sb)
    assert refresh["Status"] == "Successful", refresh
    new = set(in_service(sb))
    assert len(new) == GROUP_SIZE and not new & old  # every instance replaced
    for instance_id in new:
        eni = assert_pinned(sb, instance_id)
        assert eni["MacAddress"] in macs_before
        (run,) = executions_for(sb, instance_id)
        assert run["status"] == "SUCCEEDED"
        path = path_of(sb, run["executionArn"])
        assert path.index("IsNicVerified?") < path.index("CompleteLaunch"), path
    ended = {
        (a["instance_id"], a["transition"]): a["result"] for a in sb.autoscaling.ended_actions()
    }
    assert {ended[(i, "autoscaling:EC2_INSTANCE_LAUNCHING")] for i in new} == {"CONTINUE"}
    assert {ended[(i, "autoscaling:EC2_INSTANCE_TERMINATING")] for i in old} == {"CONTINUE"}
    # the pool is the same ENIs with the same MACs: none made, none lost
    after = pool(sb)
    assert {i: e["MacAddress"] for i, e in after.items()} == {
        i: e["MacAddress"] for i, e in before.items()
    }
    if pool_per_az * 3 == GROUP_SIZE:  # no spare: the very MACs the old instances held
        assert {e["MacAddress"] for e in after.values() if e.get("Attachment")} == macs_before
    assert_no_eni_doubled(sb)


def test_doctor_fails_a_launch_first_batch_larger_than_the_spares_and_such_a_refresh_fails(
    sandbox: Any,
) -> None:
    # MaxSize 12 over 3 AZs with 5 ENIs each: the pool check passes (4 + 1 spare per AZ)
    sb = sandbox(azs=3, pool_per_az=5, max_size=GROUP_SIZE)
    sb.scale_out(GROUP_SIZE)
    sb.settle()
    old = set(in_service(sb))
    # the operator's rolling-update policy: launch half the group first (a batch of 6)
    sb.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=sb.group_name,
        InstanceMaintenancePolicy={"MinHealthyPercentage": 100, "MaxHealthyPercentage": 150},
    )

    found = doctor_findings()
    checks = {f["check"]: f for f in found}
    assert checks["pool"]["verdict"] == "PASS", checks["pool"]
    refresh_check = checks["refresh"]
    assert refresh_check["verdict"] == "FAIL", refresh_check
    assert "batch of 6" in refresh_check["saw"] and "short 1 in us-east-1a" in refresh_check["saw"]
    assert "MaxHealthyPercentage" in refresh_check["fix"]

    # started anyway (its preferences from the policy): three new instances take the spares,
    # three wait on an empty pool until ABANDON, again and again, and the refresh fails
    sb.client("autoscaling").start_instance_refresh(
        AutoScalingGroupName=sb.group_name, Preferences={"InstanceWarmup": 60}
    )
    wait_until(lambda: latest_refresh(sb)["Status"] not in {"Pending", "InProgress"}, sb)
    sb.settle()
    refresh = latest_refresh(sb)
    assert refresh["Status"] == "Failed", refresh
    assert refresh["Preferences"]["MaxHealthyPercentage"] == 150
    # nothing lost: back at twelve, each pinned, no ENI doubled or left on the dead, and the
    # old instances that the refresh never reached still serve
    serving = set(in_service(sb))
    assert len(serving) == GROUP_SIZE and serving & old
    for instance_id in serving:
        assert_pinned(sb, instance_id)
    assert_no_eni_doubled(sb)


def doctor_findings() -> list[dict[str, str]]:
    result = CliRunner().invoke(main, ["--region", REGION, "doctor", "--json"])
    assert result.exit_code == 1, result.output
    found: list[dict[str, str]] = json.loads(result.stdout)
    return found
