"""AbandonLaunch: give the launch up with the configured result (ABANDON: the group replaces
the instance; CONTINUE: it serves without a pool ENI until a replay or repair pins it)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import complete_action
from enipin_core.settings import Settings
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def abandon(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    lifecycle = state.get("lifecycle")
    if not lifecycle:  # a replay or repair has no action to give up; the instance stays
        count("LaunchFailed")
        return {**state, "lifecycleResult": None}
    result = Settings.of_run(state).launch_failure_result
    outcome = complete_action(autoscaling, lifecycle, result)
    count("LaunchFailed")  # after the call: a retried invocation does not count twice
    logger.warning(
        "launch given up", extra={"result": result, "outcome": outcome, "error": state.get("error")}
    )
    return {**state, "lifecycleResult": result, "lifecycleOutcome": outcome}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return abandon(client("autoscaling"), TaskInput.of(event).state)
