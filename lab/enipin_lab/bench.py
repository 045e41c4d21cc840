"""``enipin bench``: enipin against the classic boot script, both under the same simultaneous
scale-out in the sandbox, measured from what EC2, Step Functions and the ledger say happened.

Per strategy and phase (scale out N at once, scale in N, scale out N again): instances pinned,
double attachments, races lost, AWS calls per instance by operation, executions with their
billed state transitions and Lambda invocations, and the wall time; then what a pinned launch
and a release cost at list prices. Every number is read back from AWS state or the sandbox's
ledger, never from what the code under test says it did.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from enipin_core.aws import THROTTLING_CODES
from enipin_core.names import LAUNCHING

if TYPE_CHECKING:  # the sandbox (moto) is imported when a bench runs, not with the CLI
    from enipin_lab.sandbox import Sandbox
    from enipin_lab.sandbox.ledger import Call

SCALE_OUT, SCALE_IN, SCALE_OUT_AGAIN = "scale_out", "scale_in", "scale_out_again"
PHASES = (SCALE_OUT, SCALE_IN, SCALE_OUT_AGAIN)
ENIPIN, CLASSIC = "enipin", "classic"
CLASSIC_CALLER = "classic-boot-script"  # the ledger's caller name for the boot scripts' calls

# Up to this many simultaneous launches the fast clock (1/50 of real time) keeps up; beyond it
# the in-process simulation falls behind, AWS-time deadlines expire from CPU starvation (not
# from anything AWS would do) and every poll loop spins more often than it would on AWS. The
# bench then runs enipin's sandbox at real time, which costs no wall time when CPU-bound. At a
# few hundred launches even real time is too fast for one process on two cores (its scheduler
# runs tens of AWS seconds late, and that lateness lands in the latency figures): ``slow`` runs
# the sandbox's clock ``slowdown`` times slower than real time, so that the simulation keeps up
# and the latency measured is the workflow's, not this machine's (the scheduler lag says).
FAST_CLOCK_MAX_INSTANCES = 16
CLOCKS = ("auto", "fast", "real", "slow")
QUIET_AWS_SECONDS = 15.0  # > the group's 10 s replacement back-off: an ABANDON shows
SETTLE_TIMEOUT_AWS_SECONDS = 3600.0
# How often the bench looks, in real seconds: a look lists every execution (60 ms at 200 of
# them), so Sandbox.settle's 20 ms would take most of the interpreter from the sandbox it watches.
LOOK_REAL_SECONDS = 1.0


@dataclass(frozen=True)
class Prices:
    """List prices used for the estimate (us-east-1, checked against the AWS pricing pages)."""

    region: str = "us-east-1"
    sfn_standard_per_1k_transitions: float = 0.025  # retries count as transitions
    lambda_arm64_per_gb_second: float = 0.0000133334  # first 7.5 billion GB-s a month
    lambda_per_1m_requests: float = 0.20
    free_tiers: str = "ignored (4,000 transitions, 1M requests, 400,000 GB-s a month)"


@dataclass(frozen=True)
class BenchConfig:
    instances: int
    azs: int
    pool_per_az: int | None = None  # default: a balanced group's most per AZ, plus one spare
    clock: str = "auto"  # auto | fast | real | slow, for enipin's sandbox
    slowdown: float = 4.0  # real seconds per AWS second with the slow clock
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides
    billed_ms: float = 100.0  # assumed billed duration of one warm invocation
    flavour: str = "al2023"
    buckets: bool = True  # EC2's and Step Functions' request buckets (sandbox.buckets)
    neighbour: float = 0.0  # the fraction of each bucket the account's other tooling holds

    @property
    def pool_size_per_az(self) -> int:
        if self.pool_per_az is not None:
            return self.pool_per_az
        return math.ceil(self.instances / self.azs) + 1

    @property
    def resolved_clock(self) -> str:
        """fast, real or slow: what ``auto`` means at this size."""
        if self.clock == "auto":
            return "fast" if self.instances <= FAST_CLOCK_MAX_INSTANCES else "real"
        return self.clock

    @property
    def clock_label(self) -> str:
        return {
            "fast": "fast (1/50 real time)",
            "real": "real time",
            "slow": f"slow ({self.slowdown:g} real seconds per AWS second)",
        }[self.resolved_clock]


@dataclass(frozen=True)
class ExecutionStats:
    """The executions of one state machine started in one phase, read from Step Functions."""

    count: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    states_entered: int = 0  # StateEntered events in the histories
    retries: int = 0  # Task attempts beyond the first: AWS bills each one as a transition
    races_lost: int = 0  # attempts.racesLost of the launches' outputs
    duration_p50: float | None = None  # AWS seconds from start to end of an execution
    duration_max: float | None = None
    succeeded_instances: list[str] = field(default_factory=list)

    @property
    def transitions(self) -> int:
        return self.states_entered + self.retries


@dataclass(frozen=True)
class Phase:
    """One strategy's numbers for one phase."""

    name: str
    instances: int  # launched (scale-outs) or terminated (scale-in)
    pinned: int | None  # scale-outs: instances in service with one pool ENI (enipin: verified)
    double_attached: int  # instances carrying more than one pool ENI (EC2 allows no ENI twice)
    failures: dict[str, int]  # why instances went without an ENI (error code or execution error)
    calls: dict[str, int]  # service.Operation -> AWS calls made by the strategy's code
    call_errors: dict[str, int]  # service.Operation:ErrorCode -> count, within ``calls``
    invocations: dict[str, int]  # Lambda function (logical name) -> invocations
    executions: ExecutionStats | None
    pool_free_after: int  # pool ENIs available once the phase settled
    pool_size: int
    pool_free_seconds: float | None  # scale-in: AWS seconds until every pool ENI was free
    macs: list[str]  # MACs pinned in this phase
    macs_reused: int | None  # scale-out again: how many of them the first scale-out had pinned
    wall_seconds: float
    aws_seconds: float  # on the sandbox clock
    max_clock_lag: float  # AWS seconds the sandbox's scheduler ran late at worst
    # enipin's scale-outs: AWS seconds from each launch action's start to its CONTINUE, less the
    # floor (the model's boot, agent and command times: no workflow could be faster); p50, p99,
    # max over the launches CONTINUEd in the phase, and the floor itself.
    over_floor: dict[str, float] | None = None
    # enipin: lifecycle actions started in the phase that Auto Scaling ended by a timeout (the
    # hook's default result) rather than by the workflow's CompleteLifecycleAction
    actions_timed_out: int | None = None

    @property
    def throttled(self) -> int:
        """Calls refused for the request rate (any service's throttling code), retries too."""
        return sum(
            n for key, n in self.call_errors.items() if key.rpartition(":")[2] in THROTTLING_CODES
        )

    @property
    def pinned_pct(self) -> float | None:
        if self.pinned is None or not self.instances:
            return None
        return round(100.0 * self.pinned / self.instances, 1)

    @property
    def races_lost_per_pin(self) -> float | None:
        if self.executions is None or not self.pinned:
            return None
        return round(self.executions.races_lost / self.pinned, 2)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pinned_pct"] = self.pinned_pct
        data["races_lost_per_pin"] = self.races_lost_per_pin
        data["throttled"] = self.throttled
        if self.executions is not None:
            data["executions"]["transitions"] = self.executions.transitions
            del data["executions"]["succeeded_instances"]
        data["calls_per_instance"] = _per(self.calls, self.instances)
        data["invocations_per_execution"] = _per(
            self.invocations, self.executions.count if self.executions else 0
        )
        return data


