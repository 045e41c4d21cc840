"""Every Task of both state machines carries the canonical Retry (Lambda's transient errors, then
AWS throttling and faults past the SDK's own retries, with the same back-off) and a final
Catch-all that routes to its workflow's cleanup path with the error kept under its own key; only
the last cleanup step has no Catch (it fails the run where a redrive resumes it, and the hook's
DefaultResult is the backstop)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enipin_core.errors import AwsThrottled, AwsTransientError

STATE_MACHINES = Path(__file__).parents[2] / "state_machines"

# The transient errors a lambda:invoke Task meets, as Step Functions names them.
LAMBDA_TRANSIENT = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.TooManyRequestsException",
)
BACKOFF = {
    "IntervalSeconds": 2,
    "BackoffRate": 2.0,
    "MaxDelaySeconds": 30,
    "JitterStrategy": "FULL",
}
# A throttled account is ridden out longer than a server fault: a burst of launches drains
# EC2's buckets for minutes (7 retries: up to 150 s of back-off, 75 s expected with full jitter;
# each attach attempt extends the hook first), where a fault that outlasts 4 retries is an outage.
CANONICAL_RETRY = (
    {"ErrorEquals": LAMBDA_TRANSIENT, "MaxAttempts": 6, **BACKOFF},
    {"ErrorEquals": (AwsThrottled.__name__,), "MaxAttempts": 8, **BACKOFF},
    {"ErrorEquals": (AwsTransientError.__name__,), "MaxAttempts": 5, **BACKOFF},
)
# Errors no Retry may name: a blanket retry would retry the business errors too.
BLANKET = frozenset({"States.ALL", "States.TaskFailed"})

# Where each workflow's Catch-alls may go, and its last cleanup step (no Catch of its own).
CLEANUP = {
    "launch": frozenset({"HasActionInEvent?", "ReleaseEni", "AbandonLaunch", "LaunchFailed"}),
    "terminate": frozenset({"HasActionInEvent?", "ContinueTerminationAfterFailure"}),
}
LAST_STEP = {"launch": "AbandonLaunch", "terminate": "ContinueTerminationAfterFailure"}
ERROR_KEY = "$.error"
# A cleanup Task that fails keeps the error that sent the run there, under its own key.
CLEANUP_ERROR_KEY = "$.releaseError"
# A Task after the action was given up (the storm guard) keeps its own failure apart too.
OWN_ERROR_KEY = {"GuardLaunchStorm": "$.guardError"}


def definition(workflow: str) -> dict[str, Any]:
    return dict(json.loads((STATE_MACHINES / f"{workflow}.asl.json").read_text()))


def tasks(machine: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    return ((name, s) for name, s in machine["States"].items() if s["Type"] == "Task")


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    return rule | {"ErrorEquals": sorted(rule.get("ErrorEquals", ()))}


def retry_problems(name: str, task: dict[str, Any]) -> list[str]:
    """What the Task's Retry lacks of the canonical block, or adds that it must not."""
    retry = task.get("Retry", [])
    problems = []
    for index, expected in enumerate(CANONICAL_RETRY):
        errors = list(expected["ErrorEquals"])
        if index >= len(retry):
            problems.append(f"{name}: Retry[{index}] is missing (it retries {errors})")
            continue
        found, wanted = _rule(retry[index]), _rule(expected)
        if found["ErrorEquals"] != wanted["ErrorEquals"]:
            problems.append(f"{name}: Retry[{index}] retries {found['ErrorEquals']}, not {errors}")
        for field in sorted(set(wanted) - {"ErrorEquals"}):
            if found.get(field) != wanted[field]:
                problems.append(
                    f"{name}: Retry[{index}] {field} is {found.get(field)}, not {wanted[field]}"
                )
    canonical = {e for rule in CANONICAL_RETRY for e in rule["ErrorEquals"]}
    for index, extra in enumerate(retry[len(CANONICAL_RETRY) :], start=len(CANONICAL_RETRY)):
        named = set(extra.get("ErrorEquals", ()))
        if named & (BLANKET | canonical):
            problems.append(
                f"{name}: Retry[{index}] names {sorted(named & (BLANKET | canonical))}: a Task's "
                "own retries name its own errors, after the canonical block"
            )
    return problems


