"""``enipin reconcile``: run the deployed reconciler now (the schedule runs it every few minutes)
and show what it repaired, or with ``--dry-run`` what it would repair."""

from __future__ import annotations

import click

from enipin.cli.console import table, to_json
from enipin.cli.options import current, json_option
from enipin.deployment import with_aws_errors
from enipin.reconcile import needs_a_person, run_round

COLUMNS = ("kind", "instanceId", "eniId", "reason", "outcome")


@click.command()
@click.option("--dry-run", is_flag=True, help="List the repairs without making them.")
@json_option
@with_aws_errors
def reconcile(dry_run: bool, as_json: bool) -> None:
    """Compare each group with its pool and repair the drift (missed events, hand edits)."""
    result = run_round(current(), dry_run)
    if as_json:
        click.echo(to_json(result))
    else:
        repairs = result["repairs"]
        click.echo(table(repairs, COLUMNS) if repairs else "nothing to repair")
        if result["busy"]:
            click.echo(f"left to running workflows this round: {', '.join(result['busy'])}")
    for problem in result.get("problems", []):
        click.echo(f"problem: {problem}", err=True)
    if needs_a_person(result):  # see each outcome
        raise SystemExit(1)
