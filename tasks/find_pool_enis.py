"""FindPoolEnis: which pool ENIs the terminating instance carries."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.pool import pool_enis_on
from enipin_core.settings import Settings
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def find(ec2: Any, state: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_dict(state["settings"])
    enis = pool_enis_on(ec2, state["instanceId"], settings.pool_tag_key, settings.pool_tag_value)
    logger.info("pool ENIs on the instance", extra={"enis": [e.id for e in enis]})
    return {**state, "enis": [e.to_dict() for e in enis], "force": False}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return find(client("ec2"), TaskInput.of(event).state)
