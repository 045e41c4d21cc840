"""One clock for every delay the sandbox models, real or compressed.

AWS waits (Wait states, Retry back-offs, heartbeat timeouts, agent start-up, ENI
release after termination) are expressed in AWS seconds. ``scale`` says how many
real seconds one AWS second takes: 1.0 is real time, the fast clock uses a small
fraction so a scenario keeps its ordering and history while taking no real time.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

FAST_SCALE = 0.02  # one AWS minute in 1.2 real seconds


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """Scaled time plus a single scheduler thread for delayed sandbox events."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0_real = time.monotonic()
        self._t0_wall = datetime.now(UTC)
        self._heap: list[_Timer] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sandbox-clock", daemon=True)
        self._thread.start()

    def monotonic(self) -> float:
        """AWS seconds elapsed since the clock started."""
        return (time.monotonic() - self._t0_real) / self.scale

    def now(self) -> datetime:
        """The sandbox's wall clock (AWS time)."""
        return self._t0_wall + timedelta(seconds=self.monotonic())

    def datetime_class(self) -> type[datetime]:
        """``datetime`` whose ``now()`` reads this clock: naive UTC, or in the zone asked for."""
        clock = self

        class AwsTime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> AwsTime:
                moment = clock.now()
                moment = moment.astimezone(tz) if tz else moment.replace(tzinfo=None)
                return cls.combine(moment.date(), moment.timetz())

        return AwsTime

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds * self.scale)

    def real_seconds(self, seconds: float) -> float:
        return seconds * self.scale

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Timer:
        """Run ``fn`` on the scheduler thread after ``delay`` AWS seconds."""
        timer = _Timer(time.monotonic() + max(delay, 0.0) * self.scale, next(self._seq), fn)
        with self._cv:
            heapq.heappush(self._heap, timer)
            self._cv.notify()
        return timer

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0].due > time.monotonic()):
                    timeout = self._heap[0].due - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._closed:
                    return
                timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.fn()
                except Exception:  # a scheduled event must never stop the clock
                    import logging

                    logging.getLogger(__name__).exception("sandbox timer failed")
