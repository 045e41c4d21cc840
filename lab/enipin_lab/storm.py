"""``enipin storm``: a group whose every launch fails, with the storm guard off and on, side by
side in the sandbox: how many instances Auto Scaling launched, per hour, and when the guard cut
the loop. Counted from Auto Scaling's own record of lifecycle actions, never from the code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click

from enipin_core.stormguard import launch_suspended

if TYPE_CHECKING:
    from enipin_lab.sandbox import Sandbox

FAILURES = {  # the guest fault each failure mode gives every instance the group launches
    "nic": "nic_absent",  # a broken AMI: the second NIC never comes up
    "agent": "agent_absent",  # no instance profile: the SSM Agent never registers
}
HOUR = 3600.0


@dataclass(frozen=True)
class StormRun:
    guard: str  # "off" or "on (N in M min)"
    hours: float
    launches: int
    first_hour: int
    per_hour_after: float  # launches per hour after the first hour
    given_up: int  # actions completed with ABANDON
    tripped_after_minutes: float | None  # when Launch was suspended, from the scale-out
    timed_out: int  # actions ended by a timeout, not by enipin (should be 0)


def run_storm(
    *, instances: int, hours: float, failure: str, failures: int, window: int
) -> StormRun:
    from enipin_lab.sandbox import Sandbox

    parameters = {"StormGuardFailures": failures, "StormGuardWindowMinutes": window}
    with Sandbox(azs=1, pool_per_az=instances + 1, max_size=instances, parameters=parameters) as sb:
        sb.guests.set_default_faults({FAILURES[failure]})
        start = sb.clock.monotonic()
        sb.scale_out(instances)
        tripped = _watch(sb, start, hours * HOUR)
        actions = sb.autoscaling.ended_actions() + sb.autoscaling.pending_actions()
        launched = [a for a in actions if a["transition"].endswith("LAUNCHING")]
        first = [a for a in launched if a["started"] - start < HOUR]
        after_hours = max(hours - 1.0, 0.0)
        return StormRun(
            guard=f"on ({failures} in {window} min)" if failures else "off",
            hours=hours,
            launches=len(launched),
            first_hour=len(first),
            per_hour_after=round((len(launched) - len(first)) / after_hours, 1)
            if after_hours
            else 0.0,
            given_up=sum(1 for a in launched if a.get("result") == "ABANDON"),
            tripped_after_minutes=None if tripped is None else round((tripped - start) / 60, 1),
            timed_out=sum(1 for a in launched if sb.autoscaling.timed_out(a)),
        )


def _watch(sb: Sandbox, start: float, seconds: float) -> float | None:
    """Let ``seconds`` of AWS time pass; when the group's Launch was first seen suspended."""
    autoscaling = sb.client("autoscaling")
    tripped = None
    while sb.clock.monotonic() - start < seconds:
        sb.clock.sleep(60)
        if tripped is None:
            (group,) = autoscaling.describe_auto_scaling_groups(
                AutoScalingGroupNames=[sb.group_name]
            )["AutoScalingGroups"]
            if launch_suspended(group):
                tripped = sb.clock.monotonic()
    return tripped


@click.command()
@click.option("--instances", type=click.IntRange(1, 20), default=4, show_default=True)
@click.option("--hours", type=click.FloatRange(1.5, 12), default=3.0, show_default=True)
@click.option(
    "--failure",
    type=click.Choice(sorted(FAILURES)),
    default="nic",
    show_default=True,
    help="nic: the NIC never comes up (a broken AMI); agent: no SSM Agent (no instance profile).",
)
@click.option("--failures", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option("--window", type=click.IntRange(5, 1440), default=60, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def storm(
    instances: int, hours: float, failure: str, failures: int, window: int, as_json: bool
) -> None:
    """A group whose every launch fails, the storm guard off and on: launches per hour."""
    runs = []
    for threshold in (0, failures):
        label = "on" if threshold else "off"
        click.echo(f"guard {label}: {instances} instances, {hours:g} AWS hours ...", err=True)
        runs.append(
            run_storm(
                instances=instances,
                hours=hours,
                failure=failure,
                failures=threshold,
                window=window,
            )
        )
    if as_json:
        click.echo(json.dumps([asdict(r) for r in runs], indent=2))
        return
    click.echo(_table(runs))
    off, on = runs
    cut = off.launches / max(on.launches, 1)
    click.echo(f"launches cut {cut:.0f}x over {hours:g} hours by the guard")


def _table(runs: list[StormRun]) -> str:
    header = (
        "| guard | launches | first hour | per hour after | given up | tripped after | timed out |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in runs:
        tripped = "-" if r.tripped_after_minutes is None else f"{r.tripped_after_minutes:g} min"
        lines.append(
            f"| {r.guard} | {r.launches} | {r.first_hour} | {r.per_hour_after:g} | {r.given_up} "
            f"| {tripped} | {r.timed_out} |"
        )
    return "\n".join(lines)