@dataclass(frozen=True)
class StrategyRun:
    strategy: str
    phases: list[Phase]
    notes: list[str]
    clock: str
    memory_mb: dict[str, int] = field(default_factory=dict)  # Lambda function -> MemorySize
    template_parameters: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # the sandbox's modelled delays, guest

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "phases": {p.name: p.to_dict() for p in self.phases}}


@dataclass(frozen=True)
class CostLine:
    """What one unit (a pinned launch, a release) costs, and per 1,000 units."""

    unit: str
    units: int
    transitions: float  # per unit
    invocations: float  # per unit (dispatcher included)
    gb_seconds: float  # per unit
    step_functions_usd: float  # per 1,000 units
    lambda_requests_usd: float
    lambda_duration_usd: float

    @property
    def total_usd(self) -> float:
        return self.step_functions_usd + self.lambda_requests_usd + self.lambda_duration_usd

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_usd": round(self.total_usd, 4)}


@dataclass(frozen=True)
class CostEstimate:
    prices: Prices
    billed_ms: float
    memory_mb: dict[str, int]
    launch: CostLine
    release: CostLine
    assumptions: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prices": asdict(self.prices),
            "billed_ms": self.billed_ms,
            "memory_mb": self.memory_mb,
            "per_1000_pinned_launches": self.launch.to_dict(),
            "per_1000_releases": self.release.to_dict(),
            "assumptions": self.assumptions,
        }


