"""Every Task of both state machines rides out a transient Lambda failure: its Retry is there,
names the errors Lambda and the SDK give, and (run for real in the sandbox) turns an invocation
that Lambda throttles and then fails into a retried state and the run's usual ending. Also: a
race lost in AttachEni moves on to the next candidate within that same invocation."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    asl_states,
    assert_pinned,
    at_the_pool_look,
    attach_the_pool_eni_by_hand,
    describe,
    executions_for,
    in_service,
    path_of,
    pool_enis_on,
    rival_instance,
    wait_until,
)

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
STATE_MACHINES = Path(__file__).parents[2] / "state_machines"
LAUNCH, TERMINATE = "LaunchStateMachine", "TerminateStateMachine"
MACHINES = {LAUNCH: "launch.asl.json", TERMINATE: "terminate.asl.json"}
# What Lambda's Invoke and the SDK in front of it can fail with, transiently: the names Step
# Functions gives a lambda:invoke Task's error, as in the console's generated Retry.
LAMBDA_TRANSIENT = frozenset(
    {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ClientExecutionTimeoutException",
    }
)
# What the functions raise when an AWS API stays throttled or failing past the SDK's retries.
AWS_TRANSIENT = frozenset({"AwsThrottled", "AwsTransientError"})
# The planted failures, in order: Lambda throttles the first invocation, fails the second.
PLANTED = (
    ("throttle", "Lambda.TooManyRequestsException"),
    ("server_error", "Lambda.ServiceException"),
)


def taskasl_states() -> list[tuple[str, str, dict[str, Any]]]:
    """(state machine, Task name, Task) for every Task in both definitions, read as they are."""
    found = []
    for machine, file in MACHINES.items():
        definition = json.loads((STATE_MACHINES / file).read_text())
        for name, state in asl_states(definition["States"]):
            if state["Type"] == "Task":
                found.append((machine, name, state))
    return found


TASKS = taskasl_states()
TASK_IDS = [f"{machine.removesuffix('StateMachine')}.{name}" for machine, name, _ in TASKS]


# -- the Retry, as written ---------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "name", "task"), TASKS, ids=TASK_IDS)
def test_every_task_retries_the_transient_lambda_and_aws_errors(
    machine: str, name: str, task: dict[str, Any]
) -> None:
    retried = {
        error
        for retrier in task.get("Retry", [])
        if retrier.get("MaxAttempts", 3) > 0  # 0 retries nothing; unset, it means 3
        for error in retrier["ErrorEquals"]
    }
    missing = (LAMBDA_TRANSIENT | AWS_TRANSIENT) - retried
    assert not missing, f"{machine} {name} does not retry {sorted(missing)}"


# -- the Retry, run ------------------------------------------------------------------------------

PLANTED_ERRORS = [error for _, error in PLANTED]


def _nothing(sb: Sandbox) -> None:
    return None


@dataclass(frozen=True)
class Scenario:
    """A sandbox in which a run of ``machine`` goes through some of its Tasks, what sets that run
    going, and how the run ends when nothing fails."""

    machine: str
    sandbox: dict[str, Any]  # the Sandbox's arguments
    start: Callable[[Sandbox], None]
    end: str  # the last state the run enters
    error: str | None = None  # a run that ends FAILED: its named error
    prepare: Callable[[Sandbox], None] = _nothing  # before the failures are planted
    # once the run has gone past this state, this is done
    after: tuple[str, Callable[[Sandbox], None]] | None = None


def scale_out(sb: Sandbox) -> None:
    sb.scale_out(1)


def scale_in(sb: Sandbox) -> None:
    sb.scale_in(1)


def launch_one(sb: Sandbox) -> None:
    sb.scale_out(1)
    sb.settle()


def launch_one_whose_guest_holds_its_eni(sb: Sandbox) -> None:
    launch_one(sb)
    (instance_id,) = in_service(sb)
    (eni,) = pool_enis_on(sb, instance_id)
    sb.ec2.hold_in_guest(eni["NetworkInterfaceId"])


def nic_left_down(sb: Sandbox) -> None:
    sb.guests.set_default_faults({"nic_down"})


def slow_verification(sb: Sandbox) -> None:
    sb.ssm.run_time = 200.0  # AWS seconds the verification command runs


def terminated_just_before_its_attach(sb: Sandbox) -> None:
    ec2 = sb.client("ec2")
    sb.ledger.before(
        "ec2",
        "AttachNetworkInterface",
        lambda params: ec2.terminate_instances(InstanceIds=[params["InstanceId"][0]]),
    )


def eni_attached_by_hand_as_the_pool_is_looked_at(sb: Sandbox) -> None:
    """Someone attaches the pool's ENI to the launching instance just before the run's look at
    the AZ's pool: the run finds it there, as a duplicate or a replay would, and waits for it."""

    def attach() -> None:
        attach_the_pool_eni_by_hand(sb)

    at_the_pool_look(sb, attach)


