"""`enipin chaos`: a seed fixes a run's plan; the checks catch each kind of violation when one is
planted by hand; and a small batch, as `make test` runs it, ends with none."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import finish, in_service, load_event, path_of, pool_enis_on, start

from enipin.cli import main
from enipin_lab import chaos
from enipin_lab.chaos import (
    FAULTS,
    INVARIANTS,
    MAX_DESIRED,
    PARAMETERS,
    SECOND_GROUP,
    SHAPE_FEATURES,
    STACK_DEVICE_INDEX,
    ChaosRun,
    Shape,
    Step,
    plan,
    shape_of,
)
from enipin_lab.chaos.planning import _desired_after
from enipin_lab.sandbox import TEMPLATE, Sandbox
from enipin_lab.sandbox.template import load as load_template

Factory = Callable[..., Sandbox]
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def test_a_seed_fixes_the_plan_and_another_seed_changes_it() -> None:
    assert plan(7) == plan(7)
    assert plan(7) != plan(8)


def test_eighty_seeds_draw_every_fault_and_keep_the_group_within_bounds() -> None:
    drawn: set[str] = set()
    for seed in range(1, 81):
        steps = plan(seed)
        assert {s.fault for s in steps} <= set(shape_of(seed).faults())
        assert steps[0].fault == "scale_out"
        assert [s.index for s in steps] == list(range(len(steps)))
        desired = 0
        for step in steps:
            desired = _desired_after(step.fault, step.params, desired)
            assert 0 <= desired <= MAX_DESIRED, (seed, step)
        drawn |= {s.fault for s in steps}
    assert drawn == set(FAULTS)


def test_runs_take_every_shape_and_a_fault_is_drawn_only_where_it_can_act() -> None:
    shapes = [shape_of(seed) for seed in range(1, 201)]
    for _, has in SHAPE_FEATURES:
        assert 20 <= sum(map(has, shapes)) <= 120  # each feature in a fair share of runs
    assert sum(s == Shape() for s in shapes) >= 40  # and plain shapes stay common
    assert shape_of(3) == shape_of(3)
    assert "warm_pool_resized" not in Shape().faults()
    assert "other_group_scales" not in Shape(warm_pool="KEEP").faults()
    # the pool is sized as the README says: KEEP holds ENIs for the warm pool too
    assert Shape(warm_pool="KEEP").pool_per_az > Shape(warm_pool="RELEASE").pool_per_az
    # a shape without moved hooks expects the stack's own DeviceIndex
    parameters = load_template(TEMPLATE)["Parameters"]
    assert parameters["DeviceIndex"]["Default"] == STACK_DEVICE_INDEX == Shape().device_index


def test_a_run_of_every_shape_builds_and_pins_both_groups_at_the_hooks_index(
    sandbox: Factory,
) -> None:
    # GIVEN a run shaped with a warm pool, a second group on the same pool, hooks that move
    # the ENI to device index 2, and attaches paced to a tight bucket
    shape = Shape(warm_pool="RELEASE", warm_min=1, second_group=True, device_index=2, paced=True)
    sb = sandbox(azs=2, pool_per_az=shape.pool_per_az, deploy=False)
    chaos_run = ChaosRun(sb, shape)
    chaos_run.build()
    chaos_run._scale_out({"count": 2})  # two launches at once: the second waits its turn
    sb.settle()
    # THEN each group's instances carry one pool ENI each, at index 2, and the warm one none
    serving = chaos_run.members(chaos_run.groups())
    assert sorted(serving.values()) == ["InService"] * 3
    assert any(i in chaos_run.members([SECOND_GROUP]) for i in serving)
    for instance_id in serving:
        (eni,) = pool_enis_on(sb, instance_id)
        assert eni["Attachment"]["DeviceIndex"] == 2
    assert chaos_run.warm() and all(not pool_enis_on(sb, i) for i in chaos_run.warm())
    chaos_run.check_always(None)
    chaos_run.check_converged()
    assert chaos_run.violations == []
    # and the launches waited their turns at the bucket the deployment was told of
    paths = [path_of(sb, e["executionArn"]) for e in sb.executions()]
    assert any("WaitForAttachTurn" in path for path in paths)


def pinned_run(sandbox: Factory, **kwargs: object) -> tuple[Sandbox, ChaosRun, str]:
    # a planted violation is checked at once: no describe lag may hide what was planted
    sb = sandbox(azs=1, pool_per_az=3, describe_lag=0, **kwargs)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    return sb, ChaosRun(sb), instance_id


def invariants(chaos_run: ChaosRun) -> list[str]:
    return [v.invariant for v in chaos_run.violations]


def plant_second_eni(sb: Sandbox, chaos_run: ChaosRun, instance_id: str) -> None:
    """A violation by hand: a free pool ENI attached as the instance's second one (at an index
    its hooks do not ask for: that is caught too)."""
    spare = next(e for e in chaos_run.pool() if e["Status"] == "available")
    sb.client("ec2").attach_network_interface(
        NetworkInterfaceId=spare["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=2
    )


def test_launches_that_keep_failing_trip_the_guard_and_the_operators_release_restores_the_group(
    sandbox: Factory,
) -> None:
    # GIVEN chaos's own parameters, a guard that trips at two given-up launches
    sb = sandbox(azs=1, pool_per_az=3, parameters={**PARAMETERS, "StormGuardFailures": 2})
    chaos_run = ChaosRun(sb)
    # WHEN every launch fails for 20 AWS minutes (the NIC never comes up), then is fixed
    step = Step(0, "launches_keep_failing", {"failure": "nic_absent", "fixed_after": 1200}, 0)
    chaos_run.act(step)
    # THEN the guard had tripped, the fault released it, and the group is whole again
    assert chaos_run.injected == ["launches_keep_failing"]
    assert "launches kept failing: storm guard released on " + sb.group_name in chaos_run.notes
    chaos_run.converge()
    chaos_run.check_converged()
    assert chaos_run.violations == []
    (serving,) = in_service(sb)
    assert len(pool_enis_on(sb, serving)) == 1
    abandoned = [a for a in sb.autoscaling.ended_actions() if a["result"] == "ABANDON"]
    assert len(abandoned) >= 2


def test_a_second_pool_eni_on_an_instance_is_caught(sandbox: Factory) -> None:
    sb, chaos_run, instance_id = pinned_run(sandbox)
    plant_second_eni(sb, chaos_run, instance_id)
    chaos_run.check_always(3)
    assert invariants(chaos_run) == ["eni_on_two_instances", "pool_eni_at_wrong_device_index"]
    assert chaos_run.violations[0].step == 3


def test_an_instance_terminated_with_its_pool_eni_is_caught_unless_terminated_by_hand(
    sandbox: Factory,
) -> None:
    sb, chaos_run, instance_id = pinned_run(sandbox)
    chaos_run.by_hand.add(instance_id)  # as the run records its own EC2 terminations
    sb.client("ec2").terminate_instances(InstanceIds=[instance_id])
    chaos_run.check_always(1)
    assert chaos_run.violations == []
    chaos_run.by_hand.clear()  # had the group terminated it, nothing should have been left
    chaos_run.check_always(1)
    assert invariants(chaos_run) == ["pool_eni_left_on_terminated_instance"]


def test_a_lifecycle_action_left_to_time_out_is_caught(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, parameters={"HookHeartbeatTimeout": 30})
    chaos_run = ChaosRun(sb)
    sb.autoscaling.drop_next(1, LAUNCHING)  # no workflow, no reconciler: nobody completes it
    sb.scale_out(1)
    assert chaos_run.wait(lambda: bool(sb.autoscaling.ended_actions()), 120)
    chaos_run.check_always(0)
    assert invariants(chaos_run) == ["lifecycle_action_timed_out"]


def test_a_pool_eni_at_another_index_than_the_hooks_ask_for_is_caught(sandbox: Factory) -> None:
    # GIVEN an instance pinned at the stack's index 1, in a shape whose hooks ask for 2
    sb, _, instance_id = pinned_run(sandbox)
    chaos_run = ChaosRun(sb, Shape(device_index=2))
    chaos_run.check_always(2)
    assert invariants(chaos_run) == ["pool_eni_at_wrong_device_index"]
    assert "at 1 on " + instance_id in chaos_run.violations[0].detail


def test_a_warm_instance_that_lost_its_eni_under_keep_is_caught(sandbox: Factory) -> None:
    # GIVEN WarmPoolEni=KEEP: a warm instance holds its pool ENI while stopped
    shape = Shape(warm_pool="KEEP", warm_min=1)
    sb = sandbox(azs=1, pool_per_az=3, describe_lag=0, parameters={"WarmPoolEni": "KEEP"})
    chaos_run = ChaosRun(sb, shape)
    sb.client("autoscaling").put_warm_pool(
        AutoScalingGroupName=sb.group_name, MaxGroupPreparedCapacity=1, MinSize=1
    )
    sb.settle()
    assert list(chaos_run.warm().values()) == ["Warmed:Stopped"]
    (warm_id,) = chaos_run.warm()
    chaos_run.check_converged()
    assert chaos_run.violations == []
    # WHEN someone detaches it by hand, THEN the converged check names it
    (eni,) = pool_enis_on(sb, warm_id)
    sb.client("ec2").detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"])
    assert chaos_run.wait(lambda: not pool_enis_on(sb, warm_id), 60)
    chaos_run.check_converged()
    assert invariants(chaos_run) == ["warm_instance_against_policy"]
    assert warm_id in chaos_run.violations[0].detail
    # AND had the run taken it by hand, nothing was left to keep: the way out pins it
    chaos_run.violations.clear()
    chaos_run.seen.clear()
    chaos_run.eni_by_hand.add(warm_id)
    chaos_run.check_converged()
    assert chaos_run.violations == []


def test_an_in_service_instance_without_its_eni_is_caught(sandbox: Factory) -> None:
    sb, chaos_run, instance_id = pinned_run(sandbox)
    (eni,) = pool_enis_on(sb, instance_id)
    sb.client("ec2").detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"])
    assert chaos_run.wait(lambda: not pool_enis_on(sb, instance_id), 60)
    chaos_run.check_converged()
    assert invariants(chaos_run) == ["in_service_without_one_pool_eni"]


def test_a_lifecycle_action_still_pending_once_the_run_settles_is_caught(
    sandbox: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sandbox's hook timeout (1800 s) outlasts the wait for the sandbox to settle
    sb = sandbox(azs=1, pool_per_az=1)
    chaos_run = ChaosRun(sb)
    sb.autoscaling.drop_next(1, LAUNCHING)  # no workflow, no reconciler: nobody completes it
    sb.scale_out(1)
    assert chaos_run.wait(lambda: bool(sb.autoscaling.pending_actions()), 120)
    (instance_id,) = chaos_run.members()
    monkeypatch.setattr("enipin_lab.chaos.invariants.SETTLE_TIMEOUT", 60.0)
    assert chaos_run.settle() is False  # the chaos_run never comes to rest
    chaos_run.check_converged()  # and the action still waits
    assert invariants(chaos_run) == ["lifecycle_action_pending", "lifecycle_action_pending"]
    assert "did not settle" in chaos_run.violations[0].detail
    assert instance_id in chaos_run.violations[1].detail


def test_a_run_that_failed_with_an_error_nobody_named_is_caught(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    chaos_run = ChaosRun(sb)

    def bug(params: dict[str, list[str]]) -> None:
        raise KeyError("Reservations")  # inside the function: as a bug of its own would

    # DescribeInstance crashes on a launch an operator started by hand: the run abandons it
    sb.ledger.before("ec2", "DescribeInstances", bug)
    run = finish(sb, start(sb, load_event("launch-lifecycle-action")))
    assert (run["status"], run["error"]) == ("FAILED", "KeyError")
    chaos_run.check_converged()
    assert invariants(chaos_run) == ["failed_without_named_error"]
    assert "KeyError" in chaos_run.violations[0].detail


def test_a_run_that_crashes_itself_is_caught_and_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(self: ChaosRun, params: dict[str, object]) -> list[str]:
        raise RuntimeError("AWS refused the scale-out")

    monkeypatch.setattr(
        "enipin_lab.chaos.run.plan", lambda seed: [chaos.Step(0, "scale_out", {"count": 1}, 0.0)]
    )
    monkeypatch.setattr(ChaosRun, "_scale_out", refused)
    result = chaos.run_one(5)
    assert [(v.invariant, v.step) for v in result.violations] == [("run_crashed", 0)]
    assert result.violations[0].detail == "RuntimeError: AWS refused the scale-out"


def test_named_errors_are_the_catalogue_and_the_errors_the_state_machines_name(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=0)
    named = ChaosRun(sb)._named_errors()
    assert {"NicNotVerified", "SsmAgentNotOnline", "InstanceTerminating"} <= named
    assert "Lambda.TooManyRequestsException" in named  # AWS's, retried by name
    assert not {"States.ALL", "States.TaskFailed", "States.Runtime", "KeyError"} & named


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, object]]:
    out: Path = tmp_path_factory.mktemp("chaos") / "out.json"
    result = CliRunner().invoke(
        main, ["chaos", "--runs", "3", "--seed", "1", "--jobs", "1", "--json", str(out)]
    )
    return result.exit_code, result.stdout, json.loads(out.read_text())


def test_a_small_batch_ends_without_violations(batch: tuple[int, str, dict[str, object]]) -> None:
    exit_code, output, data = batch
    assert data["violations"] == [], output
    assert exit_code == 0
    assert "3 runs (seeds 1..3), 0 violations" in output


def test_the_report_has_a_row_per_fault_and_per_invariant(
    batch: tuple[int, str, dict[str, object]],
) -> None:
    _, output, data = batch
    rows = data["faults"]
    assert isinstance(rows, list)
    features = [f"shape: {label}" for label, _ in SHAPE_FEATURES]
    assert [row["fault"] for row in rows] == list(FAULTS) + features
    for name in FAULTS + INVARIANTS:
        assert name in output
    results = data["results"]
    assert isinstance(results, list)
    assert [r["seed"] for r in results] == [1, 2, 3]
    assert results[0]["reproduce"] == "enipin chaos --runs 1 --seed 1"
    injected = sum(row["injected"] for row in rows if row["fault"] in FAULTS)
    assert injected == sum(len(r["injected"]) for r in results) > 3


def test_a_violating_runs_histories_calls_and_records_are_written_beside_the_report(
    sandbox: Factory, tmp_path: Path
) -> None:
    # GIVEN a planted violation: a second pool ENI on an instance
    sb, chaos_run, instance_id = pinned_run(sandbox)
    plant_second_eni(sb, chaos_run, instance_id)
    chaos_run.check_always(1)
    assert invariants(chaos_run) == ["eni_on_two_instances", "pool_eni_at_wrong_device_index"]
    # WHEN the run's evidence is written, as `enipin chaos --json FILE` writes it
    run = chaos.RunResult(
        seed=9,
        shape=Shape(),
        steps=[],
        injected=[],
        notes=[],
        violations=chaos_run.violations,
        executions={},
        wall_seconds=0.0,
        aws_seconds=0.0,
        evidence=chaos_run.evidence(),
    )
    report = chaos.ChaosReport(seed=9, runs=[run], wall_seconds=0.0, jobs=1)
    (path,) = report.write_evidence(tmp_path / "out.json.evidence")
    # THEN it holds the launch's whole history, every call with its time, and the records
    evidence = json.loads(path.read_text())
    (execution,) = evidence["executions"]
    assert execution["name"].startswith(instance_id)
    assert execution["history"][0]["type"] == "ExecutionStarted"
    assert execution["history"][-1]["type"] == "ExecutionSucceeded"
    operations = {(c["caller"], c["operation"]) for c in evidence["calls"]}
    assert ("enipin-AttachEniFunction", "AttachNetworkInterface") in operations
    assert all(c["at"] >= 0 for c in evidence["calls"])
    assert [a["how"] for a in evidence["lifecycle_actions_ended"]] == ["CompleteLifecycleAction"]
    assert "evidence" not in run.to_dict()  # the report itself stays small
