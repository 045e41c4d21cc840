"""RecordHeartbeat: extend the lifecycle action while a bounded wait is still running."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import record_heartbeat
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import Heartbeat, TaskInput


@named_aws_errors
def beat(autoscaling: Any, task: TaskInput) -> dict[str, Any]:
    # Counted from this state's entry, before the call: never later than the extension itself.
    state = task.state
    reset = {"heartbeat": Heartbeat.since(task.entered).to_dict()}
    lifecycle = state.get("lifecycle")
    if not lifecycle:  # repair runs have no lifecycle action to extend
        return {**state, **reset}
    outcome = record_heartbeat(autoscaling, lifecycle)
    logger.info("lifecycle heartbeat", extra={"outcome": outcome})
    return {**state, **reset, "heartbeats": state.get("heartbeats", 0) + 1}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return beat(client("autoscaling"), TaskInput.of(event))
