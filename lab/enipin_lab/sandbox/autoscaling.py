"""Auto Scaling as AWS runs it: AZ-balanced launches, lifecycle hooks and their events.

Plain moto puts every instance of a group in its first subnet, ignores lifecycle hooks
(instances go ``InService`` or vanish at once), has no ``CompleteLifecycleAction`` or
``RecordLifecycleActionHeartbeat`` and sends nothing to EventBridge. This adaptation puts
those behaviours back on moto's own group and instance state:

* each new instance goes to the group's AZ with the fewest instances (and to the emptiest
  subnet of that AZ); scale-in takes the oldest unprotected instance of the fullest AZ;
* a launch hook holds a new (running) instance in ``Pending:Wait``, a terminate hook holds a
  scaled-in (still running) instance in ``Terminating:Wait``, until every hook's action is
  completed, heartbeats run out (the hook's ``DefaultResult``) or the global timeout
  (min(48 h, 100 x HeartbeatTimeout)) passes. ABANDON on launch terminates the instance and
  the group replaces it after ``replacement_backoff`` AWS seconds; ABANDON on a terminate
  hook ends the remaining hooks and terminates, as CONTINUE does once all hooks are done;
* every action emits AWS's ``EC2 Instance-launch/terminate Lifecycle Action`` event on the
  default bus through moto's events backend, best effort: :meth:`AutoScalingFidelity.drop_next`,
  :meth:`~AutoScalingFidelity.duplicate_next` and
  :meth:`~AutoScalingFidelity.set_event_fault_rates` lose or repeat events on purpose;
* hooks in ``LifecycleHookSpecificationList`` exist before the group's first launch, so they
  hold its first instances; a hook put later only holds instances launched after it;
* a warm pool (``PutWarmPool``) keeps max(MinSize, (MaxGroupPreparedCapacity or MaxSize) -
  desired) pre-initialised instances beside the group, AZ-balanced among themselves, outside
  the group's ``Instances`` and its capacity. They launch ``Warmed:Pending`` (held in
  ``Warmed:Pending:Wait`` by launch hooks, event ``EC2`` -> ``WarmPool``), then are stopped
  (``Warmed:Stopped``; ``Warmed:Running``/``Warmed:Hibernated`` per ``PoolState``). Scale-out
  starts ready warm instances first (``Pending:Wait``, ``WarmPool`` -> ``AutoScalingGroup``)
  and launches directly once none is ready; scale-in with ``ReuseOnScaleIn`` sends the
  instance back (terminate hooks hold it in ``Warmed:Pending:Wait``, ``AutoScalingGroup`` ->
  ``WarmPool``), and a shrinking or deleted pool terminates warm instances (terminate hooks
  hold them in ``Warmed:Terminating:Wait``, ``WarmPool`` -> ``EC2``). ``DescribeWarmPool``
  and ``DescribeAutoScalingInstances`` list them.

Instances leave through the EC2 backend's ``terminate_instances`` so EC2-side adaptations
(ENI release) run. Timers go through the sandbox :class:`Clock` and re-check live state.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol
from unittest.mock import patch

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    LifecycleHook,
    TerminateInstanceActivity,
    autoscaling_backends,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.models.instances import Instance
from moto.events.models import events_backends
from moto.events.utils import EventTemplateParser

from enipin_lab.sandbox.clock import Clock

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
CONTINUE = "CONTINUE"
ABANDON = "ABANDON"
MAX_GLOBAL_TIMEOUT = 48 * 3600  # seconds; the global timeout is also capped at 100 heartbeats

# Where an instance comes from and goes to: the events' Origin and Destination.
EC2 = "EC2"
GROUP = "AutoScalingGroup"
WARM_POOL = "WarmPool"

# States that count toward desired capacity; Terminating:*, Standby and Warmed:* do not.
_CAPACITY_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed", "InService"})
# Warm instances done initialising, ready to be started into the group.
_WARM_READY = frozenset({"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"})
_WARM_LEAVING = "Warmed:Terminating"  # prefix of the states of warm instances on their way out
_PENDING_DELETE = "PendingDelete"
_MAX_WARM_RECORDS = 50  # DescribeWarmPool's MaxRecords ceiling

# detail-type per transition (Auto Scaling event reference).
_DETAIL_TYPE = {
    LAUNCHING: "EC2 Instance-launch Lifecycle Action",
    TERMINATING: "EC2 Instance-terminate Lifecycle Action",
}
# (Origin, Destination) of an instance that neither leaves nor enters a warm pool.
_DIRECT_ROUTE = {LAUNCHING: (EC2, GROUP), TERMINATING: (GROUP, EC2)}

# moto's envelope for targets without an InputTransformer leaves out "account", which
# every AWS event carries.
_EVENT_TEMPLATE = (
    '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
    '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
    '"detail": <detail>}'
)

_HOOK_FIELDS = (
    "LifecycleHookName",
    "LifecycleTransition",
    "HeartbeatTimeout",
    "DefaultResult",
    "NotificationMetadata",
    "NotificationTargetARN",
    "RoleARN",
)


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


@dataclass
class _Action:
    """One pending lifecycle action: one hook holding one instance in a wait state."""

    token: str
    account_id: str
    region: str
    group_name: str
    hook_name: str
    instance_id: str
    transition: str
    heartbeat_timeout: float
    default_result: str
    started: float  # clock.monotonic() AWS seconds
    deadline: float
    global_deadline: float
    origin: str
    destination: str
    timer: _Cancellable | None = None

    @property
    def wait_key(self) -> tuple[str, str, str]:
        return (self.region, self.instance_id, self.transition)


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


class AutoScalingFidelity:
    """Adaptation: AZ balancing, lifecycle hooks, lifecycle actions and their events.

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

    Warm pools are driven through the Auto Scaling API itself (``put_warm_pool``,
    ``describe_warm_pool``, ``delete_warm_pool``, scaling); there is no extra helper.
    """

    def __init__(self, clock: Clock, *, replacement_backoff: float = 10.0) -> None:
        self._clock = clock
        self._backoff = replacement_backoff
        self._lock = threading.RLock()
        self._actions: dict[str, _Action] = {}
        self._waits: dict[tuple[str, str, str], set[str]] = {}
        self._faults = _EventFaults()
        self._log: list[dict[str, Any]] = []
        self._ended: list[dict[str, Any]] = []  # every action that stopped waiting, and how
        self._replacements = 0  # replacement launches scheduled, not yet run
        self._deliveries = 0  # event copies scheduled, not yet put on the bus
        self._closed = False

    # ----------------------------------------------------------------- public API

    def install(self, stack: ExitStack) -> None:
        self._closed = False
        patches = self._model_patches() + self._response_patches() + self._warm_pool_patches()
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
        """True when no action waits and no replacement or event delivery is scheduled."""
        with self._lock:
            return not self._actions and self._replacements == 0 and self._deliveries == 0

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

    def _response_patches(self) -> list[tuple[type, str, Callable[..., Any]]]:
        fid = self
        create_group = AutoScalingResponse.create_auto_scaling_group

        def create_auto_scaling_group(response: AutoScalingResponse) -> ActionResult:
            return fid._create_group_with_hooks(response, create_group)

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
            (AutoScalingResponse, "put_lifecycle_hook", put_lifecycle_hook),
            (AutoScalingResponse, "complete_lifecycle_action", complete_lifecycle_action),
            (
                AutoScalingResponse,
                "record_lifecycle_action_heartbeat",
                record_lifecycle_action_heartbeat,
            ),
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
            delta = (group.desired_capacity or 0) - len(_capacity_states(group))
            if delta > 0:
                group.replace_autoscaling_group_instances(delta, group.get_propagated_tags())
            elif delta < 0:
                self._scale_in(group, -delta)
            self._reconcile_warm_pool(group)
            _refresh_load_balancers(group)

    def _launch(self, group: FakeAutoScalingGroup, count: int, tags: dict[str, str]) -> None:
        with self._lock:
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
        hooks = _hooks(group, TERMINATING)
        self._drop_instances(group.region, [state.instance.id for state in victims])
        if _reuses_on_scale_in(group):
            self._return_to_warm_pool(group, victims, hooks)
            return
        if not hooks:
            if victims:
                _terminate(group, victims)
            return
        for state in victims:
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

    def _delivered(self) -> None:
        with self._lock:
            self._deliveries = max(self._deliveries - 1, 0)

    # ----------------------------------------------------------------- warm pool

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

    # ----------------------------------------------------------------- actions

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

    # ----------------------------------------------------------------- events

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


# --------------------------------------------------------------------- moto helpers


def _count(n: int) -> int:
    if n < 0:
        raise ValueError("n must be >= 0")
    return n


def _transition(transition: str | None) -> str | None:
    if transition not in (None, LAUNCHING, TERMINATING):
        raise ValueError(f"transition must be None, {LAUNCHING} or {TERMINATING}")
    return transition


def _capacity_states(group: FakeAutoScalingGroup) -> list[InstanceState]:
    return [s for s in group.instance_states if s.lifecycle_state in _CAPACITY_STATES]


def _hooks(group: FakeAutoScalingGroup, transition: str) -> list[LifecycleHook]:
    return [
        hook
        for hook in group.autoscaling_backend.lifecycle_hooks.values()
        if hook.auto_scaling_group_name == group.name and hook.lifecycle_transition == transition
    ]


def _group_named(backend: AutoScalingBackend, group_name: str) -> FakeAutoScalingGroup:
    group = backend.autoscaling_groups.get(group_name)
    if group is None:  # moto's wording for an unknown group
        raise ValidationError(
            f"AutoScalingGroup name not found - AutoScalingGroup '{group_name}' not found"
        )
    return group


def _locate(
    backend: AutoScalingBackend, instance_id: str
) -> tuple[FakeAutoScalingGroup | None, InstanceState | None]:
    for group in backend.autoscaling_groups.values():
        state = _state_of(group, instance_id)
        if state is not None:
            return group, state
    return None, None


def _state_of(group: FakeAutoScalingGroup, instance_id: str) -> InstanceState | None:
    return next((s for s in group.instance_states if s.instance.id == instance_id), None)


def _subnets(group: FakeAutoScalingGroup) -> list[tuple[str, str]]:
    """(subnet id, AZ) of the group's VPCZoneIdentifier, in the order given."""
    if not group.vpc_zone_identifier:
        return []
    ec2 = group.autoscaling_backend.ec2_backend
    ids = [s.strip() for s in group.vpc_zone_identifier.split(",") if s.strip()]
    return [(subnet_id, ec2.get_subnet(subnet_id).availability_zone) for subnet_id in ids]


