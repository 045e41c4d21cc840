"""``enipin executions replay``: the decision each live state calls for, and replay names.
Pure functions over what Step Functions, EC2 and Auto Scaling reported."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from enipin.executions import Execution, Standing
from enipin.replay import REDRIVE, REPLAY, SKIP, decide, replay_name

FAIL_STATES = frozenset({"LaunchFailed", "ReleaseFailed"})
TOKEN = "87654321-4321-4321-4321-210987654321"


def run(workflow: str = "launch", **fields: Any) -> Execution:
    values: dict[str, Any] = {
        "arn": "arn:aws:states:us-east-1:123456789012:execution:m:n",
        "name": f"i-0123456789abcdef0-{workflow}-{TOKEN}",
        "workflow": workflow,
        "status": "FAILED",
        "start": datetime(2026, 11, 26, tzinfo=UTC),
        "instance": "i-0123456789abcdef0",
        "stopped_in": "CheckSsmAgent",
        "redrive_status": "REDRIVABLE",
        "input": {"detail": {"LifecycleActionToken": TOKEN}},
    } | fields
    return Execution(**values)


def now(lifecycle_state: str | None, ec2_state: str | None = "running", enis: int = 0) -> Standing:
    return Standing(
        instance="i-0123456789abcdef0",
        ec2_state=ec2_state,
        group="enipin-demo" if lifecycle_state else None,
        lifecycle_state=lifecycle_state,
        pool_enis=[{"eni": f"eni-{n}", "mac": "02:00:00:00:00:01"} for n in range(enis)],
    )


@pytest.mark.parametrize(
    ("execution", "standing", "action", "reason"),
    [
        (run(), now("Pending:Wait"), REDRIVE, "resume at CheckSsmAgent"),
        (run(stopped_in="LaunchFailed"), now("Pending:Wait"), REPLAY, "a new run completes it"),
        (run(redrive_status="NOT_REDRIVABLE"), now("Pending:Wait"), REPLAY, "completes it"),
        (
            run("terminate", status="TIMED_OUT", redrive_status="NOT_REDRIVABLE"),
            now("Terminating:Wait"),
            REPLAY,
            "a new run completes it",
        ),
        (run("terminate", stopped_in="DetachEnis"), now("Terminating:Wait"), REDRIVE, "resume"),
        (run(), now("InService"), REPLAY, "pin and verify, complete nothing"),
        (run(), now("InService", enis=1), REPLAY, "with eni-0: verify it"),
        (run(), now(None, ec2_state="terminated"), SKIP, "terminated, out of the group"),
        (run(), now("Terminating:Proceed", ec2_state="shutting-down"), SKIP, "nothing to replay"),
        (run("terminate"), now("InService"), SKIP, "no termination to release"),
        (run(status="RUNNING"), now("Pending:Wait"), SKIP, "still running"),
        (run(), None, SKIP, "not a lifecycle action"),
    ],
    ids=[
        "pending-redrivable",
        "pending-but-ended-in-a-fail-state",
        "pending-not-redrivable",
        "terminate-pending-timed-out",
        "terminate-pending-redrivable",
        "in-service-without-eni",
        "in-service-with-eni",
        "terminated",
        "terminating",
        "terminate-of-a-serving-instance",
        "running",
        "not-an-instance",
    ],
)
def test_each_live_state_gets_its_decision(
    execution: Execution, standing: Standing | None, action: str, reason: str
) -> None:
    decision = decide(execution, standing, FAIL_STATES)
    assert decision.action == action
    assert reason in decision.reason


def test_replay_names_count_attempts_per_action_and_fit_in_80_characters() -> None:
    execution = run(instance="i-" + "f" * 17)
    first = replay_name(execution, set())
    assert first == f"i-{'f' * 17}-launch-{TOKEN}-r1"
    assert replay_name(execution, {first, "unrelated"}) == first.removesuffix("1") + "2"
    longest = replay_name(run("terminate", instance="i-" + "f" * 17), {f"x{n}" for n in range(9)})
    assert len(longest) <= 80