def add_a_pool_eni(sb: Sandbox) -> None:
    (subnet,) = sb.world.subnets.values()
    sb.world.add_pool_enis(subnet, 1)


def warm_pool(reuse_on_scale_in: bool) -> Callable[[Sandbox], None]:
    def put(sb: Sandbox) -> None:
        sb.client("autoscaling").put_warm_pool(
            AutoScalingGroupName=sb.group_name,
            MinSize=0,
            PoolState="Stopped",
            InstanceReusePolicy={"ReuseOnScaleIn": reuse_on_scale_in},
        )

    return put


def warm_instance_in_service(sb: Sandbox) -> None:
    warm_pool(reuse_on_scale_in=True)(sb)
    sb.settle()
    launch_one(sb)


ONE = {"azs": 1, "pool_per_az": 1}
# A heartbeat falls due after half the hook's timeout, two minutes, and each slow wait below
# outlasts that; the hook's own four minutes leave margins wide enough for the fast clock on a
# loaded machine.
BEATS = {"HookHeartbeatTimeout": 240, "PollSeconds": 30}
SCENARIOS = {
    "pin": Scenario(LAUNCH, ONE, scale_out, "LaunchPinned", prepare=nic_left_down),
    # every wait long enough to owe a heartbeat: no free ENI until one is added, a slow attach,
    # an agent that comes up only minutes after that, a slow verification
    "slow launch": Scenario(
        LAUNCH,
        {
            "azs": 1,
            "pool_per_az": 0,
            "attach_delay": 180,
            "agent_delay": 480,
            "parameters": BEATS
            | {"PoolWaitSeconds": 900, "AttachWaitSeconds": 600, "VerifyWaitSeconds": 600},
        },
        scale_out,
        "LaunchPinned",
        prepare=slow_verification,
        after=("HeartbeatWhilePoolIsEmpty", add_a_pool_eni),
    ),
    # the ENI found already on the instance, attaching for three minutes
    "attached by hand": Scenario(
        LAUNCH,
        ONE
        | {
            "attach_delay": 180,
            "describe_lag": 0,
            "parameters": BEATS | {"AttachWaitSeconds": 600},
        },
        scale_out,
        "LaunchPinned",
        prepare=eni_attached_by_hand_as_the_pool_is_looked_at,
    ),
    # EC2 shows the instance pending for three minutes
    "slow boot": Scenario(
        LAUNCH, ONE | {"boot_delay": 180, "parameters": BEATS}, scale_out, "LaunchPinned"
    ),
    "abandon": Scenario(
        LAUNCH,
        ONE,
        scale_out,
        "LaunchFailed",
        error="InstanceTerminating",
        prepare=terminated_just_before_its_attach,
    ),
    "warm pool entry": Scenario(
        LAUNCH,
        ONE | {"max_size": 1, "parameters": {"WarmPoolEni": "RELEASE"}},
        warm_pool(reuse_on_scale_in=False),
        "EnteredWarmPool",
    ),
    "release": Scenario(TERMINATE, ONE, scale_in, "EnisReleased", prepare=launch_one),
    # the guest holds on to its ENI: heartbeats while the graceful detach waits, then forced
    "held": Scenario(
        TERMINATE,
        ONE
        | {
            "release_delay": 36_000,
            "parameters": BEATS | {"DetachGraceSeconds": 150, "DetachWaitSeconds": 600},
        },
        scale_in,
        "EnisReleased",
        prepare=launch_one_whose_guest_holds_its_eni,
    ),
    # ... and never lets go within the wait
    "stuck": Scenario(
        TERMINATE,
        ONE
        | {"release_delay": 60, "parameters": {"DetachGraceSeconds": 600, "DetachWaitSeconds": 30}},
        scale_in,
        "ReleaseFailed",
        error="EniStuckDetaching",
        prepare=launch_one_whose_guest_holds_its_eni,
    ),
    "warm pool return": Scenario(
        TERMINATE,
        {"azs": 1, "pool_per_az": 2, "max_size": 1, "parameters": {"WarmPoolEni": "KEEP"}},
        scale_in,
        "EniKeptForWarmPool",
        prepare=warm_instance_in_service,
    ),
}
# The scenario whose run goes through each Task. One run serves all the Tasks of its scenario:
# each Task's invocations fail only while a run is at that Task.
REACHED_IN = {
    (LAUNCH, "ValidateEvent"): "pin",
    (LAUNCH, "LetIntoWarmPool"): "warm pool entry",
    (LAUNCH, "DescribeInstance"): "pin",
    (LAUNCH, "HeartbeatWhileInstanceStarts"): "slow boot",
    (LAUNCH, "FindFreeEni"): "slow launch",
    (LAUNCH, "HeartbeatWhilePoolIsEmpty"): "slow launch",
    (LAUNCH, "AttachEni"): "pin",
    (LAUNCH, "CheckAttachment"): "attached by hand",
    (LAUNCH, "HeartbeatWhileAttaching"): "attached by hand",
    (LAUNCH, "CheckSsmAgent"): "slow launch",
    (LAUNCH, "HeartbeatWhileAgentStarts"): "slow launch",
    (LAUNCH, "SendVerification"): "pin",
    (LAUNCH, "HeartbeatWhileVerifying"): "slow launch",
    (LAUNCH, "GetVerificationResult"): "pin",
    (LAUNCH, "RemediateNic"): "pin",
    (LAUNCH, "CompleteLaunch"): "pin",
    (LAUNCH, "ReleaseEni"): "abandon",
    (LAUNCH, "AbandonLaunch"): "abandon",
    (LAUNCH, "GuardLaunchStorm"): "abandon",
    (TERMINATE, "ValidateEvent"): "release",
    (TERMINATE, "ContinueIntoWarmPool"): "warm pool return",
    (TERMINATE, "FindPoolEnis"): "release",
    (TERMINATE, "DetachEnis"): "release",
    (TERMINATE, "CheckDetached"): "release",
    (TERMINATE, "HeartbeatWhileDetaching"): "held",
    (TERMINATE, "ForceDetachEnis"): "held",
    (TERMINATE, "CompleteTermination"): "release",
    (TERMINATE, "ContinueTerminationAfterFailure"): "stuck",
}


