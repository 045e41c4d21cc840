"""Event validation and the launch decision: pure functions, no AWS."""

from __future__ import annotations

import json

import pytest
from conftest import load_event
from validate_event import decide

from enipin_core.errors import InvalidLifecycleEvent
from enipin_core.events import LifecycleAction
from enipin_core.settings import Settings

BASE = Settings.from_env()
GROUPS = frozenset({"enipin-demo"})


def test_notification_metadata_overrides_the_groups_settings() -> None:
    metadata = json.dumps({"poolTagValue": "license-a", "deviceIndex": 2, "poolWaitSeconds": 30})
    decision = decide(
        load_event("launch-lifecycle-action", NotificationMetadata=metadata), BASE, GROUPS
    )
    assert decision["action"] == "PIN"
    assert decision["settings"]["poolTagValue"] == "license-a"
    assert decision["settings"]["deviceIndex"] == 2
    assert decision["settings"]["poolWaitSeconds"] == 30


@pytest.mark.parametrize(
    "metadata",
    ['{"deviceIndex": 0}', '{"poolTagValue": ""}', '{"unknown": 1}', "{not json"],
)
def test_invalid_notification_metadata_is_a_named_error(metadata: str) -> None:
    event = load_event("launch-lifecycle-action", NotificationMetadata=metadata)
    with pytest.raises(InvalidLifecycleEvent, match="NotificationMetadata"):
        decide(event, BASE, GROUPS)


def test_plain_text_metadata_carries_no_overrides() -> None:
    event = load_event("launch-lifecycle-action", NotificationMetadata="owned by team x")
    assert decide(event, BASE, GROUPS)["settings"] == BASE.to_dict()


def test_each_transition_gets_its_own_action_so_each_workflow_acts_on_its_own_only() -> None:
    assert decide(load_event("launch-lifecycle-action"), BASE, GROUPS)["action"] == "PIN"
    terminate = decide(load_event("terminate-lifecycle-action"), BASE, GROUPS)
    assert terminate["action"] == "RELEASE"
    assert terminate["lifecycle"]["transition"] == "autoscaling:EC2_INSTANCE_TERMINATING"


def test_execution_names_are_deterministic_findable_by_instance_and_within_80_chars() -> None:
    launch = LifecycleAction.from_event(load_event("launch-lifecycle-action"))
    again = LifecycleAction.from_event(load_event("launch-lifecycle-action"))
    terminate = LifecycleAction.from_event(load_event("terminate-lifecycle-action"))
    assert launch.execution_name() == again.execution_name()
    assert launch.execution_name() == (
        "i-1234567890abcdef0-launch-87654321-4321-4321-4321-210987654321"
    )
    assert terminate.execution_name().startswith("i-1234567890abcdef0-terminate-")
    longest = LifecycleAction.from_event(
        load_event("terminate-lifecycle-action", EC2InstanceId="i-" + "f" * 17)
    )
    assert len(longest.execution_name()) <= 80


def test_a_replay_marker_is_carried_into_the_decision() -> None:
    event = load_event("launch-lifecycle-action")
    event["replay"] = {"of": "arn:aws:states:us-east-1:123456789012:execution:m:n"}
    assert decide(event, BASE, GROUPS)["replayOf"].endswith(":execution:m:n")
    assert "replayOf" not in decide(load_event("launch-lifecycle-action"), BASE, GROUPS)


def test_with_no_managed_group_configured_no_event_is_acted_on() -> None:
    decision = decide(load_event("launch-lifecycle-action"), BASE, frozenset())
    assert decision["action"] == "IGNORE"
    assert "not managed here" in decision["reason"]


@pytest.mark.parametrize(
    ("event", "origin", "destination", "keep", "action"),
    [
        ("launch-lifecycle-action", "EC2", "WarmPool", False, "ENTER_WARM_POOL"),
        ("launch-lifecycle-action", "EC2", "WarmPool", True, "PIN"),
        ("launch-lifecycle-action", "WarmPool", "AutoScalingGroup", False, "PIN"),
        ("launch-lifecycle-action", "WarmPool", "AutoScalingGroup", True, "PIN"),
        ("terminate-lifecycle-action", "AutoScalingGroup", "WarmPool", False, "RELEASE"),
        ("terminate-lifecycle-action", "AutoScalingGroup", "WarmPool", True, "KEEP_FOR_WARM_POOL"),
        ("terminate-lifecycle-action", "AutoScalingGroup", "EC2", True, "RELEASE"),
    ],
)
def test_warm_pool_transitions_follow_the_warm_pool_eni_policy(
    event: str, origin: str, destination: str, keep: bool, action: str
) -> None:
    settings = BASE.with_overrides({"warm_pool_keeps_eni": keep})
    decision = decide(load_event(event, Origin=origin, Destination=destination), settings, GROUPS)
    assert decision["action"] == action
