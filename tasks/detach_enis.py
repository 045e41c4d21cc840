"""DetachEnis / ForceDetachEnis: take the pool ENIs off the terminating instance."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.pool import Eni, describe_enis, detach
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def detach_all(ec2: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Detach each ENI still on this instance; gracefully first, with Force once asked to."""
    force = bool(state.get("force"))
    ids = [Eni.from_dict(e).id for e in state["enis"]]
    requested = [
        eni.id
        for eni in describe_enis(ec2, ids)
        if eni.instance_id == state["instanceId"] and detach(ec2, eni, force)
    ]
    logger.info("detach requested", extra={"enis": requested, "force": force})
    return {**state, "detachRequested": requested}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return detach_all(client("ec2"), TaskInput.of(event).state)