class LambdaFailures:
    """Lambda failing the invocations of some Tasks, the first time a run is at each: the first
    invocation throttled, its retry an internal error. Nothing else is touched.

    A function may serve several Tasks, so an invocation is told apart by its payload: one that
    passes the state's context object (``"...": "$$.State"``) names its Task. One that passes
    only the state's input is matched against the inputs the runs' histories show at the Task,
    read just before each invocation."""

    def __init__(self, sb: Sandbox, machine: str, tasks: dict[str, dict[str, Any]]) -> None:
        self.sb = sb
        self.functions = {name: function_of(sb, task) for name, task in tasks.items()}
        self.named_by = {name: context_key(task) for name, task in tasks.items()}
        self._left = {name: [True] * len(PLANTED) for name in tasks}
        self._entered: list[tuple[str, Any]] = []  # (Task, input) of runs found at a Task
        self._lock = threading.Lock()
        self._sfn = sb.client("stepfunctions")  # one client: making one costs more than a call
        self._machine_arn = sb.state_machine_arn(machine)

    def plant(self) -> None:
        for name in self.functions:
            for slot, (kind, _) in enumerate(PLANTED):
                where = functools.partial(self._fails, name, slot)
                self.sb.ledger.fault("lambda", "Invoke", kind, rate=1.0, where=where)
        if None in self.named_by.values():
            for _ in range(3):  # one each for invocations that overlap
                self.sb.ledger.before("lambda", "Invoke", self._look)

    @property
    def done(self) -> bool:
        with self._lock:
            return not any(any(left) for left in self._left.values())

    def _look(self, params: object) -> None:
        """Before an invocation (of any function): note the runs that are at a Task."""
        if self.done:
            return
        self.sb.ledger.before("lambda", "Invoke", self._look)
        running = self._sfn.list_executions(
            stateMachineArn=self._machine_arn, statusFilter="RUNNING"
        )["executions"]
        for run in running:
            entered = [
                e["stateEnteredEventDetails"]
                for e in history(self._sfn, run["executionArn"])
                if "stateEnteredEventDetails" in e
            ]
            if entered and entered[-1]["name"] in self.functions:
                with self._lock:
                    self._entered.append((entered[-1]["name"], json.loads(entered[-1]["input"])))

    def _is_at(self, name: str, payload: dict[str, Any]) -> bool:
        key = self.named_by[name]
        if key is not None:
            return isinstance(payload.get(key), dict) and payload[key].get("Name") == name
        return any(
            at == name and (payload == given or given in payload.values())
            for at, given in self._entered
        )

    def _fails(self, name: str, slot: int, params: dict[str, Any]) -> bool:
        if self.functions[name] not in params.get("__path__", ""):
            return False
        payload = {k: v for k, v in params.items() if k != "__path__"}
        with self._lock:
            left = self._left[name]
            if left[slot] and not any(left[:slot]) and self._is_at(name, payload):
                left[slot] = False
                return True
        return False