@dataclass(frozen=True)
class BenchResult:
    config: BenchConfig
    enipin: StrategyRun
    classic: StrategyRun
    cost: CostEstimate
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {**asdict(self.config), "pool_per_az": self.config.pool_size_per_az},
            "enipin": self.enipin.to_dict(),
            "classic": self.classic.to_dict(),
            "cost": self.cost.to_dict(),
            "wall_seconds": round(self.wall_seconds, 1),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


# -- running ---------------------------------------------------------------------------------


def run_bench(config: BenchConfig, progress: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Both strategies, one after the other, in sandboxes built the same way."""
    started = time.monotonic()
    enipin = run_enipin(config, progress)
    classic = run_classic(config, progress)
    cost = estimate_cost(enipin, config.billed_ms, Prices())
    return BenchResult(config, enipin, classic, cost, time.monotonic() - started)


def sandbox_for(config: BenchConfig, *, deploy: bool, clock: str) -> Sandbox:
    from enipin_lab.sandbox import Sandbox

    return Sandbox(
        azs=config.azs,
        pool_per_az=config.pool_size_per_az,
        max_size=max(config.instances, 1),
        flavour=config.flavour,
        deploy=deploy,
        fast=clock == "fast",
        time_scale=config.slowdown if clock == "slow" else None,
        parameters=dict(config.parameters),
        buckets=config.buckets,
        neighbour=config.neighbour,
    )


def run_enipin(config: BenchConfig, progress: Callable[[str], None]) -> StrategyRun:
    """The group's lifecycle hooks drive the launch and terminate workflows."""
    n = config.instances
    with sandbox_for(config, deploy=True, clock=config.resolved_clock) as sb:
        bench = _EnipinBench(sb)
        phases: list[Phase] = []
        for name, act in ((SCALE_OUT, sb.scale_out), (SCALE_IN, sb.scale_in)):
            progress(f"enipin: {name} {n}")
            phases.append(bench.phase(name, n, act, phases))
        progress(f"enipin: {SCALE_OUT_AGAIN} {n}")
        phases.append(bench.phase(SCALE_OUT_AGAIN, n, sb.scale_out, phases))
        assert sb.stack is not None
        return StrategyRun(
            ENIPIN,
            phases,
            notes=[
                "pinned = in service, carrying exactly one pool ENI, launch workflow SUCCEEDED "
                "(the NIC was verified in the guest OS before the instance went in service)",
                "transitions = StateEntered events + Task retries (what Step Functions bills)",
            ],
            clock=config.clock_label,
            memory_mb=bench.memory_mb(),
            template_parameters={
                k: v
                for k, v in sb.stack.parameters.items()
                if k in ("PollSeconds", "HookHeartbeatTimeout", "AttachWaitSeconds")
            },
            model=_model(sb),
        )


def run_classic(config: BenchConfig, progress: Callable[[str], None]) -> StrategyRun:
    """No stack, no hooks: every instance's boot script attaches the first tagged ENI it finds.

    The fast clock is always used here: a boot script neither polls nor has a deadline."""
    n = config.instances
    with sandbox_for(config, deploy=False, clock="fast") as sb:
        classic = _ClassicBench(sb)
        phases: list[Phase] = []
        for name in PHASES:
            progress(f"classic: {name} {n}")
            phases.append(classic.phase(name, n, phases))
        return StrategyRun(
            CLASSIC,
            phases,
            notes=[
                "boot script: DescribeNetworkInterfaces with only the tag filter, the first "
                "result, AttachNetworkInterface at device index 1; no status or AZ filter, "
                "no retry; all N scripts released at once",
                "pinned = the instance carries a pool ENI: attached, never verified in the OS, "
                "and the instance was in service before the script ran (no lifecycle gate)",
                "double attachments are read from EC2, which refuses a second attach of an ENI "
                "(InvalidNetworkInterface.InUse): 0 is EC2's rule, not the script's merit",
            ],
            clock="fast (1/50 real time)",
            model=_model(sb),
        )


def launch_floor(sb: Sandbox) -> float:
    """The fewest AWS seconds from a launch's lifecycle action to its CONTINUE the model
    allows: the instance is pending ``boot_delay``, then its agent takes ``agent_delay`` to come
    online (the attach, ``attach_delay``, fits inside that unless it is longer), then one
    command reaches the agent (``invocation_lag``) and runs (``run_time``)."""
    return (
        sb.ec2_consistency.boot_delay
        + max(sb.ec2.attach_delay, sb.ssm.agent_delay)
        + sb.ssm.invocation_lag
        + sb.ssm.run_time
    )


def over_floor(sb: Sandbox, since: float) -> dict[str, float] | None:
    """p50, p99 and max of (action start to CONTINUE) - floor, for the launch actions that
    started after ``since`` (AWS seconds) and ended with CONTINUE; the floor with them."""
    floor = launch_floor(sb)
    over = sorted(
        a["ended"] - a["started"] - floor
        for a in sb.autoscaling.ended_actions()
        if a["transition"] == LAUNCHING and a["result"] == "CONTINUE" and a["started"] >= since
    )
    if not over:
        return None
    p99 = over[min(len(over) - 1, math.ceil(0.99 * len(over)) - 1)]
    figures = {"p50": statistics.median(over), "p99": p99, "max": over[-1], "floor": floor}
    return {k: round(v, 1) for k, v in figures.items()}


def actions_timed_out(sb: Sandbox, since: float) -> int:
    """Lifecycle actions started after ``since`` (AWS seconds) that ended by a timeout."""
    return sum(
        1
        for a in sb.autoscaling.ended_actions()
        if sb.autoscaling.timed_out(a) and a["started"] >= since
    )


def _model(sb: Sandbox) -> dict[str, Any]:
    return {
        "attach_delay": sb.ec2.attach_delay,
        "release_delay": sb.ec2.release_delay,
        "agent_delay": sb.ssm.agent_delay,
        "guest": getattr(sb.guests, "mode", "model"),  # netns: the document's script really ran
    }


class _Probe:
    """How late the sandbox's scheduler thread runs, in AWS seconds: the simulation's fidelity.
    Attachments finish, agents register and events are delivered on that thread; when it runs
    late, the workflows see AWS slower than it is."""

    def __init__(self, sb: Sandbox) -> None:
        self._clock = sb.clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self.max_lag = 0.0

    def tick(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if self._since is not None:  # the last probe has not run yet
                self.max_lag = max(self.max_lag, now - self._since)
                return
            self._since = now
        self._clock.call_later(0.0, self._ran)

    def _ran(self) -> None:
        with self._lock:
            if self._since is not None:
                self.max_lag = max(self.max_lag, self._clock.monotonic() - self._since)
            self._since = None


def _settle(sb: Sandbox, probe: _Probe, quiet: float = QUIET_AWS_SECONDS) -> None:
    """``Sandbox.settle`` looked at every POLL_REAL_SECONDS instead of every 20 ms: at a few
    hundred executions each look lists them all, and the looking would starve the sandbox."""
    from enipin_lab.sandbox import SettleTimeout

    look = _look_interval(sb, quiet)
    deadline = sb.clock.monotonic() + SETTLE_TIMEOUT_AWS_SECONDS
    calm_since: float | None = None
    while sb.clock.monotonic() < deadline:
        probe.tick()
        if sb.busy():
            calm_since = None
        elif calm_since is None:
            calm_since = sb.clock.monotonic()
        elif sb.clock.monotonic() - calm_since >= quiet:
            return
        time.sleep(look)
    raise SettleTimeout(f"still busy after {SETTLE_TIMEOUT_AWS_SECONDS:.0f} AWS seconds")


def _look_interval(sb: Sandbox, quiet: float) -> float:
    """Often enough to see ``quiet`` AWS seconds pass a few times, at most LOOK_REAL_SECONDS."""
    return min(LOOK_REAL_SECONDS, sb.clock.real_seconds(quiet) / 3)


def _wait_pool_free(sb: Sandbox, probe: _Probe, limit: float) -> float | None:
    """AWS seconds until every pool ENI is available again (None: not within ``limit``)."""
    start = sb.clock.monotonic()
    while sb.clock.monotonic() - start <= limit:
        probe.tick()
        pool = _pool(sb)
        if all(e["Status"] == "available" for e in pool):
            return round(sb.clock.monotonic() - start, 1)
        time.sleep(_look_interval(sb, 1.0))
    return None


@dataclass
class _Mark:
    """Where the ledger and the clocks stood when a phase began."""

    calls: int
    invocations: Counter[str]
    wall: float
    aws: float

    @classmethod
    def now(cls, sb: Sandbox) -> _Mark:
        # taken while the sandbox is at rest: nothing appends to the ledger meanwhile
        calls, invocations = len(sb.ledger.calls), Counter(sb.ledger.invocations)
        return cls(calls, invocations, time.monotonic(), sb.clock.monotonic())

    def calls_since(self, sb: Sandbox, caller: Callable[[str | None], bool]) -> list[Call]:
        return [c for c in sb.ledger.calls[self.calls :] if caller(c.caller)]


class _EnipinBench:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.probe = _Probe(sb)
        self.seen: set[str] = set()  # execution ARNs measured in an earlier phase
        assert sb.stack is not None
        # physical function name -> logical id, for readable keys
        self.logical = {
            physical: logical
            for logical, physical in sb.stack.physical.items()
            if sb.stack.types.get(logical, "").endswith("::Function")
        }

    def memory_mb(self) -> dict[str, int]:
        return {
            self.logical.get(name, name): code.memory_mb
            for name, code in sorted(self.sb.lambdas.functions.items())
        }

    def phase(self, name: str, n: int, act: Callable[[int], None], earlier: list[Phase]) -> Phase:
        sb = self.sb
        mark = _Mark.now(sb)
        act(n)
        _settle(sb, self.probe)
        machine = "TerminateStateMachine" if name == SCALE_IN else "LaunchStateMachine"
        stats = self._executions(machine)
        invocations = Counter(sb.ledger.invocations)
        invocations.subtract(mark.invocations)
        common, _ = _measured(
            sb,
            self.probe,
            mark,
            name,
            earlier,
            lambda caller: caller is not None,
            verified=set(stats.succeeded_instances),
        )
        return Phase(
            **common,
            instances=n,
            failures=dict(stats.errors),
            invocations={
                self.logical.get(k, k): v for k, v in sorted(invocations.items()) if v > 0
            },
            executions=stats,
            over_floor=None if name == SCALE_IN else over_floor(sb, since=mark.aws),
            actions_timed_out=actions_timed_out(sb, since=mark.aws),
        )

    def _executions(self, machine: str) -> ExecutionStats:
        sfn = self.sb.client("stepfunctions")
        new = [e for e in self.sb.executions(machine) if e["executionArn"] not in self.seen]
        self.seen.update(e["executionArn"] for e in new)
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        entered = retries = races = 0
        succeeded = []
        durations = []
        for execution in new:
            desc = sfn.describe_execution(executionArn=execution["executionArn"])
            statuses[desc["status"]] += 1
            if desc.get("stopDate"):  # the sandbox stamps executions with AWS time
                durations.append((desc["stopDate"] - desc["startDate"]).total_seconds())
            if desc["status"] != "SUCCEEDED":
                errors[desc.get("error") or desc["status"]] += 1
            output = json.loads(desc.get("output") or "{}")
            races += int((output.get("attempts") or {}).get("racesLost") or 0)
            if desc["status"] == "SUCCEEDED" and output.get("instanceId"):
                succeeded.append(output["instanceId"])
            e, r = _transitions(sfn, execution["executionArn"])
            entered, retries = entered + e, retries + r
        return ExecutionStats(
            count=len(new),
            statuses=dict(statuses),
            errors=dict(errors),
            states_entered=entered,
            retries=retries,
            races_lost=races,
            duration_p50=round(statistics.median(durations), 1) if durations else None,
            duration_max=round(max(durations), 1) if durations else None,
            succeeded_instances=succeeded,
        )


def _transitions(sfn: Any, execution_arn: str) -> tuple[int, int]:
    """(states entered, Task retries) of one execution's history."""
    kinds: Counter[str] = Counter()
    pages = sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution_arn, PaginationConfig={"PageSize": 1000}
    )
    for page in pages:
        kinds.update(event["type"] for event in page["events"])
    entered = sum(n for kind, n in kinds.items() if kind.endswith("StateEntered"))
    retries = max(kinds["TaskScheduled"] - kinds["TaskStateEntered"], 0)
    return entered, retries


class _ClassicBench:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.probe = _Probe(sb)

    def phase(self, name: str, n: int, earlier: list[Phase]) -> Phase:
        sb = self.sb
        mark = _Mark.now(sb)
        if name == SCALE_IN:
            sb.scale_in(n)
            _settle(sb, self.probe)
        else:
            sb.scale_out(n)
            _settle(sb, self.probe)
            run_boot_scripts(sb, _in_service(sb))
            _settle(sb, self.probe, quiet=sb.ec2.attach_delay + 1.0)  # attaching -> attached
        # on scale-in nothing releases the ENIs but EC2 itself, some time after the termination
        common, calls = _measured(
            sb, self.probe, mark, name, earlier, lambda caller: caller == CLASSIC_CALLER
        )
        attach_errors = Counter(
            c.outcome
            for c in calls
            if c.operation == "AttachNetworkInterface" and c.outcome != "ok"
        )
        return Phase(
            **common,
            instances=n,
            failures=dict(attach_errors),
            invocations={},
            executions=None,
        )


def _measured(
    sb: Sandbox,
    probe: _Probe,
    mark: _Mark,
    name: str,
    earlier: list[Phase],
    caller: Callable[[str | None], bool],
    verified: set[str] | None = None,
) -> tuple[dict[str, Any], list[Call]]:
    """The Phase fields both strategies read the same way (pool, pins, calls, clocks), and
    the calls of the strategy's code (``caller``) since ``mark``."""
    pool = _pool(sb)
    pool_free = sum(1 for e in pool if e["Status"] == "available")
    free_seconds = None
    if name == SCALE_IN:
        free_seconds = _wait_pool_free(sb, probe, sb.ec2.release_delay + 60.0)
    calls = mark.calls_since(sb, caller)
    pinned, macs, double = _pinned(sb, pool, verified)
    fields = {
        "name": name,
        "pinned": None if name == SCALE_IN else pinned,
        "double_attached": double,
        "calls": _by_operation(calls),
        "call_errors": _errors(calls),
        "pool_free_after": pool_free,
        "pool_size": len(pool),
        "pool_free_seconds": free_seconds,
        "macs": [] if name == SCALE_IN else macs,
        "macs_reused": _reused(name, macs, earlier),
        "wall_seconds": round(time.monotonic() - mark.wall, 1),
        "aws_seconds": round(sb.clock.monotonic() - mark.aws, 1),
        "max_clock_lag": round(probe.max_lag, 1),
    }
    return fields, calls


def run_boot_scripts(sb: Sandbox, instance_ids: Iterable[str]) -> dict[str, str]:
    """Run every instance's boot script at once; instance id -> "ok" or the AWS error code.
    One shared client: boto3 clients are thread-safe, and the calls are what counts."""
    from enipin_lab.sandbox.ledger import calls_made_by

    ids = list(instance_ids)
    wait_running(sb, ids)  # user data runs once the OS boots, when EC2 runs the instance
    ec2 = sb.client("ec2")
    tag = {"Name": f"tag:{sb.spec.pool_tag_key}", "Values": [sb.spec.pool_tag_value]}
    start = threading.Barrier(len(ids) + 1) if ids else None
    outcomes: dict[str, str] = {}

    def boot(instance_id: str) -> None:
        assert start is not None
        start.wait(timeout=60)
        with calls_made_by(CLASSIC_CALLER):
            outcomes[instance_id] = boot_script(ec2, instance_id, tag)

    threads = [threading.Thread(target=boot, args=(i,), daemon=True) for i in ids]
    for thread in threads:
        thread.start()
    if start is not None:
        start.wait(timeout=60)
    for thread in threads:
        thread.join()
    return outcomes


def wait_running(sb: Sandbox, instance_ids: Iterable[str], aws_seconds: float = 600.0) -> None:
    """Until EC2 runs every one of ``instance_ids`` (a launch is pending for a while)."""
    deadline = sb.clock.monotonic() + aws_seconds
    pending = set(instance_ids)
    while pending and sb.clock.monotonic() < deadline:
        pending = {i for i in pending if not sb.guests.is_running(i)}
        time.sleep(0.02)


def boot_script(ec2: Any, instance_id: str, tag_filter: dict[str, Any]) -> str:
    """The classic user-data script, in boto3: the first tagged ENI, attached, no retry."""
    try:
        enis = ec2.describe_network_interfaces(Filters=[tag_filter])["NetworkInterfaces"]
        if not enis:
            return "NoTaggedEni"
        ec2.attach_network_interface(
            NetworkInterfaceId=enis[0]["NetworkInterfaceId"],
            InstanceId=instance_id,
            DeviceIndex=1,
        )
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return "ok"


# -- reading state back ------------------------------------------------------------------------


def _pool(sb: Sandbox) -> list[dict[str, Any]]:
    pages = (
        sb.client("ec2")
        .get_paginator("describe_network_interfaces")
        .paginate(
            Filters=[{"Name": f"tag:{sb.spec.pool_tag_key}", "Values": [sb.spec.pool_tag_value]}]
        )
    )
    return [eni for page in pages for eni in page["NetworkInterfaces"]]


def _in_service(sb: Sandbox) -> list[str]:
    pages = sb.client("autoscaling").get_paginator("describe_auto_scaling_instances").paginate()
    return [
        i["InstanceId"]
        for page in pages
        for i in page["AutoScalingInstances"]
        if i["AutoScalingGroupName"] == sb.group_name and i["LifecycleState"] == "InService"
    ]


def _pinned(
    sb: Sandbox, pool: list[dict[str, Any]], verified: set[str] | None
) -> tuple[int, list[str], int]:
    """(pinned instances, their MACs, double attachments) among the in-service instances.
    ``verified``: only instances whose launch workflow succeeded count (None: any)."""
    on: dict[str, list[dict[str, Any]]] = {}
    for eni in pool:
        instance = (eni.get("Attachment") or {}).get("InstanceId")
        if instance:
            on.setdefault(instance, []).append(eni)
    double = sum(1 for enis in on.values() if len(enis) > 1)
    pinned = [
        on[i][0]
        for i in _in_service(sb)
        if len(on.get(i, [])) == 1 and (verified is None or i in verified)
    ]
    return len(pinned), sorted(e["MacAddress"] for e in pinned), double


def _reused(name: str, macs: list[str], earlier: list[Phase]) -> int | None:
    if name != SCALE_OUT_AGAIN:
        return None
    first = next((p for p in earlier if p.name == SCALE_OUT), None)
    return len(set(macs) & set(first.macs)) if first else None


def _by_operation(calls: list[Call]) -> dict[str, int]:
    return dict(sorted(Counter(f"{c.service}.{c.operation}" for c in calls).items()))


def _errors(calls: list[Call]) -> dict[str, int]:
    failed = Counter(f"{c.service}.{c.operation}:{c.outcome}" for c in calls if c.outcome != "ok")
    return dict(sorted(failed.items()))


def _per(counts: dict[str, int], units: int) -> dict[str, float]:
    return {k: round(v / units, 2) for k, v in counts.items()} if units else {}


# -- cost ------------------------------------------------------------------------------------


def estimate_cost(run: StrategyRun, billed_ms: float, prices: Prices) -> CostEstimate:
    """Per 1,000 pinned launches (both scale-outs) and per 1,000 releases (the scale-in)."""
    launches = [run.phase(SCALE_OUT), run.phase(SCALE_OUT_AGAIN)]
    release = run.phase(SCALE_IN)
    return CostEstimate(
        prices=prices,
        billed_ms=billed_ms,
        memory_mb=run.memory_mb,
        launch=_cost_line(
            "pinned launches",
            launches,
            sum(p.pinned or 0 for p in launches),
            run,
            billed_ms,
            prices,
        ),
        release=_cost_line("releases", [release], release.instances, run, billed_ms, prices),
        assumptions=[
            f"every invocation bills {billed_ms:g} ms (warm; the sandbox cannot measure Lambda's "
            "duration); cold starts, whose INIT phase Lambda also bills, are not included",
            "memory is each function's MemorySize from infra/template.yaml",
            "the dispatcher's invocation per lifecycle event is included; EventBridge, "
            "CloudWatch Logs/metrics, X-Ray and the EC2/SSM/Auto Scaling API calls are not "
            "(those APIs have no per-call charge)",
        ],
    )


def _cost_line(
    unit: str,
    phases: list[Phase],
    units: int,
    run: StrategyRun,
    billed_ms: float,
    prices: Prices,
) -> CostLine:
    transitions = sum(p.executions.transitions for p in phases if p.executions)
    invocations: Counter[str] = Counter()
    for p in phases:
        invocations.update(p.invocations)
    requests = sum(invocations.values())
    gb_seconds = sum(
        n * run.memory_mb.get(fn, 128) / 1024 * billed_ms / 1000 for fn, n in invocations.items()
    )
    per = 1000 / units if units else 0.0
    return CostLine(
        unit=unit,
        units=units,
        transitions=round(transitions / units, 2) if units else 0.0,
        invocations=round(requests / units, 2) if units else 0.0,
        gb_seconds=round(gb_seconds / units, 5) if units else 0.0,
        step_functions_usd=round(
            transitions * per * prices.sfn_standard_per_1k_transitions / 1000, 4
        ),
        lambda_requests_usd=round(requests * per * prices.lambda_per_1m_requests / 1e6, 5),
        lambda_duration_usd=round(gb_seconds * per * prices.lambda_arm64_per_gb_second, 5),
    )
