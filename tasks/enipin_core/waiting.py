"""Bounded waits driven by the state machine's Wait states, counted rather than clocked.

A Lambda never sleeps and never trusts its own clock: each poll adds the Wait state's interval,
so the bound and the heartbeat cadence follow the ASL whatever the invocations cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WaitProgress:
    """How long a wait has run (in poll intervals) and whether a heartbeat is due."""

    polls: int = 0
    waited_seconds: int = 0
    since_heartbeat: int = 0
    heartbeat_due: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WaitProgress:
        return cls(**data) if data else cls()

    def advance(self, interval: int, heartbeat_timeout: int) -> WaitProgress:
        """One more poll; a heartbeat falls due once half the hook's timeout has passed."""
        since = self.since_heartbeat + interval
        due = since * 2 >= heartbeat_timeout
        return WaitProgress(
            polls=self.polls + 1,
            waited_seconds=self.waited_seconds + interval,
            since_heartbeat=0 if due else since,
            heartbeat_due=due,
        )

    def exhausted(self, limit_seconds: int) -> bool:
        return self.waited_seconds >= limit_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
