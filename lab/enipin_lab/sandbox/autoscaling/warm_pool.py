"""Warm pools: a warm pool (``PutWarmPool``) keeps max(MinSize, (MaxGroupPreparedCapacity or
MaxSize) - desired) pre-initialised instances beside the group, AZ-balanced among themselves,
outside the group's ``Instances`` and its capacity. They launch ``Warmed:Pending`` (held in
``Warmed:Pending:Wait`` by launch hooks, event ``EC2`` -> ``WarmPool``), then are stopped
(``Warmed:Stopped``; ``Warmed:Running``/``Warmed:Hibernated`` per ``PoolState``). Scale-out starts
ready warm instances first (``Pending:Wait``, ``WarmPool`` -> ``AutoScalingGroup``) and launches
directly once none is ready; scale-in with ``ReuseOnScaleIn`` sends the instance back (terminate
hooks hold it in ``Warmed:Pending:Wait``, ``AutoScalingGroup`` -> ``WarmPool``), and a shrinking
or deleted pool terminates warm instances (terminate hooks hold them in
``Warmed:Terminating:Wait``, ``WarmPool`` -> ``EC2``). ``DescribeWarmPool`` and
``DescribeAutoScalingInstances`` list them.

Warm instances are kept on moto's group object (``warm_instance_states``).
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    LifecycleHook,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult

from enipin_lab.sandbox.autoscaling.actions import _Actions
from enipin_lab.sandbox.autoscaling.model import (
    ABANDON,
    EC2,
    GROUP,
    LAUNCHING,
    TERMINATING,
    WARM_POOL,
    _Action,
    _capacity_states,
    _group_named,
    _hooks,
    _launches_suspended,
    _next_placement,
    _run_instance,
)

# Warm instances done initialising, ready to be started into the group.
_WARM_READY = frozenset({"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"})
_WARM_LEAVING = "Warmed:Terminating"  # prefix of the states of warm instances on their way out
_PENDING_DELETE = "PendingDelete"
_MAX_WARM_RECORDS = 50  # DescribeWarmPool's MaxRecords ceiling


class _WarmPool(_Actions):
    """The warm pool beside each group: its size, its instances' way in and out."""

    def _reconcile_warm_pool(self, group: FakeAutoScalingGroup) -> None:
        """Bring the warm pool to its size: launch into it, or retire the excess."""
        pool = getattr(group, "warm_pool", None)  # moto's constructor launches before setting it
        if pool is None or group.name not in group.autoscaling_backend.autoscaling_groups:
            return
        staying = [s for s in _warm(group) if not s.lifecycle_state.startswith(_WARM_LEAVING)]
        if getattr(pool, "status", None) == _PENDING_DELETE:
            self._retire_warm(group, staying)
            return
        target = _warm_pool_target(group)
        if len(staying) < target:
            self._launch_into_warm_pool(group, target - len(staying))
        elif len(staying) > target:
            self._retire_warm(group, _choose_warm_victims(staying, len(staying) - target))

    def _launch_into_warm_pool(self, group: FakeAutoScalingGroup, count: int) -> None:
        if _launches_suspended(group):
            return
        tags = {**group.get_propagated_tags(), ASG_NAME_TAG: group.name, **group.instance_tags}
        hooks = _hooks(group, LAUNCHING)
        for _ in range(count):
            staying = [s for s in _warm(group) if not s.lifecycle_state.startswith(_WARM_LEAVING)]
            zone, subnet_id = _next_placement(group, staying)
            instance = _run_instance(group, zone, subnet_id, tags)
            instance.autoscaling_group = group  # type: ignore[attr-defined]
            state = InstanceState(
                instance,
                lifecycle_state="Warmed:Pending",
                protected_from_scale_in=group.new_instances_protected_from_scale_in,
            )
            _warm(group).append(state)
            if hooks:
                state.lifecycle_state = "Warmed:Pending:Wait"
                self._begin_wait(group, instance.id, LAUNCHING, hooks, (EC2, WARM_POOL))
            else:
                self._enter_warm_pool(group, state)

    def _enter_warm_pool(self, group: FakeAutoScalingGroup, state: InstanceState) -> None:
        """``Warmed:Pending:Proceed``: stop (or keep running) into the pool's state."""
        pool = getattr(group, "warm_pool", None)
        if pool is None or getattr(pool, "status", None) == _PENDING_DELETE:
            self._retire_warm(group, [state])  # the pool went away meanwhile
            return
        state.lifecycle_state = "Warmed:Pending:Proceed"
        pool_state = pool.pool_state or "Stopped"
        if pool_state != "Running" and state.instance.state == "running":
            group.autoscaling_backend.ec2_backend.stop_instances([state.instance.id])
        state.lifecycle_state = f"Warmed:{pool_state}"

    def _retire_warm(self, group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
        """Terminate warm instances; terminate hooks hold them in ``Warmed:Terminating:Wait``."""
        if not states:
            return
        self._drop_instances(group.region, [s.instance.id for s in states])
        hooks = _hooks(group, TERMINATING)
        if not hooks:
            _terminate_warm(group, states)
            return
        for state in states:
            state.lifecycle_state = "Warmed:Terminating:Wait"
            self._begin_wait(group, state.instance.id, TERMINATING, hooks, (WARM_POOL, EC2))

    def _start_from_warm_pool(
        self, group: FakeAutoScalingGroup, state: InstanceState, hooks: list[LifecycleHook]
    ) -> None:
        _set_warm(group, [s for s in _warm(group) if s is not state])
        if state.instance.state == "stopped":
            group.autoscaling_backend.ec2_backend.start_instances([state.instance.id])
        state.lifecycle_state = "Pending:Wait" if hooks else "InService"
        group.instance_states.append(state)
        self._begin_wait(group, state.instance.id, LAUNCHING, hooks, (WARM_POOL, GROUP))

    def _return_to_warm_pool(
        self, group: FakeAutoScalingGroup, victims: list[InstanceState], hooks: list[LifecycleHook]
    ) -> None:
        """Scale-in with ReuseOnScaleIn: terminate hooks wait in ``Warmed:Pending:Wait``."""
        ids = {s.instance.id for s in victims}
        group.instance_states = [s for s in group.instance_states if s.instance.id not in ids]
        _warm(group).extend(victims)
        for state in victims:
            if hooks:
                state.lifecycle_state = "Warmed:Pending:Wait"
                self._begin_wait(group, state.instance.id, TERMINATING, hooks, (GROUP, WARM_POOL))
            else:
                self._enter_warm_pool(group, state)

    def _terminate_warm_instance(
        self, group: FakeAutoScalingGroup, state: InstanceState
    ) -> TerminateInstanceActivity:
        """TerminateInstanceInAutoScalingGroup on a warm instance: it goes, the pool refills."""
        if not state.lifecycle_state.startswith(_WARM_LEAVING):
            self._retire_warm(group, [state])
            self._reconcile_warm_pool(group)
        return TerminateInstanceActivity(state.instance, group.desired_capacity or 0)

    def _describe_warm_pool(self, response: AutoScalingResponse) -> ActionResult:
        backend = response.autoscaling_backend
        group_name = response._get_param("AutoScalingGroupName")
        limit = response._get_int_param("MaxRecords") or _MAX_WARM_RECORDS
        if not 1 <= limit <= _MAX_WARM_RECORDS:
            raise ValidationError(f"MaxRecords must be between 1 and {_MAX_WARM_RECORDS}")
        start = _decode_warm_token(response._get_param("NextToken"))
        with self._lock:
            group = _group_named(backend, group_name)
            pool, instances = group.warm_pool, list(_warm(group))
        page = instances[start : start + limit]
        result: dict[str, Any] = {"WarmPoolConfiguration": pool, "Instances": page}
        if start + limit < len(instances):
            result["NextToken"] = _encode_warm_token(start + limit)
        return ActionResult(result)

    def _delete_warm_pool(self, response: AutoScalingResponse) -> None:
        backend = response.autoscaling_backend
        group_name = response._get_param("AutoScalingGroupName")
        force = bool(response._get_bool_param("ForceDelete", False))
        with self._lock:
            group = _group_named(backend, group_name)
            pool = group.warm_pool
            if pool is None:
                return
            if force:  # without waiting: no hooks, outstanding actions dropped
                warm = list(_warm(group))
                self._drop_instances(group.region, [s.instance.id for s in warm])
                _terminate_warm(group, warm)
                group.warm_pool = None
                return
            pool.status = _PENDING_DELETE  # type: ignore[attr-defined]
            self._reconcile_warm_pool(group)
            _end_pending_delete(group)

    def _proceed_warm(self, group: FakeAutoScalingGroup, action: _Action, result: str) -> None:
        """After the wait of an instance entering, returning to or leaving the warm pool."""
        state = next((s for s in _warm(group) if s.instance.id == action.instance_id), None)
        if state is None:
            return  # it already left the pool
        if action.destination == EC2:  # out of the pool: either result terminates
            state.lifecycle_state = "Warmed:Terminating:Proceed"
            _terminate_warm(group, [state])
        elif action.transition == LAUNCHING and result == ABANDON:
            state.lifecycle_state = "Warmed:Terminating"
            _terminate_warm(group, [state])
            self._schedule_replacement(group)  # the pool is topped up after the back-off
        else:  # a launch continued, or a return to the pool (ABANDON ends the other hooks)
            self._enter_warm_pool(group, state)


# --------------------------------------------------------------------- warm pool helpers


def _warm(group: FakeAutoScalingGroup) -> list[InstanceState]:
    """The group's warm pool instances, oldest first (kept on moto's group object)."""
    states: list[InstanceState] | None = getattr(group, "warm_instance_states", None)
    if states is None:
        states = []
        _set_warm(group, states)
    return states


def _set_warm(group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
    group.warm_instance_states = states  # type: ignore[attr-defined]


def _warm_pool_size(group: FakeAutoScalingGroup) -> int | None:
    """DescribeAutoScalingGroups' WarmPoolSize: the instances in the pool, if there is one."""
    if getattr(group, "warm_pool", None) is None:
        return None
    return len(_warm(group))


def _warm_pool_target(group: FakeAutoScalingGroup) -> int:
    """max(MinSize, (MaxGroupPreparedCapacity, or MaxSize when unset or -1) - desired)."""
    pool = group.warm_pool
    assert pool is not None
    prepared = pool.max_group_prepared_capacity
    if prepared is None or int(prepared) < 0:
        prepared = group.max_size or 0
    return max(int(pool.min_size or 0), int(prepared) - (group.desired_capacity or 0))


def _pool_open(group: FakeAutoScalingGroup) -> bool:
    pool = getattr(group, "warm_pool", None)
    return pool is not None and getattr(pool, "status", None) != _PENDING_DELETE


def _reuses_on_scale_in(group: FakeAutoScalingGroup) -> bool:
    if not _pool_open(group):
        return False
    policy = group.warm_pool.instance_reuse_policy or {}  # type: ignore[union-attr]
    return str(policy.get("ReuseOnScaleIn", False)).lower() == "true"


def _ready_warm_instance(group: FakeAutoScalingGroup) -> InstanceState | None:
    """The warm instance a scale-out starts: ready, in the AZ the group needs most, oldest."""
    if not _pool_open(group):
        return None
    ready = [s for s in _warm(group) if s.lifecycle_state in _WARM_READY]
    if not ready:
        return None
    per_zone = Counter(s.instance.placement.zone for s in _capacity_states(group))
    return min(ready, key=lambda s: per_zone[s.instance.placement.zone])


def _choose_warm_victims(states: list[InstanceState], count: int) -> list[InstanceState]:
    """The fullest AZ of the pool first, the newest instance there (the least work lost)."""
    remaining = list(states)
    chosen: list[InstanceState] = []
    for _ in range(min(count, len(remaining))):
        per_zone = Counter(s.instance.placement.zone for s in remaining)
        victim = max(reversed(remaining), key=lambda s: per_zone[s.instance.placement.zone])
        remaining.remove(victim)
        chosen.append(victim)
    return chosen


def _terminate_warm(group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
    """Terminate warm instances through EC2 and take them out of the pool."""
    ids = {s.instance.id for s in states}
    live = [s.instance.id for s in states if s.instance.state != "terminated"]
    if live:
        group.autoscaling_backend.ec2_backend.terminate_instances(live)
    _set_warm(group, [s for s in _warm(group) if s.instance.id not in ids])
    _end_pending_delete(group)


def _end_pending_delete(group: FakeAutoScalingGroup) -> None:
    """A pool marked PendingDelete goes once its last instance has."""
    pool = getattr(group, "warm_pool", None)
    if pool is not None and getattr(pool, "status", None) == _PENDING_DELETE and not _warm(group):
        group.warm_pool = None


def _locate_warm(
    backend: AutoScalingBackend, instance_id: str
) -> tuple[FakeAutoScalingGroup | None, InstanceState | None]:
    for group in backend.autoscaling_groups.values():
        state = next((s for s in _warm(group) if s.instance.id == instance_id), None)
        if state is not None:
            return group, state
    return None, None


def _encode_warm_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"warm:{offset}".encode()).decode()


def _decode_warm_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, offset = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if kind == "warm" and int(offset) >= 0:
            return int(offset)
    except ValueError:
        pass
    raise ValidationError("The NextToken value is invalid")
