"""What a run's seed draws: its shape (:class:`Shape`, ``shape_of``) and its plan
(:class:`Step` s, ``plan``).

The shape: a warm pool under either ``WarmPoolEni`` policy, a second group drawing on the same
pool, hooks whose ``NotificationMetadata`` moves the ENI to another device index. The plan: which
faults, in which order, with which parameters and how long apart. Each comes from a generator of
its own, so the same seed draws the same shape and the same plan.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enipin_core.names import KINDS, LAUNCHING, TERMINATING

LAUNCH, TERMINATE = KINDS[LAUNCHING], KINDS[TERMINATING]
# Every fault a plan draws from, in the order the report lists them.
FAULTS = (
    "scale_out",
    "scale_in",
    "duplicate_event",
    "drop_event",
    "throttle_burst",
    "slow_agent",
    "absent_agent",
    "nic_never_up",
    "nic_down",
    "eni_detached_by_hand",
    "eni_deleted_by_hand",
    "terminated_mid_workflow",
    "execution_failed_replayed",
    "late_event",
    "slow_boot",
    "stale_describe",
    "command_refused",
    "broken_connection",
    "terminate_lost_mid_launch",
    "launches_keep_failing",
    "instance_refresh",  # drawn only in a shape without a warm pool (not modelled with one)
    "warm_pool_resized",  # drawn only in a shape with a warm pool
    "other_group_scales",  # drawn only in a shape with a second group
)
WARM_ONLY, SECOND_GROUP_ONLY = frozenset({"warm_pool_resized"}), frozenset({"other_group_scales"})
NO_WARM_POOL = frozenset({"instance_refresh"})
# Calls the functions make that a burst throttles (botocore's service name, operation).
THROTTLED = (
    ("ec2", "DescribeNetworkInterfaces"),
    ("ec2", "AttachNetworkInterface"),
    ("ec2", "DetachNetworkInterface"),
    ("ec2", "DescribeInstances"),
    ("auto-scaling", "CompleteLifecycleAction"),
    ("auto-scaling", "RecordLifecycleActionHeartbeat"),
    ("auto-scaling", "DescribeAutoScalingInstances"),
    ("ssm", "SendCommand"),
    ("ssm", "GetCommandInvocation"),
    ("ssm", "DescribeInstanceInformation"),
    ("sfn", "StartExecution"),
    ("lambda", "Invoke"),
)
# Calls the functions make whose connection a fault breaks (the SDK retries, then the ASL).
DISCONNECTED = tuple(call for call in THROTTLED if call[0] not in ("lambda", "sfn"))
AZS, POOL_PER_AZ, MAX_DESIRED = 2, 6, 6
# ENIs a plan deletes at most: an AZ then still has a free ENI for a replacement while EC2
# holds another on an instance terminated by hand.
MAX_DELETED = 2
# Faults that may launch an instance for the purpose: at the group's maximum, room is made first.
LAUNCHES_ONE = (
    frozenset(FAULTS) - {"scale_out", "scale_in"} - WARM_ONLY - SECOND_GROUP_ONLY - NO_WARM_POOL
)
SECOND_GROUP, SECOND_MAX = "enipin-chaos-second", 2  # the group sharing the pool, and its size
STACK_DEVICE_INDEX, HOOK_DEVICE_INDEX = 1, 2  # the template's DeviceIndex; a hooks' override
MIN_STEPS, MAX_STEPS = 3, 6  # faults after the first scale-out
# The template's own heartbeat timeout, so that a timeout here is one on AWS; shorter agent and
# pool waits than the defaults keep a run short without changing what the workflow does.
PARAMETERS = {"HookHeartbeatTimeout": 300, "AgentWaitSeconds": 180, "PoolWaitSeconds": 180}
# A deployment told its account spares one attach at once and one every 50 s: a launch past the
# first waits its turn (WaitForAttachTurn) for tens of seconds even after a slow boot or a warm
# pool's start, a window in which the faults land between its look at the pool and its attach.
PACED = {"AttachBurst": 1, "AttachesPerSecond": 0.02}


@dataclass(frozen=True)
class Step:
    index: int
    fault: str
    params: dict[str, Any]
    gap: float  # AWS seconds waited after the step, before the next one

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.fault}({args})"


@dataclass(frozen=True)
class Shape:
    """The shape of a run's sandbox, drawn from its seed apart from its plan (``shape_of``)."""

    warm_pool: str | None = None  # the WarmPoolEni policy, when the group has a warm pool
    warm_state: str = "Stopped"  # the warm pool's PoolState
    warm_min: int = 0  # the warm pool's MinSize
    reuse_on_scale_in: bool = False
    second_group: bool = False  # a second group drawing on the same pool
    device_index: int = STACK_DEVICE_INDEX  # where the hooks' NotificationMetadata puts the ENI
    paced: bool = False  # attaches paced to a tight bucket (PACED)

    def describe(self) -> str:
        parts = []
        if self.warm_pool:
            reuse = ", reuse on scale-in" if self.reuse_on_scale_in else ""
            parts.append(
                f"warm pool {self.warm_pool} ({self.warm_state}, min {self.warm_min}{reuse})"
            )
        if self.second_group:
            parts.append("two groups, one pool")
        if self.device_index != STACK_DEVICE_INDEX:
            parts.append(f"hooks: deviceIndex {self.device_index}")
        if self.paced:
            parts.append("attaches paced")
        return "; ".join(parts) or "one group"

    @property
    def pool_per_az(self) -> int:
        """The pool sized as the README says: each group's maximum per AZ plus a spare, and
        under KEEP the warm pool as well (at the group's maximum, its MinSize: at most 2)."""
        extra = SECOND_MAX // AZS if self.second_group else 0
        extra += 2 if self.warm_pool == "KEEP" else 0
        return POOL_PER_AZ + extra

    def parameters(self) -> dict[str, Any]:
        warm = {"WarmPoolEni": self.warm_pool} if self.warm_pool else {}
        return dict(PARAMETERS) | warm | (PACED if self.paced else {})

    def faults(self) -> tuple[str, ...]:
        """The faults a plan may draw in this shape."""
        absent = (NO_WARM_POOL if self.warm_pool else WARM_ONLY) | (
            set() if self.second_group else SECOND_GROUP_ONLY
        )
        return tuple(f for f in FAULTS if f not in absent)


