"""ReleaseEni: undo this execution's attach, and only that, before the launch is abandoned."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.pool import detach_if_still_on
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def release(ec2: Any, state: dict[str, Any]) -> dict[str, Any]:
    eni = state.get("eni")
    if not eni or not state.get("attachedHere"):
        return {**state, "released": False}
    released = detach_if_still_on(ec2, eni["id"], state["instanceId"], eni.get("attachment_id"))
    logger.info("release after failure", extra={"eni": eni["id"], "released": released})
    return {**state, "released": released}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return release(client("ec2"), TaskInput.of(event).state)
