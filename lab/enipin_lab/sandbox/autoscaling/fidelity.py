"""The adaptation as the sandbox installs it: the public API, and the patches that put each
layer below on moto's Auto Scaling models and responses."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from unittest.mock import patch

from moto.autoscaling.models import (
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.events.utils import EventTemplateParser

from enipin_lab.sandbox.autoscaling.events import _EVENT_TEMPLATE, _FaultRule
from enipin_lab.sandbox.autoscaling.model import LAUNCHING, TERMINATING
from enipin_lab.sandbox.autoscaling.refresh import _Refreshing, group_settings
from enipin_lab.sandbox.autoscaling.warm_pool import _warm, _warm_pool_size

_HOOK_FIELDS = (
    "LifecycleHookName",
    "LifecycleTransition",
    "HeartbeatTimeout",
    "DefaultResult",
    "NotificationMetadata",
    "NotificationTargetARN",
    "RoleARN",
)


class AutoScalingFidelity(_Refreshing):
    """Adaptation: AZ balancing, lifecycle hooks, lifecycle actions and their events.

    ``AutoScalingFidelity(clock, *, replacement_backoff=10.0, refresh_tick=5.0,
    failure_limit=3)`` (the constructor is the layers'): a launch ABANDONed is replaced
    ``replacement_backoff`` AWS seconds later; an instance refresh re-reads its group every
    ``refresh_tick`` AWS seconds and fails after ``failure_limit`` replacements in a row fail.

    Event faults (lifecycle events are best effort on AWS; the default is to deliver each
    event once):

    * ``drop_next(n=1, transition=None)``: the next ``n`` events (of ``transition`` if given)
      are lost;
    * ``duplicate_next(n=1, transition=None, delay=0.0)``: the next ``n`` events are
      delivered twice, the second copy ``delay`` AWS seconds after the first;
    * ``delay_next(n=1, transition=None, delay=...)``: the next ``n`` events arrive once,
      ``delay`` AWS seconds late;
    * ``set_event_fault_rates(drop=0.0, duplicate=0.0, seed=0, delay=0.0)``: from then on each
      event not covered by a ``*_next`` rule is lost or doubled at random (seeded).

    Read-back: ``pending_actions()`` lists the actions still waiting (with the Origin and
    Destination their events carry), ``ended_actions()`` how each one stopped, ``settled()``
    says whether nothing is pending or scheduled, ``event_log()`` records each event's fate.

    Instance refreshes (Start/Describe/CancelInstanceRefresh) and the group's
    ``InstanceMaintenancePolicy`` and ``DefaultInstanceWarmup`` are the Auto Scaling API's own.
    Warm pools are driven through the Auto Scaling API itself (``put_warm_pool``,
    ``describe_warm_pool``, ``delete_warm_pool``, scaling); there is no extra helper.
    """

    # ----------------------------------------------------------------- public API

    def install(self, stack: ExitStack) -> None:
        self._closed = False
        patches = (
            self._model_patches()
            + self._process_patches()
            + self._response_patches()
            + self._warm_pool_patches()
            + self._refresh_patches()
        )
        for owner, name, replacement in patches:
            present = hasattr(owner, name)
            stack.enter_context(patch.object(owner, name, replacement, create=not present))
        stack.enter_context(
            patch.object(EventTemplateParser, "DEFAULT_EVENT_INPUT_TEMPLATE", _EVENT_TEMPLATE)
        )
        stack.callback(self._shutdown)

    def drop_next(self, n: int = 1, transition: str | None = None) -> None:
        """Lose the next ``n`` lifecycle events (only of ``transition`` when given)."""
        self._faults.add(_FaultRule(0, _count(n), _transition(transition), 0.0))

    def duplicate_next(
        self, n: int = 1, transition: str | None = None, *, delay: float = 0.0
    ) -> None:
        """Deliver the next ``n`` events twice, the copy ``delay`` AWS seconds later."""
        self._faults.add(_FaultRule(2, _count(n), _transition(transition), max(delay, 0.0)))

    def delay_next(self, n: int = 1, transition: str | None = None, *, delay: float) -> None:
        """Deliver the next ``n`` events once, ``delay`` AWS seconds late (EventBridge delivers
        best effort: late, as well as lost or twice)."""
        self._faults.add(_FaultRule(1, _count(n), _transition(transition), max(delay, 0.0)))

    def set_event_fault_rates(
        self, *, drop: float = 0.0, duplicate: float = 0.0, seed: int | None = 0, delay: float = 0.0
    ) -> None:
        """Lose a ``drop`` fraction and double a ``duplicate`` fraction of later events."""
        if drop < 0.0 or duplicate < 0.0 or drop + duplicate > 1.0:
            raise ValueError("rates must be >= 0 and drop + duplicate <= 1")
        self._faults.set_rates(drop, duplicate, seed, max(delay, 0.0))

    def pending_actions(self) -> list[dict[str, Any]]:
        """The lifecycle actions still waiting; deadlines are ``clock.monotonic()`` seconds."""
        with self._lock:
            return [
                {
                    "token": a.token,
                    "group_name": a.group_name,
                    "hook_name": a.hook_name,
                    "instance_id": a.instance_id,
                    "transition": a.transition,
                    "origin": a.origin,
                    "destination": a.destination,
                    "started": a.started,
                    "deadline": a.deadline,
                    "global_deadline": a.global_deadline,
                }
                for a in self._actions.values()
            ]

    def settled(self) -> bool:
        """True when no action waits, no instance refresh moves (one paused by a suspended
        process waits for a person) and no replacement or event delivery is scheduled."""
        with self._lock:
            return (
                not self._actions
                and self._replacements == 0
                and self._deliveries == 0
                and not self._refresh_moving()
            )

    def events_in_flight(self) -> int:
        """Event copies emitted but not yet put on the bus (or dropped)."""
        with self._lock:
            return self._deliveries

    def ended_actions(self) -> list[dict[str, Any]]:
        """Every lifecycle action that stopped waiting: ``how`` is CompleteLifecycleAction,
        HeartbeatTimeout or GlobalTimeout (``result`` is then the hook's DefaultResult),
        AbandonedByAnotherHook, DeleteLifecycleHook, InstanceLeft or GroupDeleted; what
        DescribeScalingActivities tells an operator on AWS."""
        with self._lock:
            return [dict(entry) for entry in self._ended]

    @staticmethod
    def timed_out(action: dict[str, Any]) -> bool:
        """Whether an ended action ran out its heartbeat or global timeout (the hook's
        DefaultResult applied) rather than being completed by someone."""
        return action.get("how") in ("HeartbeatTimeout", "GlobalTimeout")

    def event_log(self) -> list[dict[str, Any]]:
        """Each emitted event's token, transition, instance and copies delivered (0, 1, 2)."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    # ----------------------------------------------------------------- patching

    def _model_patches(self) -> list[tuple[type, str, Callable[..., Any]]]:
        fid = self
        set_capacity = FakeAutoScalingGroup.set_desired_capacity
        terminate = AutoScalingBackend.terminate_instance
        detach = AutoScalingBackend.detach_instances
        delete_group = AutoScalingBackend.delete_auto_scaling_group
        delete_hook = AutoScalingBackend.delete_lifecycle_hook

        def set_desired_capacity(group: FakeAutoScalingGroup, capacity: int | None) -> None:
            fid._set_desired_capacity(group, capacity, set_capacity)

        def replace_instances(
            group: FakeAutoScalingGroup, count: int, tags: dict[str, str]
        ) -> None:
            fid._launch(group, count, tags)

        def terminate_instance(
            backend: AutoScalingBackend, instance_id: str, should_decrement: bool
        ) -> TerminateInstanceActivity:
            return fid._terminate_instance(backend, instance_id, should_decrement, terminate)

        def notify_terminate(backend: AutoScalingBackend, instance_ids: list[str]) -> None:
            fid._notify_terminate(backend, instance_ids)

        def detach_instances(
            backend: AutoScalingBackend,
            group_name: str,
            instance_ids: list[str],
            should_decrement: bool,
        ) -> Any:
            with fid._lock:  # detached instances take no lifecycle action with them
                fid._drop_instances(backend.region_name, instance_ids)
                return detach(backend, group_name, instance_ids, should_decrement)

        def delete_auto_scaling_group(backend: AutoScalingBackend, group_name: str) -> None:
            fid._delete_group(backend, group_name, delete_group)

        def delete_lifecycle_hook(backend: AutoScalingBackend, as_name: str, name: str) -> None:
            fid._delete_hook(backend, as_name, name, delete_hook)

        return [
            (FakeAutoScalingGroup, "set_desired_capacity", set_desired_capacity),
            (FakeAutoScalingGroup, "replace_autoscaling_group_instances", replace_instances),
            (AutoScalingBackend, "terminate_instance", terminate_instance),
            (AutoScalingBackend, "notify_terminate_instances", notify_terminate),
            (AutoScalingBackend, "detach_instances", detach_instances),
            (AutoScalingBackend, "delete_auto_scaling_group", delete_auto_scaling_group),
            (AutoScalingBackend, "delete_lifecycle_hook", delete_lifecycle_hook),
        ]

    def _process_patches(self) -> list[tuple[type, str, Callable[..., Any]]]:
        fid = self
        resume = AutoScalingBackend.resume_processes

        def resume_processes(
            backend: AutoScalingBackend, group_name: str, scaling_processes: list[str]
        ) -> None:
            # Resuming Launch replaces at once what the group lacks (AWS's user guide).
            with fid._lock:
                resume(backend, group_name, scaling_processes)
                group = backend.autoscaling_groups[group_name]
                group.set_desired_capacity(group.desired_capacity)

        return [
            (AutoScalingBackend, "resume_processes", resume_processes),
        ]

    def _response_patches(self) -> list[tuple[type, str, Callable[..., Any]]]:
        fid = self
        create_group = AutoScalingResponse.create_auto_scaling_group
        update_group = AutoScalingResponse.update_auto_scaling_group

        def create_auto_scaling_group(response: AutoScalingResponse) -> ActionResult:
            settings = group_settings(response._get_params())  # invalid: no group made
            result = fid._create_group_with_hooks(response, create_group)
            _keep(response, settings)
            return result

        def update_auto_scaling_group(response: AutoScalingResponse) -> ActionResult:
            settings = group_settings(response._get_params())
            result = update_group(response)
            _keep(response, settings)
            return result

        def put_lifecycle_hook(response: AutoScalingResponse) -> ActionResult:
            spec = {key: response._get_param(key) for key in _HOOK_FIELDS}
            group_name = response._get_param("AutoScalingGroupName")
            fid._store_hook(response.autoscaling_backend, group_name, spec)
            return EmptyResult()

        def complete_lifecycle_action(response: AutoScalingResponse) -> ActionResult:
            fid._complete(response)
            return EmptyResult()

        def record_lifecycle_action_heartbeat(response: AutoScalingResponse) -> ActionResult:
            fid._heartbeat(response)
            return EmptyResult()

        return [
            (AutoScalingResponse, "create_auto_scaling_group", create_auto_scaling_group),
            (AutoScalingResponse, "update_auto_scaling_group", update_auto_scaling_group),
            (AutoScalingResponse, "put_lifecycle_hook", put_lifecycle_hook),
            (AutoScalingResponse, "complete_lifecycle_action", complete_lifecycle_action),
            (
                AutoScalingResponse,
                "record_lifecycle_action_heartbeat",
                record_lifecycle_action_heartbeat,
            ),
        ]

    def _refresh_patches(self) -> list[tuple[type, str, Callable[..., Any]]]:
        fid = self

        def start_instance_refresh(response: AutoScalingResponse) -> ActionResult:
            return ActionResult(fid._start_refresh(response))

        def describe_instance_refreshes(response: AutoScalingResponse) -> ActionResult:
            return ActionResult(fid._describe_refreshes(response))

        def cancel_instance_refresh(response: AutoScalingResponse) -> ActionResult:
            return ActionResult(fid._cancel_refresh(response))

        return [
            (AutoScalingResponse, "start_instance_refresh", start_instance_refresh),
            (AutoScalingResponse, "describe_instance_refreshes", describe_instance_refreshes),
            (AutoScalingResponse, "cancel_instance_refresh", cancel_instance_refresh),
        ]

    def _warm_pool_patches(self) -> list[tuple[type, str, Any]]:
        fid = self
        update_group = FakeAutoScalingGroup.update
        put_pool = AutoScalingBackend.put_warm_pool
        describe_instances = AutoScalingBackend.describe_auto_scaling_instances

        def update(group: FakeAutoScalingGroup, *args: Any, **kwargs: Any) -> None:
            with fid._lock:  # a new MaxSize resizes the warm pool even when desired stays
                update_group(group, *args, **kwargs)
                fid._reconcile_warm_pool(group)

        def put_warm_pool(backend: AutoScalingBackend, group_name: str, **kwargs: Any) -> None:
            with fid._lock:
                put_pool(backend, group_name, **kwargs)
                fid._reconcile_warm_pool(backend.autoscaling_groups[group_name])

        def describe_auto_scaling_instances(
            backend: AutoScalingBackend, instance_ids: list[str]
        ) -> list[InstanceState]:
            with fid._lock:  # warm instances are listed too, in their Warmed:* states
                found = describe_instances(backend, instance_ids)
                for group in backend.autoscaling_groups.values():
                    found += [
                        s for s in _warm(group) if not instance_ids or s.instance.id in instance_ids
                    ]
                return found

        def describe_warm_pool(response: AutoScalingResponse) -> ActionResult:
            return fid._describe_warm_pool(response)

        def delete_warm_pool(response: AutoScalingResponse) -> ActionResult:
            fid._delete_warm_pool(response)
            return EmptyResult()

        return [
            (FakeAutoScalingGroup, "update", update),
            (FakeAutoScalingGroup, "warm_pool_size", property(_warm_pool_size)),
            (AutoScalingBackend, "put_warm_pool", put_warm_pool),
            (
                AutoScalingBackend,
                "describe_auto_scaling_instances",
                describe_auto_scaling_instances,
            ),
            (AutoScalingResponse, "describe_warm_pool", describe_warm_pool),
            (AutoScalingResponse, "delete_warm_pool", delete_warm_pool),
        ]

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for action in self._actions.values():
                if action.timer is not None:
                    action.timer.cancel()
            self._actions.clear()
            self._waits.clear()
            self._replacements = self._deliveries = 0


def _keep(response: AutoScalingResponse, settings: dict[str, Any]) -> None:
    groups = response.autoscaling_backend.autoscaling_groups
    group = groups[response._get_param("AutoScalingGroupName")]
    for attribute, value in settings.items():
        setattr(group, attribute, value)


def _count(n: int) -> int:
    if n < 0:
        raise ValueError("n must be >= 0")
    return n


def _transition(transition: str | None) -> str | None:
    if transition not in (None, LAUNCHING, TERMINATING):
        raise ValueError(f"transition must be None, {LAUNCHING} or {TERMINATING}")
    return transition
