"""The sandbox itself: deploying from a SAM template, running Lambda handlers for the ASL
engine, delivering EventBridge events, the fast clock, the ledger and throttling."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import threading
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, SchemaValidationError
from botocore.config import Config
from conftest import load_event, path_of, wait_until

from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.eventbridge import rate_seconds
from enipin_lab.sandbox.template import TemplateError

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


def test_the_sdks_retry_back_off_passes_in_aws_time() -> None:
    """Five throttled calls: botocore's standard back-off (at most 2+4+8+16+20 s) elapses on
    the sandbox clock, not as 50 times as many AWS seconds of real sleep on the fast clock."""
    with Sandbox(azs=1, pool_per_az=1, deploy=False) as sb:
        sb.ledger.throttle("ec2", "DescribeVpcs", times=5)
        config = Config(retries={"mode": "standard", "max_attempts": 6})
        client = boto3.client("ec2", region_name="us-east-1", config=config)
        started = sb.clock.monotonic()
        client.describe_vpcs()
        assert sb.clock.monotonic() - started < 50 + 20  # the back-off, plus Python's own time


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


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(2 hours)", 7200),
        ("rate(1 day)", 86400),
    ],
)
def test_rate_expressions_give_eventbridges_period(expression: str, seconds: float) -> None:
    assert rate_seconds(expression) == seconds


@pytest.mark.parametrize("expression", ["rate(1 minutes)", "rate(5 minute)", "cron(0 * * * ? *)"])
def test_schedules_eventbridge_would_refuse_or_that_are_not_modelled_are_rejected(
    expression: str,
) -> None:
    with pytest.raises(ValueError):
        rate_seconds(expression)


def test_scheduled_rules_fire_their_functions_once_per_period_only_when_asked() -> None:
    with Sandbox(azs=1, pool_per_az=1) as sb:
        reconciler = sb.stack.physical["ReconcilerFunction"]  # type: ignore[union-attr]
        metrics = sb.stack.physical["PublishPoolMetricsFunction"]  # type: ignore[union-attr]
        sb.clock.sleep(310)
        assert sb.ledger.invocations[reconciler] == 0  # off unless a scenario asks
        sb.run_schedules()
        started = sb.clock.monotonic()
        wait_until(lambda: sb.ledger.invocations[metrics] >= 2, sb, aws_seconds=900)
        assert sb.clock.monotonic() - started >= 2 * 300  # rate(5 minutes)
        assert sb.ledger.invocations[reconciler] >= 4  # rate(2 minutes): 120 s, 240 s, ...600 s


def test_function_output_lands_in_the_logs_of_each_sandbox_in_turn() -> None:
    """A handler module keeps the log handler it got in the first sandbox of the process;
    what it prints in a later sandbox still belongs to that sandbox's function logs."""
    for _ in range(2):
        with Sandbox(azs=1, pool_per_az=1) as sb:
            sb.scale_out(1)
            sb.settle()
            dispatcher = sb.stack.physical["DispatchEventFunction"]  # type: ignore[union-attr]
            assert any("execution started" in line for line in sb.lambdas.logs[dispatcher])


def _metric_names(blob: dict[str, Any]) -> list[str]:
    return sorted(m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"])


def _two_concurrent_invocations(metrics: Metrics) -> dict[str, Any]:
    """Two invocations of one handler at once, as two environments would run them: each adds its
    metric, then one flushes while the other has yet to. What each one's flush would publish."""
    both_added, first_flushed = threading.Barrier(2), threading.Barrier(2)
    published: dict[str, Any] = {}

    def invocation(name: str) -> None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        both_added.wait()
        if name == "Second":
            first_flushed.wait()
        try:
            published[name] = _metric_names(metrics.serialize_metric_set())
        except SchemaValidationError as exc:
            published[name] = f"SchemaValidationError: {exc}"
        metrics.clear_metrics()
        if name == "First":
            first_flushed.wait()

    threads = [threading.Thread(target=invocation, args=(n,)) for n in ("First", "Second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return published


def test_concurrent_invocations_share_no_memory_so_each_publishes_its_own_metrics() -> None:
    # AWS: an execution environment runs one invocation at a time; concurrent invocations run in
    # environments of their own. Powertools keeps one metric store per process by design, so
    # threads of one process (the sandbox's invocations) would flush each other's metrics.
    # Outside the sandbox: the first flush takes both, the second has none
    shared = _two_concurrent_invocations(Metrics(namespace="enipin-test", service="t"))
    assert shared["First"] == ["First", "Second"]
    assert shared["Second"].startswith("SchemaValidationError: Must contain at least one metric")
    # In the sandbox each invocation's flush holds what it added, and only that
    with Sandbox(azs=1, pool_per_az=0, deploy=False):
        isolated = _two_concurrent_invocations(Metrics(namespace="enipin-test", service="t"))
    assert isolated == {"First": ["First"], "Second": ["Second"]}


def test_metrics_a_function_flushes_go_to_its_log_whatever_stdout_is_meanwhile() -> None:
    # AWS: what a function prints (Powertools' EMF blobs among it) is its log, never the
    # caller's output. An operator command run through CliRunner swaps sys.stdout while a
    # function may be flushing its metrics.
    with Sandbox(azs=1, pool_per_az=0) as sb:
        dispatcher = sb.stack.physical["DispatchEventFunction"]  # type: ignore[union-attr]
        caller = io.StringIO()
        with redirect_stdout(caller):  # a malformed event: the dispatcher counts EventRejected
            sb.client("lambda").invoke(
                FunctionName=dispatcher,
                Payload=json.dumps(load_event("malformed-lifecycle-action")),
            )
        assert caller.getvalue() == ""
        assert any('"EventRejected"' in line for line in sb.lambdas.logs[dispatcher])


@pytest.mark.parametrize(("time_scale", "real_wait"), [(4.0, 3.0), (0.02, 0.1)])
def test_the_functions_read_aws_time_whatever_the_sandboxs_pace(
    sandbox: Any, time_scale: float, real_wait: float
) -> None:
    """On AWS a function's ``datetime.now()``, Step Functions' timestamps and EC2's LaunchTime
    read one wall clock. On the slow clock this machine's runs ahead of AWS time (every launch
    would look long past: its agent's start and its attach's turn not waited for), on the fast
    clock behind it."""
    sb = sandbox(azs=1, pool_per_az=1, time_scale=time_scale)
    # The two clocks part by at least 2.25 s: 3 s real are 0.75 AWS seconds on the slow
    # clock, 0.1 s real are 5 on the fast one.
    time.sleep(real_wait)
    waiting = sys.modules["enipin_core.waiting"]  # as the deployed functions imported it
    assert waiting.__file__ != __file__
    before = sb.clock.now()
    seen = waiting.datetime.now(UTC)
    assert before <= seen <= sb.clock.now()
    assert abs((seen - datetime.now(UTC)).total_seconds()) > 2.0  # not this machine's clock
