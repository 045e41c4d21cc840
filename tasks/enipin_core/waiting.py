"""Bounded waits driven by the state machine's Wait states, counted rather than clocked.

A Lambda never sleeps and never trusts its own clock: each poll adds the Wait state's interval,
so the bound and the heartbeat cadence follow the ASL whatever the invocations cost.

Each wait has its own bound (``WaitProgress``); the heartbeat is owed across all of them
(``heartbeat`` in the run's state): a pool wait, an attachment, an agent and a verification
that each stay under half the hook's timeout can add up to more than all of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WaitProgress:
    """How long one wait has run, in poll intervals."""

    polls: int = 0
    waited_seconds: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WaitProgress:
        data = data or {}  # a redrive may bring the fields of an older release: ignore those
        return cls(
            polls=int(data.get("polls", 0)), waited_seconds=int(data.get("waited_seconds", 0))
        )

    def advance(self, interval: int) -> WaitProgress:
        return WaitProgress(polls=self.polls + 1, waited_seconds=self.waited_seconds + interval)

    def exhausted(self, limit_seconds: int) -> bool:
        return self.waited_seconds >= limit_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Heartbeat:
    """Counted waiting since the run last heartbeated its lifecycle action (``$.heartbeat``).

    Due once half the hook's timeout has passed; it stays due, whichever wait the run is in,
    until a heartbeat task resets it."""

    since_seconds: int = 0
    due: bool = False

    @classmethod
    def of(cls, state: dict[str, Any]) -> Heartbeat:
        data = state.get("heartbeat") or {}
        return cls(int(data.get("since_seconds", 0)), bool(data.get("due", False)))

    def waited(self, interval: int, heartbeat_timeout: int) -> Heartbeat:
        since = self.since_seconds + interval
        return Heartbeat(since, since * 2 >= heartbeat_timeout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def after_poll(
    state: dict[str, Any], wait: WaitProgress, interval: int, heartbeat_timeout: int
) -> tuple[WaitProgress, dict[str, Any]]:
    """One more poll of ``wait``: (the wait advanced, the run's heartbeat after it)."""
    beat = Heartbeat.of(state).waited(interval, heartbeat_timeout)
    return wait.advance(interval), beat.to_dict()
