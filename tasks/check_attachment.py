"""CheckAttachment: has the ENI reached ``attached`` on this instance yet?"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import AttachmentNotReady
from enipin_core.pool import describe_eni
from enipin_core.settings import Settings
from enipin_core.telemetry import task_handler
from enipin_core.waiting import Heartbeat, WaitProgress, after_poll


@named_aws_errors
def check(ec2: Any, state: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_dict(state["settings"])
    eni_id, instance_id = state["eni"]["id"], state["instanceId"]
    eni = describe_eni(ec2, eni_id)
    if eni is None or eni.instance_id != instance_id:
        raise AttachmentNotReady(f"{eni_id} is no longer attached to {instance_id}")
    wait = WaitProgress.from_dict(state.get("attachWait"))
    beat = Heartbeat.of(state).to_dict()
    if eni.attachment_status != "attached":
        if wait.exhausted(settings.attach_wait_seconds):
            raise AttachmentNotReady(
                f"{eni_id} still {eni.attachment_status} after {wait.waited_seconds}s"
            )
        wait, beat = after_poll(state, wait, settings.poll_seconds, settings.heartbeat_timeout)
    return {**state, "eni": eni.to_dict(), "attachWait": wait.to_dict(), "heartbeat": beat}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return check(client("ec2"), event)
