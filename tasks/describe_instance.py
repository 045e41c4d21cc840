"""DescribeInstance: where the instance runs, and whether it already carries a pool ENI.

A replay (``enipin executions replay``) also asks Auto Scaling where the instance stands: a gone
instance needs nothing, an in-service one is pinned without its long-finished action.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import InstanceNotFound
from enipin_core.lifecycle import is_waiting, lifecycle_state
from enipin_core.pool import describe_instance, pool_enis_on
from enipin_core.settings import Settings
from enipin_core.telemetry import logger, task_handler

GONE = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


@named_aws_errors
def inspect(ec2: Any, autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_dict(state["settings"])
    if state.get("replayOf") or state.get("repair"):
        state = _replay_scope(autoscaling, state)
        if "nothingToDo" in state:
            return state
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


def _replay_scope(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    """What a replay or repair may still do: complete a pending action, pin an in-service
    instance without one, or nothing at all for an instance that has left (or not arrived)."""
    where = lifecycle_state(autoscaling, state["instanceId"])
    if where is None or where.startswith("Terminat"):
        reason = f"{state['instanceId']} is {where or 'no longer in the group'}"
        logger.info("replay has nothing to do", extra={"reason": reason})
        return {**state, "nothingToDo": reason}
    lifecycle = state.get("lifecycle")
    if lifecycle and is_waiting(where, lifecycle["transition"]):
        return state
    if where != "InService":
        return {**state, "nothingToDo": f"{state['instanceId']} is {where}"}
    # The action this replay came from is finished: pin and verify, complete nothing.
    logger.info("replay pins without a lifecycle action", extra={"lifecycleState": where})
    return {k: v for k, v in state.items() if k != "lifecycle"}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return inspect(client("ec2"), client("autoscaling"), event)
