"""Completing and extending lifecycle actions; a finished action is an outcome, not a crash."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from enipin_core.aws import error_code, error_message

COMPLETED = "COMPLETED"
ALREADY_FINISHED = "ALREADY_FINISHED"


def _is_no_active_action(exc: ClientError) -> bool:
    return error_code(exc) == "ValidationError" and "No active Lifecycle Action" in error_message(
        exc
    )


def complete_action(autoscaling: Any, action: dict[str, Any], result: str) -> str:
    """CONTINUE or ABANDON. A replayed or duplicated execution finds the action already done."""
    try:
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName=action["groupName"],
            LifecycleHookName=action["hookName"],
            LifecycleActionToken=action["token"],
            InstanceId=action["instanceId"],
            LifecycleActionResult=result,
        )
    except ClientError as exc:
        if _is_no_active_action(exc):
            return ALREADY_FINISHED
        raise
    return COMPLETED


def record_heartbeat(autoscaling: Any, action: dict[str, Any]) -> str:
    try:
        autoscaling.record_lifecycle_action_heartbeat(
            AutoScalingGroupName=action["groupName"],
            LifecycleHookName=action["hookName"],
            LifecycleActionToken=action["token"],
            InstanceId=action["instanceId"],
        )
    except ClientError as exc:
        if _is_no_active_action(exc):
            return ALREADY_FINISHED
        raise
    return COMPLETED
