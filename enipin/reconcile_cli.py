"""``enipin reconcile``: run the deployed reconciler now (the schedule runs it every few minutes)
and show what it repaired, or with ``--dry-run`` what it would repair."""

from __future__ import annotations

import json
from typing import Any

import click
from botocore.config import Config

from enipin.console import OperatorError, table, to_json
from enipin.deployment import current, with_aws_errors

COLUMNS = ("kind", "instanceId", "eniId", "reason", "outcome")
RECONCILER_TIMEOUT = 120  # ReconcilerFunction's Timeout in infra/template.yaml
# Lambda's Invoke answers when the function ends: wait past its timeout (botocore's own read
# timeout is 60 s), and never retry it, or a slow round would run again on top of itself.
INVOKE_CONFIG = Config(read_timeout=RECONCILER_TIMEOUT + 30, retries={"total_max_attempts": 1})


@click.command()
@click.option("--dry-run", is_flag=True, help="List the repairs without making them.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_aws_errors
def reconcile(dry_run: bool, as_json: bool) -> None:
    """Compare each group with its pool and repair the drift (missed events, hand edits)."""
    result = invoke(current().output("ReconcilerFunctionName"), {"dryRun": dry_run})
    if as_json:
        click.echo(to_json(result))
    else:
        repairs = result["repairs"]
        click.echo(table(repairs, COLUMNS) if repairs else "nothing to repair")
        if result["busy"]:
            click.echo(f"left to running workflows this round: {', '.join(result['busy'])}")
    for problem in result.get("problems", []):
        click.echo(f"problem: {problem}", err=True)
    if result.get("failed") or result.get("problems"):
        # the other repairs and the metrics went on; these need a person (see each outcome)
        raise SystemExit(1)


def invoke(function: str, payload: dict[str, Any]) -> dict[str, Any]:
    lambda_ = current().client("lambda", INVOKE_CONFIG)
    response = lambda_.invoke(FunctionName=function, Payload=json.dumps(payload))
    body = json.loads(response["Payload"].read() or b"null")
    if "FunctionError" in response:
        raise OperatorError(
            f"{function} failed: {body.get('errorType')}: {body.get('errorMessage')}"
        )
    return dict(body)
