"""SendVerification: run the verification document on the instance (with remediation when the
previous look found the NIC down or unaddressed)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import HeartbeatDue
from enipin_core.pool import Eni
from enipin_core.settings import Settings
from enipin_core.telemetry import logger, task_handler
from enipin_core.verification import FIRST_LOOK_SECONDS, delivery_seconds, send_check
from enipin_core.waiting import TaskInput, heartbeat_as_of


@named_aws_errors
def send(ssm: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    if heartbeat_as_of(task, settings.heartbeat_timeout)["due"]:
        # measured on Step Functions' clock as this state was entered: nothing polled since
        # the attach, which may have been slow; a command now could outlast the action
        raise HeartbeatDue(f"{state['instanceId']}: a heartbeat is due before the verification")
    previous = state.get("verification") or {}
    remediate = bool(previous.get("needsRemediation"))
    eni = Eni.from_dict(state["eni"])
    command_id = send_check(
        ssm,
        state["instanceId"],
        settings.verify_document,
        eni.mac,
        eni.private_ip,
        remediate,
        delivery_seconds(settings.verify_wait_seconds),
    )
    logger.info("verification sent", extra={"commandId": command_id, "remediate": remediate})
    rounds = previous.get("rounds", 0) + 1
    return {
        **state,
        "verification": {
            "commandId": command_id,
            "remediate": remediate,
            "rounds": rounds,
            "lookIn": FIRST_LOOK_SECONDS,
        },
    }


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return send(client("ssm"), TaskInput.of(event))
