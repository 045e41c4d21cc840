"""The sandbox itself: deploying from a SAM template, running Lambda handlers for the ASL
engine, delivering EventBridge events, the fast clock, the ledger and throttling."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import boto3
import pytest
from conftest import path_of, wait_until

from enipin.sandbox import Sandbox
from enipin.sandbox.template import TemplateError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "mini"
ROOT = Path(__file__).parents[2]


def lifecycle_event(instance_id: str, metadata: str) -> dict[str, str]:
    return {
        "Source": "aws.autoscaling",
        "DetailType": "EC2 Instance-launch Lifecycle Action",
        "Detail": json.dumps({"EC2InstanceId": instance_id, "NotificationMetadata": metadata}),
    }


def test_a_lifecycle_event_drives_the_fixture_through_retry_and_catch_on_the_fast_clock() -> None:
    with Sandbox(azs=1, pool_per_az=0, template=FIXTURE / "template.yaml") as sb:
        sfn = sb.client("stepfunctions")
        started = time.monotonic()
        sb.client("events").put_events(
            Entries=[lifecycle_event("i-0aaa", "ok"), lifecycle_event("i-0bbb", "broken")]
        )
        wait_until(
            lambda: (
                len(sb.executions("FixtureStateMachine")) == 2
                and all(e["status"] != "RUNNING" for e in sb.executions("FixtureStateMachine"))
            ),
            sb,
        )
        # Retry back-offs (30 s, 60 s) and a 600 s Wait took no real time to speak of
        assert time.monotonic() - started < 30
        by_input = {
            json.loads(d["input"])["detail"]["EC2InstanceId"]: d
            for d in (
                sfn.describe_execution(executionArn=e["executionArn"])
                for e in sb.executions("FixtureStateMachine")
            )
        }
        ok, broken = by_input["i-0aaa"], by_input["i-0bbb"]
        assert ok["status"] == "SUCCEEDED"
        assert json.loads(ok["output"]) == {
            "greeting": "hello",
            "attempts": 3,
            "function": "enipin-FlakyFunction",
        }
        history = sfn.get_execution_history(executionArn=ok["executionArn"])["events"]
        failures = [
            e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"
        ]
        assert failures == ["FlakyError", "FlakyError"]  # retried by name, then succeeded
        assert broken["status"] == "FAILED"
        assert broken["error"] == "BrokenError"  # the Python exception's class name
        assert path_of(sb, broken["executionArn"]) == [
            "CallFlaky",
            "PauseBeforeGivingUp",
            "GiveUp",
        ]
        assert sb.ledger.invocations["enipin-FlakyFunction"] == 4


def copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "mini"
    shutil.copytree(FIXTURE, target)
    return target / "template.yaml"


@pytest.mark.parametrize(
    ("mistake", "edit", "error", "message"),
    [
        (
            "a handler that does not exist",
            ("flaky.handler", "flaky.nope"),
            ImportError,
            r"Runtime\.HandlerNotFound",
        ),
        (
            "a missing definition substitution",
            ("FlakyFunctionArn:", "FlakyArn:"),
            TemplateError,
            "FlakyFunctionArn",
        ),
        (
            "a Ref to a missing parameter",
            ("!Ref Greeting", "!Ref Greetings"),
            TemplateError,
            "Greetings",
        ),
    ],
)
def test_a_template_mistake_fails_the_deploy_as_on_aws(
    tmp_path: Path, mistake: str, edit: tuple[str, str], error: type[Exception], message: str
) -> None:
    template = copy_fixture(tmp_path)
    template.write_text(template.read_text().replace(*edit))
    with pytest.raises(error, match=message), Sandbox(azs=1, pool_per_az=0, template=template):
        pytest.fail(f"deployed despite {mistake}")


def test_throttling_answers_with_aws_error_and_botocore_retries_through_it() -> None:
    with Sandbox(azs=1, pool_per_az=1, deploy=False) as sb:
        sb.ledger.throttle("ec2", "DescribeNetworkInterfaces", times=2)
        enis = boto3.client("ec2", region_name="us-east-1").describe_network_interfaces()
        assert len(enis["NetworkInterfaces"]) == 1
        outcomes = [
            c.outcome for c in sb.ledger.calls if c.operation == "DescribeNetworkInterfaces"
        ]
        assert outcomes == ["RequestLimitExceeded", "RequestLimitExceeded", "ok"]


def test_throttling_beyond_the_sdk_retries_reaches_the_caller() -> None:
    with Sandbox(azs=1, pool_per_az=1, deploy=False) as sb:
        sb.ledger.throttle("ec2", "DescribeVpcs", times=10)
        client = boto3.client("ec2", region_name="us-east-1")
        with pytest.raises(client.exceptions.ClientError, match="RequestLimitExceeded"):
            client.describe_vpcs()


def test_every_named_error_is_matched_by_the_asl_or_raised_by_a_task_and_vice_versa() -> None:
    from enipin_core import errors

    asl = "".join(p.read_text() for p in (ROOT / "state_machines").glob("*.asl.json"))
    matched: set[str] = set()
    for match in re.finditer(r'"ErrorEquals":\s*\[([^\]]*)\]', asl):
        matched |= set(json.loads(f"[{match.group(1)}]"))
    custom = {n for n in matched if not n.startswith(("States.", "Lambda."))}
    code = "".join(p.read_text() for p in (ROOT / "tasks").rglob("*.py"))
    raised = set(re.findall(r"raise (\w+)\(", code))
    classes = {cls.__name__ for cls in errors.ALL_ERRORS}
    assert custom <= classes, custom - classes  # a name the ASL matches but nothing can raise
    # every class reaches the state machine: retried or caught by name, or raised into a Catch
    assert classes <= custom | raised, classes - custom - raised
    for cls in errors.ALL_ERRORS:
        assert issubclass(cls, errors.EnipinError) and cls.__doc__