# The share of runs whose shape has each feature.
WARM_POOL_SHARE, SECOND_GROUP_SHARE, MOVED_INDEX_SHARE, PACED_SHARE = 0.3, 0.25, 0.25, 0.25


def shape_of(seed: int) -> Shape:
    """The shape of run ``seed``, from a generator of its own: the plan's draws stay as they
    were before runs had shapes."""
    rng = random.Random(f"shape-{seed}")
    warm = rng.random() < WARM_POOL_SHARE
    policy, state = rng.choice(("KEEP", "RELEASE")), rng.choice(("Stopped", "Running"))
    minimum, reuse = rng.randint(0, 2), rng.random() < 0.5
    second = rng.random() < SECOND_GROUP_SHARE
    moved = rng.random() < MOVED_INDEX_SHARE
    index = HOOK_DEVICE_INDEX if moved else STACK_DEVICE_INDEX
    paced = rng.random() < PACED_SHARE  # drawn last: the earlier draws stay as they were
    if not warm:
        return Shape(second_group=second, device_index=index, paced=paced)
    return Shape(
        policy, state, minimum, reuse, second_group=second, device_index=index, paced=paced
    )


# -- planning ----------------------------------------------------------------------------------


def plan(seed: int) -> list[Step]:
    """The run ``seed`` stands for: a scale-out, then faults drawn at random, with gaps."""
    rng = random.Random(seed)
    desired, deleted = 0, 0
    steps: list[Step] = []
    drawn = shape_of(seed).faults()
    faults = ["scale_out"] + [rng.choice(drawn) for _ in range(rng.randint(MIN_STEPS, MAX_STEPS))]
    for fault in faults:
        if fault == "eni_deleted_by_hand" and deleted >= MAX_DELETED:
            fault = "eni_detached_by_hand"
        if (fault, desired) in (("scale_in", 0), ("scale_out", MAX_DESIRED)):
            fault = "scale_in" if desired else "scale_out"
        if fault in LAUNCHES_ONE and desired == MAX_DESIRED:  # make room first
            steps.append(_step(rng, len(steps), "scale_in", desired))
            desired = _desired_after("scale_in", steps[-1].params, desired)
        steps.append(_step(rng, len(steps), fault, desired))
        desired = _desired_after(fault, steps[-1].params, desired)
        deleted += fault == "eni_deleted_by_hand"
    return steps


def _step(rng: random.Random, index: int, fault: str, desired: int) -> Step:
    params = _params(rng, fault, desired)
    return Step(index, fault, params, gap=round(rng.uniform(0.0, 90.0), 1))


