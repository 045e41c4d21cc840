"""DescribeInstance: where the instance runs, and whether it already carries a pool ENI."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import InstanceNotFound
from enipin_core.pool import describe_instance, pool_enis_on
from enipin_core.settings import Settings
from enipin_core.telemetry import logger, task_handler

GONE = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@named_aws_errors
def inspect(ec2: Any, state: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_dict(state["settings"])
    instance = describe_instance(ec2, state["instanceId"])
    if instance.state in GONE:
        raise InstanceNotFound(f"{instance.id} is {instance.state}")
    result = {**state, "instance": instance.to_dict()}
    existing = pool_enis_on(ec2, instance.id, settings.pool_tag_key, settings.pool_tag_value)
    if existing:
        # A duplicated event or a replay: keep the ENI the instance already has.
        eni = next((e for e in existing if e.device_index == settings.device_index), existing[0])
        logger.info("instance already carries a pool ENI", extra={"eni": eni.id})
        result |= {"eni": eni.to_dict(), "attachedHere": False}
    return result


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return inspect(client("ec2"), event)
