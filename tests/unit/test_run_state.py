"""The run state is declared once (``enipin_core.runstate``), in camelCase: every ``$.`` path
either state machine reads or writes names a declared key of its workflow, down to the keys of
the dicts inside it, and what the code puts into the state says the same keys."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import asl_states, load_event
from validate_event import decide

from enipin_core import runstate
from enipin_core.pool import Eni, Instance
from enipin_core.settings import Settings
from enipin_core.waiting import Heartbeat, WaitProgress

ROOT = Path(__file__).parents[2]
SCHEMAS = ROOT / "tasks" / "enipin_core" / "schemas"
WORKFLOWS: dict[str, tuple[Mapping[str, str], frozenset[str]]] = {
    "launch": (runstate.LAUNCH, runstate.LAUNCH_OUTPUT),
    "terminate": (runstate.TERMINATE, runstate.TERMINATE_OUTPUT),
}
NESTED_OUTPUT = {"attempts": runstate.OUTPUT_ATTEMPTS}
# What a lambda:invoke Task's result holds, before its OutputPath picks the function's answer.
LAMBDA_INVOKE_RESULT = frozenset(
    {"Payload", "StatusCode", "ExecutedVersion", "SdkHttpMetadata", "SdkResponseMetadata"}
)
# A reference path: `$` then `.key` and `[0]` / `[*]` steps; `$$.` (the context object) is not.
PATH = re.compile(r"(?<!\$)\$((?:\.[\w-]+|\[(?:\d+|\*)\])+)")
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def definition(workflow: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "state_machines" / f"{workflow}.asl.json").read_text()))


def _strings(node: Any) -> Iterator[str]:
    """Every string in ``node``, comments aside."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "Comment":
                yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def paths(state: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(what the path is read from, its keys) for every ``$.`` path of one state: the run state,
    or the Task's own result (its ResultSelector, and its OutputPath when the result replaces
    the state)."""
    result_fields = {"ResultSelector": state.get("ResultSelector", {})}
    if state["Type"] == "Task" and state.get("ResultPath", "$") == "$":
        result_fields["OutputPath"] = state.get("OutputPath", "")
    for field, value in state.items():
        source = "result" if field in result_fields else "state"
        for text in _strings({field: value}):
            for match in PATH.finditer(text):
                keys = re.findall(r"\.([\w-]+)", match.group(1))
                yield source, keys


def undeclared_paths(machine: dict[str, Any], workflow: str) -> list[str]:
    """Each path of ``machine`` that names a key ``runstate`` does not declare for ``workflow``."""
    declared, output = WORKFLOWS[workflow]
    problems = []
    for name, state in asl_states(machine["States"]):
        for source, keys in paths(state):
            where = f"{workflow}.{name}: $.{'.'.join(keys)}"
            if source == "result":
                if keys[0] not in LAMBDA_INVOKE_RESULT:
                    problems.append(f"{where}: {keys[0]!r} is not in a lambda:invoke result")
                continue
            if keys[0] not in declared:
                problems.append(f"{where}: {keys[0]!r} is not declared in runstate")
                continue
            problems += _nested(where, keys, runstate.NESTED)
        if state["Type"] == "Pass":
            problems += _written_by_pass(f"{workflow}.{name}", state, declared, output)
    return problems


def _nested(where: str, keys: list[str], nested: Mapping[str, frozenset[str]]) -> list[str]:
    for depth in range(1, len(keys)):
        holder = ".".join(keys[:depth])
        if holder not in nested:
            return [f"{where}: {holder!r} holds no declared keys"]
        if keys[depth] not in nested[holder]:
            return [f"{where}: {keys[depth]!r} is not declared in {holder!r}"]
    return []


def _written_by_pass(
    where: str, state: dict[str, Any], declared: Mapping[str, str], output: frozenset[str]
) -> list[str]:
    """The keys a Pass state's Parameters give the next state (the output, for the last one)."""
    keys, nested = (output, NESTED_OUTPUT) if state.get("End") else (declared, runstate.NESTED)
    problems = []
    for key, value in state.get("Parameters", {}).items():
        name = key.removesuffix(".$")
        if name not in keys:
            problems.append(f"{where} writes {name!r}, not declared in runstate")
        elif isinstance(value, dict):
            inner = {k.removesuffix(".$") for k in value}
            problems += [
                f"{where} writes {name}.{k}, not declared in runstate"
                for k in sorted(inner - nested.get(name, frozenset()))
            ]
    return problems


def not_camel_case(keys: Iterable[str]) -> list[str]:
    return sorted(key for key in keys if not CAMEL.match(key))


# -- the state machines against the declaration ---------------------------------------------


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_every_path_in_the_state_machine_names_a_declared_key(workflow: str) -> None:
    machine = definition(workflow)
    assert any(True for state in machine["States"].values() for _ in paths(state))
    assert undeclared_paths(machine, workflow) == []