@dataclass(frozen=True)
class Run:
    path: list[str]
    events: list[dict[str, Any]]
    status: str
    error: str | None


def history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
    return [e for page in pages for e in page["events"]]


def context_key(task: dict[str, Any]) -> str | None:
    """The payload key under which a Task passes its state's context object, if it does."""
    payload = task["Parameters"].get("Payload")
    if not isinstance(payload, dict):
        return None
    return next((k.removesuffix(".$") for k, v in payload.items() if v == "$$.State"), None)


def function_of(sb: Sandbox, task: dict[str, Any]) -> str:
    """The deployed name of the function a Task invokes ("${XFunctionArn}" in the definition)."""
    logical = task["Parameters"]["FunctionName"].removeprefix("${").removesuffix("Arn}")
    assert sb.stack is not None
    return str(sb.stack.physical[logical])


def run_scenario(name: str) -> Run:
    """The scenario's run, with Lambda failing each of its Tasks the first time it is there."""
    scenario = SCENARIOS[name]
    tasks = {n: t for m, n, t in TASKS if m == scenario.machine and REACHED_IN.get((m, n)) == name}
    with Sandbox(**scenario.sandbox) as sb:
        scenario.prepare(sb)
        earlier = {e["executionArn"] for e in sb.executions(scenario.machine)}
        LambdaFailures(sb, scenario.machine, tasks).plant()
        scenario.start(sb)

        def new_runs() -> list[dict[str, Any]]:
            runs = [e for e in sb.executions(scenario.machine) if e["executionArn"] not in earlier]
            return sorted(runs, key=lambda e: e["startDate"])

        wait_until(lambda: bool(new_runs()), sb)
        arn = new_runs()[0]["executionArn"]

        def ended() -> bool:
            return describe(sb, arn)["status"] != "RUNNING"

        if scenario.after is not None:
            state, act = scenario.after
            every_now_and_then(lambda: state in path_of(sb, arn)[:-1] or ended(), sb)
            act(sb)
        every_now_and_then(ended, sb)
        found = describe(sb, arn)
        events = history(sb.client("stepfunctions"), arn)
        path = [
            e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
        ]
        return Run(path, events, found["status"], found.get("error"))


def every_now_and_then(
    predicate: Callable[[], bool], sb: Sandbox, aws_seconds: float = 3600
) -> None:
    """``wait_until``, looking every five AWS seconds: reading a long history back costs."""
    deadline = sb.clock.monotonic() + aws_seconds
    while not predicate():
        assert sb.clock.monotonic() < deadline, "condition not reached in time"
        sb.clock.sleep(5)