def catch_problems(workflow: str, name: str, task: dict[str, Any]) -> list[str]:
    """What the Task's Catch lacks to route every failure to the workflow's cleanup path."""
    catch = task.get("Catch", [])
    if name == LAST_STEP[workflow]:
        return [f"{name}: the last cleanup step has a Catch"] if catch else []
    last = catch[-1] if catch else {}
    if last.get("ErrorEquals") != ["States.ALL"]:
        return [f"{name}: no final Catch for States.ALL"]
    problems = []
    if last.get("Next") not in CLEANUP[workflow]:
        problems.append(
            f"{name}: Catch States.ALL goes to {last.get('Next')}, not to the cleanup path "
            f"({', '.join(sorted(CLEANUP[workflow]))})"
        )
    key = OWN_ERROR_KEY.get(name, CLEANUP_ERROR_KEY if name in CLEANUP[workflow] else ERROR_KEY)
    if last.get("ResultPath") != key:
        problems.append(
            f"{name}: Catch States.ALL keeps the error at {last.get('ResultPath')}, not at {key}"
        )
    problems += [
        f"{name}: Catch[{index}] names States.ALL before the last rule"
        for index, rule in enumerate(catch[:-1])
        if "States.ALL" in rule.get("ErrorEquals", [])
    ]
    return problems


def problems_of(workflow: str, machine: dict[str, Any]) -> list[str]:
    return [
        f"{workflow}.{problem}"
        for name, task in tasks(machine)
        for problem in retry_problems(name, task) + catch_problems(workflow, name, task)
    ]


# -- the state machines as they are -----------------------------------------------------------


@pytest.mark.parametrize("workflow", sorted(CLEANUP))
def test_every_task_has_the_canonical_retry_and_a_catch_to_cleanup(workflow: str) -> None:
    machine = definition(workflow)
    assert len(list(tasks(machine))) > 5
    assert problems_of(workflow, machine) == []


@pytest.mark.parametrize("workflow", sorted(CLEANUP))
def test_the_cleanup_states_exist(workflow: str) -> None:
    states = definition(workflow)["States"]
    assert CLEANUP[workflow] <= set(states)
    assert states[LAST_STEP[workflow]]["Type"] == "Task"


# -- the checks fail, naming the Task and what it lacks --------------------------------------


def _on(state: str, change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(machine: dict[str, Any]) -> None:
        change(machine["States"][state])

    return apply


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_on("FindFreeEni", lambda s: s["Retry"].pop()), "FindFreeEni: Retry[2] is missing"),
        (
            _on("AttachEni", lambda s: s["Retry"][0]["ErrorEquals"].pop()),
            "AttachEni: Retry[0] retries",
        ),
        (
            _on("CheckAttachment", lambda s: s["Retry"][1].update(MaxAttempts=2)),
            "CheckAttachment: Retry[1] MaxAttempts is 2, not 8",
        ),
        (
            _on("CheckSsmAgent", lambda s: s["Retry"][0].pop("JitterStrategy")),
            "CheckSsmAgent: Retry[0] JitterStrategy is None, not FULL",
        ),
        (
            _on(
                "SendVerification",
                lambda s: s["Retry"].append({"ErrorEquals": ["States.TaskFailed"]}),
            ),
            "SendVerification: Retry[4] names ['States.TaskFailed']",
        ),
        (_on("DescribeInstance", lambda s: s.pop("Catch")), "DescribeInstance: no final Catch"),
        (
            _on("GetVerificationResult", lambda s: s["Catch"][-1].update(Next="LaunchPinned")),
            "GetVerificationResult: Catch States.ALL goes to LaunchPinned",
        ),
        (
            _on("ReleaseEni", lambda s: s["Catch"][-1].update(ResultPath="$.error")),
            "ReleaseEni: Catch States.ALL keeps the error at $.error",
        ),
        (
            _on(
                "AbandonLaunch",
                lambda s: s.update(Catch=[{"ErrorEquals": ["States.ALL"], "Next": "LaunchFailed"}]),
            ),
            "AbandonLaunch: the last cleanup step has a Catch",
        ),
    ],
    ids=[
        "aws-retry-missing",
        "lambda-error-missing",
        "max-attempts",
        "jitter",
        "blanket-retry",
        "no-catch",
        "catch-elsewhere",
        "cleanup-overwrites-error",
        "catch-on-last-step",
    ],
)
def test_a_task_without_its_retry_or_catch_is_named(
    change: Callable[[dict[str, Any]], None], named: str
) -> None:
    # GIVEN the launch definition with one Task short of the rule
    machine = copy.deepcopy(definition("launch"))
    change(machine)
    # WHEN it is checked, THEN that Task and what it lacks are named, and nothing else
    problems = problems_of("launch", machine)
    assert len(problems) == 1 and problems[0].startswith(f"launch.{named}"), problems
