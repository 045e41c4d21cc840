"""`enipin bench` at a small size, as `make test` runs it: enipin pins every instance of both
scale-outs and releases every ENI on scale-in; the classic boot script fails the way EC2 makes
it fail; the JSON carries the documented keys."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import wait_until

from enipin.cli import main
from enipin_lab.bench import (
    CLASSIC_CALLER,
    BenchConfig,
    actions_timed_out,
    boot_script,
    run_boot_scripts,
    sandbox_for,
    wait_running,
)
from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.autoscaling import AutoScalingFidelity

Factory = Callable[..., Sandbox]
N, AZS = 6, 2
PHASES = ("scale_out", "scale_in", "scale_out_again")
TAKEN = {"InvalidNetworkInterface.InUse", "InvalidParameterCombination"}
TAG = {"Name": "tag:Type", "Values": ["Dedicated-ENI"]}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One small bench through the CLI, as the README runs the big one: (output, JSON)."""
    out = tmp_path_factory.mktemp("bench") / "out.json"
    result = CliRunner().invoke(
        main, ["bench", "--instances", str(N), "--azs", str(AZS), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def test_json_has_the_documented_keys(bench: tuple[str, dict[str, Any]]) -> None:
    _, data = bench
    assert set(data) == {"config", "enipin", "classic", "cost", "wall_seconds"}
    for strategy in ("enipin", "classic"):
        run = data[strategy]
        assert set(run) == {
            "strategy",
            "phases",
            "notes",
            "clock",
            "memory_mb",
            "template_parameters",
            "model",
        }
        assert set(run["phases"]) == set(PHASES)
        for phase in run["phases"].values():
            assert {
                "instances",
                "pinned",
                "pinned_pct",
                "double_attached",
                "failures",
                "races_lost_per_pin",
                "calls",
                "calls_per_instance",
                "invocations",
                "invocations_per_execution",
                "executions",
                "pool_free_after",
                "macs_reused",
                "wall_seconds",
                "max_clock_lag",
                "throttled",
                "over_floor",
                "actions_timed_out",
            } <= set(phase)
    assert data["config"]["buckets"] is True and data["config"]["neighbour"] == 0.0
    assert {"prices", "per_1000_pinned_launches", "per_1000_releases", "assumptions"} <= set(
        data["cost"]
    )


def test_enipin_pins_every_instance_of_both_scale_outs(bench: tuple[str, dict[str, Any]]) -> None:
    _, data = bench
    for name in ("scale_out", "scale_out_again"):
        phase = data["enipin"]["phases"][name]
        assert phase["pinned"] == N and phase["pinned_pct"] == 100.0
        assert phase["double_attached"] == 0
        assert phase["executions"]["statuses"] == {"SUCCEEDED": N}
        assert len(set(phase["macs"])) == N
        # each launch verified its NIC in the guest and completed its lifecycle action
        assert phase["calls"]["ssm.SendCommand"] >= N
        assert phase["calls"]["auto-scaling.CompleteLifecycleAction"] == N
        assert phase["actions_timed_out"] == 0
        assert phase["executions"]["transitions"] >= 14 * N  # the straight path: 14 states
        # each launch took at least the model's floor: pending 5, agent 20, command 1 + 2
        latency = phase["over_floor"]
        assert latency["floor"] == 28.0
        assert 0.0 <= latency["p50"] <= latency["p99"] <= latency["max"], latency
    again = data["enipin"]["phases"]["scale_out_again"]
    # 4 ENIs per AZ, 3 instances per AZ in each round: at least 2 per AZ come back
    assert again["macs_reused"] >= 2 * AZS


def test_enipin_scale_in_puts_every_eni_back_through_the_terminate_workflow(
    bench: tuple[str, dict[str, Any]],
) -> None:
    _, data = bench
    phase = data["enipin"]["phases"]["scale_in"]
    assert phase["executions"]["statuses"] == {"SUCCEEDED": N}
    assert phase["pool_free_after"] == phase["pool_size"]  # before EC2's own delayed release
    assert phase["calls"]["ec2.DetachNetworkInterface"] == N


def test_classic_strategy_pins_one_instance_and_fails_the_rest(
    bench: tuple[str, dict[str, Any]],
) -> None:
    _, data = bench
    for name in ("scale_out", "scale_out_again"):
        phase = data["classic"]["phases"][name]
        # every script picks the same first ENI: one instance in its AZ gets it
        assert phase["pinned"] == 1
        assert set(phase["failures"]) <= TAKEN
        assert sum(phase["failures"].values()) == N - 1
        assert phase["double_attached"] == 0  # EC2 refuses a second attach
        assert phase["calls"] == {
            "ec2.AttachNetworkInterface": N,
            "ec2.DescribeNetworkInterfaces": N,
        }
        assert phase["executions"] is None and phase["invocations"] == {}
    scale_in = data["classic"]["phases"]["scale_in"]
    assert scale_in["calls"] == {}  # nothing releases the ENI but EC2, after a delay


def test_cost_follows_the_measured_transitions_and_invocations(
    bench: tuple[str, dict[str, Any]],
) -> None:
    output, data = bench
    launch = data["cost"]["per_1000_pinned_launches"]
    assert launch["units"] == 2 * N
    assert launch["step_functions_usd"] == pytest.approx(launch["transitions"] * 0.025, abs=1e-3)
    assert launch["lambda_requests_usd"] == pytest.approx(launch["invocations"] * 0.0002, abs=1e-4)
    assert data["cost"]["memory_mb"]["AttachEniFunction"] == 256  # the template's MemorySize
    assert "$0.025 per 1,000 state transitions" in output
    assert "$0.0000133334 per GB-second" in output


def test_classic_boot_script_meets_ec2s_rules(sandbox: Factory) -> None:
    # GIVEN a group without enipin, two instances in each AZ
    sb = sandbox(azs=2, pool_per_az=2, max_size=4, deploy=False)
    sb.scale_out(4)
    ec2 = sb.client("ec2")
    first = ec2.describe_network_interfaces(Filters=[TAG])["NetworkInterfaces"][0]
    by_az: dict[str, list[str]] = {}
    for instance in sb.client("autoscaling").describe_auto_scaling_instances()[
        "AutoScalingInstances"
    ]:
        by_az.setdefault(instance["AvailabilityZone"], []).append(instance["InstanceId"])
    here = by_az.pop(first["AvailabilityZone"])
    elsewhere = next(iter(by_az.values()))
    # WHEN the scripts run one after the other, once their instances run
    wait_running(sb, [elsewhere[0], *here])
    outcomes = [boot_script(ec2, i, TAG) for i in (elsewhere[0], here[0], here[1])]
    # THEN the first listed ENI is refused across AZs, given once, then in use
    assert outcomes == ["InvalidParameterCombination", "ok", "InvalidNetworkInterface.InUse"]

    def holder() -> str | None:  # a describe may lag the attach for a moment
        shown = ec2.describe_network_interfaces(NetworkInterfaceIds=[first["NetworkInterfaceId"]])
        return shown["NetworkInterfaces"][0].get("Attachment", {}).get("InstanceId")

    wait_until(lambda: holder() == here[0], sb, 30)


def test_boot_scripts_run_at_once_and_are_counted_as_theirs(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=3, max_size=3, deploy=False)
    sb.scale_out(3)
    ids = [
        i["InstanceId"]
        for i in sb.client("autoscaling").describe_auto_scaling_instances()["AutoScalingInstances"]
    ]
    outcomes = run_boot_scripts(sb, ids)
    assert sorted(outcomes.values()) == [
        "InvalidNetworkInterface.InUse",
        "InvalidNetworkInterface.InUse",
        "ok",
    ]
    mine = [c for c in sb.ledger.calls if c.caller == CLASSIC_CALLER]
    assert len(mine) == 6


@pytest.mark.parametrize(
    ("clock", "instances", "scale", "label"),
    [
        ("auto", 16, 0.02, "fast (1/50 real time)"),
        ("auto", 17, 1.0, "real time"),
        ("slow", 200, 3.0, "slow (3 real seconds per AWS second)"),
    ],
)
def test_the_bench_clock_runs_enipins_sandbox_at_the_scale_it_names(
    clock: str, instances: int, scale: float, label: str
) -> None:
    config = BenchConfig(instances=instances, azs=3, clock=clock, slowdown=3.0)
    sb = sandbox_for(config, deploy=False, clock=config.resolved_clock)
    try:
        real, aws = time.monotonic(), sb.clock.monotonic()
        time.sleep(0.3)
        real, aws = time.monotonic() - real, sb.clock.monotonic() - aws
        # AWS seconds on the sandbox's clock are real seconds over its scale
        assert aws == pytest.approx(real / scale, rel=0.05)
        assert config.clock_label == label
    finally:
        sb.clock.close()


def test_timed_out_counts_the_phases_actions_auto_scaling_ended_by_a_timeout() -> None:
    ended = [
        {"how": "HeartbeatTimeout", "started": 12.0},  # in the phase
        {"how": "GlobalTimeout", "started": 30.0},  # in the phase
        {"how": "CompleteLifecycleAction", "started": 15.0},  # the workflow ended it
        {"how": "HeartbeatTimeout", "started": 5.0},  # an earlier phase's
    ]
    autoscaling = SimpleNamespace(
        ended_actions=lambda: ended, timed_out=AutoScalingFidelity.timed_out
    )
    sb = SimpleNamespace(autoscaling=autoscaling)
    assert actions_timed_out(sb, since=10.0) == 2  # type: ignore[arg-type]


def test_bench_refuses_a_pool_too_small() -> None:
    result = CliRunner().invoke(
        main, ["bench", "--instances", "9", "--azs", "3", "--pool-per-az", "2"]
    )
    assert result.exit_code == 2
    assert "cannot hold 9 instances" in result.output


def test_a_busy_neighbour_gets_launches_throttled_and_every_one_still_pinned(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        main,
        ["bench", "--instances", "6", "--azs", "2", "--neighbour", "0.97", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "a neighbour holding 97% of each" in result.output
    phase = json.loads(out.read_text())["enipin"]["phases"]["scale_out"]
    assert phase["pinned"] == 6 and phase["double_attached"] == 0
    assert phase["throttled"] > 0, "the neighbour left room enough: the test shows nothing"
    throttled_row = next(line for line in result.output.splitlines() if "throttled" in line)
    assert str(phase["throttled"]) in throttled_row
