"""Step Functions behaviour the sandbox restores on moto: RedriveExecution (resume at the
unsuccessful step, same ARN, history continued), the redrive fields of DescribeExecution and
ListExecutions, and execution names that stay unique under concurrent starts."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from botocore.exceptions import ClientError
from conftest import describe, finish, path_of, wait_until
from moto.stepfunctions.models import StateMachine
from moto.stepfunctions.responses import get_backend

from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.base import ACCOUNT_ID, REGION

TEMPLATE = Path(__file__).parent.parent / "fixtures" / "redrive" / "template.yaml"
PREPARE = "enipin-PrepareFunction"
COMMIT = "enipin-CommitFunction"
FOREVER = 10**6  # a Wait that outlasts the test


@dataclass
class Rig:
    """The redrive fixture deployed in a sandbox, and the switch that makes its Commit fail."""

    sb: Sandbox
    faults: Path  # a file named after a key makes Commit fail for that key

    @property
    def sfn(self) -> Any:
        return self.sb.client("stepfunctions")

    def start(self, key: str, *, verdict: str = "accept", pause: int = 0) -> str:
        body = {"key": key, "verdict": verdict, "pause": pause}
        return str(
            self.sfn.start_execution(
                stateMachineArn=self.sb.state_machine_arn("RedriveStateMachine"),
                input=json.dumps(body),
            )["executionArn"]
        )

    def history(self, arn: str) -> list[dict[str, Any]]:
        return list(self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"])

    def plant_fault(self, key: str) -> None:
        (self.faults / key).touch()

    def fix(self, key: str) -> None:
        (self.faults / key).unlink()

    def calls(self) -> tuple[int, int]:
        return self.sb.ledger.invocations[PREPARE], self.sb.ledger.invocations[COMMIT]

    def entered(self, arn: str, state: str) -> list[Any]:
        """The inputs ``state`` was entered with, in order."""
        return [
            json.loads(e["stateEnteredEventDetails"]["input"])
            for e in self.history(arn)
            if e.get("stateEnteredEventDetails", {}).get("name") == state
        ]

    def stop(self, arn: str) -> dict[str, Any]:
        self.sfn.stop_execution(executionArn=arn)
        return finish(self.sb, arn)

    def listed(self, arn: str) -> dict[str, Any]:
        """The execution as ListExecutions shows it, once the listing has caught up with its
        start (it is eventually consistent, on AWS as in the sandbox)."""
        found: list[dict[str, Any]] = []

        def shown() -> bool:
            items = self.sb.executions("RedriveStateMachine")
            found[:] = [item for item in items if item["executionArn"] == arn]
            return bool(found)

        wait_until(shown, self.sb, aws_seconds=60)
        return found[0]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    faults = tmp_path_factory.mktemp("faults")
    parameters = {"FaultDir": str(faults)}
    with Sandbox(azs=1, pool_per_az=0, template=TEMPLATE, parameters=parameters) as sb:
        yield Rig(sb, faults)


def not_redrivable(rig: Rig, arn: str, reason: str) -> None:
    desc = describe(rig.sb, arn)
    assert (desc["redriveStatus"], desc["redriveStatusReason"]) == ("NOT_REDRIVABLE", reason)
    with pytest.raises(rig.sfn.exceptions.ExecutionNotRedrivable, match=reason):
        rig.sfn.redrive_execution(executionArn=arn)


def test_a_failed_execution_redriven_resumes_at_the_failed_task_with_its_input(
    rig: Rig,
) -> None:
    # GIVEN an execution that prepared, paused, chose, then failed uncaught in Commit
    rig.plant_fault("fail-1")
    arn = rig.start("fail-1")
    first = finish(rig.sb, arn)
    assert (first["status"], first["error"]) == ("FAILED", "CommitFailed")
    desc = describe(rig.sb, arn)
    assert (desc["redriveStatus"], desc["redriveCount"]) == ("REDRIVABLE", 0)
    assert "redriveStatusReason" not in desc and "redriveDate" not in desc
    before = rig.history(arn)
    prepared, committed = rig.calls()

    # WHEN the fault is fixed and the execution redriven
    rig.fix("fail-1")
    redriven = rig.sfn.redrive_execution(executionArn=arn)["redriveDate"]
    done = finish(rig.sb, arn)

    # THEN it resumed at Commit, with the input Commit first had, under the same ARN
    assert done["status"] == "SUCCEEDED" and "error" not in done
    result = json.loads(done["output"])["committed"]
    assert result == {"receipt": "fail-1:prepared-fail-1", "redriveCount": 1}
    after = rig.history(arn)
    assert after[: len(before)] == before  # the first attempt's history is kept as it was
    event = after[len(before)]
    assert event["type"] == "ExecutionRedriven" and event["id"] == before[-1]["id"] + 1
    assert event["executionRedrivenEventDetails"] == {"redriveCount": 1}
    assert path_of(rig.sb, arn) == ["Prepare", "Pause", "IsRejected?", "Commit", "Commit", "Done"]
    first_input, again_input = rig.entered(arn, "Commit")
    assert again_input == first_input
    assert rig.calls() == (prepared, committed + 1)  # Prepare, already done, is not re-run
    # the same execution, counted and dated, and no longer redrivable once it succeeded
    desc = describe(rig.sb, arn)
    assert (desc["executionArn"], desc["redriveCount"]) == (arn, 1)
    assert desc["redriveDate"] == redriven
    assert desc["redriveStatusReason"] == "Execution is SUCCEEDED and cannot be redriven."
    listed = rig.listed(arn)
    assert (listed["redriveCount"], listed["redriveDate"]) == (1, redriven)
    assert [e["name"] for e in rig.sb.executions("RedriveStateMachine")].count(done["name"]) == 1


def test_an_aborted_execution_redriven_resumes_in_the_wait_it_was_stopped_in(
    rig: Rig,
) -> None:
    arn = rig.start("abort-1", pause=100)  # 100 AWS seconds: 2 s on the fast clock
    wait_until(lambda: "Pause" in path_of(rig.sb, arn), rig.sb)
    assert rig.stop(arn)["status"] == "ABORTED"
    assert describe(rig.sb, arn)["redriveStatus"] == "REDRIVABLE"

    rig.sfn.redrive_execution(executionArn=arn)
    wait_until(lambda: len(rig.entered(arn, "Pause")) == 2, rig.sb)
    assert describe(rig.sb, arn)["status"] == "RUNNING"
    assert path_of(rig.sb, arn) == ["Prepare", "Pause", "Pause"]
    # StopExecution reaches the redriven run too
    assert rig.stop(arn)["status"] == "ABORTED"

    rig.sfn.redrive_execution(executionArn=arn)
    done = finish(rig.sb, arn)
    assert (done["status"], done["redriveCount"]) == ("SUCCEEDED", 2)
    waits = rig.entered(arn, "Pause")
    assert len(waits) == 3 and waits[0] == waits[1] == waits[2]
    assert path_of(rig.sb, arn).count("Prepare") == 1


def test_redrive_count_grows_with_each_redrive(rig: Rig) -> None:
    rig.plant_fault("twice-1")
    arn = rig.start("twice-1")
    finish(rig.sb, arn)
    rig.sfn.redrive_execution(executionArn=arn)
    again = finish(rig.sb, arn)  # the fault is still there: it fails at Commit again
    assert (again["status"], again["error"], again["redriveCount"]) == ("FAILED", "CommitFailed", 1)
    assert again["redriveStatus"] == "REDRIVABLE"
    rig.fix("twice-1")
    rig.sfn.redrive_execution(executionArn=arn)
    done = finish(rig.sb, arn)
    assert (done["status"], done["redriveCount"]) == ("SUCCEEDED", 2)
    counts = [
        e["executionRedrivenEventDetails"]["redriveCount"]
        for e in rig.history(arn)
        if e["type"] == "ExecutionRedriven"
    ]
    assert counts == [1, 2]
    assert path_of(rig.sb, arn).count("Commit") == 3


def test_an_execution_that_ended_in_a_fail_state_fails_there_again(rig: Rig) -> None:
    arn = rig.start("reject-1", verdict="reject")
    assert finish(rig.sb, arn)["error"] == "Rejected"
    prepared, _ = rig.calls()
    rig.sfn.redrive_execution(executionArn=arn)
    again = finish(rig.sb, arn)
    assert (again["status"], again["error"], again["redriveCount"]) == ("FAILED", "Rejected", 1)
    assert path_of(rig.sb, arn) == ["Prepare", "Pause", "IsRejected?", "Reject", "Reject"]
    types = [e["type"] for e in rig.history(arn)]
    assert types[-3:] == ["ExecutionRedriven", "FailStateEntered", "ExecutionFailed"]
    assert rig.calls()[0] == prepared


def test_a_succeeded_execution_is_not_redrivable(rig: Rig) -> None:
    arn = rig.start("ok-1")
    done = finish(rig.sb, arn)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"])["committed"]["redriveCount"] == 0  # $$.Execution
    not_redrivable(rig, arn, "Execution is SUCCEEDED and cannot be redriven.")
    assert describe(rig.sb, arn)["redriveCount"] == 0


def test_a_running_execution_is_not_redrivable(rig: Rig) -> None:
    arn = rig.start("running-1", pause=FOREVER)
    wait_until(lambda: "Pause" in path_of(rig.sb, arn), rig.sb)
    not_redrivable(rig, arn, "Execution is RUNNING and cannot be redriven.")
    rig.stop(arn)


def test_an_execution_is_not_redrivable_14_days_after_it_ended(rig: Rig) -> None:
    rig.plant_fault("old-1")
    arn = rig.start("old-1")
    finish(rig.sb, arn)
    # 15 days pass: the redrivable period counts from the execution's end
    ended = get_backend(ACCOUNT_ID, REGION).describe_execution(arn)
    assert ended.stop_date is not None
    ended.stop_date -= dt.timedelta(days=15)
    not_redrivable(rig, arn, "Execution redrivable period exceeded.")


def test_a_repeated_client_token_answers_the_first_redrive_without_redriving_again(
    rig: Rig,
) -> None:
    rig.plant_fault("token-1")
    arn = rig.start("token-1")
    finish(rig.sb, arn)
    first = rig.sfn.redrive_execution(executionArn=arn, clientToken="token-1-a")
    finish(rig.sb, arn)
    repeated = rig.sfn.redrive_execution(executionArn=arn, clientToken="token-1-a")
    assert repeated["redriveDate"] == first["redriveDate"]
    assert describe(rig.sb, arn)["redriveCount"] == 1
    rig.sfn.redrive_execution(executionArn=arn, clientToken="token-1-b")
    assert finish(rig.sb, arn)["redriveCount"] == 2


def test_redriving_an_unknown_execution_is_execution_does_not_exist(rig: Rig) -> None:
    machine = rig.sb.state_machine_arn("RedriveStateMachine")
    missing = machine.replace(":stateMachine:", ":execution:") + ":no-such-run"
    with pytest.raises(rig.sfn.exceptions.ExecutionDoesNotExist):
        rig.sfn.redrive_execution(executionArn=missing)


def test_concurrent_starts_with_one_name_make_one_execution(rig: Rig) -> None:
    # GIVEN 16 starts of one name at once, half with one input and half with another
    machine = rig.sb.state_machine_arn("RedriveStateMachine")
    inputs = [
        json.dumps({"key": f"race-{i % 2}", "verdict": "accept", "pause": FOREVER})
        for i in range(16)
    ]
    outcomes: list[tuple[str, str]] = [("", "")] * 16
    barrier = threading.Barrier(16)
    sfn = rig.sfn

    def race(i: int) -> None:
        barrier.wait()
        try:
            arn = sfn.start_execution(stateMachineArn=machine, name="race", input=inputs[i])
            outcomes[i] = (inputs[i], arn["executionArn"])
        except ClientError as error:
            outcomes[i] = (inputs[i], error.response["Error"]["Code"])

    # moto checks the name, then creates the execution: widen that gap, as a busy service
    # would, so that an unserialized start loses the race every time rather than sometimes
    check = StateMachine._handle_name_input_idempotency

    def slow_check(state_machine: StateMachine, *args: Any) -> Any:
        found = check(state_machine, *args)
        time.sleep(0.01)
        return found

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    with patch.object(StateMachine, "_handle_name_input_idempotency", slow_check):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # THEN one execution; the same input got its ARN, the other ExecutionAlreadyExists
    runs = [e for e in rig.sb.executions("RedriveStateMachine") if e["name"] == "race"]
    assert len(runs) == 1
    arn = runs[0]["executionArn"]
    winner = describe(rig.sb, arn)["input"]
    for given, outcome in outcomes:
        same = json.loads(given) == json.loads(winner)
        assert outcome == (arn if same else "ExecutionAlreadyExists")
    # and once the run is over, even the same input cannot reuse the name
    rig.stop(arn)
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(stateMachineArn=machine, name="race", input=winner)


def test_an_unnamed_start_is_named_with_a_uuid(rig: Rig) -> None:
    first, second = rig.start("unnamed-1"), rig.start("unnamed-1")
    assert first != second
    for arn in (first, second):
        uuid.UUID(describe(rig.sb, arn)["name"])
        finish(rig.sb, arn)


def test_a_definition_is_parsed_once_and_each_execution_gets_its_own_components() -> None:
    from contextlib import ExitStack

    from moto.stepfunctions.parser.asl.parse.asl_parser import (
        AmazonStateLanguageParser,
        ASLParserException,
    )

    from enipin_lab.sandbox.engine import AslParseCache

    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    with ExitStack() as stack:
        AslParseCache().install(stack)
        first, tree = AmazonStateLanguageParser.parse(definition)
        second, same_tree = AmazonStateLanguageParser.parse(definition)
        assert same_tree is tree
        assert second is not first  # nothing an execution changes is shared
        for _ in range(2):  # a broken definition fails every time, it is never cached
            with pytest.raises(ASLParserException):
                AmazonStateLanguageParser.parse('{"StartAt": ')


def test_an_execution_stopped_the_moment_it_started_is_aborted(rig: Rig) -> None:
    """AWS stops a RUNNING execution at any time; moto's run sets itself up on its own thread
    after StartExecution answers, and stopping it before then crashed inside moto."""
    machine = rig.sb.state_machine_arn("RedriveStateMachine")
    for i in range(10):
        arn = rig.sfn.start_execution(
            stateMachineArn=machine,
            name=f"stopped-at-once-{i}",
            input=json.dumps({"key": f"at-once-{i}", "verdict": "accept", "pause": FOREVER}),
        )["executionArn"]
        rig.sfn.stop_execution(executionArn=arn)
        done = finish(rig.sb, arn)
        assert done["status"] == "ABORTED", (done.get("error"), done.get("cause"))


def test_an_execution_listed_before_moto_starts_it_reads_running(rig: Rig) -> None:
    # moto appends a new execution to its state machine's list before it starts it, with no
    # status yet (chaos seed 377 crashed there); AWS answers RUNNING once StartExecution has
    # accepted it. GIVEN an execution caught in that moment (its status taken back to none)
    arn = rig.start("listed-early", pause=FOREVER)
    backend = get_backend(ACCOUNT_ID, REGION)
    execution = backend.describe_execution(arn)
    status = execution.exec_status
    execution.exec_status = None
    try:
        # THEN both readers answer RUNNING rather than fail
        assert rig.listed(arn)["status"] == "RUNNING"
        assert describe(rig.sb, arn)["status"] == "RUNNING"
    finally:
        execution.exec_status = status
    rig.stop(arn)
