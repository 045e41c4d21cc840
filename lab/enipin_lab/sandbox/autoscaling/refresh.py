"""Instance refresh and the instance maintenance policy, which moto lacks.

As AWS's user guide describes a rolling refresh (instance-refresh-overview.html, and the
defaults in understand-instance-refresh-default-values.html):

* the preferences default to the group's ``InstanceMaintenancePolicy``, else
  ``MinHealthyPercentage`` 90 and ``MaxHealthyPercentage`` 100; the warm-up to the group's
  ``DefaultInstanceWarmup``, else its ``HealthCheckGracePeriod``;
* ``MaxHealthyPercentage`` above 100 launches first: a batch of up to that share of desired
  capacity above it, and once every new instance is ``InService`` and warmed up, as many old
  instances terminate (through the terminate hooks);
* at 100 it terminates first: ``desired - ceil(desired * MinHealthy / 100)`` old instances
  (at least one) leave and the group launches their replacements at once;
* new instances go through the launch hooks like any launch, so a replacement whose launch
  is ABANDONed is terminated and launched again by the group; a refresh whose replacements
  keep failing fails. AWS gives no count; here it is ``failure_limit`` in a row.

Each refresh is a timer on the sandbox clock that re-reads the group every ``tick`` AWS
seconds. Not modelled: checkpoints, bake time, alarms, rollback, skip matching, warm pools,
scale-in protected and standby instances, and the ReplaceRootVolume strategy.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, InstanceState
from moto.autoscaling.responses import AutoScalingResponse

from enipin_lab.sandbox.autoscaling.capacity import _Capacity, _choose_victims
from enipin_lab.sandbox.autoscaling.model import _capacity_states, _suspended
from enipin_lab.sandbox.clock import Clock

ACTIVE = frozenset({"Pending", "InProgress", "Cancelling"})
# "InstanceRefresh does not replace instances" while any of these is suspended (AWS's user
# guide, understand-how-suspending-processes-affects-other-processes.html).
PAUSING = frozenset({"Launch", "Terminate", "InstanceRefresh"})


class InstanceRefreshInProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"


class ActiveInstanceRefreshNotFound(AutoscalingClientError):
    code = "ActiveInstanceRefreshNotFound"


@dataclass
class _Refresh:
    id: str
    group_name: str
    backend: AutoScalingBackend = field(repr=False)
    preferences: dict[str, Any]
    desired_configuration: dict[str, Any] | None
    old: set[str]  # the instances to replace: those in service when it started
    total: int
    started: datetime
    status: str = "Pending"
    reason: str = ""
    ended: datetime | None = None
    surge: int = 0  # launch-first: new instances launched above desired, old not yet retired
    before: set[str] = field(default_factory=set)  # every instance the group had launched
    in_service_at: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    failures_in_a_row: int = 0
    updated: int = 0  # new instances healthy and warmed up (what PercentageComplete counts)

    @property
    def min_pct(self) -> int:
        return int(self.preferences["MinHealthyPercentage"])

    @property
    def max_pct(self) -> int:
        return int(self.preferences["MaxHealthyPercentage"])

    @property
    def warmup(self) -> int:
        return int(self.preferences["InstanceWarmup"])

    def describe(self) -> dict[str, Any]:
        done = self.total if self.status == "Successful" else min(self.updated, self.total)
        described: dict[str, Any] = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group_name,
            "Status": self.status,
            "StartTime": self.started,
            "PercentageComplete": 100 if not self.total else int(100 * done / self.total),
            "InstancesToUpdate": self.total - done,
            "Preferences": dict(self.preferences),
            "Strategy": "Rolling",
        }
        if self.reason:
            described["StatusReason"] = self.reason
        if self.ended is not None:
            described["EndTime"] = self.ended
        if self.desired_configuration:
            described["DesiredConfiguration"] = self.desired_configuration
        return described


class _Refreshing(_Capacity):
    """Instance refreshes driven on the group's live state, and the maintenance policy."""

    def __init__(
        self,
        clock: Clock,
        *,
        replacement_backoff: float = 10.0,
        refresh_tick: float = 5.0,
        failure_limit: int = 3,
    ) -> None:
        super().__init__(clock, replacement_backoff=replacement_backoff)
        self._tick = refresh_tick
        self._failure_limit = failure_limit
        self._refreshes: list[_Refresh] = []  # oldest first

    def _refresh_moving(self) -> bool:
        """Some refresh will act without anyone's help: active, on a group that exists and
        suspends none of the processes a refresh needs (a paused one waits for a person)."""
        for refresh in self._refreshes:
            if refresh.status not in ACTIVE:
                continue
            group = refresh.backend.autoscaling_groups.get(refresh.group_name)
            if group is None or not _paused(group) or refresh.status == "Cancelling":
                return True
        return False

    # ----------------------------------------------------------------- the API

    def _start_refresh(self, response: AutoScalingResponse) -> dict[str, Any]:
        backend = response.autoscaling_backend
        params = response._get_params()
        name = params.get("AutoScalingGroupName", "")
        with self._lock:
            group = backend.autoscaling_groups.get(name)
            if group is None:
                raise ValidationError(f"AutoScalingGroup name not found - {name}")
            if any(r.group_name == name and r.status in ACTIVE for r in self._refreshes):
                raise InstanceRefreshInProgress(
                    f"An Instance Refresh is already in progress and blocks the execution of "
                    f"this Instance Refresh for group {name}."
                )
            strategy = params.get("Strategy", "Rolling")
            if strategy != "Rolling":
                raise ValidationError(f"Strategy {strategy} is not modelled by the sandbox")
            old = {s.instance.id for s in _capacity_states(group)}
            before = {i.id for i in _launched_by(group)}
            refresh = _Refresh(
                id=str(uuid.uuid4()),
                group_name=name,
                backend=backend,
                preferences=_preferences(group, params.get("Preferences") or {}),
                desired_configuration=params.get("DesiredConfiguration"),
                old=old,
                before=before,
                total=len(old),
                started=self._clock.now(),
            )
            self._refreshes.append(refresh)
            self._clock.call_later(0.0, lambda: self._step(refresh))
            return {"InstanceRefreshId": refresh.id}

    def _describe_refreshes(self, response: AutoScalingResponse) -> dict[str, Any]:
        params = response._get_params()
        name = params.get("AutoScalingGroupName", "")
        wanted = set(params.get("InstanceRefreshIds") or [])
        start = int(params.get("NextToken") or 0)
        size = min(int(params.get("MaxRecords") or 50), 100)
        with self._lock:
            found = [
                r.describe()
                for r in reversed(self._refreshes)  # newest first, as AWS lists them
                if r.group_name == name
                and r.backend is response.autoscaling_backend
                and (not wanted or r.id in wanted)
            ]
        page = found[start : start + size]
        more = start + size < len(found)
        return {"InstanceRefreshes": page, "NextToken": str(start + size) if more else None}

    def _cancel_refresh(self, response: AutoScalingResponse) -> dict[str, Any]:
        name = response._get_param("AutoScalingGroupName")
        with self._lock:
            refresh = next(
                (r for r in self._refreshes if r.group_name == name and r.status in ACTIVE),
                None,
            )
            if refresh is None:
                raise ActiveInstanceRefreshNotFound(
                    f"No in progress or pending Instance Refresh found for Auto Scaling group "
                    f"{name}"
                )
            refresh.status = "Cancelling"
            return {"InstanceRefreshId": refresh.id}

    # ----------------------------------------------------------------- the driver

    def _step(self, refresh: _Refresh) -> None:
        with self._lock:
            if self._closed or refresh.status not in ACTIVE:
                return
            group = refresh.backend.autoscaling_groups.get(refresh.group_name)
            if group is None:
                self._end(refresh, None, "Cancelled", "The Auto Scaling group was deleted.")
                return
            if refresh.status == "Cancelling":
                self._end(refresh, group, "Cancelled", "")
                return
            refresh.status = "InProgress"
            if not _paused(group):
                self._advance(group, refresh)
            if refresh.status in ACTIVE:
                self._clock.call_later(self._tick, lambda: self._step(refresh))

    def _advance(self, group: FakeAutoScalingGroup, refresh: _Refresh) -> None:
        now = self._clock.monotonic()
        serving = _capacity_states(group)
        old = [s for s in serving if s.instance.id in refresh.old]
        new = [s for s in serving if s.instance.id not in refresh.old]
        self._watch(group, refresh, new, now)
        if refresh.failures_in_a_row >= self._failure_limit:
            self._end(
                refresh,
                group,
                "Failed",
                f"{refresh.failures_in_a_row} replacement instances in a row failed to reach "
                f"InService; see the scaling activities.",
            )
            return
        ready = [s for s in new if _warmed(refresh, s.instance.id, now)]
        refresh.updated = len(ready)
        desired = group.desired_capacity or 0
        if len(ready) < len(new) or len(old) + len(ready) < desired + refresh.surge:
            return  # a batch is still launching or warming up
        if not old:
            self._end(refresh, group, "Successful", "")
            return
        if refresh.max_pct > 100:
            self._launch_first(group, refresh, old, desired)
        else:
            self._terminate_first(group, refresh, old, desired)

    def _watch(
        self, group: FakeAutoScalingGroup, refresh: _Refresh, new: list[InstanceState], now: float
    ) -> None:
        """Note when each new instance first serves, and count those that left before: every
        instance the group launched since the refresh started, read from EC2 itself."""
        for state in new:
            instance_id = state.instance.id
            if state.lifecycle_state == "InService" and instance_id not in refresh.in_service_at:
                refresh.in_service_at[instance_id] = now
                refresh.failures_in_a_row = 0
        launched = _launched_by(group)
        for instance in launched:
            gone = instance.state in ("shutting-down", "terminated")
            if (
                gone
                and instance.id not in refresh.before
                and instance.id not in refresh.failed
                and instance.id not in refresh.in_service_at
            ):
                refresh.failed.add(instance.id)
                refresh.failures_in_a_row += 1

    def _launch_first(
        self, group: FakeAutoScalingGroup, refresh: _Refresh, old: list[InstanceState], desired: int
    ) -> None:
        if refresh.surge:  # the batch serves: retire as many old instances, launching nothing
            retiring = _oldest_first(group, old, refresh.surge)
            refresh.surge = 0
            self._surge.pop(group.name, None)
            self._retire(group, retiring)
            return
        ceiling = math.floor(desired * refresh.max_pct / 100)
        refresh.surge = min(max(ceiling - desired, 1), len(old))
        self._surge[group.name] = refresh.surge
        group.set_desired_capacity(group.desired_capacity)

    def _terminate_first(
        self, group: FakeAutoScalingGroup, refresh: _Refresh, old: list[InstanceState], desired: int
    ) -> None:
        floor = math.ceil(desired * refresh.min_pct / 100)
        batch = min(max(desired - floor, 1), len(old))
        self._retire(group, _oldest_first(group, old, batch))
        group.set_desired_capacity(group.desired_capacity)  # their replacements, at once

    def _end(
        self, refresh: _Refresh, group: FakeAutoScalingGroup | None, status: str, reason: str
    ) -> None:
        refresh.status, refresh.reason, refresh.ended = status, reason, self._clock.now()
        if self._surge.pop(refresh.group_name, None) and group is not None:
            group.set_desired_capacity(group.desired_capacity)  # back to desired


