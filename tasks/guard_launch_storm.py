"""GuardLaunchStorm: count a launch just given up with ABANDON against its group, and suspend
the group's launches when too many were given up in the window (``enipin_core.stormguard``).
Only an ABANDON this run delivered counts: a replay or repair has no action, an action that
had already ended was not this run's to give up, and with ``LaunchFailureResult=CONTINUE`` the
instance serves, so nothing loops."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import COMPLETED
from enipin_core.stormguard import GuardSettings, record_failure
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def guard(
    autoscaling: Any, state: dict[str, Any], now: datetime, settings: GuardSettings
) -> dict[str, Any]:
    lifecycle = state.get("lifecycle")
    delivered = (
        state.get("lifecycleResult") == "ABANDON" and state.get("lifecycleOutcome") == COMPLETED
    )
    if not settings.on or not lifecycle or not delivered:
        return {**state, "stormGuard": None}
    found = record_failure(autoscaling, lifecycle["groupName"], state["instanceId"], now, settings)
    if found.tripped_now:
        count("LaunchStormGuardTripped")  # the alarm's metric: someone is told
        logger.error("launch storm: the group's launches are suspended", extra=found.to_dict())
    else:
        logger.warning("launch given up, counted", extra=found.to_dict())
    return {**state, "stormGuard": found.to_dict()}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = TaskInput.of(event)
    return guard(client("autoscaling"), task.state, task.now, GuardSettings.from_env())
