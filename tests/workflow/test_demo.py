"""`enipin demo`, as the README runs it, and plain boto3 reading the same sandbox."""

from __future__ import annotations

import json

from click.testing import CliRunner

from enipin.cli import main
from enipin_lab.sandbox.netns import unavailable_reason

# The demo's guests are real network namespaces wherever the machine allows them (CI does).
EXPECTED_MODE = "netns" if unavailable_reason() is None else "model"


def test_demo_pins_every_instance_and_reports_no_double_attachment() -> None:
    result = CliRunner().invoke(main, ["demo", "--instances", "12", "--azs", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["guest_mode"] == EXPECTED_MODE
    summary = report["summary"]
    assert summary["launched"] == 12, report
    assert summary["pinned"] == 12
    assert summary["double_attached"] == 0
    assert summary["executions"] == {"SUCCEEDED": 12}
    macs = [row["mac"] for row in report["instances"]]
    assert len(set(macs)) == 12 and None not in macs
    assert {row["az"] for row in report["instances"]} == {"us-east-1a", "us-east-1b", "us-east-1c"}


def test_demo_says_which_guest_ran_the_verification_script() -> None:
    args = ["demo", "--instances", "2", "--azs", "1", "--flavour", "ubuntu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    last = result.output.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"guest OS: {EXPECTED_MODE} (")
    assert "launched 2, pinned 2, abandoned 0" in result.output
