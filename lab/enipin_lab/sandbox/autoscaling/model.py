"""What every layer shares: the transitions, results and routes, the pending action, and plain
helpers on moto's own group and instance state (where an instance is, where a new one goes, how
one leaves)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    LifecycleHook,
)
from moto.ec2.models.instances import Instance

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


# --------------------------------------------------------------------- moto helpers


def _capacity_states(group: FakeAutoScalingGroup) -> list[InstanceState]:
    return [s for s in group.instance_states if s.lifecycle_state in _CAPACITY_STATES]


def _suspended(group: FakeAutoScalingGroup, processes: frozenset[str]) -> bool:
    """Whether any of these processes is suspended on the group (moto records them only)."""
    return any(p["ProcessName"] in processes for p in group.suspended_processes)


def _launches_suspended(group: FakeAutoScalingGroup) -> bool:
    """With ``Launch`` suspended the group launches nothing: no scale-out, no replacement, no
    warm-pool instance (moto records the suspension and launches anyway)."""
    return _suspended(group, frozenset({"Launch"}))


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


def _terminate(group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
    """Terminate through EC2's own path (EC2 adaptations see it), then leave the group."""
    ids = [s.instance.id for s in states]
    group.autoscaling_backend.ec2_backend.terminate_instances(ids)
    group.instance_states = [s for s in group.instance_states if s.instance.id not in ids]


def _refresh_load_balancers(group: FakeAutoScalingGroup) -> None:
    backend = group.autoscaling_backend
    if group.name in backend.autoscaling_groups:
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)
