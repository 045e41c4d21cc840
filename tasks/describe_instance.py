"""DescribeInstance: where the instance runs, whether it already carries a pool ENI, and else
which free pool ENIs it tries, in its rank's order (``rank_candidates``), and when its attach's
turn at EC2's mutating bucket comes (``attach_turn``).

Once the instance runs, one look at the AZ's pool and one at the group's launching instances
answer the last three: the attach needs no look of its own.

Its hook fires as the group launches it, while EC2 may still show it ``pending`` or, for a
moment, not at all (EC2's API is eventually consistent: a NotFound right after launch does not
mean the instance is missing). Both are waited for, within bounds, before anything is attached.

A replay (``enipin executions replay``) also asks Auto Scaling where the instance stands: a gone
instance needs nothing, an in-service one is pinned without its long-finished action.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import InstanceNotFound, InstanceNotRunning
from enipin_core.lifecycle import is_leaving, is_waiting, launching_by_az, lifecycle_state
from enipin_core.pool import (
    Eni,
    Instance,
    attach_turn,
    az_pool,
    describe_instance,
    order_candidates,
    rank_candidates,
)
from enipin_core.settings import Settings
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import (
    TaskInput,
    WaitProgress,
    after_poll,
    until_heartbeat_due,
    wait_after_launch,
)

GONE = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# How long a NotFound may be EC2 catching up with a launch, not an instance that is not there.
NOT_FOUND_WINDOW = 60
# EC2's LaunchTime is to the second: the launch came up to a second after it says.
LAUNCH_TIME_GRAIN = 1


@named_aws_errors
def inspect(ec2: Any, autoscaling: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    if state.get("replayOf") or state.get("repair"):
        state = _replay_scope(autoscaling, state)
        if "nothingToDo" in state:
            return state | {"instanceRunning": False}
    wait = WaitProgress.from_dict(state.get("instanceWait"))
    try:
        instance: Instance | None = describe_instance(ec2, state["instanceId"])
    except InstanceNotFound:
        if wait.exhausted(min(NOT_FOUND_WINDOW, settings.instance_wait_seconds), task.now):
            raise
        instance = None
    if instance is not None and instance.state in GONE:
        raise InstanceNotFound(f"{instance.id} is {instance.state}")
    if instance is None or instance.state != "running":
        seen = instance.state if instance else "not shown by EC2 yet"
        if wait.exhausted(settings.instance_wait_seconds, task.now):
            raise InstanceNotRunning(
                f"{state['instanceId']} still {seen} after {wait.waited(task.now):.0f}s"
            )
        wait, beat = after_poll(task, wait, settings.heartbeat_timeout)
        logger.info("waiting for the instance to run", extra={"instanceState": seen})
        return {
            **state,
            "instanceRunning": False,
            "instanceWait": wait.to_dict(),
            "heartbeat": beat,
        }
    result = {**state, "instance": instance.to_dict(), "instanceRunning": True}
    pool = az_pool(ec2, instance, settings.pool_tag_key, settings.pool_tag_value)
    existing = [e for e in pool if e.instance_id == instance.id]
    if existing:
        # A duplicated event or a replay: keep the ENI the instance already has.
        eni = next((e for e in existing if e.device_index == settings.device_index), existing[0])
        logger.info("instance already carries a pool ENI", extra={"eni": eni.id})
        return result | {"eni": eni.to_dict(), "attachedHere": False}
    return result | _candidates(autoscaling, task, instance, pool, settings)


def _candidates(
    autoscaling: Any, task: TaskInput, instance: Instance, pool: list[Eni], settings: Settings
) -> dict[str, Any]:
    """Ranked against the AZ's other launches of the group, and paced with them: a run without
    its group's action (a repair, a replay of a finished one) shuffles per instance instead,
    and attaches at once."""
    group = (task.state.get("lifecycle") or {}).get("groupName")
    limit = settings.max_attach_candidates
    if not group:
        free = [e for e in pool if e.status == "available"]
        return {"candidates": _dicts(order_candidates(free, instance.id, limit)), "attachIn": 0}
    by_az = launching_by_az(autoscaling, group)
    launching = by_az.get(instance.az, [])
    candidates = rank_candidates(pool, launching, instance.id, limit)
    if not candidates:
        return {"candidates": [], "attachIn": 0}
    turn = attach_turn(
        launching, instance.id, len(by_az), settings.attach_burst, settings.attaches_per_second
    )
    if turn == 0:  # within the burst: at once
        return {"candidates": _dicts(candidates), "attachIn": 0}
    # the burst's attaches begin at the launches' first look, a poll after they launched (the
    # bucket refilled to the full burst before that); no longer than until a heartbeat is due,
    # which the attach then takes first
    after_launch = LAUNCH_TIME_GRAIN + settings.poll_seconds + turn
    longest = until_heartbeat_due(task, settings.heartbeat_timeout)
    attach_in = wait_after_launch(instance.launched_at, after_launch, task.now, longest)
    return {"candidates": _dicts(candidates), "attachIn": attach_in}


def _dicts(enis: list[Eni]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in enis]


def _replay_scope(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    """What a replay or repair may still do: complete a pending action, pin an in-service
    instance without one, or nothing at all for an instance that has left (or not arrived)."""
    where = lifecycle_state(autoscaling, state["instanceId"])
    if is_leaving(where):
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
    return inspect(client("ec2"), client("autoscaling"), TaskInput.of(event))
