"""``enipin demo``: a group scaled out in the embedded sandbox, and what it pinned."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import click

from enipin.cli.console import table
from enipin_lab.report import PinReport, group_report

COLUMNS = ("instance", "az", "eni", "mac", "nic", "lifecycle_state", "result")


@click.command()
@click.option("--instances", default=6, show_default=True, help="Instances to launch at once.")
@click.option("--azs", default=2, show_default=True, help="Availability Zones of the group.")
@click.option("--pool-per-az", type=int, help="Pool ENIs per AZ [max per AZ + 1 spare].")
@click.option(
    "--flavour",
    type=click.Choice(["al2", "al2023", "ubuntu"]),
    default="al2023",
    show_default=True,
    help="Guest OS of the instances (NIC naming, hot-plug behaviour).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(instances: int, azs: int, pool_per_az: int | None, flavour: str, as_json: bool) -> None:
    """Scale a group out in the embedded sandbox, every step driven by lifecycle events."""
    from enipin_lab.sandbox import Sandbox  # moto loads when a demo runs, not with the CLI

    per_az = -(-instances // azs)
    started = time.monotonic()
    with Sandbox(
        azs=azs,
        pool_per_az=pool_per_az if pool_per_az is not None else per_az + 1,
        max_size=max(instances, 1),
        flavour=flavour,
    ) as sb:
        sb.scale_out(instances)
        sb.settle()
        report = group_report(
            sb.client("ec2"),
            sb.client("autoscaling"),
            sb.client("stepfunctions"),
            sb.group_name,
            sb.state_machine_arn(),
            sb.spec.pool_tag_key,
            sb.spec.pool_tag_value,
        )
        report = replace(report, guest_mode=sb.guests.mode)
        guest_line = _guest_line(sb.guests.mode, sb.guests.mode_reason)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_report(report, time.monotonic() - started)
        click.echo(guest_line)
    if report.summary["double_attached"]:
        sys.exit(1)


def _print_report(report: PinReport, seconds: float) -> None:
    click.echo(table(report.instances, COLUMNS))
    s = report.summary
    click.echo(
        f"\nlaunched {s['launched']}, pinned {s['pinned']}, abandoned {s['abandoned']}, "
        f"double-attached {s['double_attached']}; executions {s['executions']} "
        f"({seconds:.1f}s wall, sandbox with fast clock)"
    )


def _guest_line(mode: str, reason: str | None) -> str:
    """Which guest ran the verification script, and why not namespaces when it was the model."""
    if mode == "netns":
        return "guest OS: netns (the SSM document's script ran on real Linux interfaces)"
    why = f"; no netns: {reason}" if reason else ""
    return f"guest OS: model (the guest model imitated the SSM document's script{why})"
