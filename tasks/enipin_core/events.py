"""The lifecycle event, validated against its JSON Schema, and the request a workflow acts on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from enipin_core.errors import InvalidLifecycleEvent
from enipin_core.names import KINDS, TEST_NOTIFICATION, execution_name
from enipin_core.settings import Settings

# NotificationMetadata keys -> Settings fields
_OVERRIDES = {
    "poolTagValue": "pool_tag_value",
    "deviceIndex": "device_index",
    "poolWaitSeconds": "pool_wait_seconds",
    "agentWaitSeconds": "agent_wait_seconds",
    "verifyWaitSeconds": "verify_wait_seconds",
}


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("enipin_core").joinpath("schemas", name).read_text()
    return jsonschema.Draft202012Validator(json.loads(text))


def _first_error(name: str, instance: Any) -> str | None:
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
    return f"{where}: {errors[0].message}"


def is_test_notification(event: Any) -> bool:
    """Auto Scaling's test message (SNS/SQS shape, or wrapped as an event's detail)."""
    if not isinstance(event, dict):
        return False
    detail = event.get("detail")
    return event.get("Event") == TEST_NOTIFICATION or (
        isinstance(detail, dict) and detail.get("Event") == TEST_NOTIFICATION
    )


@dataclass(frozen=True)
class LifecycleAction:
    """One pending lifecycle action: which instance, which group, how to complete it."""

    instance_id: str
    group_name: str
    hook_name: str | None  # None: a repair with no lifecycle action to complete
    token: str | None  # None: a recovered action, completed by instance id
    transition: str
    origin: str | None
    destination: str | None
    metadata: dict[str, Any]
    replay_of: str | None = None
    repair: str | None = None  # why the reconciler started this run
    # When the action was last extended, as far as this input knows: the event's time (the
    # action began then), or the reconciler's heartbeat before it resumed it.
    extended_at: str | None = None

    @classmethod
    def from_repair(cls, request: Any) -> LifecycleAction:
        problem = _first_error("repair-request.schema.json", request)
        if problem:
            raise InvalidLifecycleEvent(f"not a repair request: {problem}")
        repair = request["repair"]
        return cls(
            instance_id=repair["instanceId"],
            group_name=repair["groupName"],
            hook_name=repair.get("hookName"),
            token=None,
            transition=repair["transition"],
            origin=None,
            destination=repair.get("destination"),
            metadata=parse_metadata(repair.get("notificationMetadata")),
            repair=repair["reason"],
            extended_at=repair.get("heartbeatAt"),
        )

    @classmethod
    def from_event(cls, event: Any) -> LifecycleAction:
        problem = _first_error("lifecycle-event.schema.json", event)
        if problem:
            raise InvalidLifecycleEvent(f"not an Auto Scaling lifecycle event: {problem}")
        detail = event["detail"]
        return cls(
            instance_id=detail["EC2InstanceId"],
            group_name=detail["AutoScalingGroupName"],
            hook_name=detail["LifecycleHookName"],
            token=detail["LifecycleActionToken"],
            transition=detail["LifecycleTransition"],
            origin=detail.get("Origin"),
            destination=detail.get("Destination"),
            metadata=parse_metadata(detail.get("NotificationMetadata")),
            replay_of=(event.get("replay") or {}).get("of"),
            extended_at=event.get("time"),
        )

    @property
    def kind(self) -> str:
        return KINDS[self.transition]

    def execution_name(self) -> str:
        """Deterministic: a duplicated event maps to the same execution, and the console lists
        an instance's runs under its id."""
        return execution_name(self.instance_id, self.transition, self.token)

    @property
    def has_action(self) -> bool:
        """Is there a lifecycle action to complete (by token, or by instance id)?"""
        return self.hook_name is not None

    def settings(self, base: Settings) -> Settings:
        return base.with_overrides({_OVERRIDES[k]: v for k, v in self.metadata.items()})

    def to_dict(self) -> dict[str, Any]:
        action = {
            "instanceId": self.instance_id,
            "groupName": self.group_name,
            "hookName": self.hook_name,
            "transition": self.transition,
        }
        return action | ({"token": self.token} if self.token else {})


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """Overrides are JSON; plain text metadata (used by other tools) carries none."""
    if not raw or not raw.lstrip().startswith("{"):
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidLifecycleEvent(f"NotificationMetadata is not valid JSON: {exc}") from None
    problem = _first_error("notification-metadata.schema.json", data)
    if problem:
        raise InvalidLifecycleEvent(f"NotificationMetadata: {problem}")
    return dict(data)
