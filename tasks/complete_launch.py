"""CompleteLaunch: let the verified instance go into service (CONTINUE)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import complete_action
from enipin_core.telemetry import logger, task_handler


@named_aws_errors
def complete(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    outcome = complete_action(autoscaling, state["lifecycle"], "CONTINUE")
    logger.info("launch completed", extra={"outcome": outcome})
    return {**state, "lifecycleResult": "CONTINUE", "lifecycleOutcome": outcome}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return complete(client("autoscaling"), event)
