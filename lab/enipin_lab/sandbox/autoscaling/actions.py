"""Lifecycle actions: a launch hook holds a new (running) instance in ``Pending:Wait``, a
terminate hook holds a scaled-in (still running) instance in ``Terminating:Wait``, until every
hook's action is completed, heartbeats run out (the hook's ``DefaultResult``) or the global
timeout (min(48 h, 100 x HeartbeatTimeout)) passes. ABANDON on launch terminates the instance and
the group replaces it after ``replacement_backoff`` AWS seconds; ABANDON on a terminate hook ends
the remaining hooks and terminates, as CONTINUE does once all hooks are done.

Deadlines are timers on the sandbox :class:`Clock` that re-check live state.
"""

from __future__ import annotations

import uuid
from typing import Any

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    AutoScalingBackend,
    FakeAutoScalingGroup,
    LifecycleHook,
    autoscaling_backends,
)
from moto.autoscaling.responses import AutoScalingResponse

from enipin_lab.sandbox.autoscaling.events import _Events
from enipin_lab.sandbox.autoscaling.model import (
    ABANDON,
    CONTINUE,
    EC2,
    GROUP,
    LAUNCHING,
    MAX_GLOBAL_TIMEOUT,
    TERMINATING,
    WARM_POOL,
    _Action,
    _refresh_load_balancers,
    _state_of,
    _terminate,
)
from enipin_lab.sandbox.clock import Clock

# (Origin, Destination) of an instance that neither leaves nor enters a warm pool.
_DIRECT_ROUTE = {LAUNCHING: (EC2, GROUP), TERMINATING: (GROUP, EC2)}


