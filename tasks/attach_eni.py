"""AttachEni: attach the first candidate EC2 grants; a lost race moves to the next one. Then ask
Auto Scaling whether the instance has begun to leave, and take the ENI straight off if so; else
say how long to wait before the instance's SSM Agent can verify it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import DeviceIndexInUse, InstanceTerminating, LaunchActionEnded
from enipin_core.lifecycle import lifecycle_state, may_carry_eni, still_holds
from enipin_core.pool import (
    Eni,
    Instance,
    attach_first_free,
    detach_if_still_on,
    eni_at,
    pool_enis_on,
)
from enipin_core.settings import Settings
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import HEARTBEAT_AT, Heartbeat, TaskInput, wait_after_launch


@named_aws_errors
def attach(ec2: Any, autoscaling: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    instance = Instance.from_dict(state["instance"])
    candidates = [Eni.from_dict(c) for c in state["candidates"]]
    state = _refuse_an_ended_action(autoscaling, state, task.now)
    try:
        outcome = attach_first_free(ec2, instance, candidates, settings.device_index)
    except DeviceIndexInUse:
        # A concurrent run for the same instance may have won: then its ENI is ours too.
        existing = pool_enis_on(ec2, instance.id, settings.pool_tag_key, settings.pool_tag_value)
        if not existing:
            raise
        existing_eni = {"eni": existing[0].to_dict(), "attachedHere": False, "candidates": []}
        return _ready_to_verify(state | existing_eni, instance, settings, task)
    if outcome.races_lost:
        count("RacesLost", outcome.races_lost)
    races = state.get("racesLost", 0) + outcome.races_lost
    result = {**state, "racesLost": races, "candidates": []}
    if outcome.eni is None:
        mine = _taken_by_this_instance(ec2, instance, candidates, settings.device_index)
        if mine is not None:
            # a duplicate run attached it here as this one looked, and the look still showed
            # it free (a describe lags an attach): it is this instance's ENI, not a lost race
            logger.info("a candidate is already on this instance", extra={"eni": mine.id})
            adopted = {"eni": mine.to_dict(), "attachedHere": False}
            return _ready_to_verify(result | adopted, instance, settings, task)
        logger.info("every candidate was taken", extra={"racesLost": outcome.races_lost})
        return result
    logger.info("attached", extra={"eni": outcome.eni.id, "racesLost": outcome.races_lost})
    _take_off_if_it_may_not_stay(ec2, autoscaling, instance.id, outcome.eni, settings)
    attached = {"eni": outcome.eni.to_dict(), "attachedHere": outcome.attached_here}
    return _ready_to_verify(result | attached, instance, settings, task)


def _taken_by_this_instance(
    ec2: Any, instance: Instance, candidates: list[Eni], device_index: int
) -> Eni | None:
    """The candidate the instance itself shows at the device index, if one is."""
    held = eni_at(ec2, instance.id, device_index)
    found = next((c for c in candidates if c.id == held), None)
    if found is None:
        return None
    return replace(found, status="in-use", instance_id=instance.id, device_index=device_index)


def _ready_to_verify(
    state: dict[str, Any], instance: Instance, settings: Settings, task: TaskInput
) -> dict[str, Any]:
    """How long until the agent typically starts, as of the end of this attach, which may have
    been slow (throttling, lost races, a starved account)."""
    return state | {"agentStartsIn": agent_starts_in(instance, settings, task.now)}


def _refuse_an_ended_action(
    autoscaling: Any, state: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Attach only while the run's own action still waits, asked with a heartbeat (which also
    extends it). A scale-in may have taken the instance while the run looked for an ENI; its
    terminate run may look twice and continue between an attach and the look after it."""
    lifecycle = state.get("lifecycle")
    if not lifecycle:  # a replay's pin of an instance in service: no action to ask after
        return state
    if not still_holds(autoscaling, lifecycle):
        raise LaunchActionEnded(f"{state['instanceId']}: its launch action ended; not attached")
    return {**state, "heartbeat": Heartbeat.since(now).to_dict()}  # on Step Functions' clock


def _take_off_if_it_may_not_stay(
    ec2: Any, autoscaling: Any, instance_id: str, eni: Eni, settings: Settings
) -> None:
    """A terminate run looks for pool ENIs once. Its look may have come before this attach
    landed (the attach may wait out lost races and throttling, or the whole invocation may
    stall), and then it lets the instance go with the ENI on it, or back into a warm pool that
    keeps none. Auto Scaling moves the instance on before it emits the event that starts that
    run, so asking after the attach closes the window that asking before it leaves open; and it
    costs the same call."""
    where = lifecycle_state(autoscaling, instance_id)
    if may_carry_eni(where, settings.warm_pool_keeps_eni):
        return
    released = detach_if_still_on(ec2, eni.id, instance_id, eni.attachment_id)
    logger.info("instance moved on while attaching", extra={"eni": eni.id, "released": released})
    raise InstanceTerminating(f"{instance_id} is {where or 'out of the group'}: ENI taken off")


def agent_starts_in(instance: Instance, settings: Settings, now: datetime) -> int:
    """Whole seconds until the instance's SSM Agent is typically online (0 once it should be),
    at most until a heartbeat is due again: the wait takes none."""
    longest = int(settings.heartbeat_timeout * HEARTBEAT_AT)  # the attach has just extended it
    return wait_after_launch(instance.launched_at, settings.agent_start_seconds, now, longest)


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return attach(client("ec2"), client("autoscaling"), TaskInput.of(event))
