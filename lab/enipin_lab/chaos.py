"""``enipin chaos``: seeded sequences of scale events and faults against the deployed stack in
the sandbox, then the invariants EC2, Auto Scaling and Step Functions must show.

A run's seed fixes its world and its plan. The world (``Shape``): a warm pool under either
``WarmPoolEni`` policy, a second group drawing on the same pool, hooks whose
``NotificationMetadata`` moves the ENI to another device index. The plan: which faults, in which
order, with which parameters and how long apart (``plan``). Thread timing inside the sandbox is
not seeded, as it is not on AWS, so a replay of a seed repeats the same story with the same
faults, not the same interleaving.

While a run goes on, after every step:

* ``eni_on_two_instances``: an ENI listed on two instances, or an instance with two pool ENIs;
* ``pool_eni_left_on_terminated_instance``: an instance terminated by its group still carried
  a pool ENI, which only EC2 then released (an instance terminated through EC2 by hand is
  exempt: no hook ran for it);
* ``lifecycle_action_timed_out``: an action ended by its heartbeat or global timeout instead
  of a CompleteLifecycleAction;
* ``pool_eni_at_wrong_device_index``: a pool ENI attached at another index than its group's
  hooks ask for (their ``deviceIndex``, else the stack's ``DeviceIndex``).

Once the run settles and the reconciler has had its round:

* ``in_service_without_one_pool_eni``: every InService instance of every group carries
  exactly one pool ENI;
* ``warm_instance_against_policy``: a warm instance at rest holds one pool ENI under
  ``WarmPoolEni=KEEP``, none under ``RELEASE``;
* ``lifecycle_action_pending``: no action still waits (nor did the world fail to settle);
* ``failed_without_named_error``: every FAILED or TIMED_OUT execution ends in an error the
  state machines name (an enipin error or an AWS error a Retry or Catch names), not a crash.
"""

from __future__ import annotations

import importlib.util
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from enipin import replay
from enipin.deployment import Deployment, aws_errors, connect
from enipin.errors import OperatorError
from enipin.reconcile import needs_a_person, run_round
from enipin_core.names import KINDS, LAUNCHING, TERMINATING, TRANSITIONS

if TYPE_CHECKING:  # the sandbox (moto) is imported when a run starts, not with the CLI
    from enipin_lab.sandbox import Sandbox

REGION, STACK_NAME = "us-east-1", "enipin"  # the sandbox's Region and stack
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
    "warm_pool_resized",  # drawn only in a world with a warm pool
    "other_group_scales",  # drawn only in a world with a second group
)
WARM_ONLY, SECOND_GROUP_ONLY = frozenset({"warm_pool_resized"}), frozenset({"other_group_scales"})
INVARIANTS = (
    "eni_on_two_instances",
    "pool_eni_left_on_terminated_instance",
    "lifecycle_action_timed_out",
    "pool_eni_at_wrong_device_index",
    "in_service_without_one_pool_eni",
    "warm_instance_against_policy",
    "lifecycle_action_pending",
    "failed_without_named_error",
    "run_crashed",  # the run itself raised: a call the world refused, or a bug here
)
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
LAUNCHES_ONE = frozenset(FAULTS) - {"scale_out", "scale_in"} - WARM_ONLY - SECOND_GROUP_ONLY
SECOND_GROUP, SECOND_MAX = "enipin-chaos-second", 2  # the group sharing the pool, and its size
WARM_MAX_PREPARED = 4  # the warm pool's MaxGroupPreparedCapacity: group + warm instances
STACK_DEVICE_INDEX, HOOK_DEVICE_INDEX = 1, 2  # the template's DeviceIndex; a hooks' override
MIN_STEPS, MAX_STEPS = 3, 6  # faults after the first scale-out
# The template's own heartbeat timeout, so that a timeout here is one on AWS; shorter agent and
# pool waits than the defaults keep a run short without changing what the workflow does.
PARAMETERS = {"HookHeartbeatTimeout": 300, "AgentWaitSeconds": 180, "PoolWaitSeconds": 180}
RELEASE_DELAY = 120.0  # AWS seconds EC2 takes to free the ENI of a terminated instance
TARGET_WAIT = 240.0  # AWS seconds a mid-flight fault waits for its moment
SETTLE_TIMEOUT = 2400.0
# The world's own calls retry like an operator's tooling: a throttling burst is for the stack.
OBSERVER = Config(retries={"mode": "standard", "max_attempts": 20})
GENERIC_ERRORS = frozenset({"States.ALL", "States.TaskFailed", "States.Runtime"})
WARM_AT_REST = frozenset({"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"})


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
    """The world a run plays in, drawn from its seed apart from its plan (``shape_of``)."""

    warm_pool: str | None = None  # the WarmPoolEni policy, when the group has a warm pool
    warm_state: str = "Stopped"  # the warm pool's PoolState
    warm_min: int = 0  # the warm pool's MinSize
    reuse_on_scale_in: bool = False
    second_group: bool = False  # a second group drawing on the same pool
    device_index: int = STACK_DEVICE_INDEX  # where the hooks' NotificationMetadata puts the ENI

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
        return "; ".join(parts) or "one group"

    @property
    def pool_per_az(self) -> int:
        """The pool sized as the README says: each group's maximum per AZ plus a spare, and
        under KEEP the warm pool as well (at the group's maximum, its MinSize: at most 2)."""
        extra = SECOND_MAX // AZS if self.second_group else 0
        extra += 2 if self.warm_pool == "KEEP" else 0
        return POOL_PER_AZ + extra

    def parameters(self) -> dict[str, Any]:
        return dict(PARAMETERS) | ({"WarmPoolEni": self.warm_pool} if self.warm_pool else {})

    def faults(self) -> tuple[str, ...]:
        """The faults a plan may draw in this world."""
        absent = (set() if self.warm_pool else WARM_ONLY) | (
            set() if self.second_group else SECOND_GROUP_ONLY
        )
        return tuple(f for f in FAULTS if f not in absent)


