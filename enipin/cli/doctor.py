"""``enipin doctor``: will launches work? PASS, WARN or FAIL per check, with the fix."""

from __future__ import annotations

import click

from enipin import doctor as checks
from enipin.cli import console
from enipin.cli.options import Target, json_option
from enipin.deployment import with_aws_errors
from enipin.errors import OperatorError

COLUMNS = ["verdict", "check", "subject", "saw", "fix"]


@click.command()
@click.option(
    "--asg",
    "groups",
    multiple=True,
    metavar="NAME",
    help="A group to check (default: the stack's).",
)
@click.option(
    "--spare", default=1, show_default=True, help="Spare pool ENIs per AZ beyond the maximum."
)
@json_option
@click.pass_context
@with_aws_errors
def doctor(ctx: click.Context, groups: tuple[str, ...], spare: int, as_json: bool) -> None:
    """Check the deployment and its groups against what a launch needs; exit 1 on any FAIL."""
    target = ctx.find_object(Target)
    assert target is not None
    try:
        findings = checks.examine(target.deployment(), groups, spare)
    except OperatorError as exc:  # no stack to read: that is the first finding, not a crash
        fix = "deploy enipin (sam deploy), or pass --stack NAME and --region of the one you have"
        findings = [checks.Finding("stack", target.stack, checks.FAIL, str(exc), fix)]
    if as_json:
        click.echo(console.to_json([f.to_dict() for f in findings]))
    else:
        click.echo(console.table([f.to_dict() for f in findings], COLUMNS))
    failed = sum(f.verdict == checks.FAIL for f in findings)
    warned = sum(f.verdict == checks.WARN for f in findings)
    click.echo(f"{failed} FAIL, {warned} WARN, {len(findings) - failed - warned} PASS", err=True)
    if failed:
        ctx.exit(1)
