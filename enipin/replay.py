"""Replaying executions: per execution, the decision the live state calls for, then doing it.

- the lifecycle action still waits and the run can be redriven -> **redrive** (resume at the
  state that failed, same input, same ARN);
- the instance has left the group -> **skip** (nothing left to pin or release);
- otherwise -> **replay**: a new execution with the original input marked as a replay; the
  workflow completes the action if it still waits, or pins and verifies an in-service
  instance without touching its long-finished action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from botocore.exceptions import ClientError

from enipin.deployment import Deployment, aws_errors
from enipin.errors import OperatorError
from enipin.executions import (
    FINAL_FAILURES,
    Execution,
    Standing,
    list_executions,
    standing,
)
from enipin_core.names import TRANSITIONS, replay_prefix

REDRIVE = "redrive"
REPLAY = "replay"
SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    execution: Execution
    action: str
    reason: str

    def row(self) -> dict[str, Any]:
        return {
            "execution": self.execution.name,
            "instance": self.execution.instance,
            "workflow": self.execution.workflow,
            "status": self.execution.status,
            "decision": self.action,
            "reason": self.reason,
        }


def decide(execution: Execution, now: Standing | None, fail_states: frozenset[str]) -> Decision:
    def decision(action: str, reason: str) -> Decision:
        return Decision(execution, action, reason)

    if execution.status in ("RUNNING", "PENDING_REDRIVE"):
        return decision(SKIP, f"still {execution.status.lower().replace('_', ' ')}")
    if now is None:
        return decision(SKIP, "its input is not a lifecycle action of an instance")
    pending = now.action_pending(execution.workflow)
    redrivable = execution.redrive_status == "REDRIVABLE"
    if pending and redrivable and execution.stopped_in not in fail_states:
        return decision(REDRIVE, f"action still pending: resume at {execution.stopped_in}")
    if pending:
        return decision(REPLAY, "action still pending, run not redrivable: a new run completes it")
    if now.gone:
        where = now.ec2_state or "unknown to EC2"
        return decision(SKIP, f"instance {where}, out of the group: nothing to replay")
    if execution.workflow == "terminate":
        return decision(SKIP, f"instance is {now.lifecycle_state}: no termination to release")
    if now.pool_enis:
        return decision(REPLAY, f"{now.lifecycle_state} with {now.pool_enis[0]['eni']}: verify it")
    return decision(
        REPLAY, f"{now.lifecycle_state} without a pool ENI: pin and verify, complete nothing"
    )


def plan(dep: Deployment, executions: list[Execution]) -> list[Decision]:
    """One decision per instance and transition (the newest run asked for), and none while
    another run for it is live: two runs pinning one instance would fight over it."""
    sfn = dep.client("stepfunctions")
    live = {(e.instance, e.workflow) for e in list_executions(dep, "RUNNING", None)}
    decisions, seen = [], set()
    for execution in sorted(executions, key=lambda e: e.start, reverse=True):
        key = (execution.instance, execution.workflow)
        if key in seen:
            continue
        seen.add(key)
        if key in live and execution.status != "RUNNING":
            decisions.append(Decision(execution, SKIP, "another run for it is still running"))
            continue
        now = standing(dep, execution.instance) if execution.instance else None
        machine = dep.state_machines()[execution.workflow]
        decisions.append(decide(execution, now, _fail_states(sfn, machine)))
    return decisions


def carry_out(dep: Deployment, decision: Decision) -> str | None:
    """Redrive or start the replay; returns the ARN that now runs (None for a skip)."""
    sfn = dep.client("stepfunctions")
    execution = decision.execution
    if decision.action == REDRIVE:
        sfn.redrive_execution(executionArn=execution.arn)
        return execution.arn
    if decision.action != REPLAY:
        return None
    machine = dep.state_machines()[execution.workflow]
    name = replay_name(execution, _names(sfn, machine))
    # No timestamp in the marker: two operators replaying at once send the same name and
    # input, and Step Functions hands both the one run.
    replay_input = {**execution.input, "replay": {"of": execution.arn}}
    try:
        started = sfn.start_execution(
            stateMachineArn=machine, name=name, input=json.dumps(replay_input)
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            raise OperatorError(f"{name} already exists: replayed by someone else?") from None
        raise
    return str(started["executionArn"])


def carry_out_one(dep: Deployment, decision: Decision) -> tuple[str | None, str | None]:
    """(the run started, the error): one run that cannot be replayed must not hide what the
    others did."""
    try:
        with aws_errors():
            return carry_out(dep, decision), None
    except OperatorError as exc:
        return None, str(exc)


def replay_name(execution: Execution, taken: set[str]) -> str:
    """``<instance>-<transition>-<token>-r<n>``: deterministic per lifecycle action and
    attempt, so concurrent replays of one action collide instead of both running."""
    detail = execution.input.get("detail") or {}
    token = str(detail.get("LifecycleActionToken", ""))
    prefix = replay_prefix(str(execution.instance), TRANSITIONS[execution.workflow], token)
    attempt = 1 + sum(1 for name in taken if name.startswith(prefix))
    return f"{prefix}{attempt}"


def still_relevant(executions: list[Execution], by: list[Execution]) -> list[Execution]:
    """The failures that no later successful run for the same instance and transition
    has made moot (``by`` lists every execution considered)."""
    latest_success: dict[tuple[str | None, str], datetime] = {}
    for e in by:
        if e.status == "SUCCEEDED":
            key = (e.instance, e.workflow)
            latest_success[key] = max(e.start, latest_success.get(key, e.start))
    return [
        e for e in executions if latest_success.get((e.instance, e.workflow), e.start) <= e.start
    ]


def _names(sfn: Any, machine: str) -> set[str]:
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=machine)
    return {e["name"] for page in pages for e in page["executions"]}


@cache
def _fail_states_of(definition: str) -> frozenset[str]:
    states = json.loads(definition).get("States", {})
    return frozenset(name for name, s in states.items() if s.get("Type") == "Fail")


def _fail_states(sfn: Any, machine: str) -> frozenset[str]:
    """Redriving a run that ended in a Fail state only re-enters that Fail state."""
    return _fail_states_of(sfn.describe_state_machine(stateMachineArn=machine)["definition"])


def failed_runs(dep: Deployment, since: timedelta | None) -> list[Execution]:
    """Every run that ended FAILED, ABORTED or TIMED_OUT and has not been replayed since."""
    everything = list_executions(dep, None, since)
    failures = [e for e in everything if e.status in FINAL_FAILURES]
    return still_relevant(failures, everything)
