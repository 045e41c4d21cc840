"""``enipin guard``: the storm guard's state per group, and its release once the cause is fixed."""

from __future__ import annotations

import click

from enipin.cli.console import table, to_json
from enipin.cli.options import current, json_option
from enipin.deployment import with_aws_errors
from enipin.guard import release_group, status

COLUMNS = ("groupName", "guard", "launchSuspended", "failuresCounted", "why")


@click.group()
def guard() -> None:
    """The storm guard: it suspends a group's launches when they keep failing."""


@guard.command("status")
@click.option("--asg", "group", help="One managed group (default: every one).")
@json_option
@with_aws_errors
def guard_status(group: str | None, as_json: bool) -> None:
    """Which groups the guard holds, and why. Exits 1 when it holds any."""
    rows = status(current(), group)
    click.echo(to_json(rows) if as_json else table(rows, COLUMNS))
    if any(r["guard"] == "TRIPPED" or r["launchSuspended"] for r in rows):
        raise SystemExit(1)


@guard.command("release")
@click.option("--asg", "group", required=True, help="The managed group to release.")
@json_option
@with_aws_errors
def guard_release(group: str, as_json: bool) -> None:
    """Resume the group's launches (Auto Scaling launches what it lacks at once) and clear the
    count. Fix the cause first: `enipin doctor`, `enipin executions list --status FAILED`."""
    result = release_group(current(), group)
    if as_json:
        click.echo(to_json(result))
    elif result["wasTripped"]:
        click.echo(f"{group}: launches resumed (was: {result['wasTripped']})")
    else:
        click.echo(f"{group}: launches resumed (the guard was not tripped)")
