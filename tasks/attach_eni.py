"""AttachEni: attach the first candidate EC2 grants; a lost race moves to the next one."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import DeviceIndexInUse, InstanceTerminating
from enipin_core.lifecycle import is_leaving, lifecycle_state
from enipin_core.pool import Eni, Instance, attach_first_free, pool_enis_on
from enipin_core.settings import Settings
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def attach(ec2: Any, autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_dict(state["settings"])
    instance = Instance.from_dict(state["instance"])
    candidates = [Eni.from_dict(c) for c in state["candidates"]]
    _refuse_a_dying_instance(autoscaling, instance.id)
    try:
        outcome = attach_first_free(ec2, instance, candidates, settings.device_index)
    except DeviceIndexInUse:
        # A concurrent run for the same instance may have won: then its ENI is ours too.
        existing = pool_enis_on(ec2, instance.id, settings.pool_tag_key, settings.pool_tag_value)
        if not existing:
            raise
        return {**state, "eni": existing[0].to_dict(), "attachedHere": False, "candidates": []}
    if outcome.races_lost:
        count("RacesLost", outcome.races_lost)
    races = state.get("racesLost", 0) + outcome.races_lost
    result = {**state, "racesLost": races, "candidates": []}
    if outcome.eni is None:
        logger.info("every candidate was taken", extra={"racesLost": outcome.races_lost})
        return result
    logger.info("attached", extra={"eni": outcome.eni.id, "racesLost": outcome.races_lost})
    return result | {"eni": outcome.eni.to_dict(), "attachedHere": outcome.attached_here}


def _refuse_a_dying_instance(autoscaling: Any, instance_id: str) -> None:
    """Its termination may have begun since the instance was described: a terminate run that
    looked before this attach lands would let the instance go with the ENI on it, for EC2 to
    free. Ask Auto Scaling, the moment before attaching."""
    where = lifecycle_state(autoscaling, instance_id)
    if is_leaving(where):
        raise InstanceTerminating(f"{instance_id} is {where or 'out of the group'}: not attached")


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return attach(client("ec2"), client("autoscaling"), TaskInput.of(event).state)
