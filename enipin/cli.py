"""The ``enipin`` command: operator commands against a deployed stack, and the sandbox demo."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import click

from enipin.bench_cli import bench
from enipin.chaos_cli import chaos
from enipin.deployment import DEFAULT_STACK, Target
from enipin.executions_cli import executions
from enipin.pool_cli import pool
from enipin.reconcile_cli import reconcile
from enipin.report import PinReport, group_report

COLUMNS = ("instance", "az", "eni", "mac", "nic", "lifecycle_state", "result")


@click.group()
@click.version_option(package_name="enipin")
@click.option("--profile", envvar="AWS_PROFILE", help="AWS profile (default credentials chain).")
@click.option("--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], help="AWS Region.")
@click.option(
    "--stack", default=DEFAULT_STACK, show_default=True, help="Name of the deployed enipin stack."
)
@click.pass_context
def main(ctx: click.Context, profile: str | None, region: str | None, stack: str) -> None:
    """Pin pooled ENIs to Auto Scaling instances, and inspect, replay and size what it does."""
    ctx.obj = Target(profile=profile, region=region, stack=stack)


main.add_command(bench)
main.add_command(chaos)
main.add_command(executions)
main.add_command(pool)
main.add_command(reconcile)


@main.command()
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
    from enipin.sandbox import Sandbox  # the sandbox (moto) is only needed here

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
    rows = [[str(r.get(c) or "-") for c in COLUMNS] for r in report.instances]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
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