def _put(where: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``value`` at ``where``, "State/field/...", in a definition (-1: a list's last)."""
    *steps, last = where.split("/")

    def change(machine: dict[str, Any]) -> None:
        node: Any = machine["States"]
        for step in steps:
            node = node[int(step)] if isinstance(node, list) else node[step]
        node[int(last) if isinstance(node, list) else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_put("WaitForInstance/SecondsPath", "$.settings.poll_seconds"), "'poll_seconds'"),
        (_put("IsInstanceRunning?/Choices/-1/Variable", "$.instanceRuning"), "'instanceRuning'"),
        (_put("FindFreeEni/Catch/-1/ResultPath", "$.errors"), "'errors'"),
        (_put("LaunchPinned/Parameters/privateIp.$", "$.eni.private_ip"), "'private_ip'"),
        (_put("LaunchPinned/Parameters/nicName.$", "$.verification.report.nic"), "'nic'"),
        (_put("LaunchPinned/Parameters/eniId.$", "$.lifecycleResult.eni"), "'lifecycleResult'"),
        (_put("LaunchPinned/Parameters/private_ip.$", "$.eni.privateIp"), "'private_ip'"),
        (
            _put("ReadActionFromEvent/Parameters/instance_id.$", "$.detail.EC2InstanceId"),
            "'instance_id'",
        ),
        (_put("DescribeInstance/OutputPath", "$.Payloads"), "'Payloads'"),
    ],
    ids=[
        "snake_case-setting",
        "typo-in-a-choice",
        "catch-result-path",
        "snake_case-eni-key",
        "guest-report-key",
        "into-a-plain-value",
        "output-key",
        "pass-writes-undeclared",
        "task-result",
    ],
)
def test_an_undeclared_path_is_named(change: Callable[[dict[str, Any]], None], named: str) -> None:
    # GIVEN the launch definition with one path no declaration covers
    machine = copy.deepcopy(definition("launch"))
    change(machine)
    # WHEN it is checked, THEN that path, and only it, is named
    problems = undeclared_paths(machine, "launch")
    assert len(problems) == 1 and named in problems[0], problems


# -- the declaration itself -------------------------------------------------------------------


def test_every_declared_key_is_camel_case() -> None:
    for declared, output in WORKFLOWS.values():
        assert not_camel_case(declared) == []
        assert not_camel_case(output) == []
    assert not_camel_case(runstate.OUTPUT_ATTEMPTS) == []
    for holder, keys in runstate.NESTED.items():
        if holder not in runstate.FOREIGN_NAMES:
            assert not_camel_case(keys) == [], holder


def test_the_casing_check_catches_snake_and_pascal_case() -> None:
    assert not_camel_case(frozenset({"privateIp", "pool_tag_key", "EniId", "az"})) == [
        "EniId",
        "pool_tag_key",
    ]


def test_each_nested_dict_sits_under_a_declared_key() -> None:
    every_key = set(runstate.LAUNCH) | set(runstate.TERMINATE)
    for holder in runstate.NESTED:
        assert holder.split(".")[0] in every_key, holder
        parent, _, key = holder.rpartition(".")
        assert not parent or key in runstate.NESTED[parent], holder


def test_the_event_detail_is_the_lifecycle_events_and_a_repair_request_is_camel_case() -> None:
    event = json.loads((SCHEMAS / "lifecycle-event.schema.json").read_text())
    assert set(event["properties"]["detail"]["properties"]) == runstate.EVENT_DETAIL
    repair = json.loads((SCHEMAS / "repair-request.schema.json").read_text())
    assert not_camel_case(frozenset(repair["properties"]["repair"]["properties"])) == []
    metadata = json.loads((SCHEMAS / "notification-metadata.schema.json").read_text())
    assert not_camel_case(frozenset(metadata["properties"])) == []


# -- what the code puts into the state --------------------------------------------------------

ENI = Eni("eni-1", "02:00:00:00:00:01", "10.0.1.5", "us-east-1a", "subnet-1", "available")
INSTANCE = Instance("i-1234567890abcdef0", "us-east-1a", "vpc-1", "running", "enipin-demo")


def test_the_dicts_the_tasks_put_in_the_state_have_the_declared_keys() -> None:
    assert set(Settings.from_env().to_dict()) == runstate.SETTINGS
    assert set(ENI.to_dict()) == runstate.ENI
    assert set(INSTANCE.to_dict()) == runstate.INSTANCE
    assert set(WaitProgress().to_dict()) == runstate.WAIT
    assert set(Heartbeat().to_dict()) == runstate.HEARTBEAT


@pytest.mark.parametrize(
    "event",
    [
        load_event("launch-lifecycle-action"),
        load_event("terminate-lifecycle-action"),
        {
            "repair": {
                "instanceId": "i-1234567890abcdef0",
                "groupName": "enipin-demo",
                "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                "reason": "no pool ENI",
            }
        },
    ],
    ids=["launch", "terminate", "repair"],
)
def test_validate_event_starts_the_run_state_with_declared_keys(event: dict[str, Any]) -> None:
    state = decide(event, Settings.from_env(), frozenset({"enipin-demo"}))
    assert set(state) <= set(runstate.COMMON)
    assert set(state.get("lifecycle", {})) <= runstate.LIFECYCLE
    assert set(state["settings"]) == runstate.SETTINGS


def test_the_state_of_a_run_redriven_from_an_older_release_still_reads() -> None:
    # GIVEN the snake_case keys an execution started before the rename still carries
    settings = Settings.from_env()
    older = {runstate.snake(k): v for k, v in settings.to_dict().items()}
    assert "poll_seconds" in older
    # THEN they read as the camelCase ones
    assert Settings.from_dict(older) == settings
    assert Eni.from_dict({runstate.snake(k): v for k, v in ENI.to_dict().items()}) == ENI
    assert Instance.from_dict(INSTANCE.to_dict()) == INSTANCE
    assert runstate.camel("attachment_status") == "attachmentStatus"
    assert runstate.snake("attachmentStatus") == "attachment_status"
