"""A reconciler round on demand: the deployed ReconcilerFunction, invoked and waited for."""

from __future__ import annotations

import json
from typing import Any

from botocore.config import Config

from enipin.deployment import Deployment
from enipin.errors import OperatorError

RECONCILER_TIMEOUT = 120  # ReconcilerFunction's Timeout in infra/template.yaml
# Lambda's Invoke answers when the function ends: wait past its timeout (botocore's own read
# timeout is 60 s), and never retry it, or a slow round would run again on top of itself.
INVOKE_CONFIG = Config(read_timeout=RECONCILER_TIMEOUT + 30, retries={"total_max_attempts": 1})


def run_round(dep: Deployment, dry_run: bool) -> dict[str, Any]:
    """The round's report: repairs (with outcomes), instances left busy, failures, problems."""
    function = dep.output("ReconcilerFunctionName")
    lambda_ = dep.client("lambda", INVOKE_CONFIG)
    response = lambda_.invoke(FunctionName=function, Payload=json.dumps({"dryRun": dry_run}))
    body = json.loads(response["Payload"].read() or b"null")
    if "FunctionError" in response:
        raise OperatorError(
            f"{function} failed: {body.get('errorType')}: {body.get('errorMessage')}"
        )
    return dict(body)


def needs_a_person(result: dict[str, Any]) -> bool:
    """A repair failed or a problem was found: the rest went on, these wait for someone."""
    return bool(result.get("failed") or result.get("problems"))
