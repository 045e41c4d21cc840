"""``enipin selftest`` against the sandbox, as a user runs it in their account: a full pass
that leaves nothing behind, Ctrl-C in the middle (the teardown still runs), and a run killed
before its teardown, which leaves only tagged things that the next run removes."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from enipin import selftest as selftest_module
from enipin.cli import main
from enipin.selftest import TAG
from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.base import REGION

SELFTEST_GROUP = "enipin-selftest"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(azs=1, pool_per_az=2, parameters={"SelftestGroupName": SELFTEST_GROUP}) as opened:
        yield opened


def run_selftest(sb: Sandbox) -> Result:
    return CliRunner().invoke(main, run_args(sb))


def tagged(sb: Sandbox) -> dict[str, list[str]]:
    """What carries the selftest tag and still exists."""
    ec2 = sb.client("ec2")
    mine = [{"Name": f"tag:{TAG}", "Values": ["enipin"]}]
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "shutting-down"]}]
    groups = sb.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[SELFTEST_GROUP]
    )["AutoScalingGroups"]
    return {
        "groups": [g["AutoScalingGroupName"] for g in groups],
        "instances": [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=mine + live)["Reservations"]
            for i in r["Instances"]
        ],
        "enis": [
            e["NetworkInterfaceId"]
            for e in ec2.describe_network_interfaces(Filters=mine)["NetworkInterfaces"]
        ],
        "launch_templates": [
            t["LaunchTemplateName"]
            for t in ec2.describe_launch_templates(Filters=mine)["LaunchTemplates"]
        ],
    }


def nothing(sb: Sandbox) -> bool:
    return not any(tagged(sb).values())


def readme_commands(sb: Sandbox) -> list[list[str]]:
    """The README's selftest commands, verbatim but for the subnet and profile names."""
    section = README.read_text().split("### `enipin selftest`", 1)[1].split("\n##", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    (subnet,) = sb.world.subnets.values()
    names = {"subnet-0abc": subnet, "my-ssm-profile": f"{sb.group_name}-instance"}
    commands = []
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()
        for placeholder, real in names.items():
            command = command.replace(placeholder, real)
        commands.append(["--region", REGION, *shlex.split(command)[1:]])
    return commands


def test_the_readmes_selftest_pins_fails_once_releases_and_leaves_nothing(sb: Sandbox) -> None:
    production = {e["NetworkInterfaceId"] for e in pool(sb)}
    stock, _own_template, cleanup = readme_commands(sb)
    result = CliRunner().invoke(main, stock)  # the stock image, found through SSM
    assert result.exit_code == 0, result.output
    out = result.output
    # every check it makes passed, each named
    assert out.count("PASS i-") == 2 and "the guest's own check: Success" in out
    assert "PASS a failed launch is given up and cleaned up" in out
    assert "NoFreeEni" in out and "no ENI left on it" in out
    assert "PASS the storm guard counted it" in out
    assert "PASS released on scale-in" in out
    assert "5 of 5 checks passed" in out
    assert "cost: EC2 $" in out and "Step Functions $" in out
    # what the workflows themselves did for the selftest's instances, read from Step Functions
    # and Auto Scaling, not from its report: two pins and their releases; every launch given up
    # (the forced one, and any replacement the group launched under the failing hook) ended in
    # NoFreeEni with its action ABANDONed
    ended = {
        (a["instance_id"], a["transition"]): a["result"] for a in sb.autoscaling.ended_actions()
    }
    launches = ended_runs(sb, "LaunchStateMachine")
    pinned = [i for i, run in launches.items() if run == ("SUCCEEDED", None)]
    given_up = [i for i in launches if i not in pinned]
    assert len(pinned) >= 2 and given_up, launches
    assert {launches[i] for i in given_up} == {("FAILED", "NoFreeEni")}
    assert {ended[(i, "autoscaling:EC2_INSTANCE_LAUNCHING")] for i in given_up} == {"ABANDON"}
    releases = ended_runs(sb, "TerminateStateMachine")
    assert set(pinned) <= set(releases) and set(releases.values()) == {("SUCCEEDED", None)}
    # torn down: nothing tagged remains, and the production pool is as it was
    assert nothing(sb), tagged(sb)
    assert {e["NetworkInterfaceId"] for e in pool(sb)} == production
    cleaned = CliRunner().invoke(main, cleanup)
    assert (cleaned.exit_code, cleaned.output) == (0, "nothing left by an earlier selftest\n")


def test_ctrl_c_mid_run_still_tears_everything_down(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_when(monkeypatch, "scaling out", KeyboardInterrupt)
    result = run_selftest(sb)
    assert result.exit_code == 130, result.output
    assert "interrupted; what the selftest made was removed" in result.output
    assert nothing(sb), tagged(sb)


def test_a_run_killed_before_its_teardown_leaves_only_tagged_things_the_next_run_removes(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2 = sb.client("ec2")
    enis_before = {
        e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
    }
    templates_before = {
        t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]
    }
    # a kill -9 as the pins were checked: no teardown runs
    monkeypatch.setattr(selftest_module, "remove", lambda *args, **kwargs: None)
    interrupt_when(monkeypatch, "forcing a launch to fail", _Killed)
    with pytest.raises(_Killed):
        CliRunner().invoke(main, run_args(sb), catch_exceptions=False)
    left = tagged(sb)
    assert left["groups"] == [SELFTEST_GROUP] and len(left["instances"]) == 2, left
    # nothing it made is untagged: every new ENI (but the instances' own primary ones, which
    # EC2 deletes with them) and every new launch template carries the tag
    new_enis = {
        e["NetworkInterfaceId"]
        for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
        if (e.get("Attachment") or {}).get("DeviceIndex") != 0
    } - enis_before
    assert new_enis == set(left["enis"])
    new_templates = {
        t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]
    } - templates_before
    assert new_templates == set(left["launch_templates"])
    monkeypatch.undo()

    cleaned = CliRunner().invoke(main, ["--region", REGION, "selftest", "--cleanup"])
    assert cleaned.exit_code == 0, cleaned.output
    assert f"group {SELFTEST_GROUP}" in cleaned.output
    assert nothing(sb), tagged(sb)


# -- helpers -----------------------------------------------------------------------------------


class _Killed(BaseException):
    """The process dying where it stands (not an Exception: nothing catches it on the way)."""


def interrupt_when(monkeypatch: pytest.MonkeyPatch, words: str, error: type[BaseException]) -> None:
    """Raise ``error`` from the run's progress line that contains ``words``."""
    original = selftest_module.Selftest.progress

    def progress(self: selftest_module.Selftest, text: str) -> None:
        original(self, text)
        if words in text:
            raise error()

    monkeypatch.setattr(selftest_module.Selftest, "progress", progress)


def run_args(sb: Sandbox) -> list[str]:
    (subnet,) = sb.world.subnets.values()
    image = sb.client("ec2").describe_images(Owners=["self"])["Images"][0]["ImageId"]
    return [
        "--region",
        REGION,
        "selftest",
        "--subnet",
        subnet,
        "--image-id",
        image,
        "--instance-profile",
        f"{sb.group_name}-instance",
        "--timeout",
        "120",
    ]


def ended_runs(sb: Sandbox, machine: str) -> dict[str, tuple[str, str | None]]:
    """Each selftest instance's run of ``machine``: its status and error."""
    sfn, found = sb.client("stepfunctions"), {}
    for execution in sb.executions(machine):
        desc = sfn.describe_execution(executionArn=execution["executionArn"])
        detail = json.loads(desc["input"]).get("detail", {})
        if detail.get("AutoScalingGroupName") == SELFTEST_GROUP:
            found[detail["EC2InstanceId"]] = (desc["status"], desc.get("error"))
    return found


def pool(sb: Sandbox) -> list[dict[str, Any]]:
    return list(
        sb.client("ec2").describe_network_interfaces(
            Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
        )["NetworkInterfaces"]
    )
