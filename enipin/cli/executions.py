"""``enipin executions``: list, show and replay the launch and terminate workflows' runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from enipin import executions as ex
from enipin import replay as rp
from enipin.cli.console import progress, table, to_json
from enipin.cli.options import current, json_option, since_option
from enipin.deployment import aws_errors, with_aws_errors
from enipin.errors import OperatorError


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
        click.echo(table([e.row() for e in found], LIST_COLUMNS))
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
    click.echo(render_show(execution, steps, now))


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
    chosen = rp.failed_runs(dep, since) if failed else [ex.find(dep, r) for r in refs]
    decisions = rp.plan(dep, chosen)
    rows = [d.row() for d in decisions]
    failures = 0
    if not dry_run:
        with progress(decisions, "replaying", len(decisions)) as bar:
            for decision, row in zip(bar, rows, strict=True):
                row["running"], error = rp.carry_out_one(dep, decision)
                if error:
                    row["error"] = error
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


# -- for people ----------------------------------------------------------------------------

LIST_COLUMNS = ("name", "instance", "workflow", "status", "failed_state", "error", "start")


def render_show(execution: ex.Execution, steps: list[ex.Step], now: ex.Standing | None) -> str:
    lines = [
        f"execution  {execution.name}",
        f"workflow   {execution.workflow}",
        f"status     {execution.status}"
        + (f" (redriven {execution.redrive_count}x)" if execution.redrive_count else ""),
        f"started    {execution.start:%Y-%m-%d %H:%M:%S}",
        "",
        table(_compact(steps), ("state", "type", "times", "seconds", "outcome")),
    ]
    if execution.error or execution.failed_state:
        lines += [
            "",
            f"failed in  {execution.failed_state or '-'}",
            f"error      {execution.error or '-'}",
            f"cause      {execution.cause or '-'}",
        ]
    if now is not None:
        enis = ", ".join(f"{e['eni']} ({e['mac']})" for e in now.pool_enis) or "none"
        pending = now.action_pending(execution.workflow)
        lines += [
            "",
            f"now        instance {now.instance} is {now.ec2_state or 'unknown to EC2'}, "
            f"{now.lifecycle_state or 'not in any group'}",
            f"           pool ENI: {enis}",
            f"           {execution.workflow} action: {'pending' if pending else 'not pending'}",
        ]
    return "\n".join(lines)


def _compact(steps: list[ex.Step]) -> list[dict[str, Any]]:
    """One row per state in order of first entry: wait loops read as a count of times with their
    total seconds, and the outcome of the last time through."""
    rows: dict[str, dict[str, Any]] = {}
    for step in steps:
        row = rows.setdefault(
            step.state, {"state": step.state, "type": step.kind, "times": 0, "total": None}
        )
        row["times"] += 1
        if step.seconds is not None:
            row["total"] = (row["total"] or 0.0) + step.seconds
        row["outcome"] = step.outcome
    for row in rows.values():
        total = row.pop("total")
        row["seconds"] = f"{total:.1f}" if total is not None else None
    return list(rows.values())
