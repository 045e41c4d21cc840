"""Bounded waits driven by the state machine's Wait states, measured on the wall clock.

A Lambda never sleeps: each poll is a Wait state and a Task. What a Task needs to know is how
much time has really passed, and AWS's hooks count wall-clock time, not Wait-state seconds:
Lambda run time, Retry back-off, the SDK's own retries and EventBridge's delivery all count
too. So every Task is handed Step Functions' clock (``TaskInput``), and each wait and the
heartbeat are measured on it.

Each wait has its own bound (``WaitProgress``); the heartbeat is owed across all of them
(``heartbeat`` in the run's state): a pool wait, an attachment, an agent and a verification
that each stay under half the hook's timeout can add up to more than all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# The share of the hook's heartbeat timeout after which a heartbeat is due: half leaves the
# other half for the slowest poll (its Lambda retries, throttled calls) to reach one.
HEARTBEAT_AT = 0.5


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as Step Functions and EventBridge write it ("...Z" or "+00:00")."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class TaskInput:
    """What every Task state passes its function: the run's state, and Step Functions' clock
    (``$$.State``: when the state was entered, how often it was retried)."""

    state: dict[str, Any]
    entered: datetime
    retry_count: int = 0

    @classmethod
    def of(cls, event: dict[str, Any]) -> TaskInput:
        if "state" not in event:  # an execution redriven under an older definition
            return cls(state=dict(event), entered=datetime.now(UTC))
        task = event.get("task") or {}
        entered = task.get("EnteredTime")
        return cls(
            state=dict(event["state"]),
            entered=parse_time(entered) if entered else datetime.now(UTC),
            retry_count=int(task.get("RetryCount") or 0),
        )

    @property
    def now(self) -> datetime:
        """The later of Step Functions' entry into the state and the function's own clock: a
        retried attempt runs after the entry, by back-offs only the function's clock sees."""
        return max(self.entered, datetime.now(UTC))


@dataclass(frozen=True)
class WaitProgress:
    """One wait: when its first poll came, and how many polls it has had."""

    started: str | None = None
    polls: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WaitProgress:
        data = data or {}  # a redrive may bring the fields of an older release: ignore those
        started = data.get("started")
        return cls(started=str(started) if started else None, polls=int(data.get("polls", 0)))

    def waited(self, now: datetime) -> float:
        return 0.0 if self.started is None else (now - parse_time(self.started)).total_seconds()

    def advance(self, now: datetime) -> WaitProgress:
        return WaitProgress(started=self.started or iso(now), polls=self.polls + 1)

    def exhausted(self, limit_seconds: int, now: datetime) -> bool:
        return self.started is not None and self.waited(now) >= limit_seconds

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started, "polls": self.polls}


@dataclass(frozen=True)
class Heartbeat:
    """When the run's lifecycle action was last extended (``$.heartbeat``): by its start (the
    event's time), by the reconciler before it resumed the action, or by a heartbeat task.

    Due once ``HEARTBEAT_AT`` of the hook's timeout has passed since; it stays due, whichever
    wait the run is in, until a heartbeat task moves ``at``."""

    at: str | None = None
    due: bool = False

    @classmethod
    def of(cls, state: dict[str, Any]) -> Heartbeat:
        data = state.get("heartbeat") or {}
        at = data.get("at")
        return cls(str(at) if at else None, bool(data.get("due", False)))

    @classmethod
    def since(cls, moment: datetime) -> Heartbeat:
        return cls(iso(moment), False)

    def seen_at(self, now: datetime, heartbeat_timeout: int) -> Heartbeat:
        """The heartbeat as of ``now``: due once enough of the hook's timeout has passed."""
        if self.at is None:  # nothing known of the action's clock: extend it at once
            return Heartbeat(None, True)
        elapsed = (now - parse_time(self.at)).total_seconds()
        return Heartbeat(self.at, self.due or elapsed >= heartbeat_timeout * HEARTBEAT_AT)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "due": self.due}


def heartbeat_as_of(task: TaskInput, heartbeat_timeout: int) -> dict[str, Any]:
    """The run's heartbeat as of now, on a poll that found what it waited for: a run that keeps
    making progress, only slowly (Lambda retries, a throttled account), owes heartbeats too,
    and its Choice takes the wait's heartbeat state before it moves on. A run without an action
    (a replay's pin) owes none."""
    beat = Heartbeat.of(task.state)
    if not task.state.get("lifecycle"):
        return beat.to_dict()
    return beat.seen_at(task.now, heartbeat_timeout).to_dict()


def after_poll(
    task: TaskInput, wait: WaitProgress, heartbeat_timeout: int
) -> tuple[WaitProgress, dict[str, Any]]:
    """One more poll of ``wait``: (the wait advanced, the run's heartbeat as of now)."""
    now = task.now
    beat = Heartbeat.of(task.state).seen_at(now, heartbeat_timeout)
    return wait.advance(now), beat.to_dict()


def until_heartbeat_due(task: TaskInput, heartbeat_timeout: int) -> int:
    """Whole seconds before the run's next heartbeat falls due (0 once it has): the longest a
    Wait state may take, as a wait takes none. A run without an action owes none."""
    half = int(heartbeat_timeout * HEARTBEAT_AT)
    if not task.state.get("lifecycle"):
        return half
    beat = Heartbeat.of(task.state)
    if beat.at is None or beat.due:
        return 0
    left = parse_time(beat.at) + timedelta(seconds=half) - task.now
    return max(0, min(half, int(left.total_seconds())))


def wait_after_launch(launched_at: str | None, seconds: float, now: datetime, longest: int) -> int:
    """Whole seconds from ``now`` until ``seconds`` after an instance's launch, for a Wait
    state: 0 once past, or when the launch is unknown; at most ``longest``."""
    if launched_at is None:
        return 0
    moment = parse_time(launched_at) + timedelta(seconds=seconds)
    wait = math.ceil((moment - now).total_seconds())
    return max(0, min(wait, longest))
