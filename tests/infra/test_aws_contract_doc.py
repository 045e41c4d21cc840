"""docs/aws-contract.md stays true: every AWS operation the functions and the CLI make in the
sandbox has a row there, every row links AWS's own page, and every test a row names exists."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import wait_until

from enipin.cli import main
from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.ledger import calls_made_by

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "aws-contract.md"
# botocore's service names (the ledger's) -> the service as the table names it
SERVICES = {
    "ec2": "EC2",
    "auto-scaling": "Auto Scaling",
    "ssm": "SSM",
    "sfn": "Step Functions",
    "cloudformation": "CloudFormation",
    "lambda": "Lambda",
    "eventbridge": "EventBridge",
    "events": "EventBridge",
    "sqs": "SQS",
    "iam": "IAM",
}
CLI = "enipin-cli"
ROW = re.compile(r"^\| `(?P<op>[A-Za-z]+)` \((?P<service>[^)]+)\)(?P<rest>.*)$")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def rows() -> list[re.Match[str]]:
    found = [ROW.match(line) for line in CONTRACT.read_text().splitlines()]
    return [m for m in found if m]


@pytest.fixture(scope="module")
def operations() -> Iterator[set[tuple[str, str]]]:
    """(service, operation) of every call the functions, Step Functions' engine and the CLI
    made: a launch, a failed launch that trips the storm guard, a release, a reconciler round
    and the operator's commands."""
    # the one failed launch below trips the guard; the selftest runs on its own group
    parameters = {"StormGuardFailures": 1, "SelftestGroupName": "enipin-selftest"}
    with Sandbox(azs=1, pool_per_az=2, guest_mode="model", parameters=parameters) as sb:
        sb.scale_out(1)
        sb.settle()
        sb.guests.set_default_faults({"nic_absent"})
        sb.scale_out(1)
        wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
        sb.settle()
        sb.guests.set_default_faults(set())
        sb.client("lambda").invoke(FunctionName="enipin-ReconcilerFunction", Payload=b"{}")
        sb.client("lambda").invoke(FunctionName="enipin-PublishPoolMetricsFunction", Payload=b"{}")
        run = sb.executions()[0]["name"]
        (subnet,) = sb.world.subnets.values()
        image = sb.client("ec2").describe_images(Owners=["self"])["Images"][0]["ImageId"]
        selftest = (
            "selftest",
            "--subnet",
            subnet,
            "--instance-profile",
            f"{sb.group_name}-instance",
        )
        with calls_made_by(CLI):
            for args in (
                ("executions", "list"),
                ("executions", "show", run),
                ("executions", "replay", run, "--dry-run"),
                ("pool", "status"),
                ("pool", "check", "--asg", sb.group_name),
                ("reconcile", "--dry-run"),
                ("doctor",),
                ("guard", "status"),
                ("guard", "release", "--asg", sb.group_name),
                selftest,  # the stock image, found through SSM
                (*selftest, "--image-id", image),
                ("selftest", "--cleanup"),
            ):
                result = CliRunner().invoke(main, ["--region", "us-east-1", *args])
                assert result.exit_code in (0, 1), result.output
        sb.settle()
        sb.scale_in(2)
        wait_until(lambda: not sb.autoscaling.pending_actions(), sb)
        sb.settle()
        seen = {
            (SERVICES.get(c.service, c.service), c.operation)
            for c in sb.ledger.calls
            if c.caller is not None
        }
        # Step Functions' engine invokes the Task functions (a call with no function behind it)
        seen |= {("Lambda", "Invoke")} if sb.ledger.invocations else set()
        yield seen


def test_every_operation_called_has_a_row(operations: set[tuple[str, str]]) -> None:
    documented = {(m["service"], m["op"]) for m in rows()}
    missing = sorted(operations - documented)
    assert missing == [], "add a row to docs/aws-contract.md for each"


def test_every_row_links_aws_and_names_existing_tests() -> None:
    defined = _tests_defined()
    for row in rows():
        what = f"{row['op']} ({row['service']})"
        cells = row["rest"].split(" | ")
        assert "https://docs.aws.amazon.com/" in row["rest"], f"{what}: no link to AWS's page"
        pinned = cells[-1]
        assert "TODO" not in pinned, f"{what}: a behaviour with no test"
        refs = TEST_REF.findall(pinned)
        assert refs, f"{what}: names no test"
        unknown = [f"{path}::{name}" for path, name in refs if name not in defined.get(path, ())]
        assert unknown == [], f"{what}: no such test"


def _tests_defined() -> dict[str, set[str]]:
    defined: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
        defined[str(path.relative_to(ROOT))] = names
    return defined


def test_the_rows_name_each_operation_once() -> None:
    keys = [(m["service"], m["op"]) for m in rows()]
    lambda_rows = [k for k in keys if k == ("Lambda", "Invoke")]
    assert len(set(keys)) == len(keys) - max(len(lambda_rows) - 1, 0)
    assert json.dumps(keys)  # the table parsed into rows at all
    assert len(keys) >= 20
