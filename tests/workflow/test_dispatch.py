"""The dispatcher between the EventBridge rule and the workflows: deterministic names, one
execution per lifecycle action, nothing started for what is not an action of ours."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import load_event

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
DISPATCHER = "enipin-DispatchEventFunction"


def dispatch(sb: Sandbox, event: dict[str, Any]) -> dict[str, Any]:
    response = sb.client("lambda").invoke(FunctionName=DISPATCHER, Payload=json.dumps(event))
    assert "FunctionError" not in response, response
    result: dict[str, Any] = json.loads(response["Payload"].read())
    return result


def all_executions(sb: Sandbox) -> list[dict[str, Any]]:
    return sb.executions("LaunchStateMachine") + sb.executions("TerminateStateMachine")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (load_event("test-notification"), "test notification"),
        (load_event("malformed-lifecycle-action"), "InvalidLifecycleEvent"),
        (
            load_event("launch-lifecycle-action", AutoScalingGroupName="someone-elses-group"),
            "not managed here",
        ),
    ],
    ids=["test-notification", "malformed", "foreign-group"],
)
def test_what_is_not_a_lifecycle_action_of_ours_starts_nothing(
    sandbox: Factory, event: dict[str, Any], reason: str
) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    result = dispatch(sb, event)
    assert result["started"] is False
    assert reason in result["reason"]
    assert all_executions(sb) == []


def test_each_transition_goes_to_its_workflow_under_a_name_built_from_the_action(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    launch = dispatch(sb, load_event("launch-lifecycle-action"))
    terminate = dispatch(sb, load_event("terminate-lifecycle-action"))
    assert launch["name"] == "i-1234567890abcdef0-launch-87654321-4321-4321-4321-210987654321"
    assert ":enipin-LaunchStateMachine:" in launch["executionArn"]
    assert terminate["name"].startswith("i-1234567890abcdef0-terminate-c0ffee00")
    assert ":enipin-TerminateStateMachine:" in terminate["executionArn"]
    sb.settle()
    # the same action delivered again later: its name is taken, nothing new starts
    again = dispatch(sb, load_event("launch-lifecycle-action"))
    assert again["started"] is False
    assert "already exists" in again["reason"]
    assert len(all_executions(sb)) == 2
