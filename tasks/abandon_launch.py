"""AbandonLaunch: give the instance up (ABANDON) so the group replaces it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import complete_action
from enipin_core.telemetry import logger, task_handler


@named_aws_errors
def abandon(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    lifecycle = state.get("lifecycle")
    if not lifecycle:  # a repair run has no action to abandon; the instance stays as it is
        return {**state, "lifecycleResult": None}
    outcome = complete_action(autoscaling, lifecycle, "ABANDON")
    logger.warning("launch abandoned", extra={"outcome": outcome, "error": state.get("error")})
    return {**state, "lifecycleResult": "ABANDON", "lifecycleOutcome": outcome}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return abandon(client("autoscaling"), event)
