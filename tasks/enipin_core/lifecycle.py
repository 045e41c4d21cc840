"""Completing and extending lifecycle actions; a finished action is an outcome, not a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError

from enipin_core.aws import error_code, error_message
from enipin_core.names import LAUNCHING, TERMINATING

COMPLETED = "COMPLETED"
ALREADY_FINISHED = "ALREADY_FINISHED"


def _on_action(call: Callable[..., Any], action: dict[str, Any], **extra: Any) -> str:
    """Call ``call`` for the action; a replayed or duplicated execution finds it already done."""
    # A recovered action (its event was lost) has no token: the instance id names it.
    token = {"LifecycleActionToken": action["token"]} if action.get("token") else {}
    try:
        call(
            AutoScalingGroupName=action["groupName"],
            LifecycleHookName=action["hookName"],
            InstanceId=action["instanceId"],
            **token,
            **extra,
        )
    except ClientError as exc:
        if error_code(exc) == "ValidationError" and "No active Lifecycle Action" in error_message(
            exc
        ):
            return ALREADY_FINISHED
        raise
    return COMPLETED


def complete_action(autoscaling: Any, action: dict[str, Any], result: str) -> str:
    """CONTINUE or ABANDON."""
    return _on_action(autoscaling.complete_lifecycle_action, action, LifecycleActionResult=result)


def record_heartbeat(autoscaling: Any, action: dict[str, Any]) -> str:
    return _on_action(autoscaling.record_lifecycle_action_heartbeat, action)


# Where Auto Scaling has an instance that launches into service, on its way to an ENI.
LAUNCHING_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed"})


def launching_by_az(autoscaling: Any, group_name: str) -> dict[str, list[str]]:
    """The group's instances launching into service, per AZ, by Auto Scaling's one compact
    answer for the group. Its warm pool's instances are not in that answer: a launch into a
    pool that keeps ENIs ranks as if alone, and a race it loses moves on to the next ENI."""
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])
    by_az: dict[str, list[str]] = {}
    for group in groups["AutoScalingGroups"]:
        for instance in group.get("Instances", []):
            if instance.get("LifecycleState") in LAUNCHING_STATES:
                by_az.setdefault(instance["AvailabilityZone"], []).append(instance["InstanceId"])
    return by_az


def lifecycle_state(autoscaling: Any, instance_id: str) -> str | None:
    """Where Auto Scaling has the instance (``Pending:Wait``, ``InService``, …); None once it
    has left the group."""
    found = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
    instances = found["AutoScalingInstances"]
    return str(instances[0]["LifecycleState"]) if instances else None


# Where a lifecycle action holds an instance, and of which transitions it may be. Warm pools
# share one state between two: an instance launched into the pool waits in Warmed:Pending:Wait
# on the launch hooks, and one returning to the pool on scale-in waits there on the terminate
# hooks. Auto Scaling's state alone cannot tell them apart; the hook that accepts a heartbeat for
# the instance can (``holding_hook``), and that is the only answer enipin acts on.
WAITS: dict[str, tuple[str, ...]] = {
    "Pending:Wait": (LAUNCHING,),
    "Warmed:Pending:Wait": (LAUNCHING, TERMINATING),
    "Terminating:Wait": (TERMINATING,),
    "Warmed:Terminating:Wait": (TERMINATING,),
}


def is_leaving(state: str | None) -> bool:
    """Has the instance left the group (None) or begun to (``Terminating*``, and
    ``Warmed:Terminating*`` out of the warm pool)? An ENI must not go on, or stay on, it."""
    return state is None or "Terminat" in state


def may_carry_eni(state: str | None, warm_pool_keeps_eni: bool) -> bool:
    """May an instance in ``state`` carry a pool ENI? Not once it is leaving; in the warm pool
    only where the deployment keeps ENIs there (``WarmPoolEni=KEEP``)."""
    if is_leaving(state):
        return False
    return warm_pool_keeps_eni or not (state or "").startswith("Warmed:")


def still_holds(autoscaling: Any, action: dict[str, Any]) -> bool:
    """Is this very action (its token names it) still pending? Asked with a heartbeat, the one
    answer Auto Scaling gives per action: a state such as ``Warmed:Pending:Wait`` may be another
    transition's action holding the instance. The heartbeat extends it, harmlessly."""
    return record_heartbeat(autoscaling, action) == COMPLETED


def transitions_holding(state: str | None) -> tuple[str, ...]:
    """The transitions whose lifecycle action may hold an instance in ``state``."""
    return WAITS.get(state or "", ())


def is_waiting(state: str | None, transition: str) -> bool:
    """May a lifecycle action of ``transition`` still be holding the instance?"""
    return transition in transitions_holding(state)


def holding_hook(
    autoscaling: Any,
    group: str,
    instance_id: str,
    hooks: dict[str, str],
    candidates: Iterable[str],
) -> str | None:
    """Of ``candidates``, the transition whose hook holds the instance now, asked of Auto
    Scaling itself: a heartbeat succeeds only on the hook whose action is pending (and extends
    it, a full heartbeat timeout from now). None when no action of ours holds it."""
    for transition in candidates:
        hook = hooks.get(transition)
        if hook is None:
            continue
        action = {"groupName": group, "hookName": hook, "instanceId": instance_id}
        if record_heartbeat(autoscaling, action) == COMPLETED:
            return transition
    return None
