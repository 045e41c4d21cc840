"""Step Functions behaviour moto's ASL engine lacks, put back as AWS documents it.

- ``RedriveExecution``: a failed, aborted or timed-out Standard execution resumes, under the same
  ARN and definition, at the step where it ended, with the input that step received; the
  history keeps growing (``ExecutionRedriven``) and the successful steps are not run again.
- ``DescribeExecution`` / ``ListExecutions`` report ``redriveCount``, ``redriveDate``,
  ``redriveStatus`` and ``redriveStatusReason``.
- The context object's ``$$.Execution.RedriveCount`` (0 until a redrive) and ``RedriveTime``.
- Execution names: a name is unique per state machine even under concurrent starts (moto checks
  it without a lock), and a start without a name gets a UUID (moto names it ``None``).
- ``ListExecutions`` is eventually consistent ("results are best effort and may not reflect
  very recent updates and changes", API reference): a run started ``list_lag`` AWS seconds ago
  or less is not listed yet.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from unittest.mock import patch
from weakref import WeakKeyDictionary

from moto.core.exceptions import AWSError
from moto.core.responses import ActionResult
from moto.stepfunctions.models import StepFunctionBackend
from moto.stepfunctions.parser.api import (
    ExecutionRedrivenEventDetails,
    ExecutionStatus,
    HistoryEvent,
    HistoryEventType,
)
from moto.stepfunctions.parser.asl.component.program.program import Program
from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
from moto.stepfunctions.parser.asl.component.state.state_continue_with import ContinueWithNext
from moto.stepfunctions.parser.asl.component.state.wait.state_wait import StateWait
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.eval.event.event_manager import EventHistoryContext
from moto.stepfunctions.parser.asl.eval.states import ContextObjectData
from moto.stepfunctions.parser.backend.execution import (
    BaseExecutionWorkerCommunication,
    Execution,
)
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from moto.stepfunctions.parser.utils import TMP_THREADS
from moto.stepfunctions.responses import StepFunctionResponse

from enipin_lab.sandbox.clock import Clock

_REDRIVABLE_PERIOD = dt.timedelta(days=14)  # counted from the end of the execution
_REMEMBERED_TOKENS = 10  # "idempotent responses for the last 10 client tokens"
_TOKEN_LIFETIME = dt.timedelta(minutes=15)  # "valid for up to 15 minutes after first use"
WORKER_SETUP_SECONDS = 5.0  # real seconds a stop waits for a just-started run to set up


class ExecutionNotRedrivable(AWSError):
    """AWS's error for a redrive refused; moto's class of that name has no error code."""

    TYPE = "ExecutionNotRedrivable"


@dataclass
class _Redrives:
    """What AWS keeps about one execution's redrives."""

    count: int = 0
    date: dt.datetime | None = None
    tokens: OrderedDict[str, dt.datetime] = field(default_factory=OrderedDict)

    def replayed(self, token: str | None, now: dt.datetime) -> dt.datetime | None:
        """The date of the redrive this client token already made, if it still counts."""
        first_used = self.tokens.get(token) if token else None
        if first_used is not None and now - first_used <= _TOKEN_LIFETIME:
            return first_used
        return None

    def add(self, token: str | None, now: dt.datetime) -> None:
        self.count += 1
        self.date = now
        if token:
            self.tokens[token] = now
            while len(self.tokens) > _REMEMBERED_TOKENS:
                self.tokens.popitem(last=False)


def _not_redrivable_reason(
    status: str, stop_date: dt.datetime | None, now: dt.datetime
) -> str | None:
    """AWS's ``redriveStatusReason`` for an execution in ``status``, or None if redrivable."""
    if status in ("RUNNING", "SUCCEEDED"):
        return f"Execution is {status} and cannot be redriven."
    if stop_date is not None and now - stop_date > _REDRIVABLE_PERIOD:
        return "Execution redrivable period exceeded."
    return None