def _paused(group: FakeAutoScalingGroup) -> bool:
    return _suspended(group, PAUSING)


def _launched_by(group: FakeAutoScalingGroup) -> list[Any]:
    """Every EC2 instance this group launched, terminated ones included."""
    ec2 = group.autoscaling_backend.ec2_backend
    return [i for i in ec2.all_instances() if getattr(i, "autoscaling_group", None) is group]


def _warmed(refresh: _Refresh, instance_id: str, now: float) -> bool:
    served = refresh.in_service_at.get(instance_id)
    return served is not None and now - served >= refresh.warmup


def _oldest_first(
    group: FakeAutoScalingGroup, old: list[InstanceState], count: int
) -> list[InstanceState]:
    """Which old instances go: the default termination policy's pick among them."""
    chosen = [s for s in _choose_victims(group, len(group.instance_states)) if s in old]
    return chosen[:count]


def group_settings(params: dict[str, Any]) -> dict[str, Any]:
    """What moto drops from Create/UpdateAutoScalingGroup, validated before the call: the
    maintenance policy and the default warm-up, as attributes of moto's group (its
    DescribeAutoScalingGroups then shows them). -1 clears either."""
    settings: dict[str, Any] = {}
    policy = params.get("InstanceMaintenancePolicy")
    if policy is not None:
        low, high = _policy_bounds(policy)
        settings["instance_maintenance_policy"] = (
            None
            if (low, high) == (-1, -1)
            else {"MinHealthyPercentage": low, "MaxHealthyPercentage": high}
        )
    warmup = params.get("DefaultInstanceWarmup")
    if warmup is not None:
        settings["default_instance_warmup"] = None if int(warmup) == -1 else int(warmup)
    return settings