class _Actions(_Events):
    """Pending lifecycle actions: their waits, deadlines, completion and what follows."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self._actions: dict[str, _Action] = {}
        self._waits: dict[tuple[str, str, str], set[str]] = {}
        self._ended: list[dict[str, Any]] = []  # every action that stopped waiting, and how

    def _begin_wait(
        self,
        group: FakeAutoScalingGroup,
        instance_id: str,
        transition: str,
        hooks: list[LifecycleHook],
        route: tuple[str, str] | None = None,
    ) -> None:
        """Hold the instance for every hook; ``route`` is (Origin, Destination)."""
        if not hooks:
            return
        origin, destination = route or _DIRECT_ROUTE[transition]
        now = self._clock.monotonic()
        tokens: set[str] = set()
        for hook in hooks:
            heartbeat = float(hook.heartbeat_timeout)
            global_deadline = now + min(MAX_GLOBAL_TIMEOUT, 100 * heartbeat)
            action = _Action(
                token=str(uuid.uuid4()),
                account_id=group.account_id,
                region=group.region,
                group_name=group.name,
                hook_name=hook.name,
                instance_id=instance_id,
                transition=transition,
                heartbeat_timeout=heartbeat,
                default_result=hook.default_result,
                started=now,
                deadline=min(now + heartbeat, global_deadline),
                global_deadline=global_deadline,
                origin=origin,
                destination=destination,
            )
            self._actions[action.token] = action
            tokens.add(action.token)
            self._arm(action)
            self._emit(group, hook, action)
        self._waits[(group.region, instance_id, transition)] = tokens

    def _arm(self, action: _Action) -> None:
        if action.timer is not None:
            action.timer.cancel()
        delay = max(action.deadline - self._clock.monotonic(), 0.0)
        action.timer = self._clock.call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        with self._lock:
            if not self._closed:
                self._expire_due()

    def _expire_due(self) -> None:
        """Apply DefaultResult to every action whose heartbeat or global timeout has passed."""
        now = self._clock.monotonic()
        for action in [a for a in self._actions.values() if a.deadline <= now]:
            if action.token in self._actions:  # an earlier one may have ended its siblings
                how = (
                    "GlobalTimeout"
                    if action.deadline >= action.global_deadline
                    else "HeartbeatTimeout"
                )
                self._finish(action, action.default_result, how)

    def _forget(self, token: str, how: str, result: str | None = None) -> None:
        action = self._actions.pop(token, None)
        if action is None:
            return
        self._ended.append(
            {
                "token": action.token,
                "group_name": action.group_name,
                "hook_name": action.hook_name,
                "instance_id": action.instance_id,
                "transition": action.transition,
                "started": action.started,
                "deadline": action.deadline,
                "ended": self._clock.monotonic(),
                "how": how,
                "result": result,
            }
        )
        if action.timer is not None:
            action.timer.cancel()
        self._waits.get(action.wait_key, set()).discard(token)

    def _drop_instances(self, region: str, instance_ids: list[str]) -> None:
        """End, without a result, every action holding these instances (they are leaving)."""
        for action in list(self._actions.values()):
            if action.region == region and action.instance_id in instance_ids:
                self._forget(action.token, "InstanceLeft")
                self._waits.pop(action.wait_key, None)

    def _finish(self, action: _Action, result: str, how: str) -> None:
        self._forget(action.token, how, result)
        siblings = self._waits.get(action.wait_key, set())
        if result == CONTINUE and siblings:
            return  # other hooks of this transition still hold the instance
        for token in list(siblings):  # ABANDON stops the remaining hooks
            self._forget(token, "AbandonedByAnotherHook", result)
        self._waits.pop(action.wait_key, None)
        self._proceed(action, result)

    def _proceed(self, action: _Action, result: str) -> None:
        backend = autoscaling_backends[action.account_id][action.region]
        group = backend.autoscaling_groups.get(action.group_name)
        if group is None:
            return
        if WARM_POOL in (action.origin, action.destination) and action.destination != GROUP:
            self._proceed_warm(group, action, result)
            return
        state = _state_of(group, action.instance_id)
        if state is None:
            return  # the instance already left the group
        if action.transition == LAUNCHING and result == CONTINUE:
            state.lifecycle_state = "InService"
            _refresh_load_balancers(group)
            return
        state.lifecycle_state = (
            "Terminating:Proceed" if action.transition == TERMINATING else "Terminating"
        )
        _terminate(group, [state])
        if action.transition == LAUNCHING:
            self._schedule_replacement(group)

    def _find_active(self, response: AutoScalingResponse) -> _Action:
        backend = response.autoscaling_backend
        group_name = response._get_param("AutoScalingGroupName")
        hook_name = response._get_param("LifecycleHookName")
        token = response._get_param("LifecycleActionToken")
        instance_id = response._get_param("InstanceId")
        if not token and not instance_id:
            raise ValidationError("Either LifecycleActionToken or InstanceId must be specified")
        self._expire_due()
        for action in self._actions.values():
            if (
                self._of_group(action, backend, group_name)
                and action.hook_name == hook_name
                and (action.token == token if token else action.instance_id == instance_id)
            ):
                return action
        if token:
            raise ValidationError(f"No active Lifecycle Action found with token {token}")
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")

    def _complete(self, response: AutoScalingResponse) -> None:
        result = response._get_param("LifecycleActionResult")
        with self._lock:
            action = self._find_active(response)
            if result not in (CONTINUE, ABANDON):
                raise ValidationError(f"Invalid lifecycle action result: {result}")
            self._finish(action, result, "CompleteLifecycleAction")

    def _heartbeat(self, response: AutoScalingResponse) -> None:
        with self._lock:
            action = self._find_active(response)
            now = self._clock.monotonic()
            action.deadline = min(now + action.heartbeat_timeout, action.global_deadline)
            self._arm(action)

    @staticmethod
    def _of_group(action: _Action, backend: AutoScalingBackend, group_name: str) -> bool:
        return (
            action.account_id == backend.account_id
            and action.region == backend.region_name
            and action.group_name == group_name
        )

    # ----------------------------------------------------------------- from the layers above

    def _proceed_warm(self, group: FakeAutoScalingGroup, action: _Action, result: str) -> None:
        """After the wait of an instance entering, returning to or leaving the warm pool."""
        raise NotImplementedError  # the warm pool's

    def _schedule_replacement(self, group: FakeAutoScalingGroup) -> None:
        """Top the group up again after the replacement back-off."""
        raise NotImplementedError  # capacity's
