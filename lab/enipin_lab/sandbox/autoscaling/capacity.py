"""Capacity: each new instance goes to the group's AZ with the fewest instances (and to the
emptiest subnet of that AZ); scale-in takes the oldest unprotected instance of the fullest AZ.
Hooks in ``LifecycleHookSpecificationList`` exist before the group's first launch, so they hold
its first instances; a hook put later only holds instances launched after it.

Instances leave through the EC2 backend's ``terminate_instances`` so EC2-side adaptations (ENI
release) run. Replacement launches are timers on the sandbox :class:`Clock` that re-read the
group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse

from enipin_lab.sandbox.autoscaling.model import (
    ABANDON,
    CONTINUE,
    LAUNCHING,
    MAX_GLOBAL_TIMEOUT,
    TERMINATING,
    _capacity_states,
    _hooks,
    _launches_suspended,
    _locate,
    _next_placement,
    _refresh_load_balancers,
    _run_instance,
    _terminate,
)
from enipin_lab.sandbox.autoscaling.warm_pool import (
    _end_pending_delete,
    _locate_warm,
    _ready_warm_instance,
    _reuses_on_scale_in,
    _set_warm,
    _terminate_warm,
    _warm,
    _WarmPool,
)
from enipin_lab.sandbox.clock import Clock


class _Capacity(_WarmPool):
    """Lifecycle hooks and the group's capacity: launches, scale-in, terminations, deletion."""

    def __init__(self, clock: Clock, *, replacement_backoff: float = 10.0) -> None:
        super().__init__(clock)
        self._backoff = replacement_backoff
        self._replacements = 0  # replacement launches scheduled, not yet run
        # Instances a group may run above its desired capacity while replacing (an instance
        # refresh that launches before it terminates), by group name.
        self._surge: dict[str, int] = {}

    # ----------------------------------------------------------------- hooks

    def _store_hook(
        self, backend: AutoScalingBackend, group_name: str, spec: dict[str, Any]
    ) -> None:
        timeout = spec.get("HeartbeatTimeout")
        hook = backend.create_lifecycle_hook(
            name=spec["LifecycleHookName"],
            as_name=group_name,
            transition=spec.get("LifecycleTransition"),  # type: ignore[arg-type]
            timeout=int(timeout) if timeout is not None else None,
            result=spec.get("DefaultResult"),  # type: ignore[arg-type]
        )
        # moto drops these or hard-codes them; describe_lifecycle_hooks shows what was put.
        hook.notification_metadata = spec.get("NotificationMetadata")  # type: ignore[attr-defined]
        hook.notification_target_arn = spec.get("NotificationTargetARN")  # type: ignore[assignment]
        hook.role_arn = spec.get("RoleARN")  # type: ignore[assignment]
        hook.global_timeout = min(MAX_GLOBAL_TIMEOUT, 100 * hook.heartbeat_timeout)

    def _create_group_with_hooks(
        self, response: AutoScalingResponse, original: Callable[[AutoScalingResponse], Any]
    ) -> Any:
        # The hooks must exist before moto's constructor launches the first instances.
        backend = response.autoscaling_backend
        name = response._get_param("AutoScalingGroupName")
        specs = response._get_param("LifecycleHookSpecificationList", []) or []
        with self._lock:
            added = []
            for spec in specs:
                key = f"{name}_{spec['LifecycleHookName']}"
                if key not in backend.lifecycle_hooks:
                    added.append(key)
                self._store_hook(backend, name, spec)
            try:
                return original(response)
            except Exception:
                for key in added:
                    backend.lifecycle_hooks.pop(key, None)
                raise

    def _delete_hook(
        self,
        backend: AutoScalingBackend,
        group_name: str,
        hook_name: str,
        original: Callable[[AutoScalingBackend, str, str], None],
    ) -> None:
        # DeleteLifecycleHook completes outstanding actions first: ABANDON for launching
        # instances, CONTINUE for terminating ones.
        with self._lock:
            for action in list(self._actions.values()):
                if (
                    action.token in self._actions
                    and self._of_group(action, backend, group_name)
                    and action.hook_name == hook_name
                ):
                    result = ABANDON if action.transition == LAUNCHING else CONTINUE
                    self._finish(action, result, "DeleteLifecycleHook")
            original(backend, group_name, hook_name)

    # ----------------------------------------------------------------- capacity

    def _set_desired_capacity(
        self,
        group: FakeAutoScalingGroup,
        capacity: int | None,
        original: Callable[[FakeAutoScalingGroup, int | None], None],
    ) -> None:
        with self._lock:
            policy = group.mixed_instances_policy or {}
            if policy.get("LaunchTemplate", {}).get("Overrides"):
                original(group, capacity)  # weighted mixed-instances groups: moto's arithmetic
                return
            group.desired_capacity = group.min_size if capacity is None else capacity
            wanted = (group.desired_capacity or 0) + self._surge.get(group.name, 0)
            delta = wanted - len(_capacity_states(group))
            if delta > 0:
                group.replace_autoscaling_group_instances(delta, group.get_propagated_tags())
            elif delta < 0:
                self._scale_in(group, -delta)
            self._reconcile_warm_pool(group)
            _refresh_load_balancers(group)

    def _launch(self, group: FakeAutoScalingGroup, count: int, tags: dict[str, str]) -> None:
        with self._lock:
            if _launches_suspended(group):
                return  # desired stays; ResumeProcesses launches what is missing
            tags = {**tags, ASG_NAME_TAG: group.name, **group.instance_tags}
            hooks = _hooks(group, LAUNCHING)
            for _ in range(count):
                warm = _ready_warm_instance(group)
                if warm is not None:  # a warm start; a cold one only when none is ready
                    self._start_from_warm_pool(group, warm, hooks)
                    continue
                zone, subnet_id = _next_placement(group, _capacity_states(group))
                instance = _run_instance(group, zone, subnet_id, tags)
                instance.autoscaling_group = group  # type: ignore[attr-defined]
                group.instance_states.append(
                    InstanceState(
                        instance,
                        lifecycle_state="Pending:Wait" if hooks else "InService",
                        protected_from_scale_in=group.new_instances_protected_from_scale_in,
                    )
                )
                self._begin_wait(group, instance.id, LAUNCHING, hooks)

    def _scale_in(self, group: FakeAutoScalingGroup, count: int) -> None:
        victims = _choose_victims(group, count)
        if _reuses_on_scale_in(group):
            self._drop_instances(group.region, [state.instance.id for state in victims])
            self._return_to_warm_pool(group, victims, _hooks(group, TERMINATING))
            return
        self._retire(group, victims)

    def _retire(self, group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
        """Terminate these instances through the terminate hooks, launching nothing for them."""
        hooks = _hooks(group, TERMINATING)
        self._drop_instances(group.region, [state.instance.id for state in states])
        if not hooks:
            if states:
                _terminate(group, states)
            return
        for state in states:
            state.lifecycle_state = "Terminating:Wait"
            self._begin_wait(group, state.instance.id, TERMINATING, hooks)

    def _terminate_instance(
        self,
        backend: AutoScalingBackend,
        instance_id: str,
        should_decrement: bool,
        original: Callable[[AutoScalingBackend, str, bool], TerminateInstanceActivity],
    ) -> TerminateInstanceActivity:
        with self._lock:
            warm_group, warm_state = _locate_warm(backend, instance_id)
            if warm_group is not None and warm_state is not None:
                return self._terminate_warm_instance(warm_group, warm_state)
            group, state = _locate(backend, instance_id)
            hooks = _hooks(group, TERMINATING) if group is not None else []
            if group is None or state is None or not hooks:
                return original(backend, instance_id, should_decrement)
            original_size = group.desired_capacity or 0
            if state.lifecycle_state.startswith("Terminating"):
                return TerminateInstanceActivity(state.instance, original_size)  # already going
            self._drop_instances(group.region, [instance_id])
            if should_decrement:
                group.desired_capacity = original_size - 1
            state.lifecycle_state = "Terminating:Wait"
            self._begin_wait(group, instance_id, TERMINATING, hooks)
            # The terminating instance no longer counts: without decrement this launches
            # its replacement, as AWS does.
            group.set_desired_capacity(group.desired_capacity)
            return TerminateInstanceActivity(state.instance, original_size)

    def _notify_terminate(self, backend: AutoScalingBackend, instance_ids: list[str]) -> None:
        # An instance terminated through EC2 leaves its group, its actions end with it, and
        # the group tops itself up again.
        with self._lock:
            self._drop_instances(backend.region_name, instance_ids)
            for group in list(backend.autoscaling_groups.values()):
                kept = [s for s in group.instance_states if s.instance.id not in instance_ids]
                warm = _warm(group)
                kept_warm = [s for s in warm if s.instance.id not in instance_ids]
                if len(kept) != len(group.instance_states) or len(kept_warm) != len(warm):
                    group.instance_states = kept
                    _set_warm(group, kept_warm)
                    _end_pending_delete(group)
                    group.set_desired_capacity(group.desired_capacity)

    def _delete_group(
        self,
        backend: AutoScalingBackend,
        group_name: str,
        original: Callable[[AutoScalingBackend, str], None],
    ) -> None:
        # moto always force-deletes: AWS's ForceDelete skips hooks and drops their actions.
        with self._lock:
            group = backend.autoscaling_groups.get(group_name)
            if group is not None:
                for action in list(self._actions.values()):
                    if self._of_group(action, backend, group_name):
                        self._forget(action.token, "GroupDeleted")
                        self._waits.pop(action.wait_key, None)
                live = [s for s in group.instance_states if s.instance.state != "terminated"]
                if live:
                    _terminate(group, live)
                group.instance_states = []
                _terminate_warm(group, list(_warm(group)))
                group.warm_pool = None  # the pool goes with its group, refilled by nothing
            original(backend, group_name)
            for key, hook in list(backend.lifecycle_hooks.items()):
                if hook.auto_scaling_group_name == group_name:
                    del backend.lifecycle_hooks[key]  # hooks die with their group

    def _schedule_replacement(self, group: FakeAutoScalingGroup) -> None:
        backend = group.autoscaling_backend
        name = group.name

        def top_up() -> None:
            # Re-read the group: it may be gone, or already back at capacity.
            with self._lock:
                self._replacements = max(self._replacements - 1, 0)
                live = backend.autoscaling_groups.get(name)
                if not self._closed and live is not None:
                    live.set_desired_capacity(live.desired_capacity)

        self._replacements += 1
        self._clock.call_later(self._backoff, top_up)


# --------------------------------------------------------------------- moto helpers


def _choose_victims(group: FakeAutoScalingGroup, count: int) -> list[InstanceState]:
    """Default termination policy: the fullest AZ first, oldest unprotected instance there."""
    remaining = _capacity_states(group)
    pool = [s for s in remaining if not s.protected_from_scale_in]
    chosen: list[InstanceState] = []
    for _ in range(count):
        if not pool:
            break
        per_zone = Counter(s.availability_zone for s in remaining)
        victim = max(pool, key=lambda s: per_zone[s.availability_zone])  # first = oldest
        pool.remove(victim)
        remaining.remove(victim)
        chosen.append(victim)
    return chosen
