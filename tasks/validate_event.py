"""ValidateEvent: check the lifecycle event against its schema and decide whether to act."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.errors import SettingsOutOfBounds
from enipin_core.events import LifecycleAction, is_test_notification
from enipin_core.names import LAUNCHING, TERMINATING
from enipin_core.settings import Settings, managed_groups
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import Heartbeat, TaskInput

SETTINGS = Settings.from_env()
GROUPS = managed_groups()

# What each workflow does for its transition; each state machine acts on its own words only.
ACTIONS = {LAUNCHING: "PIN", TERMINATING: "RELEASE"}
# An instance headed for the warm pool is stopped there: it either keeps its ENI (pinned on the
# way in, kept on the way back) or holds none (pinned when it leaves for the group).
WARM_POOL_ACTIONS = {
    (LAUNCHING, True): "PIN",
    (LAUNCHING, False): "ENTER_WARM_POOL",
    (TERMINATING, True): "KEEP_FOR_WARM_POOL",
    (TERMINATING, False): "RELEASE",
}
WARM_POOL = "WarmPool"


def ignore(reason: str, instance_id: str | None = None) -> dict[str, Any]:
    logger.info("ignoring event", extra={"reason": reason})
    return {"action": "IGNORE", "reason": reason, "instanceId": instance_id}


def decide(event: Any, settings: Settings, groups: frozenset[str]) -> dict[str, Any]:
    """PIN a launch, RELEASE a termination of a managed group; IGNORE what is not ours."""
    if is_test_notification(event):
        return ignore("Auto Scaling test notification")
    is_repair = isinstance(event, dict) and "repair" in event
    action = LifecycleAction.from_repair(event) if is_repair else LifecycleAction.from_event(event)
    if action.group_name not in groups:  # none configured: act on no group at all
        return ignore(f"group {action.group_name} is not managed here", action.instance_id)
    settings = action.settings(settings)
    problem = settings.out_of_bounds()
    if problem:
        raise SettingsOutOfBounds(f"{action.group_name}: {problem}")
    if action.destination == WARM_POOL:
        verb = WARM_POOL_ACTIONS[action.transition, settings.warm_pool_keeps_eni]
    else:
        verb = ACTIONS[action.transition]
    return {
        "action": verb,
        "reason": action.repair or f"{action.kind} of {action.instance_id} in {action.group_name}",
        "instanceId": action.instance_id,
        **({"lifecycle": action.to_dict()} if action.has_action else {}),
        "settings": settings.to_dict(),
        **({"replayOf": action.replay_of} if action.replay_of else {}),
        **({"repair": True} if action.repair else {}),
        # the action's clock: its heartbeats count from when it was last extended
        "heartbeat": Heartbeat(action.extended_at).to_dict(),
        # fields the execution's output reads, whichever path it takes
        "racesLost": 0,
        "lifecycleResult": None,
    }


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return decide(TaskInput.of(event).state, SETTINGS, GROUPS)
