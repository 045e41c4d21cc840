"""``enipin executions`` through click, in the sandbox: an operator lists, reads and replays
runs, and every replay decision is checked against EC2 and Auto Scaling afterwards."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from conftest import (
    assert_pinned,
    describe,
    executions_for,
    group_instances,
    in_service,
    instance_state,
    path_of,
    pool_enis_on,
    wait_until,
)

from enipin.cli import main
from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
GOLDEN = Path(__file__).parent / "golden"


def enipin(*args: str) -> Result:
    result = CliRunner().invoke(main, ["--region", "us-east-1", *args])
    assert result.exit_code == 0, result.output
    return result


def masked(text: str) -> str:
    """Instance ids, tokens, ENIs, MACs, dates and durations differ per run; the rest must not."""
    for pattern, mask in (
        (r"i-[0-9a-f]{17}", "i-INSTANCE"),
        (r"eni-[0-9a-f]{17}", "eni-ENI"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "TOKEN"),
        (r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "MAC"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "DATE"),
        (r"\b\d+\.\d\b", "S"),
        (r"\d+s\b", "Ns"),
        # a wait loop's round count: its bound is wall-clock time, not a number of polls
        (r"^(\S+\s+(?:Task|Choice|Wait)\s+)(?:[2-9]|\d\d+)\b", r"\1N"),
    ):
        text = re.sub(pattern, mask, text, flags=re.MULTILINE)
    # widths follow the masked values' originals: compare words, not padding
    return "\n".join(" ".join(line.split()) for line in text.splitlines()) + "\n"


def assert_golden(name: str, text: str) -> None:
    expected = (GOLDEN / name).read_text()
    assert masked(text) == expected, masked(text)


def broken_launch(sb: Sandbox) -> tuple[str, dict[str, Any]]:
    """Scale out one instance whose SSM agent never registers; wait for the launch to fail."""
    sb.guests.set_default_faults(["agent_absent"])
    sb.scale_out(1)
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    sb.guests.set_default_faults([])
    (run,) = [describe(sb, e["executionArn"]) for e in sb.executions()]
    return json.loads(run["input"])["detail"]["EC2InstanceId"], run


def test_operator_finds_a_failed_launch_reads_why_fixes_it_and_replays_it_to_pinned(
    sandbox: Factory,
) -> None:
    # GIVEN a launch that failed because the agent never came up; the group keeps it serving
    sb = sandbox(
        azs=1,
        pool_per_az=2,
        # a path whose loops do not depend on timing: the golden file
        attach_delay=0,
        boot_delay=0,
        visibility_delay=0,
        parameters={"LaunchFailureResult": "CONTINUE", "AgentWaitSeconds": 60},
    )
    instance_id, run = broken_launch(sb)
    sb.settle()
    assert group_instances(sb)[instance_id]["LifecycleState"] == "InService"
    assert pool_enis_on(sb, instance_id) == []
    # WHEN the operator lists failures and reads the one there is
    listing = enipin("executions", "list", "--status", "FAILED")
    assert_golden("list-failed.txt", listing.output)
    shown = enipin("executions", "show", run["name"])
    assert_golden("show-failed.txt", shown.output)
    # AND, the agent fixed, asks what a replay would do, then replays
    sb.guests.set_faults(instance_id, [])
    sb.ssm.restart_agent(instance_id)
    dry = enipin("executions", "replay", run["name"], "--dry-run")
    assert "pin and verify, complete nothing" in dry.output
    assert len(sb.executions()) == 1  # a dry run starts nothing
    enipin("executions", "replay", run["name"])
    sb.settle()
    # THEN that same instance is pinned and verified, and its finished action was left alone
    assert_pinned(sb, instance_id)
    assert instance_id in in_service(sb)
    replayed = [r for r in executions_for(sb, instance_id) if r["name"] != run["name"]]
    assert [r["status"] for r in replayed] == ["SUCCEEDED"]
    token = json.loads(run["input"])["detail"]["LifecycleActionToken"]
    assert replayed[0]["name"] == f"{instance_id}-launch-{token}-r1"
    path = path_of(sb, replayed[0]["executionArn"])
    assert "GetVerificationResult" in path
    assert "CompleteLaunch" not in path
    assert json.loads(replayed[0]["output"])["lifecycleResult"] is None
    # and a second `replay --failed` has nothing left to do: the failure is superseded
    again = enipin("executions", "replay", "--failed", "--dry-run")
    assert again.output.strip() == "nothing to replay"


def test_a_stopped_launch_whose_action_still_waits_is_redriven_where_it_stopped(
    sandbox: Factory,
) -> None:
    # GIVEN a launch stopped by an operator while it waited for a slow agent
    sb = sandbox(azs=1, pool_per_az=2, agent_delay=300)
    sb.scale_out(1)
    wait_until(lambda: len(sb.executions()) == 1, sb)
    arn = sb.executions()[0]["executionArn"]
    wait_until(lambda: "WaitForSsmAgent" in path_of(sb, arn), sb)
    sb.client("stepfunctions").stop_execution(executionArn=arn)
    wait_until(lambda: describe(sb, arn)["status"] == "ABORTED", sb)
    (instance_id,) = group_instances(sb)
    assert group_instances(sb)[instance_id]["LifecycleState"] == "Pending:Wait"
    # WHEN the operator replays it
    decision = json.loads(enipin("executions", "replay", arn, "--json").output)
    assert [d["decision"] for d in decision] == ["redrive"]
    sb.settle()
    # THEN the same execution resumed (not a new one) and completed the waiting action
    run = describe(sb, arn)
    assert run["status"] == "SUCCEEDED"
    assert run["redriveCount"] == 1
    assert len(sb.executions()) == 1
    path = path_of(sb, arn)
    assert path.count("ValidateEvent") == 1  # resumed, not restarted
    assert path[-2:] == ["CompleteLaunch", "LaunchPinned"]
    assert instance_id in in_service(sb)
    assert_pinned(sb, instance_id)


def test_a_failed_launch_whose_instance_is_gone_is_not_replayed(sandbox: Factory) -> None:
    # GIVEN a launch abandoned (the default): the group terminated its instance
    sb = sandbox(azs=1, pool_per_az=2, parameters={"AgentWaitSeconds": 60})
    instance_id, run = broken_launch(sb)
    wait_until(lambda: instance_state(sb, instance_id) == "terminated", sb)
    # WHEN the operator replays every failure
    out = json.loads(enipin("executions", "replay", "--failed", "--since", "1h", "--json").output)
    # THEN the decision is a no-op with its reason, and nothing was started
    (decision,) = [d for d in out if d["execution"] == run["name"]]
    assert decision["decision"] == "skip"
    assert "terminated" in decision["reason"]
    assert decision["running"] is None
    assert not any(e["name"].endswith("-r1") for e in sb.executions())
    assert describe(sb, run["executionArn"]).get("redriveCount", 0) == 0
    assert pool_enis_on(sb, instance_id) == []


def test_unknown_execution_and_bad_arguments_are_one_line_errors(sandbox: Factory) -> None:
    sandbox(azs=1, pool_per_az=1)
    runner = CliRunner()
    for args in (
        ["executions", "show", "i-0000000000000000a-launch-nope"],
        ["executions", "replay"],
        ["--stack", "other", "executions", "list"],
    ):
        result = runner.invoke(main, ["--region", "us-east-1", *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("enipin: ")
        assert result.stderr.count("\n") == 1
