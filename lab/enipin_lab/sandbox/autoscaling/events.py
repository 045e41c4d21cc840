"""Lifecycle events: every action emits AWS's ``EC2 Instance-launch/terminate Lifecycle Action``
event on the default bus through moto's events backend, best effort:
:meth:`AutoScalingFidelity.drop_next`, :meth:`~AutoScalingFidelity.duplicate_next`,
:meth:`~AutoScalingFidelity.delay_next` and :meth:`~AutoScalingFidelity.set_event_fault_rates`
lose, repeat or delay events on purpose. Events go out from the clock thread: asynchronously,
as on AWS.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from typing import Any

from moto.autoscaling.models import FakeAutoScalingGroup, LifecycleHook
from moto.events.models import events_backends

from enipin_lab.sandbox.autoscaling.model import LAUNCHING, TERMINATING, _Action
from enipin_lab.sandbox.clock import Clock

# detail-type per transition (Auto Scaling event reference).
_DETAIL_TYPE = {
    LAUNCHING: "EC2 Instance-launch Lifecycle Action",
    TERMINATING: "EC2 Instance-terminate Lifecycle Action",
}

# moto's envelope for targets without an InputTransformer leaves out "account", which
# every AWS event carries.
_EVENT_TEMPLATE = (
    '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
    '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
    '"detail": <detail>}'
)


@dataclass
class _FaultRule:
    copies: int  # 0 drops the event, 2 delivers it twice
    remaining: int
    transition: str | None
    delay: float


class _EventFaults:
    """Decides how many copies of each lifecycle event EventBridge delivers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_FaultRule] = []
        self._drop_rate = 0.0
        self._duplicate_rate = 0.0
        self._duplicate_delay = 0.0
        self._rng = random.Random(0)

    def add(self, rule: _FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def set_rates(self, drop: float, duplicate: float, seed: int | None, delay: float) -> None:
        with self._lock:
            self._drop_rate, self._duplicate_rate = drop, duplicate
            self._duplicate_delay = delay
            self._rng = random.Random(seed)

    def decide(self, transition: str) -> tuple[int, float]:
        """(copies to deliver, AWS seconds before the second copy)."""
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and rule.transition in (None, transition):
                    rule.remaining -= 1
                    return rule.copies, rule.delay
            roll = self._rng.random()
            if roll < self._drop_rate:
                return 0, 0.0
            if roll < self._drop_rate + self._duplicate_rate:
                return 2, self._duplicate_delay
            return 1, 0.0


class _Events:
    """The lowest layer: the state every layer shares (clock, lock, closed) and the events."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._faults = _EventFaults()
        self._log: list[dict[str, Any]] = []
        self._deliveries = 0  # event copies scheduled, not yet put on the bus
        self._closed = False

    def _emit(self, group: FakeAutoScalingGroup, hook: LifecycleHook, action: _Action) -> None:
        detail: dict[str, str] = {
            "LifecycleActionToken": action.token,
            "AutoScalingGroupName": action.group_name,
            "LifecycleHookName": action.hook_name,
            "EC2InstanceId": action.instance_id,
            "LifecycleTransition": action.transition,
        }
        metadata = getattr(hook, "notification_metadata", None)
        if metadata is not None:
            detail["NotificationMetadata"] = metadata
        detail["Origin"] = action.origin
        detail["Destination"] = action.destination
        entry = {
            "Source": "aws.autoscaling",
            "DetailType": _DETAIL_TYPE[action.transition],
            "Detail": json.dumps(detail),
            "Resources": [group.arn],
            "Time": self._clock.now().timestamp(),
        }
        # Delivered from the clock thread: asynchronous as on AWS, and never while the
        # caller (possibly moto building the group) holds half-made state.
        self._deliveries += 1
        self._clock.call_later(0.0, lambda: self._deliver(action, entry))

    def _deliver(self, action: _Action, entry: dict[str, Any]) -> None:
        try:
            if self._closed:
                return
            copies, delay = self._faults.decide(action.transition)
            with self._lock:
                self._log.append(
                    {
                        "token": action.token,
                        "transition": action.transition,
                        "instance_id": action.instance_id,
                        "copies": copies,
                    }
                )
            if copies == 1 and delay > 0:  # late
                self._put_later(action, entry, delay)
            elif copies:
                self._put(action, entry)
            if copies == 2:
                self._put_later(action, entry, delay)
        finally:
            self._delivered()

    def _put_later(self, action: _Action, entry: dict[str, Any], delay: float) -> None:
        def put() -> None:
            try:
                if not self._closed:
                    self._put(action, entry)
            finally:
                self._delivered()

        with self._lock:
            self._deliveries += 1
        self._clock.call_later(delay, put)

    @staticmethod
    def _put(action: _Action, entry: dict[str, Any]) -> None:
        events_backends[action.account_id][action.region].put_events([entry])

    def _delivered(self) -> None:
        with self._lock:
            self._deliveries = max(self._deliveries - 1, 0)
