"""``enipin executions``: list, show and replay the launch and terminate workflows' runs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click

from enipin import executions as ex
from enipin import replay as rp
from enipin.console import OperatorError, progress, table, to_json
from enipin.deployment import aws_errors, current, with_aws_errors

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(_ctx: Any, _param: Any, value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if not match:
        raise click.BadParameter("use a number and a unit: 90s, 30m, 24h, 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


since_option = click.option(
    "--since", callback=parse_since, help="Only runs started this long ago or later (24h, 7d)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def executions() -> None:
    """Inspect and replay the launch and terminate workflows' executions."""


@executions.command("list")
@click.option("--status", type=click.Choice(ex.STATUSES), help="Only runs with this status.")
@since_option
@json_option
@with_aws_errors
def list_(status: str | None, since: timedelta | None, as_json: bool) -> None:
    """Runs of both workflows, newest first."""
    found = ex.list_executions(current(), status, since)
    if as_json:
        click.echo(to_json([e.row() | {"arn": e.arn} for e in found]))
    elif found:
        click.echo(table([e.row() for e in found], ex.LIST_COLUMNS))
    else:
        click.echo("no executions")


@executions.command()
@click.argument("ref", metavar="NAME|ARN")
@json_option
@with_aws_errors
def show(ref: str, as_json: bool) -> None:
    """The path a run took, its error, and where its instance stands now."""
    dep = current()
    execution = ex.find(dep, ref)
    steps = ex.path(dep.client("stepfunctions"), execution.arn)
    now = ex.standing(dep, execution.instance) if execution.instance else None
    if as_json:
        click.echo(
            to_json(
                {
                    "execution": execution.to_dict(),
                    "path": [s.__dict__ for s in steps],
                    "now": now.to_dict() if now else None,
                }
            )
        )
        return
    click.echo(ex.render_show(execution, steps, now))


@executions.command("replay")
@click.argument("refs", nargs=-1, metavar="[NAME|ARN]...")
@click.option("--failed", is_flag=True, help="Replay every failed, aborted or timed-out run.")
@since_option
@click.option("--dry-run", is_flag=True, help="Print each decision and its reason only.")
@json_option
def replay_(
    refs: tuple[str, ...], failed: bool, since: timedelta | None, dry_run: bool, as_json: bool
) -> None:
    """Redrive or re-run executions, as the live state of each instance calls for."""
    with aws_errors():
        _replay(refs, failed, since, dry_run, as_json)


def _replay(
    refs: tuple[str, ...], failed: bool, since: timedelta | None, dry_run: bool, as_json: bool
) -> None:
    if bool(refs) == failed:
        raise OperatorError("name executions to replay, or pass --failed (not both)")
    dep = current()
    chosen = _failed_runs(dep, since) if failed else [ex.find(dep, r) for r in refs]
    decisions = rp.plan(dep, chosen)
    rows = [d.row() for d in decisions]
    failures = 0
    if not dry_run:
        with progress(decisions, "replaying", len(decisions)) as bar:
            for decision, row in zip(bar, rows, strict=True):
                try:  # one run that cannot be replayed must not hide what the others did
                    with aws_errors():
                        row["running"] = rp.carry_out(dep, decision)
                except OperatorError as exc:
                    row["running"], row["error"] = None, exc.format_message()
                    failures += 1
    if as_json:
        click.echo(to_json(rows))
    elif rows:
        columns = ["execution", "decision", "reason"] + ([] if dry_run else ["running"])
        click.echo(table(rows, columns + (["error"] if failures else [])))
    else:
        click.echo("nothing to replay")
    if failures:
        raise OperatorError(f"{failures} of {len(rows)} replays failed (see the error column)")


def _failed_runs(dep: Any, since: timedelta | None) -> list[ex.Execution]:
    everything = ex.list_executions(dep, None, since)
    failures = [e for e in everything if e.status in ex.FINAL_FAILURES]
    return rp.still_relevant(failures, everything)
