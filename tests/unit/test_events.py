"""Event validation and the launch decision: pure functions, no AWS."""

from __future__ import annotations

import json

import pytest
from conftest import load_event
from validate_event import decide

from enipin_core.errors import InvalidLifecycleEvent
from enipin_core.settings import Settings

BASE = Settings.from_env()
GROUPS = frozenset({"enipin-demo"})


def test_notification_metadata_overrides_the_groups_settings() -> None:
    metadata = json.dumps({"poolTagValue": "license-a", "deviceIndex": 2, "poolWaitSeconds": 30})
    decision = decide(
        load_event("launch-lifecycle-action", NotificationMetadata=metadata), BASE, GROUPS
    )
    assert decision["action"] == "PIN"
    assert decision["settings"]["pool_tag_value"] == "license-a"
    assert decision["settings"]["device_index"] == 2
    assert decision["settings"]["pool_wait_seconds"] == 30


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


def test_a_terminate_transition_is_not_a_launch() -> None:
    event = load_event(
        "launch-lifecycle-action", LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING"
    )
    decision = decide(event, BASE, GROUPS)
    assert decision["action"] == "IGNORE"
    assert "not a launch" in decision["reason"]


def test_with_no_managed_group_configured_no_event_is_acted_on() -> None:
    decision = decide(load_event("launch-lifecycle-action"), BASE, frozenset())
    assert decision["action"] == "IGNORE"
    assert "not managed here" in decision["reason"]