# The share of runs whose world has each feature.
WARM_POOL_SHARE, SECOND_GROUP_SHARE, MOVED_INDEX_SHARE = 0.3, 0.25, 0.25


def shape_of(seed: int) -> Shape:
    """The world of run ``seed``, from a generator of its own: the plan's draws stay as they
    were before worlds had shapes."""
    rng = random.Random(f"shape-{seed}")
    warm = rng.random() < WARM_POOL_SHARE
    policy, state = rng.choice(("KEEP", "RELEASE")), rng.choice(("Stopped", "Running"))
    minimum, reuse = rng.randint(0, 2), rng.random() < 0.5
    second = rng.random() < SECOND_GROUP_SHARE
    moved = rng.random() < MOVED_INDEX_SHARE
    index = HOOK_DEVICE_INDEX if moved else STACK_DEVICE_INDEX
    if not warm:
        return Shape(second_group=second, device_index=index)
    return Shape(policy, state, minimum, reuse, second_group=second, device_index=index)


@dataclass(frozen=True)
class Violation:
    invariant: str
    step: int | None  # the step after which it was first seen; None: once the run settled
    detail: str


@dataclass
class RunResult:
    seed: int
    shape: Shape
    steps: list[Step]
    injected: list[str]  # the faults that found their moment (a mid-flight one may not)
    notes: list[str]
    violations: list[Violation]
    executions: dict[str, int]  # status -> count, both state machines
    wall_seconds: float
    aws_seconds: float
    # a violating run's record (ChaosWorld.evidence), written beside the report, not in it
    evidence: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "evidence"},
            "shape": {**asdict(self.shape), "text": self.shape.describe()},
            "steps": [{**asdict(s), "text": s.describe()} for s in self.steps],
            "reproduce": f"enipin chaos --runs 1 --seed {self.seed}",
        }


@dataclass(frozen=True)
class FaultRow:
    fault: str
    injected: int
    runs: int
    survived: int  # runs with the fault and no violation
    violations: int  # violations in runs with the fault


