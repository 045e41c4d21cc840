"""CompleteTermination: let the termination go on (CONTINUE), whatever happened before.

The same task ends the failure path: a release that failed must never hold the instance, so it
still continues and counts the failure for the alarm; the execution then fails with the error.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import complete_action
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def complete(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    if not state.get("lifecycle"):  # a replay or repair with no action waiting
        return {**state, "lifecycleResult": None}
    outcome = complete_action(autoscaling, state["lifecycle"], "CONTINUE")
    if state.get("error"):
        count("ReleaseFailed")  # after the call: a retried invocation does not count twice
    logger.info("termination continues", extra={"outcome": outcome, "error": state.get("error")})
    return {**state, "lifecycleResult": "CONTINUE", "lifecycleOutcome": outcome}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return complete(client("autoscaling"), TaskInput.of(event).state)
