"""GetVerificationResult: read the guest's report and judge it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import NicNotVerified, VerificationTimedOut
from enipin_core.settings import Settings
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.verification import FIXABLE, VERIFIED, read_check
from enipin_core.waiting import Heartbeat, TaskInput, WaitProgress, after_poll


@named_aws_errors
def judge(ssm: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    verification = dict(state["verification"])
    result = read_check(ssm, verification["commandId"], state["instanceId"])
    wait = WaitProgress.from_dict(verification.get("wait"))
    if result.pending:
        if wait.exhausted(settings.verify_wait_seconds, task.now):
            raise VerificationTimedOut(f"command {verification['commandId']}: {result.detail}")
        wait, beat = after_poll(task, wait, settings.heartbeat_timeout)
        pending = {"status": "PENDING", "wait": wait.to_dict(), "lookIn": settings.poll_seconds}
        return {**state, "verification": verification | pending, "heartbeat": beat}
    state = {**state, "heartbeat": Heartbeat.of(state).to_dict()}
    verdict = (result.report or {}).get("verdict", "NO_REPORT")
    logger.info("guest report", extra={"verdict": verdict, "report": result.report})
    done = verification | {"status": result.status, "verdict": verdict, "report": result.report}
    if verdict == VERIFIED:
        count("Pinned")
        return {**state, "verification": done | {"needsRemediation": False}}
    if verdict in FIXABLE and not verification["remediate"]:
        # One remediation (link up, DHCP) and a second look before giving up.
        return {**state, "verification": done | {"needsRemediation": True, "wait": None}}
    count("VerificationFailed")
    raise NicNotVerified(
        f"{state['eni']['mac']} on {state['instanceId']}: {verdict} ({result.detail})"
    )


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return judge(client("ssm"), TaskInput.of(event))