def _next_placement(
    group: FakeAutoScalingGroup, states: list[InstanceState]
) -> tuple[str, str | None]:
    """AZ balancing over ``states``: the AZ with the fewest of them, then its emptiest subnet."""
    subnets = _subnets(group)
    per_zone = Counter(s.instance.placement.zone for s in states)
    per_subnet = Counter(s.instance.subnet_id for s in states) if subnets else Counter()
    zones = list(dict.fromkeys(zone for _, zone in subnets)) or list(group.availability_zones)
    zone = min(zones, key=lambda z: per_zone[z])  # min keeps the first of equals
    in_zone = [subnet_id for subnet_id, z in subnets if z == zone]
    subnet_id = min(in_zone, key=lambda s: per_subnet[s]) if in_zone else None
    return zone, subnet_id


def _run_instance(
    group: FakeAutoScalingGroup, zone: str, subnet_id: str | None, tags: dict[str, str]
) -> Instance:
    # The same call moto's replace_autoscaling_group_instances makes, one instance at a time.
    launch_template = None
    if group.ec2_launch_template is not None:
        template = group.ec2_launch_template
        launch_template = (
            {"LaunchTemplateId": template.id}
            if template.id
            else {"LaunchTemplateName": template.name}
        )
    reservation = group.autoscaling_backend.ec2_backend.run_instances(
        group.image_id,
        1,
        group.user_data,
        group.security_groups,
        instance_type=group.instance_type,
        tags={"instance": dict(tags)},
        placement=zone,
        launch_config=group.launch_config,
        launch_template=launch_template,
        is_instance_type_default=False,
        associate_public_ip=(
            group.launch_config.associate_public_ip_address if group.launch_config else None
        ),
        subnet_id=subnet_id,
    )
    return reservation.instances[0]


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


def _terminate(group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
    """Terminate through EC2's own path (EC2 adaptations see it), then leave the group."""
    ids = [s.instance.id for s in states]
    group.autoscaling_backend.ec2_backend.terminate_instances(ids)
    group.instance_states = [s for s in group.instance_states if s.instance.id not in ids]


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


def _refresh_load_balancers(group: FakeAutoScalingGroup) -> None:
    backend = group.autoscaling_backend
    if group.name in backend.autoscaling_groups:
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)