def _resume_point(
    history: list[HistoryEvent], program: Program, start_input: Any
) -> tuple[str, Any]:
    """The step the execution was in when it ended, and the input that step received.

    That is the last top-level state entered and not exited (the Task that failed uncaught, the
    Fail state reached, the Wait that was stopped). States inside Parallel branches and Map
    iterations are not top-level: the Parallel or Map itself is the step.
    """
    states = program.states.states
    entered: dict[str, Any] | None = None
    exited: dict[str, Any] | None = None
    for event in history:
        enter = event.get("stateEnteredEventDetails")
        leave = event.get("stateExitedEventDetails")
        if enter and enter["name"] in states:
            entered, exited = dict(enter), None
        elif leave and entered and leave["name"] == entered["name"]:
            exited = dict(leave)
    if entered is None:  # stopped before its first state
        return program.start_at.start_at_name, start_input
    if exited is None:
        return entered["name"], json.loads(entered["input"])
    # Stopped between two states: go on to the next one. A Choice picks its Next at run time,
    # so it is evaluated again (it has no side effects).
    after = states[entered["name"]].continue_with
    if isinstance(after, ContinueWithNext) and after.next_state is not None:
        return after.next_state.name, json.loads(exited["output"])
    return entered["name"], json.loads(entered["input"])


def _redriven_environment(old: Environment, count: int, now: dt.datetime) -> Environment:
    """A fresh run state for the same execution: its context, variables and history go on."""
    execution = dict(old.states.context_object.context_object_data["Execution"])
    execution |= {"RedriveCount": count, "RedriveTime": now}  # a datetime, as StartTime is
    context = {
        "Execution": execution,
        "StateMachine": old.states.context_object.context_object_data["StateMachine"],
    }
    history = old.event_manager.get_event_history()
    env = Environment(
        aws_execution_details=old.aws_execution_details,
        execution_type=old.execution_type,
        context=cast(ContextObjectData, context),
        event_history_context=EventHistoryContext(previous_event_id=history[-1]["id"]),
        cloud_watch_logging_session=old.cloud_watch_logging_session,
        activity_store=old.activity_store,
        variable_store=old.variable_store,
        mock_test_case=old.mock_test_case,
    )
    env.event_manager = old.event_manager  # event ids keep counting, as on AWS
    return env


def _run_from(execution: Execution, program: Program, env: Environment) -> None:
    """``Program.eval`` without its jump to StartAt: the state loop from ``env``'s next state,
    under the state machine's TimeoutSeconds, then the end of the run reflected on the
    execution as moto's worker does."""
    timeout = program.timeout_seconds.timeout_seconds if program.timeout_seconds else None
    body = threading.Thread(target=program._eval_body, args=(env,), daemon=True)
    TMP_THREADS.append(body)
    body.start()
    body.join(timeout=timeout)
    if body.is_alive():
        env.set_timed_out()
    BaseExecutionWorkerCommunication(execution).terminated()


def _restart(execution: Execution, count: int, now: dt.datetime) -> None:
    """Restart ``execution`` at its unsuccessful step in a new daemon thread."""
    worker = execution.exec_worker
    assert worker is not None and worker.env is not None  # it ran, and ended
    program = worker._get_evaluation_entrypoint()  # the definition this execution started with
    assert isinstance(program, Program)
    old = worker.env
    state, state_input = _resume_point(
        old.event_manager.get_event_history(), program, execution.input_data
    )
    env = _redriven_environment(old, count, now)
    redriven = ExecutionRedrivenEventDetails(redriveCount=count)
    env.event_manager.add_event(
        context=env.event_history_context,
        event_type=HistoryEventType.ExecutionRedriven,
        event_details=cast(EventDetails, {"executionRedrivenEventDetails": redriven}),
    )
    env.next_state_name = state  # running from here on: StopExecution reaches this env
    env.states.reset(input_value=state_input)
    execution.exec_status = ExecutionStatus.RUNNING
    execution.stop_date = execution.error = execution.cause = execution.output = None
    worker.env = env
    thread = threading.Thread(target=_run_from, args=(execution, program, env), daemon=True)
    TMP_THREADS.append(thread)
    thread.start()


def _status_or_running(execution: Execution) -> str:
    return str((execution.exec_status or ExecutionStatus.RUNNING).value)


def _engine_execution(backend: StepFunctionBackend, execution_arn: str) -> Execution | None:
    """The execution as moto's ASL engine runs it (None with the engine off: nothing ran)."""
    execution = backend.describe_execution(execution_arn)  # ExecutionDoesNotExist as on AWS
    return execution if isinstance(execution, Execution) else None


