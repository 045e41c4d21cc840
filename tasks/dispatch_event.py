"""Dispatcher: EventBridge rule target that starts the workflow for a lifecycle event under a
deterministic name (instance id, transition, action token).

An EventBridge target cannot name an execution, so a duplicated event would start a second
run. Named, the duplicate meets the first run: Step Functions returns it while it runs and
refuses the name (``ExecutionAlreadyExists``) once it has finished. Test notifications and
events that are not lifecycle actions of a managed group start nothing.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from enipin_core.aws import client, error_code
from enipin_core.errors import InvalidLifecycleEvent
from enipin_core.events import LifecycleAction, is_test_notification
from enipin_core.names import state_machines_from_env
from enipin_core.settings import managed_groups
from enipin_core.telemetry import count, logger, metrics, tracer

GROUPS = managed_groups()


def dispatch(
    sfn: Any, event: Any, machines: dict[str, str], groups: frozenset[str]
) -> dict[str, Any]:
    if is_test_notification(event):
        return _skipped("Auto Scaling test notification")
    try:
        action = LifecycleAction.from_event(event)
    except InvalidLifecycleEvent as exc:
        logger.error("rejected event", extra={"error": str(exc)})
        count("EventRejected")
        return _skipped(f"InvalidLifecycleEvent: {exc}")
    if action.group_name not in groups:
        return _skipped(f"group {action.group_name} is not managed here")
    name = action.execution_name()
    logger.append_keys(instanceId=action.instance_id)
    try:
        arn = sfn.start_execution(
            stateMachineArn=machines[action.transition], name=name, input=json.dumps(event)
        )["executionArn"]
    except ClientError as exc:
        if error_code(exc) != "ExecutionAlreadyExists":
            raise  # throttling and faults: Lambda's async retries take it from here
        logger.info("duplicate event: its execution already ran", extra={"execution": name})
        count("DuplicateEvent")
        return _skipped(f"execution {name} already exists", name=name)
    logger.info("execution started", extra={"execution": name, "executionArn": arn})
    return {"started": True, "name": name, "executionArn": arn}


def _skipped(reason: str, name: str | None = None) -> dict[str, Any]:
    logger.info("nothing started", extra={"reason": reason})
    return {"started": False, "name": name, "reason": reason}


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context(clear_state=True)  # no instance id carried into the next event
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dispatch(client("stepfunctions"), event, state_machines_from_env(), GROUPS)