def _policy_bounds(policy: dict[str, Any]) -> tuple[int, int]:
    """InstanceMaintenancePolicy as AWS validates it: both given, Min 0-100, Max 100-200, Max
    at most 100 above Min; -1 for both clears it."""
    try:
        low = int(policy["MinHealthyPercentage"])
        high = int(policy["MaxHealthyPercentage"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(
            "Both MinHealthyPercentage and MaxHealthyPercentage must be specified"
        ) from exc
    if (low, high) == (-1, -1):
        return low, high
    _check_range(low, high)
    return low, high


def _check_range(low: int, high: int) -> None:
    if not 0 <= low <= 100:
        raise ValidationError("MinHealthyPercentage must be between 0 and 100")
    if not 100 <= high <= 200:
        raise ValidationError("MaxHealthyPercentage must be between 100 and 200")
    if high - low > 100:
        raise ValidationError(
            "The difference between MaxHealthyPercentage and MinHealthyPercentage cannot be "
            "greater than 100"
        )


def _preferences(group: FakeAutoScalingGroup, given: dict[str, Any]) -> dict[str, Any]:
    """The refresh's preferences with AWS's defaults filled in from the group."""
    policy = getattr(group, "instance_maintenance_policy", None) or {
        "MinHealthyPercentage": 90,
        "MaxHealthyPercentage": 100,
    }
    low = int(given.get("MinHealthyPercentage", policy["MinHealthyPercentage"]))
    high = int(given.get("MaxHealthyPercentage", policy["MaxHealthyPercentage"]))
    _check_range(low, high)
    default_warmup = getattr(group, "default_instance_warmup", None)
    warmup = given.get("InstanceWarmup")
    if warmup is None:
        warmup = default_warmup if default_warmup is not None else group.health_check_grace_period
    return {
        **given,
        "MinHealthyPercentage": low,
        "MaxHealthyPercentage": high,
        "InstanceWarmup": int(warmup or 0),
        "SkipMatching": bool(given.get("SkipMatching", False)),
    }
