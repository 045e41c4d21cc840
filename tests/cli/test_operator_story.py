"""The README's operator story, its commands verbatim, played against the sandbox: the first
deploy checks out, a bad AMI turns every launch into a failure until the storm guard stops the
group, the operator reads why, fixes it, releases the guard, and the group is pinned again."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result
from conftest import assert_pinned, in_service, wait_until

from enipin.cli import main
from enipin_lab.sandbox import Sandbox

README = Path(__file__).resolve().parents[2] / "README.md"
REGION = "us-east-1"
Factory = Callable[..., Sandbox]


def story() -> list[str]:
    """The story's commands, in order, as the README prints them."""
    section = README.read_text().split("### The operator's story", 1)[1].split("\n##", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("enipin ")]


def run(command: str, group: str) -> Result:
    args = shlex.split(command.replace("my-group", group))[1:]
    return CliRunner().invoke(main, ["--region", REGION, *args])


def test_the_readmes_story_from_first_deploy_through_a_storm_back_to_pinned(
    sandbox: Factory,
) -> None:
    commands = story()
    assert len(commands) == 7 and commands[0] == "enipin doctor"
    doctor, status, doctor_group, failed, release, pool, doctor_after = commands
    sb = sandbox(azs=1, pool_per_az=5, max_size=4)  # the maximum plus a spare
    group = sb.group_name
    # the first deploy: everything a launch needs is there
    first = run(doctor, group)
    assert first.exit_code == 0, first.output
    # the group scales out on an AMI whose second NIC never comes up
    sb.guests.set_default_faults({"nic_absent"})
    sb.scale_out(2)
    wait_until(lambda: run(status, group).exit_code == 1, sb)
    sb.settle()
    held = run(status + " --json", group)
    (row,) = json.loads(held.stdout)
    # at least the threshold: failures recorded at the same moment may each see the other's
    given_up = re.search(r"(\d+) launches given up in 60 min", row["why"])
    assert row["guard"] == "TRIPPED" and given_up and int(given_up.group(1)) >= 5, row
    checked = run(doctor_group, group)
    assert checked.exit_code == 1 and verdict(checked, "launches") == "FAIL"
    assert f"enipin guard release --asg {group}" in checked.stdout
    listed = run(failed, group)
    assert listed.exit_code == 0 and "NicNotVerified" in listed.stdout
    # fixed: new instances come up with their NIC; the operator releases the guard
    sb.guests.set_default_faults(set())
    released = run(release, group)
    assert released.exit_code == 0 and "launches resumed" in released.stdout
    sb.settle()
    serving = in_service(sb)
    assert len(serving) == 2
    for instance_id in serving:
        assert_pinned(sb, instance_id)
    assert run(pool, group).exit_code == 0
    after = run(doctor_after, group)
    assert verdict(after, "launches") == "PASS"
    assert verdict(after, "executions") == "FAIL"  # the storm's failures, counted for 24 h


def verdict(result: Result, check: str) -> str:
    """The verdict doctor's table gives ``check``."""
    for line in result.stdout.splitlines():  # verdict, check, subject, saw, fix
        cells = line.split()
        if len(cells) > 1 and cells[1] == check and cells[0] in ("PASS", "WARN", "FAIL"):
            return cells[0]
    raise AssertionError(f"no {check} line in:\n{result.stdout}")