class StepFunctionsFidelity:
    """RedriveExecution, the redrive fields, atomic execution names, and ListExecutions' lag."""

    def __init__(self, clock: Clock | None = None, *, list_lag: float = 0.0) -> None:
        self._clock = clock
        self.list_lag = list_lag
        self._guard = threading.Lock()
        self._backend_locks: dict[tuple[str, str], threading.Lock] = {}
        self._redrives: WeakKeyDictionary[Execution, _Redrives] = WeakKeyDictionary()

    def install(self, stack: ExitStack) -> None:
        self._install_names(stack)
        self._install_redrive(stack)
        self._install_context(stack)
        # moto lists a new execution before it starts it, with no status yet: a concurrent
        # ListExecutions or DescribeExecution then fails (chaos seed 377). AWS answers RUNNING
        # for an execution StartExecution has accepted.
        stack.enter_context(patch.object(Execution, "status", property(_status_or_running)))

    # -- names -------------------------------------------------------------------------------

    @contextmanager
    def _serialized(self, backend: StepFunctionBackend) -> Iterator[None]:
        """Starts, stops and redrives of one account and Region, one at a time: a name check
        and the execution it lets in, or a status check and the redrive, are one step."""
        with self._guard:
            lock = self._backend_locks.setdefault(
                (backend.account_id, backend.region_name), threading.Lock()
            )
        with lock:
            yield

    def _install_names(self, stack: ExitStack) -> None:
        start = StepFunctionsParserBackend.start_execution
        stop = StepFunctionsParserBackend.stop_execution
        fidelity = self

        def start_execution(
            backend: StepFunctionsParserBackend,
            state_machine_arn: str,
            name: str | None = None,
            *args: Any,
            **kwargs: Any,
        ) -> Execution:
            with fidelity._serialized(backend):
                # AWS names an unnamed execution with a UUID
                return start(backend, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

        def stop_execution(backend: StepFunctionsParserBackend, execution_arn: str) -> Any:
            with fidelity._serialized(backend):
                return stop(backend, execution_arn)

        stack.enter_context(
            patch.object(StepFunctionsParserBackend, "start_execution", start_execution)
        )
        stack.enter_context(
            patch.object(StepFunctionsParserBackend, "stop_execution", stop_execution)
        )
        self._install_stop(stack)

    def _install_stop(self, stack: ExitStack) -> None:
        """StopExecution aborts a RUNNING execution whatever it is doing, as on AWS.

        moto sets a run up on the run's own thread after StartExecution has answered and
        ignores a stop until then; and a stop that lands inside a Task breaks the engine's
        evaluation (the run FAILS with States.Runtime). So a stop waits for the run to be
        running, and one that finds it anywhere but in a Wait takes effect as the next state
        is entered: the Task's invocation completes, as AWS lets it (it does not cancel it).
        """
        worker_stop = ExecutionWorker.stop
        state_eval = CommonStateField.eval
        pending: WeakKeyDictionary[Environment, dict[str, Any]] = WeakKeyDictionary()
        current: WeakKeyDictionary[Environment, CommonStateField] = WeakKeyDictionary()
        lock = threading.Lock()

        def stop_worker(
            worker: ExecutionWorker, stop_date: dt.datetime, error: str | None, cause: str | None
        ) -> None:
            deadline = time.monotonic() + WORKER_SETUP_SECONDS
            while not (worker.env and worker.env.is_running()) and time.monotonic() < deadline:
                time.sleep(0.005)
            env = worker.env
            with lock:
                if env is not None and not isinstance(current.get(env), StateWait):
                    pending[env] = {"stop_date": stop_date, "error": error, "cause": cause}
                    return
            worker_stop(worker, stop_date=stop_date, error=error, cause=cause)

        def eval_state(state: CommonStateField, env: Environment) -> None:
            with lock:
                stop = pending.pop(env, None)
                if stop is None:
                    current[env] = state
            if stop is not None:
                env.set_stop(**stop)  # the run ends here, ABORTED, before entering ``state``
                return
            state_eval(state, env)

        stack.enter_context(patch.object(ExecutionWorker, "stop", stop_worker))
        stack.enter_context(patch.object(CommonStateField, "eval", eval_state))

    # -- redrive -----------------------------------------------------------------------------

    def _redrive(
        self, backend: StepFunctionBackend, execution_arn: str, token: str | None
    ) -> dt.datetime:
        """RedriveExecution: the redrive date, or ExecutionNotRedrivable with AWS's reason."""
        now = dt.datetime.now(dt.UTC)
        with self._serialized(backend):
            execution = _engine_execution(backend, execution_arn)
            if execution is None:
                raise ExecutionNotRedrivable("Execution cannot be redriven.")
            with self._guard:
                record = self._redrives.setdefault(execution, _Redrives())
            replayed = record.replayed(token, now)
            if replayed is not None:
                return replayed
            reason = _not_redrivable_reason(execution.status, execution.stop_date, now)
            if reason is not None:
                raise ExecutionNotRedrivable(reason)
            _restart(execution, record.count + 1, now)
            record.add(token, now)  # counted once the redrive has started
        return now

    def _redrive_fields(self, execution: Execution, status: str) -> dict[str, Any]:
        """The redrive members of DescribeExecution for ``execution`` seen in ``status``."""
        with self._guard:
            record = self._redrives.get(execution) or _Redrives()
        fields: dict[str, Any] = {"redriveCount": record.count, "redriveStatus": "REDRIVABLE"}
        if record.date is not None:
            fields["redriveDate"] = record.date
        reason = _not_redrivable_reason(status, execution.stop_date, dt.datetime.now(dt.UTC))
        if reason is not None:
            fields |= {"redriveStatus": "NOT_REDRIVABLE", "redriveStatusReason": reason}
        return fields

    def _install_redrive(self, stack: ExitStack) -> None:
        describe = StepFunctionResponse.describe_execution
        listing = StepFunctionResponse.list_executions
        fidelity = self

        def redrive_execution(response: StepFunctionResponse) -> ActionResult:
            date = fidelity._redrive(
                response.stepfunction_backend,
                response._get_param("executionArn"),
                response._get_param("clientToken"),
            )
            return ActionResult({"redriveDate": date})

        def describe_execution(response: StepFunctionResponse) -> ActionResult:
            result = _result(describe(response))
            execution = _engine_execution(response.stepfunction_backend, result["executionArn"])
            if execution is not None:
                result |= fidelity._redrive_fields(execution, result["status"])
            return ActionResult(result)

        def list_executions(response: StepFunctionResponse) -> ActionResult:
            result = _result(listing(response))
            state_machine = response.stepfunction_backend.describe_state_machine(
                response._get_param("stateMachineArn")
            )
            by_arn: dict[str, Execution] = {}
            for candidate in state_machine.executions:
                if isinstance(candidate, Execution):
                    by_arn[candidate.execution_arn] = candidate
            for item in result["executions"]:
                if found := by_arn.get(item["executionArn"]):
                    fields = fidelity._redrive_fields(found, item["status"])
                    item.update((k, v) for k, v in fields.items() if k in _LIST_ITEM_FIELDS)
            result["executions"] = [e for e in result["executions"] if fidelity._listed(e)]
            return ActionResult(result)

        handlers: dict[str, Callable[[StepFunctionResponse], ActionResult]] = {
            "redrive_execution": redrive_execution,
            "describe_execution": describe_execution,
            "list_executions": list_executions,
        }
        for name, handler in handlers.items():
            stack.enter_context(patch.object(StepFunctionResponse, name, handler, create=True))

    def _listed(self, item: dict[str, Any]) -> bool:
        """Has ListExecutions caught up with this run's start yet?"""
        if self._clock is None or self.list_lag <= 0:
            return True
        started = item["startDate"]
        age = (self._clock.now() - started).total_seconds()
        return age >= self.list_lag

    @staticmethod
    def _install_context(stack: ExitStack) -> None:
        """``$$.Execution.RedriveCount`` is 0 until the first redrive (the redrive sets it)."""
        build = ExecutionWorker._get_evaluation_environment

        def evaluation_environment(worker: ExecutionWorker) -> Environment:
            env = build(worker)
            execution = env.states.context_object.context_object_data["Execution"]
            cast(dict[str, Any], execution)["RedriveCount"] = 0
            return env

        stack.enter_context(
            patch.object(ExecutionWorker, "_get_evaluation_environment", evaluation_environment)
        )


_LIST_ITEM_FIELDS = ("redriveCount", "redriveDate")  # what ExecutionListItem carries


def _result(action: ActionResult) -> dict[str, Any]:
    return dict(cast(dict[str, Any], action.result))