@dataclass
class ChaosReport:
    seed: int
    runs: list[RunResult]
    wall_seconds: float
    jobs: int
    parameters: dict[str, Any] = field(default_factory=lambda: dict(PARAMETERS))

    @property
    def violations(self) -> list[tuple[int, Violation]]:
        return [(r.seed, v) for r in self.runs for v in r.violations]

    def table(self) -> list[FaultRow]:
        """A row per fault, then a row per world feature (``injected``: runs in such a world)."""
        rows = []
        for fault in FAULTS:
            hit = [r for r in self.runs if fault in r.injected]
            rows.append(_row(fault, hit, sum(r.injected.count(fault) for r in hit)))
        for label, has in WORLD_FEATURES:
            hit = [r for r in self.runs if has(r.shape)]
            rows.append(_row(f"world: {label}", hit, len(hit)))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "runs": len(self.runs),
            "jobs": self.jobs,
            "world": {"azs": AZS, "pool_per_az": POOL_PER_AZ, "max_desired": MAX_DESIRED},
            "parameters": self.parameters,
            "faults": [asdict(row) for row in self.table()],
            "violations": [
                {"seed": seed, **asdict(v), "reproduce": f"enipin chaos --runs 1 --seed {seed}"}
                for seed, v in self.violations
            ],
            "wall_seconds": round(self.wall_seconds, 1),
            "results": [r.to_dict() for r in self.runs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def write_evidence(self, directory: Path) -> list[Path]:
        """One file per violating run, ``seed-<N>.json``, in ``directory``."""
        written = []
        for run in self.runs:
            if run.evidence is None:
                continue
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"seed-{run.seed}.json"
            path.write_text(json.dumps(run.evidence, indent=1, default=str) + "\n")
            written.append(path)
        return written


WORLD_FEATURES: tuple[tuple[str, Callable[[Shape], bool]], ...] = (
    ("warm pool KEEP", lambda shape: shape.warm_pool == "KEEP"),
    ("warm pool RELEASE", lambda shape: shape.warm_pool == "RELEASE"),
    ("two groups, one pool", lambda shape: shape.second_group),
    ("hooks move the device index", lambda shape: shape.device_index != STACK_DEVICE_INDEX),
)


def _row(name: str, hit: list[RunResult], injected: int) -> FaultRow:
    return FaultRow(
        fault=name,
        injected=injected,
        runs=len(hit),
        survived=sum(1 for r in hit if not r.violations),
        violations=sum(len(r.violations) for r in hit),
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
    if fault in WARM_ONLY | SECOND_GROUP_ONLY:
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


# -- running -----------------------------------------------------------------------------------


def run_chaos(
    seed: int,
    runs: int,
    jobs: int = 1,
    guest_mode: str = "model",
    progress: Callable[[RunResult], None] = lambda _: None,
) -> ChaosReport:
    """Runs ``seed`` .. ``seed + runs - 1``, ``jobs`` at a time (a process each: moto's
    backends are per process)."""
    started = time.monotonic()
    seeds = range(seed, seed + runs)
    results: list[RunResult] = []
    if jobs <= 1:
        for s in seeds:
            results.append(run_one(s, guest_mode))
            progress(results[-1])
    else:
        # spawned, not forked: a fork would copy whatever threads and locks this process holds
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            for result in pool.map(run_one, seeds, [guest_mode] * runs):
                results.append(result)
                progress(result)
    return ChaosReport(seed, results, time.monotonic() - started, jobs)


def run_one(seed: int, guest_mode: str = "model") -> RunResult:
    from enipin_lab.sandbox import Sandbox

    shape, steps = shape_of(seed), plan(seed)
    started = time.monotonic()
    with Sandbox(
        azs=AZS,
        pool_per_az=shape.pool_per_az,
        max_size=MAX_DESIRED + 2,
        release_delay=RELEASE_DELAY,
        guest_mode=guest_mode,
        deploy=False,
    ) as sb:
        world = ChaosWorld(sb, shape)
        world.build()
        sb.run_schedules()  # the reconciler and the pool metrics on their schedules, as deployed
        step: Step | None = None
        try:
            for step in steps:
                world.act(step)
                world.check_always(step.index)
                sb.clock.sleep(step.gap)
            step = None
            world.converge()
            world.check_always(None)
            world.check_converged()
        except Exception as exc:  # one broken run must not hide the others' results
            where = None if step is None else step.index
            world.flag("run_crashed", where, f"{type(exc).__name__}: {exc}")
        return RunResult(
            seed=seed,
            shape=shape,
            steps=steps,
            injected=world.injected,
            notes=world.notes,
            violations=world.violations,
            executions=world.execution_statuses(),
            wall_seconds=round(time.monotonic() - started, 1),
            aws_seconds=round(sb.clock.monotonic(), 1),
            evidence=world.evidence() if world.violations else None,
        )


class ChaosWorld:
    """One run's view of the sandbox: acting on it as operators and AWS would, and checking
    it through the AWS APIs (plus what Auto Scaling and EC2 record of how things ended)."""

    def __init__(self, sb: Sandbox, shape: Shape | None = None) -> None:
        self.sb = sb
        self.shape = shape or Shape()
        self.ec2 = _client("ec2")
        self.asg = _client("autoscaling")
        self.sfn = _client("stepfunctions")
        self.injected: list[str] = []
        self.notes: list[str] = []
        self.violations: list[Violation] = []
        self.seen: set[tuple[str, str]] = set()  # (invariant, detail) already reported
        self.by_hand: set[str] = set()  # instances terminated through EC2 by the run
        self.pool_ids = {e["NetworkInterfaceId"] for e in self.pool()}

    # -- building ----------------------------------------------------------------------------

    def build(self) -> None:
        """The shape's world: a second group beside the sandbox's, the stack deployed for both,
        the warm pool, the hooks' metadata; then the second group's first instance."""
        sb = self.sb
        groups = [sb.group_name]
        if self.shape.second_group:
            self.asg.create_auto_scaling_group(
                AutoScalingGroupName=SECOND_GROUP,
                LaunchTemplate={"LaunchTemplateName": f"{sb.group_name}-lt"},
                MinSize=0,
                MaxSize=SECOND_MAX,
                DesiredCapacity=0,
                VPCZoneIdentifier=",".join(sb.world.subnets.values()),
            )
            groups.append(SECOND_GROUP)
        sb.stack = sb.deploy(sb.template, self.shape.parameters() | {"GroupName": ",".join(groups)})
        if self.shape.device_index != STACK_DEVICE_INDEX:
            for group in groups:
                self._hooks_ask(group, {"deviceIndex": self.shape.device_index})
        if self.shape.warm_pool:
            self._put_warm_pool(self.shape.warm_min)
        if self.shape.second_group:
            self.asg.set_desired_capacity(AutoScalingGroupName=SECOND_GROUP, DesiredCapacity=1)

    def _hooks_ask(self, group: str, metadata: dict[str, Any]) -> None:
        """An operator's override: the group's hooks carry ``metadata`` from now on."""
        found = self.asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
        for hook in found:
            self.asg.put_lifecycle_hook(
                AutoScalingGroupName=group,
                LifecycleHookName=hook["LifecycleHookName"],
                LifecycleTransition=hook["LifecycleTransition"],
                HeartbeatTimeout=hook["HeartbeatTimeout"],
                DefaultResult=hook["DefaultResult"],
                NotificationMetadata=json.dumps(metadata),
            )

    def _put_warm_pool(self, min_size: int) -> None:
        self.asg.put_warm_pool(
            AutoScalingGroupName=self.sb.group_name,
            MaxGroupPreparedCapacity=WARM_MAX_PREPARED,
            MinSize=min_size,
            PoolState=self.shape.warm_state,
            InstanceReusePolicy={"ReuseOnScaleIn": self.shape.reuse_on_scale_in},
        )

    # -- acting ------------------------------------------------------------------------------

    def act(self, step: Step) -> None:
        done = getattr(self, f"_{step.fault}")(step.params)
        if done is False:
            self.notes.append(f"step {step.index} {step.describe()}: no moment came")
        else:
            self.injected.append(step.fault)

    def _scale_out(self, params: dict[str, Any]) -> list[str]:
        before = set(self.members())
        count = min(int(params["count"]), MAX_DESIRED - self.sb.desired())
        if count > 0:
            self.sb.scale_to(self.sb.desired() + count)
        return sorted(set(self.members()) - before)

    def _scale_in(self, params: dict[str, Any]) -> bool:
        count = min(int(params["count"]), self.sb.desired())
        if count <= 0:
            return False
        self.sb.scale_to(self.sb.desired() - count)
        return True

    def _one_more(self) -> list[str]:
        return self._scale_out({"count": 1})

    def _duplicate_event(self, params: dict[str, Any]) -> bool:
        transition = params["transition"]
        self.sb.autoscaling.duplicate_next(1, TRANSITIONS[transition], delay=params["delay"])
        return self._scale_for(transition)

    def _drop_event(self, params: dict[str, Any]) -> bool:
        self.sb.autoscaling.drop_next(1, TRANSITIONS[params["transition"]])
        return self._scale_for(params["transition"])

    def _late_event(self, params: dict[str, Any]) -> bool:
        self.sb.autoscaling.delay_next(1, TRANSITIONS[params["transition"]], delay=params["delay"])
        return self._scale_for(params["transition"])

    def _slow_boot(self, params: dict[str, Any]) -> bool:
        # Taken at launch: only this instance stays pending that long.
        consistency = self.sb.ec2_consistency
        usual, consistency.boot_delay = consistency.boot_delay, float(params["boot_delay"])
        try:
            return bool(self._one_more())
        finally:
            consistency.boot_delay = usual

    def _stale_describe(self, params: dict[str, Any]) -> bool:
        # For a while, DescribeNetworkInterfaces shows each new attachment late.
        ec2 = self.sb.ec2
        usual, ec2.describe_lag = ec2.describe_lag, float(params["lag"])
        self.sb.clock.call_later(float(params["for"]), lambda: setattr(ec2, "describe_lag", usual))
        self._one_more()
        return True

    def _command_refused(self, params: dict[str, Any]) -> bool:
        # SSM refuses the next verifications as for an agent it does not know yet.
        self.sb.ledger.fault(
            "ssm", "SendCommand", "client_error", code="InvalidInstanceId", times=params["times"]
        )
        self._one_more()
        return True

    def _broken_connection(self, params: dict[str, Any]) -> bool:
        self.sb.ledger.fault(
            params["service"], params["operation"], params["kind"], times=params["times"]
        )
        self._one_more()
        return True

    def _terminate_lost_mid_launch(self, params: dict[str, Any]) -> bool:
        new = self._launch_with_slow_agent(float(params["agent_delay"]))
        if not new or not self.wait_for(lambda: self._run_for(new[0]), 120):
            return False
        self.sb.clock.sleep(float(params["after"]))
        self.sb.autoscaling.drop_next(1, TRANSITIONS[TERMINATE])
        try:
            self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=new[0], ShouldDecrementDesiredCapacity=bool(params["decrement"])
            )
        except ClientError as exc:  # it already left (abandoned meanwhile)
            self.notes.append(f"terminate {new[0]}: {_code(exc)}")
            return False
        return True

    def _warm_pool_resized(self, params: dict[str, Any]) -> bool:
        self._put_warm_pool(int(params["min_size"]))
        return True

    def _other_group_scales(self, params: dict[str, Any]) -> bool:
        self.asg.set_desired_capacity(
            AutoScalingGroupName=SECOND_GROUP, DesiredCapacity=int(params["desired"])
        )
        return True

    def _scale_for(self, transition: str) -> bool:
        if transition == LAUNCH:
            return bool(self._one_more())
        return self._scale_in({"count": 1})

    def _throttle_burst(self, params: dict[str, Any]) -> bool:
        self.sb.ledger.throttle(params["service"], params["operation"], times=params["times"])
        self._one_more()
        return True

    def _slow_agent(self, params: dict[str, Any]) -> bool:
        return bool(self._launch_with_slow_agent(float(params["agent_delay"])))

    def _launch_with_slow_agent(self, delay: float) -> list[str]:
        """One more instance whose SSM agent takes ``delay`` AWS seconds to come online. The
        delay is taken at boot: only this instance is slow (its replacement, if it is
        abandoned, boots like any other)."""
        usual, self.sb.ssm.agent_delay = self.sb.ssm.agent_delay, delay
        try:
            new = self._one_more()
            # the agent starts with the OS, once EC2 runs the instance
            self.wait(lambda: all(self.sb.guests.is_running(i) for i in new), 300)
            return new
        finally:
            self.sb.ssm.agent_delay = usual

    def _guest_fault(self, fault: str) -> bool:
        new = self._one_more()
        for instance_id in new:
            self.sb.guests.set_faults(instance_id, {fault})
        return bool(new)

    def _absent_agent(self, params: dict[str, Any]) -> bool:
        return self._guest_fault("agent_absent")

    def _nic_never_up(self, params: dict[str, Any]) -> bool:
        return self._guest_fault("nic_absent")

    def _nic_down(self, params: dict[str, Any]) -> bool:
        return self._guest_fault(params["fault"])

    def _eni_detached_by_hand(self, params: dict[str, Any]) -> bool:
        target = self._eni_target(params["target"])
        if target is None:
            return False
        self._detach(target, force=bool(params["force"]))
        return True

    def _eni_deleted_by_hand(self, params: dict[str, Any]) -> bool:
        target = self._eni_target(params["target"])
        if target is None:
            return False
        self._detach(target, force=True)
        eni_id = target["NetworkInterfaceId"]
        if not self.wait(lambda: self.eni_status(eni_id) == "available", 60.0):
            self.notes.append(f"{eni_id} taken again before it could be deleted")
            return True
        try:
            self.ec2.delete_network_interface(NetworkInterfaceId=eni_id)
        except ClientError as exc:  # attached again in between: EC2 refuses, as it should
            self.notes.append(f"delete {eni_id}: {_code(exc)}")
        return True

    def _eni_target(self, target: str) -> dict[str, Any] | None:
        """A pool ENI on an instance still launching (attached, not yet verified), or on an
        InService one."""
        if target == "launching":
            new = set(self._one_more())

            def attached_to_new() -> dict[str, Any] | None:
                return next((e for e in self.pool() if _holder(e) in new), None)

            return self.wait_for(attached_to_new, TARGET_WAIT)

        def on_in_service() -> dict[str, Any] | None:
            states = self.members()
            return next(
                (e for e in self.pool() if states.get(_holder(e) or "") == "InService"), None
            )

        return self.wait_for(on_in_service, TARGET_WAIT)

    def _detach(self, eni: dict[str, Any], *, force: bool) -> None:
        try:
            self.ec2.detach_network_interface(
                AttachmentId=eni["Attachment"]["AttachmentId"], Force=force
            )
        except ClientError as exc:  # already detached by the workflow itself
            self.notes.append(f"detach {eni['NetworkInterfaceId']}: {_code(exc)}")

    def _terminated_mid_workflow(self, params: dict[str, Any]) -> bool:
        if params["during"] == TERMINATE:
            before = self.members()
            if not self._scale_in({"count": 1}):
                return False
            victim = self.wait_for(lambda: self._terminating(before), TARGET_WAIT)
        else:
            new = self._one_more()
            victim = new[0] if new and self.wait_for(lambda: self._run_for(new[0]), 60) else None
        if victim is None:
            return False
        self.sb.clock.sleep(float(params["after"]))
        if params["via"] == "ec2":
            self.by_hand.add(victim)
            self.ec2.terminate_instances(InstanceIds=[victim])
            return True
        try:
            self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=victim, ShouldDecrementDesiredCapacity=bool(params["decrement"])
            )
        except ClientError as exc:  # it already left (abandoned meanwhile)
            self.notes.append(f"terminate {victim}: {_code(exc)}")
        return True

    def _terminating(self, before: dict[str, str]) -> str | None:
        states = self.members()
        return next(
            (i for i in sorted(before) if states.get(i, "").startswith("Terminating")), None
        )

    def _execution_failed_replayed(self, params: dict[str, Any]) -> bool:
        if params["how"] == "lambda_outage":
            self.sb.ledger.throttle("lambda", "Invoke", times=int(params["throttles"]))
            self._one_more()
        else:
            new = self._one_more()
            run = self.wait_for(lambda: self._run_for(new[0]), 60) if new else None
            if run is None:
                return False
            self.sb.clock.sleep(float(params["after"]))
            try:
                self.sfn.stop_execution(executionArn=run, error="OperatorStopped", cause="chaos")
            except ClientError as exc:
                self.notes.append(f"stop {run}: {_code(exc)}")
        self.sb.clock.sleep(float(params["replay_after"]))
        self.notes.append("replay --failed: " + self.replay_failed())
        return True

    def _run_for(self, instance_id: str) -> str | None:
        """The ARN of a running launch execution for ``instance_id``."""
        for execution in self.sb.executions("LaunchStateMachine"):
            if execution["status"] == "RUNNING" and execution["name"].startswith(instance_id):
                return str(execution["executionArn"])
        return None

    def replay_failed(self) -> str:
        """What ``enipin executions replay --failed`` does, through the operations layer."""
        dep = self._deployment()
        decisions = replay.plan(dep, replay.failed_runs(dep, None))
        failures = sum(1 for d in decisions if replay.carry_out_one(dep, d)[1])
        return f"{failures} failed" if failures else "ok"

    def reconcile(self) -> str:
        """A round of the deployed reconciler, as ``enipin reconcile`` runs one."""
        try:
            with aws_errors():
                result = run_round(self._deployment(), dry_run=False)
        except OperatorError as exc:
            return f"error: {exc}"
        return "needs a person" if needs_a_person(result) else "ok"

    def _deployment(self) -> Deployment:
        return connect(None, REGION, STACK_NAME)

    # -- settling and checking ---------------------------------------------------------------

    def converge(self) -> None:
        """Quiet, then a reconciler round (as its schedule would run one), then quiet again."""
        for _ in range(2):
            if not self.settle():
                return
            self.notes.append("reconcile: " + self.reconcile())
        self.settle()

    def settle(self) -> bool:
        from enipin_lab.sandbox import SettleTimeout

        try:
            self.sb.settle(timeout=SETTLE_TIMEOUT, quiet=30.0)
        except SettleTimeout:
            pending = self.sb.autoscaling.pending_actions()
            self.flag(
                "lifecycle_action_pending",
                None,
                f"the world did not settle in {SETTLE_TIMEOUT:.0f} s: "
                f"{len(pending)} actions pending, {self.sb.running_executions()} runs",
            )
            return False
        return True

    def check_always(self, step: int | None) -> None:
        pool = self.pool()  # one look serves every check of this moment
        self._check_enis_single(step, pool)
        self._check_released_before_termination(step)
        self._check_actions_completed(step)
        self._check_device_index(step, pool)

    def _check_device_index(self, step: int | None, pool: list[dict[str, Any]]) -> None:
        for eni in pool:
            index = (eni.get("Attachment") or {}).get("DeviceIndex")
            if index is not None and index != self.shape.device_index:
                self.flag(
                    "pool_eni_at_wrong_device_index",
                    step,
                    f"{eni['NetworkInterfaceId']} at {index} on {_holder(eni)}, "
                    f"the hooks ask for {self.shape.device_index}",
                )

    def _check_enis_single(self, step: int | None, pool: list[dict[str, Any]]) -> None:
        holders: dict[str, list[str]] = {}
        for instance in self.instances():
            for nic in instance.get("NetworkInterfaces", []):
                holders.setdefault(nic["NetworkInterfaceId"], []).append(instance["InstanceId"])
        for eni_id, instances in holders.items():
            if len(instances) > 1:
                self.flag("eni_on_two_instances", step, f"{eni_id} on {sorted(instances)}")
        on: Counter[str] = Counter(h for e in pool if (h := _holder(e)))
        for instance_id, count in on.items():
            if count > 1:
                self.flag("eni_on_two_instances", step, f"{instance_id} has {count} pool ENIs")

    def _check_released_before_termination(self, step: int | None) -> None:
        for left in self.sb.ec2.left_on_termination:
            if left["eni_id"] in self.pool_ids and left["instance_id"] not in self.by_hand:
                self.flag(
                    "pool_eni_left_on_terminated_instance",
                    step,
                    f"{left['eni_id']} on {left['instance_id']}",
                )

    def _check_actions_completed(self, step: int | None) -> None:
        for action in self.sb.autoscaling.ended_actions():
            if action["how"] in ("HeartbeatTimeout", "GlobalTimeout"):
                self.flag(
                    "lifecycle_action_timed_out",
                    step,
                    f"{action['transition'].split('_')[-1].lower()} of "
                    f"{action['instance_id']}: {action['how']}, {action['result']} applied",
                )

    def check_converged(self) -> None:
        states = self.members(self.groups())
        on: Counter[str] = Counter(h for e in self.pool() if (h := _holder(e)))
        for instance_id, state in sorted(states.items()):
            if state == "InService" and on[instance_id] != 1:
                self.flag(
                    "in_service_without_one_pool_eni",
                    None,
                    f"{instance_id} has {on[instance_id]}",
                )
        held = 1 if self.shape.warm_pool == "KEEP" else 0
        for instance_id, state in sorted(self.warm().items()):
            if state in WARM_AT_REST and on[instance_id] != held:
                self.flag(
                    "warm_instance_against_policy",
                    None,
                    f"{instance_id} ({state}) has {on[instance_id]} under {self.shape.warm_pool}",
                )
        for action in self.sb.autoscaling.pending_actions():
            self.flag(
                "lifecycle_action_pending",
                None,
                f"{action['instance_id']} {action['transition']} since {action['started']:.0f} s",
            )
        named = self._named_errors()
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            for execution in self.sb.executions(machine):
                if execution["status"] not in ("FAILED", "TIMED_OUT"):
                    continue
                found = self.sfn.describe_execution(executionArn=execution["executionArn"])
                if found.get("error") not in named:
                    cause = str(found.get("cause") or "")[:300]
                    detail = f"{execution['name']}: {found.get('error')}: {cause}"
                    self.flag("failed_without_named_error", None, detail)

    def _named_errors(self) -> set[str]:
        """enipin's error catalogue, and every error a Retry or Catch of the deployed state
        machines names (AWS's own, such as Lambda.TooManyRequestsException)."""
        names = _catalogue()
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            definition = json.loads(
                self.sfn.describe_state_machine(stateMachineArn=self.sb.state_machine_arn(machine))[
                    "definition"
                ]
            )
            for state in definition["States"].values():
                for rule in state.get("Retry", []) + state.get("Catch", []):
                    names.update(rule["ErrorEquals"])
        return names - GENERIC_ERRORS

    def flag(self, invariant: str, step: int | None, detail: str) -> None:
        if (invariant, detail) not in self.seen:
            self.seen.add((invariant, detail))
            self.violations.append(Violation(invariant, step, detail))

    # -- reading the world -------------------------------------------------------------------

    def groups(self) -> list[str]:
        return [self.sb.group_name] + ([SECOND_GROUP] if self.shape.second_group else [])

    def members(self, groups: list[str] | None = None) -> dict[str, str]:
        """Instance id -> lifecycle state, for the instances of the sandbox's group (or of
        ``groups``); warm instances are not members."""
        found = self.asg.describe_auto_scaling_groups(
            AutoScalingGroupNames=groups or [self.sb.group_name]
        )["AutoScalingGroups"]
        return {i["InstanceId"]: i["LifecycleState"] for g in found for i in g["Instances"]}

    def warm(self) -> dict[str, str]:
        """Instance id -> lifecycle state, for the warm pool's instances."""
        if not self.shape.warm_pool:
            return {}
        pool = self.asg.describe_warm_pool(AutoScalingGroupName=self.sb.group_name)
        return {i["InstanceId"]: i["LifecycleState"] for i in pool.get("Instances", [])}

    def pool(self) -> list[dict[str, Any]]:
        tag = self.sb.spec
        pages = self.ec2.get_paginator("describe_network_interfaces").paginate(
            Filters=[{"Name": f"tag:{tag.pool_tag_key}", "Values": [tag.pool_tag_value]}]
        )
        return [eni for page in pages for eni in page["NetworkInterfaces"]]

    def instances(self) -> Iterator[dict[str, Any]]:
        for page in self.ec2.get_paginator("describe_instances").paginate():
            for reservation in page["Reservations"]:
                yield from reservation["Instances"]

    def eni_status(self, eni_id: str) -> str | None:
        return next(
            (str(e["Status"]) for e in self.pool() if e["NetworkInterfaceId"] == eni_id), None
        )

    def evidence(self) -> dict[str, Any]:
        """What happened, for a violating run: a seed fixes the plan, not the interleaving,
        so its replay may pass. Every execution's history, the ledger of calls with their
        times and parameters, and Auto Scaling's and EC2's records of endings and releases."""
        executions = []
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            for execution in self.sb.executions(machine):
                pages = self.sfn.get_paginator("get_execution_history").paginate(
                    executionArn=execution["executionArn"]
                )
                events = [e for page in pages for e in page["events"]]
                executions.append({**execution, "history": events})
        calls = [
            {
                "at": c.at,
                "service": c.service,
                "operation": c.operation,
                "caller": c.caller,
                "outcome": c.outcome,
                "params": c.params,
            }
            for c in list(self.sb.ledger.calls)
        ]
        return {
            "executions": executions,
            "calls": calls,
            "lifecycle_actions_ended": self.sb.autoscaling.ended_actions(),
            "lifecycle_actions_pending": self.sb.autoscaling.pending_actions(),
            "lifecycle_events": self.sb.autoscaling.event_log(),
            "enis_released_by_ec2_on_termination": list(self.sb.ec2.left_on_termination),
            "notes": list(self.notes),
        }

    def execution_statuses(self) -> dict[str, int]:
        statuses: Counter[str] = Counter()
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            statuses.update(e["status"] for e in self.sb.executions(machine))
        return dict(sorted(statuses.items()))

    def wait(self, predicate: Callable[[], bool], aws_seconds: float) -> bool:
        return self.wait_for(lambda: predicate() or None, aws_seconds) is not None

    def wait_for(self, probe: Callable[[], Any], aws_seconds: float) -> Any:
        deadline = self.sb.clock.monotonic() + aws_seconds
        while self.sb.clock.monotonic() < deadline:
            found = probe()
            if found:
                return found
            self.sb.clock.sleep(1.0)
        return None


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION, config=OBSERVER)


def _catalogue() -> set[str]:
    """The names in ``ALL_ERRORS`` of the functions' error module (it imports nothing)."""
    from enipin_lab.sandbox import PROJECT_ROOT

    path = PROJECT_ROOT / "tasks" / "enipin_core" / "errors.py"
    spec = importlib.util.spec_from_file_location("enipin_errors_catalogue", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {error.__name__ for error in module.ALL_ERRORS}


def _holder(eni: dict[str, Any]) -> str | None:
    return (eni.get("Attachment") or {}).get("InstanceId")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
