"""`enipin demo`, as the README runs it, and plain boto3 reading the same sandbox."""

from __future__ import annotations

import json

from click.testing import CliRunner

from enipin.cli import main


def test_demo_pins_every_instance_and_reports_no_double_attachment() -> None:
    result = CliRunner().invoke(main, ["demo", "--instances", "12", "--azs", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    summary = report["summary"]
    assert summary["launched"] == 12
    assert summary["pinned"] == 12
    assert summary["double_attached"] == 0
    assert summary["executions"] == {"SUCCEEDED": 12}
    macs = [row["mac"] for row in report["instances"]]
    assert len(set(macs)) == 12 and None not in macs
    assert {row["az"] for row in report["instances"]} == {"us-east-1a", "us-east-1b", "us-east-1c"}
