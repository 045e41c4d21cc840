"""Warm pools in the sandbox: with either WarmPoolEni policy, every InService instance ends with
exactly one pool ENI; stopped warm instances hold one only with KEEP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import assert_no_eni_doubled, in_service, path_of, pool_enis_on

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]


def warm_instances(sb: Sandbox) -> dict[str, str]:
    pool = sb.client("autoscaling").describe_warm_pool(AutoScalingGroupName=sb.group_name)
    return {i["InstanceId"]: i["LifecycleState"] for i in pool.get("Instances", [])}


def paths_end(sb: Sandbox, machine: str) -> list[str]:
    return sorted(path_of(sb, e["executionArn"])[-1] for e in sb.executions(machine))


@pytest.mark.parametrize("policy", ["RELEASE", "KEEP"])
def test_warm_pool_transitions_keep_every_in_service_instance_pinned(
    sandbox: Factory, policy: str
) -> None:
    sb = sandbox(azs=1, pool_per_az=4, max_size=3, parameters={"WarmPoolEni": policy})
    autoscaling: Any = sb.client("autoscaling")
    autoscaling.put_warm_pool(
        AutoScalingGroupName=sb.group_name,
        MinSize=0,
        PoolState="Stopped",
        InstanceReusePolicy={"ReuseOnScaleIn": True},
    )
    sb.settle()
    warm = warm_instances(sb)
    assert sorted(warm.values()) == ["Warmed:Stopped"] * 3
    # entering the pool: no ENI (RELEASE) or pinned on the way in and kept (KEEP)
    expected = 0 if policy == "RELEASE" else 1
    assert all(len(pool_enis_on(sb, i)) == expected for i in warm)
    # WHEN the group scales out from the warm pool, then one instance goes back to it
    sb.scale_out(2)
    sb.settle()
    serving = in_service(sb)
    assert len(serving) == 2 and set(serving) <= set(warm)  # both came from the warm pool
    for instance_id in serving:
        assert len(pool_enis_on(sb, instance_id)) == 1
    sb.scale_in(1)
    sb.settle()
    # THEN the one serving keeps its ENI, and the ones back in the pool follow the policy
    (still,) = in_service(sb)
    assert len(pool_enis_on(sb, still)) == 1
    for instance_id, state in warm_instances(sb).items():
        assert state == "Warmed:Stopped"
        assert len(pool_enis_on(sb, instance_id)) == expected, (instance_id, policy)
    assert_no_eni_doubled(sb)
    # and the console shows why: entries without an ENI, or returns that kept it
    if policy == "RELEASE":
        assert "EnteredWarmPool" in paths_end(sb, "LaunchStateMachine")
    else:
        assert "EniKeptForWarmPool" in paths_end(sb, "TerminateStateMachine")