def _params(rng: random.Random, fault: str, desired: int) -> dict[str, Any]:
    room = MAX_DESIRED - desired
    transition = rng.choice((LAUNCH, TERMINATE)) if desired else LAUNCH
    choices: dict[str, Callable[[], dict[str, Any]]] = {
        "scale_out": lambda: {"count": min(rng.randint(1, 3), room)},
        "scale_in": lambda: {"count": rng.randint(1, min(2, desired))},
        "duplicate_event": lambda: {
            "transition": transition,
            "delay": round(rng.uniform(0.0, 60.0), 1),
        },
        "drop_event": lambda: {"transition": transition},
        "late_event": lambda: {
            "transition": transition,
            "delay": round(rng.uniform(10.0, 180.0), 1),
        },
        "slow_boot": lambda: {"boot_delay": round(rng.uniform(20.0, 200.0), 1)},
        "stale_describe": lambda: {  # seconds, as launches meet it
            "lag": round(rng.uniform(2.0, 10.0), 1),
            "for": round(rng.uniform(30.0, 180.0), 1),
        },
        "command_refused": lambda: {"times": rng.randint(1, 4)},
        # a targeted interleaving: the group terminates an instance whose launch run still
        # waits for a slow agent, and the terminate event is lost
        # (agents slower than AgentWaitSeconds keep the launch run to its bound, past which a
        # lost terminate action has little of its hook's timeout left)
        "terminate_lost_mid_launch": lambda: {
            "agent_delay": round(rng.uniform(120.0, 400.0), 1),
            "after": round(rng.uniform(0.0, 20.0), 1),
            "decrement": rng.random() < 0.5,
        },
        "broken_connection": lambda: dict(
            zip(("service", "operation"), rng.choice(DISCONNECTED), strict=True),
            kind=rng.choice(("connect_timeout", "read_timeout", "no_connection")),
            times=rng.randint(2, 8),
        ),
        "throttle_burst": lambda: dict(
            zip(("service", "operation"), rng.choice(THROTTLED), strict=True),
            times=rng.randint(3, 15),
        ),
        "slow_agent": lambda: {"agent_delay": round(rng.uniform(60.0, 240.0), 1)},
        # every instance launched fails the same way (a broken AMI, no instance profile) until
        # the operator fixes it, long enough for the storm guard to trip or not; then releases
        "launches_keep_failing": lambda: {
            "failure": rng.choice(("nic_absent", "agent_absent")),
            "fixed_after": round(rng.uniform(300.0, 1800.0), 1),
        },
        # an operator's rolling update, launching first (the pool's spares take the batch) or
        # terminating first, while the other faults go on
        "instance_refresh": lambda: _refresh_preferences(rng),
        "warm_pool_resized": lambda: {"min_size": rng.randint(0, 2)},
        "other_group_scales": lambda: {"desired": rng.randint(0, SECOND_MAX)},
        "absent_agent": dict,
        "nic_never_up": dict,
        "nic_down": lambda: {"fault": rng.choice(("nic_down", "no_address"))},
        "eni_detached_by_hand": lambda: {
            "target": rng.choice(("launching", "in_service")),
            "force": rng.random() < 0.5,
        },
        "eni_deleted_by_hand": lambda: {"target": rng.choice(("launching", "in_service"))},
        "terminated_mid_workflow": lambda: _termination(rng, desired),
        "execution_failed_replayed": lambda: {
            "how": rng.choice(("stopped", "lambda_outage")),
            "throttles": rng.randint(7, 14),  # 7: more than one Task's Retry absorbs
            "after": round(rng.uniform(0.0, 60.0), 1),
            "replay_after": round(rng.uniform(30.0, 240.0), 1),
        },
    }
    return choices[fault]()


def _refresh_preferences(rng: random.Random) -> dict[str, Any]:
    launch_first = rng.random() < 0.5
    return {
        "MinHealthyPercentage": 100 if launch_first else rng.choice((50, 66, 90)),
        "MaxHealthyPercentage": rng.choice((110, 125, 150)) if launch_first else 100,
        "InstanceWarmup": rng.randint(0, 120),
    }


def _termination(rng: random.Random, desired: int) -> dict[str, Any]:
    during = rng.choice((LAUNCH, TERMINATE)) if desired else LAUNCH
    via = rng.choice(("autoscaling", "ec2")) if during == LAUNCH else "ec2"
    params: dict[str, Any] = {"during": during, "via": via, "after": round(rng.uniform(0, 60), 1)}
    if via == "autoscaling":
        params["decrement"] = rng.random() < 0.5
    return params


def _desired_after(fault: str, params: dict[str, Any], desired: int) -> int:
    """The group's desired capacity once the step has acted (what later steps may assume)."""
    if fault == "scale_out":
        return desired + int(params["count"])
    if fault == "scale_in":
        return desired - int(params["count"])
    if fault in WARM_ONLY | SECOND_GROUP_ONLY | NO_WARM_POOL:
        return desired  # the group's own capacity does not move
    if fault in ("duplicate_event", "drop_event", "late_event"):
        return desired + (1 if params["transition"] == LAUNCH else -1)
    if fault == "terminated_mid_workflow" and params["during"] == TERMINATE:
        return desired - 1  # it scales in one to have a termination to interrupt
    if fault in ("terminated_mid_workflow", "terminate_lost_mid_launch") and params.get(
        "decrement"
    ):
        return desired  # one launched for it, and the termination took it back
    in_service = fault.startswith("eni_") and params["target"] == "in_service"
    return desired if in_service else min(desired + 1, MAX_DESIRED)
