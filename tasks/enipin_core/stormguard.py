"""The storm guard: when a group's launches keep failing, suspend its Launch process.

With ``LaunchFailureResult=ABANDON`` Auto Scaling terminates an instance enipin could not pin
and launches another, which fails the same way while the cause (a broken AMI, a missing
instance profile, an empty pool) lasts. The guard counts a group's given-up launches in a
window and, at the threshold, suspends the group's ``Launch`` process: the loop stops, the
alarm says so, and ``enipin guard release`` resumes it once the cause is fixed.

Its state lives on the group itself, as tags, so it survives a cold start and shows in the
console: one tag per given-up launch (one key per instance, so concurrent failures never
overwrite each other) and, once tripped, the trip tag saying when and why. The CLI reads and
clears the same tags.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

FAILED_PREFIX = "enipin:failed-launch:"  # + the instance id; its value is when it was given up
TRIPPED_KEY = "enipin:storm-guard"  # why the guard suspended Launch, and when
LAUNCH_PROCESS = "Launch"
MAX_THRESHOLD = 20  # its tags share the group's 50 with the user's own


@dataclass(frozen=True)
class GuardSettings:
    failures: int  # given-up launches in the window that trip it; 0 turns it off
    window_minutes: int

    @classmethod
    def from_env(cls) -> GuardSettings:
        return cls(
            failures=min(int(os.environ.get("STORM_GUARD_FAILURES", 5)), MAX_THRESHOLD),
            window_minutes=int(os.environ.get("STORM_GUARD_WINDOW_MINUTES", 60)),
        )

    @property
    def on(self) -> bool:
        return self.failures > 0


@dataclass(frozen=True)
class GuardState:
    """What the group's tags say: the failures in the window, and the trip if tripped."""

    group: str
    failures: tuple[tuple[str, datetime], ...]  # (instance id, given up at), in the window
    stale: tuple[str, ...]  # failure tag keys past the window
    tripped: str | None  # the trip tag's value
    tripped_now: bool = False  # this count tripped it

    def to_dict(self) -> dict[str, object]:
        return {
            "groupName": self.group,
            "failures": len(self.failures),
            "tripped": self.tripped,
            "trippedNow": self.tripped_now,
        }


def _key(group: str, key: str) -> dict[str, object]:
    return {"ResourceId": group, "ResourceType": "auto-scaling-group", "Key": key}


def _tag(group: str, key: str, value: str) -> dict[str, object]:
    return {**_key(group, key), "Value": value, "PropagateAtLaunch": False}


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None  # not ours to read: treated as past the window


def read(autoscaling: Any, group: str, now: datetime, window_minutes: int) -> GuardState:
    """The guard's tags on ``group``, split into failures in the window and stale ones."""
    return state_of(group, _group_tags(autoscaling, group), now, window_minutes)


def state_of(group: str, tags: dict[str, str], now: datetime, window_minutes: int) -> GuardState:
    """What the guard's tags among ``tags`` (the group's, key -> value) say as of ``now``."""
    since = now - timedelta(minutes=window_minutes)
    failures: list[tuple[str, datetime]] = []
    stale: list[str] = []
    for key, value in tags.items():
        if not key.startswith(FAILED_PREFIX):
            continue
        at = _parse(value)
        if at is not None and at >= since:
            failures.append((key.removeprefix(FAILED_PREFIX), at))
        else:
            stale.append(key)
    return GuardState(
        group, tuple(sorted(failures, key=lambda f: f[1])), tuple(stale), tags.get(TRIPPED_KEY)
    )


def launch_suspended(group: dict[str, Any]) -> bool:
    """Whether a group, as DescribeAutoScalingGroups describes it, has Launch suspended."""
    return any(p["ProcessName"] == LAUNCH_PROCESS for p in group.get("SuspendedProcesses", []))


def _group_tags(autoscaling: Any, group: str) -> dict[str, str]:
    pages = autoscaling.get_paginator("describe_tags").paginate(
        Filters=[{"Name": "auto-scaling-group", "Values": [group]}]
    )
    return {t["Key"]: t["Value"] for page in pages for t in page["Tags"]}


def record_failure(
    autoscaling: Any, group: str, instance_id: str, now: datetime, settings: GuardSettings
) -> GuardState:
    """Count a given-up launch of ``instance_id``; trip the guard at the threshold. Idempotent
    per instance: a retried invocation writes the same key again."""
    autoscaling.create_or_update_tags(Tags=[_tag(group, FAILED_PREFIX + instance_id, _stamp(now))])
    state = read(autoscaling, group, now, settings.window_minutes)
    # Tripped again even if the trip tag is still there: someone may have resumed Launch by
    # hand, and a guard that stayed disarmed would let the loop run (a trip clears the count).
    if len(state.failures) < settings.failures:
        _forget(autoscaling, group, state.stale)
        return state
    reason = (
        f"{_stamp(now)}: {len(state.failures)} launches given up in "
        f"{settings.window_minutes} min; enipin guard release --asg {group}"
    )
    trip(autoscaling, group, reason)
    _forget(autoscaling, group, [*state.stale, *(FAILED_PREFIX + i for i, _ in state.failures)])
    return GuardState(group, state.failures, (), reason, tripped_now=True)


def trip(autoscaling: Any, group: str, reason: str) -> None:
    """Suspend the group's launches, and say why on the group (tags' values take 256)."""
    autoscaling.suspend_processes(AutoScalingGroupName=group, ScalingProcesses=[LAUNCH_PROCESS])
    autoscaling.create_or_update_tags(Tags=[_tag(group, TRIPPED_KEY, reason[:256])])


def release(autoscaling: Any, group: str) -> GuardState:
    """Resume the group's launches and clear the guard's tags: a fresh count from here."""
    tags = _group_tags(autoscaling, group)
    ours = [k for k in tags if k == TRIPPED_KEY or k.startswith(FAILED_PREFIX)]
    autoscaling.resume_processes(AutoScalingGroupName=group, ScalingProcesses=[LAUNCH_PROCESS])
    _forget(autoscaling, group, ours)
    return GuardState(group, (), (), tags.get(TRIPPED_KEY))


def _forget(autoscaling: Any, group: str, keys: Iterable[str]) -> None:
    keys = list(keys)
    if keys:
        autoscaling.delete_tags(Tags=[_key(group, key) for key in keys])