@pytest.fixture(scope="module")
def scenario_run() -> Callable[[str], Run]:
    """Each scenario's run, run once for all its Tasks."""
    runs: dict[str, Run | Exception] = {}

    def run(name: str) -> Run:
        if name not in runs:
            try:
                runs[name] = run_scenario(name)
            except Exception as exc:  # every Task of the scenario reports it, not just the first
                runs[name] = exc
        found = runs[name]
        if isinstance(found, Exception):
            raise found
        return found

    return run


def task_attempts(events: list[dict[str, Any]], state: str) -> list[list[str]]:
    """For each time the run entered ``state``: how each attempt of its Task ended (the error,
    or "succeeded")."""
    entries: list[list[str]] = []
    current: str | None = None
    for event in events:
        if "stateEnteredEventDetails" in event:
            current = event["stateEnteredEventDetails"]["name"]
            if current == state:
                entries.append([])
        elif current == state and "taskFailedEventDetails" in event:
            entries[-1].append(event["taskFailedEventDetails"]["error"])
        elif current == state and "taskSucceededEventDetails" in event:
            entries[-1].append("succeeded")
    return entries


@pytest.mark.parametrize(("machine", "name", "task"), TASKS, ids=TASK_IDS)
def test_a_task_whose_lambda_is_throttled_then_fails_is_retried_and_the_run_ends_as_usual(
    scenario_run: Callable[[str], Run], machine: str, name: str, task: dict[str, Any]
) -> None:
    # GIVEN a run that goes through the Task, its Lambda throttled and then failing there
    scenario_name = REACHED_IN.get((machine, name))
    assert scenario_name is not None, f"no scenario reaches {machine} {name}: add it to REACHED_IN"
    scenario = SCENARIOS[scenario_name]
    # WHEN it runs
    run = scenario_run(scenario_name)
    # THEN the Task failed with Lambda's errors, was retried, and went on
    attempts = task_attempts(run.events, name)
    assert attempts, f"the {scenario_name!r} run never entered {name}: {run.path}"
    assert [*PLANTED_ERRORS, "succeeded"] in attempts, attempts
    # AND the run ended as it does when nothing fails
    assert run.path[-1] == scenario.end, run.path
    if scenario.error is None:
        assert (run.status, run.error) == ("SUCCEEDED", None)
    else:
        assert (run.status, run.error) == ("FAILED", scenario.error)


# -- a lost race ----------------------------------------------------------------------------------


def test_a_lost_race_moves_on_to_the_next_candidate_in_the_same_attach(sandbox: Factory) -> None:
    # GIVEN two free ENIs, and a rival that takes whichever this launch tries first, just before
    # its attach
    sb = sandbox(azs=1, pool_per_az=2)
    ec2 = sb.client("ec2")
    rival = rival_instance(sb)
    taken: list[str] = []

    def rival_takes_it(params: dict[str, list[str]]) -> None:
        taken.append(params["NetworkInterfaceId"][0])
        ec2.attach_network_interface(NetworkInterfaceId=taken[0], InstanceId=rival, DeviceIndex=1)

    sb.ledger.before("ec2", "AttachNetworkInterface", rival_takes_it)
    # WHEN the group launches one instance
    sb.scale_out(1)
    sb.settle()
    # THEN it is pinned to the other ENI of the pool
    (instance_id,) = in_service(sb)
    eni = assert_pinned(sb, instance_id)
    assert eni["NetworkInterfaceId"] in set(sb.world.pool["us-east-1a"]) - set(taken)
    # AND by the same AttachEni that lost the race: no look for a free ENI besides the one
    # DescribeInstance took
    (run,) = executions_for(sb, instance_id)
    path = path_of(sb, run["executionArn"])
    assert (path.count("FindFreeEni"), path.count("AttachEni")) == (0, 1), path
    assert json.loads(run["output"])["attempts"]["racesLost"] == 1
    assert sb.stack is not None
    attach_eni = sb.stack.physical["AttachEniFunction"]
    assert sb.ledger.invocations[attach_eni] == 1
    attaches = [
        c.outcome
        for c in sb.ledger.calls
        if c.operation == "AttachNetworkInterface" and c.caller == attach_eni
    ]
    assert attaches == ["InvalidNetworkInterface.InUse", "ok"]
