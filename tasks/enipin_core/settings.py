"""Configuration: template Parameters -> function Environment -> these values, read once."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from enipin_core.runstate import field_values, state_dict
from enipin_core.waiting import HEARTBEAT_AT

# Step Functions ends a Standard execution outright at 25,000 history events; keep a fifth spare.
HISTORY_LIMIT = 25_000
HISTORY_BUDGET = 20_000
MAX_GLOBAL_TIMEOUT = 48 * 3600  # a hook's global timeout: min(48 h, 100 x HeartbeatTimeout)
EVENTS_PER_TASK = 5  # TaskStateEntered, TaskScheduled, TaskStarted, TaskSucceeded, TaskStateExited
EVENTS_PER_POLL = 2 + EVENTS_PER_TASK + 2  # the Wait, the Task, the Choice
EVENTS_PER_RETRY = 3  # TaskScheduled, TaskStarted, TaskFailed of one retried attempt
WAIT_LOOPS = 6  # the instance, pool, attachment, agent and two verification waits
FIXED_EVENTS = 120  # the straight path, its Choices and the failure path


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """What one launch needs to know; NotificationMetadata may override the per-group fields."""

    pool_tag_key: str
    pool_tag_value: str
    device_index: int
    poll_seconds: int
    instance_wait_seconds: int
    pool_wait_seconds: int
    attach_wait_seconds: int
    agent_wait_seconds: int
    verify_wait_seconds: int
    heartbeat_timeout: int
    max_attach_candidates: int
    verify_document: str
    launch_failure_result: str
    detach_grace_seconds: int
    detach_wait_seconds: int
    warm_pool_keeps_eni: bool
    # From launch to the SSM Agent online, typically: the first verification is sent then
    # (earlier is refused and polled; later only adds latency). Default for older runs' state.
    agent_start_seconds: int = 25
    # EC2's mutating-request bucket as this deployment may spend it (EC2 request throttling:
    # 50 tokens, refilled at 5 a second, per account and Region): simultaneous launches pace
    # their attaches to it. Defaults for older runs' state.
    attach_burst: float = 50
    attaches_per_second: float = 5

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            pool_tag_key=os.environ.get("POOL_TAG_KEY", "Type"),
            pool_tag_value=os.environ.get("POOL_TAG_VALUE", "Dedicated-ENI"),
            device_index=_env_int("DEVICE_INDEX", 1),
            poll_seconds=_env_int("POLL_SECONDS", 5),
            instance_wait_seconds=_env_int("INSTANCE_WAIT_SECONDS", 300),
            pool_wait_seconds=_env_int("POOL_WAIT_SECONDS", 600),
            attach_wait_seconds=_env_int("ATTACH_WAIT_SECONDS", 60),
            agent_wait_seconds=_env_int("AGENT_WAIT_SECONDS", 600),
            verify_wait_seconds=_env_int("VERIFY_WAIT_SECONDS", 120),
            heartbeat_timeout=_env_int("HOOK_HEARTBEAT_TIMEOUT", 300),
            max_attach_candidates=_env_int("MAX_ATTACH_CANDIDATES", 5),
            verify_document=os.environ.get("VERIFY_DOCUMENT_NAME", "enipin-VerifyNic"),
            launch_failure_result=os.environ.get("LAUNCH_FAILURE_RESULT", "ABANDON"),
            detach_grace_seconds=_env_int("DETACH_GRACE_SECONDS", 30),
            detach_wait_seconds=_env_int("DETACH_WAIT_SECONDS", 120),
            warm_pool_keeps_eni=os.environ.get("WARM_POOL_ENI", "RELEASE") == "KEEP",
            agent_start_seconds=_env_int("AGENT_START_SECONDS", 25),
            attach_burst=float(os.environ.get("ATTACH_BURST", 50)),
            attaches_per_second=float(os.environ.get("ATTACHES_PER_SECOND", 5)),
        )

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        return replace(self, **overrides)

    def launch_wait_seconds(self) -> int:
        """The longest a launch may wait in all, every bound spent (two verification rounds)."""
        return (
            self.instance_wait_seconds
            + self.pool_wait_seconds
            + self.attach_wait_seconds
            + self.agent_wait_seconds
            + 2 * self.verify_wait_seconds
        )

    def history_events(self, wait_seconds: int) -> int:
        """A bound on the history events of a run that waits ``wait_seconds`` in all: every
        poll is a Wait, a Task and a Choice, every heartbeat a Task more; each Task's Retry
        may add its failed attempts."""
        polls = wait_seconds // max(self.poll_seconds, 1) + WAIT_LOOPS
        beats = int(wait_seconds / (self.heartbeat_timeout * HEARTBEAT_AT)) + WAIT_LOOPS
        return (
            polls * (EVENTS_PER_POLL + EVENTS_PER_RETRY)
            + beats * (EVENTS_PER_TASK + EVENTS_PER_RETRY)
            + FIXED_EVENTS
        )

    def global_timeout(self) -> int:
        """How long the hook holds an instance at most, heartbeats or not."""
        return min(MAX_GLOBAL_TIMEOUT, 100 * self.heartbeat_timeout)

    def out_of_bounds(self) -> str | None:
        """Why these bounds cannot hold on AWS, or None: a run that would pass the 25,000
        history events fails outright (past every Catch, its ENI left attached), and a wait
        longer than the hook's global timeout ends in the hook's DefaultResult anyway."""
        for name, seconds in (
            ("launch", self.launch_wait_seconds()),
            ("termination", self.detach_wait_seconds),
        ):
            events = self.history_events(seconds)
            if events > HISTORY_BUDGET:
                return (
                    f"a {name} may wait {seconds}s polling every {self.poll_seconds}s: about "
                    f"{events} history events, over the {HISTORY_BUDGET} kept below Step "
                    f"Functions' limit of {HISTORY_LIMIT}"
                )
            if seconds > self.global_timeout():
                return (
                    f"a {name} may wait {seconds}s, longer than the hook's global timeout of "
                    f"{self.global_timeout()}s (min(48 h, 100 x HookHeartbeatTimeout))"
                )
        return None

    def to_dict(self) -> dict[str, Any]:
        """As ``$.settings`` carries it (camelCase)."""
        return state_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        return cls(**field_values(data))

    @classmethod
    def of_run(cls, state: dict[str, Any]) -> Settings:
        """The run's settings (``$.settings``); the deployment's own when ValidateEvent, which
        writes them, failed (a hook's overrides are then unknown)."""
        return cls.from_dict(state["settings"]) if "settings" in state else cls.from_env()


def managed_groups() -> frozenset[str]:
    """Groups this deployment may act on; an event from any other group is ignored."""
    raw = os.environ.get("MANAGED_GROUPS", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())
