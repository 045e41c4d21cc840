"""What CloudFormation and AWS decide only at deploy time, read off the template: parameter
patterns against EventBridge's own schedule rules, the GroupName rule, the partition in every
Task's resource, the verification's timeouts, and the operator CLI's install line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from enipin_core.verification import SCRIPT_SECONDS, delivery_seconds
from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.template import TemplateError, check_rules, load, parameter_values

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"

# EventBridge's schedule expressions: rate(value unit), "if the value is equal to 1, then the
# unit must be singular ... greater than 1, plural"; cron has six fields, and "you can't specify
# the Day-of-month and Day-of-week fields in the same cron expression. If you specify a value
# (or a *) in one of the fields, you must use a ? in the other."
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-scheduled-rule-pattern.html
ACCEPTED = [
    "rate(1 minute)",
    "rate(2 minutes)",
    "rate(1 hour)",
    "rate(12 hours)",
    "rate(1 day)",
    "rate(10 days)",
    "cron(0/2 * * * ? *)",
    "cron(0 10 ? * MON-FRI *)",
    "cron(15 10 1 * ? 2027)",
]
REJECTED = [
    "rate(1 minutes)",
    "rate(2 minute)",
    "rate(0 minutes)",
    "rate(5 seconds)",
    "rate(five minutes)",
    "cron(*/5 * * * *)",  # five fields (crontab's), not EventBridge's six
    "cron(0 10 * * * *)",  # neither day field is '?'
    "cron(0 10 ? * ? *)",  # both are
    "rate(2 minutes) ",
    "every 2 minutes",
]


@pytest.mark.parametrize("parameter", ["ReconcileSchedule", "PoolMetricsSchedule"])
def test_the_schedule_patterns_accept_what_eventbridge_accepts(parameter: str) -> None:
    pattern = load(TEMPLATE)["Parameters"][parameter]["AllowedPattern"]
    assert [e for e in ACCEPTED if not re.fullmatch(pattern, e)] == []
    assert [e for e in REJECTED if re.fullmatch(pattern, e)] == []


@pytest.mark.parametrize("groups", ["", "web-a,,web-b", "web-a,"])
def test_an_empty_group_name_is_refused_by_the_stacks_rule(groups: str) -> None:
    template = load(TEMPLATE)
    values = parameter_values(template, {"GroupName": groups})
    with pytest.raises(TemplateError, match="GroupNameGiven: GroupName needs the name"):
        check_rules(template, values)


def test_named_groups_pass_the_stacks_rule() -> None:
    template = load(TEMPLATE)
    check_rules(template, parameter_values(template, {"GroupName": "web-a,web-b"}))


def test_the_sandbox_refuses_a_deploy_without_groups() -> None:
    with (
        pytest.raises(TemplateError, match="GroupNameGiven"),
        Sandbox(azs=1, pool_per_az=1, fast=True, parameters={"GroupName": ""}),
    ):
        pass


def test_every_task_invokes_lambda_in_the_stacks_own_partition() -> None:
    # arn:aws:states:::lambda:invoke fails in aws-cn and aws-us-gov: every Task names the
    # partition the stack runs in, substituted by CloudFormation
    template = load(TEMPLATE)
    for machine in ("LaunchStateMachine", "TerminateStateMachine"):
        props = template["Resources"][machine]["Properties"]
        assert props["DefinitionSubstitutions"]["Partition"] == {"Ref": "AWS::Partition"}
        definition = json.loads((TEMPLATE.parent / props["DefinitionUri"]).read_text())
        resources = {s["Resource"] for s in definition["States"].values() if s["Type"] == "Task"}
        assert resources == {"arn:${Partition}:states:::lambda:invoke"}, machine


def test_the_verification_bound_is_the_agents_start_and_the_scripts_own_timeout() -> None:
    document = load(TEMPLATE)["Resources"]["VerifyNicDocument"]["Properties"]["Content"]
    (step,) = document["mainSteps"]
    assert int(step["inputs"]["timeoutSeconds"]) == SCRIPT_SECONDS
    spec = load(TEMPLATE)["Parameters"]["VerifyWaitSeconds"]
    # SendCommand's TimeoutSeconds is at least 30 (its API reference): the smallest bound that
    # leaves the agent 30 s and the script its 60 is the parameter's minimum
    assert spec["MinValue"] == 30 + SCRIPT_SECONDS
    assert delivery_seconds(spec["MinValue"]) == 30
    assert delivery_seconds(spec["Default"]) == spec["Default"] - SCRIPT_SECONDS
    assert delivery_seconds(spec["MaxValue"]) == spec["MaxValue"] - SCRIPT_SECONDS


def test_the_operator_cli_installs_with_the_readmes_line(tmp_path: Path) -> None:
    """The README's install line, verbatim, in a copy of the repo, for a user with a fresh
    home; then the installed `enipin` answers."""
    section = (ROOT / "README.md").read_text().split("## Deploy\n", 1)[1]
    (line,) = [ln for ln in section.splitlines() if ln.startswith("python3 -m venv ~/.enipin")]
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    repo, home = tmp_path / "repo", tmp_path / "home"
    for name in files:
        if (ROOT / name).is_file() and not name.startswith("tests/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, repo / name)
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["bash", "-c", line], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    answer = subprocess.run(
        [str(home / ".enipin" / "bin" / "enipin"), "executions", "list", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    assert "--status" in answer.stdout
    # and it is the CLI alone: boto3, click and the core, no lab (no moto, no demo, no bench)
    venv = home / ".enipin"
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {p["name"].lower() for p in json.loads(listed)} - {"pip", "setuptools"}
    assert installed == LEAN, installed - LEAN
    commands = subprocess.run(
        [str(venv / "bin" / "enipin"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "executions" in commands and "demo" not in commands and "chaos" not in commands
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file())
    assert size < CLI_VENV_BUDGET, f"{size / 1e6:.0f} MB"


# What `pip install .` brings: the CLI's two dependencies and theirs (README: "Deploy").
LEAN = {
    "enipin",
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "click",
}
CLI_VENV_BUDGET = 70_000_000  # bytes; 56 MB measured (README, "Deploy")
