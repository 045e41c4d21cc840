"""Completing and extending lifecycle actions; a finished action is an outcome, not a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from enipin_core.aws import error_code, error_message

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


def lifecycle_state(autoscaling: Any, instance_id: str) -> str | None:
    """Where Auto Scaling has the instance (``Pending:Wait``, ``InService``, …); None once it
    has left the group."""
    found = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
    instances = found["AutoScalingInstances"]
    return str(instances[0]["LifecycleState"]) if instances else None


def is_waiting(state: str | None, transition: str) -> bool:
    """Is a lifecycle action of ``transition`` still holding the instance?"""
    prefix = "Pending" if transition.endswith("LAUNCHING") else "Terminating"
    return state == f"{prefix}:Wait"
