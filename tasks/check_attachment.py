"""CheckAttachment: has the ENI reached ``attached`` on this instance yet?"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import AttachmentNotReady
from enipin_core.pool import describe_eni
from enipin_core.settings import Settings
from enipin_core.telemetry import task_handler
from enipin_core.waiting import TaskInput, WaitProgress, after_poll, heartbeat_as_of


@named_aws_errors
def check(ec2: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    eni_id, instance_id = state["eni"]["id"], state["instanceId"]
    eni = describe_eni(ec2, eni_id)
    if eni is None:
        raise AttachmentNotReady(f"{eni_id} no longer exists")
    if eni.instance_id not in (None, instance_id):
        raise AttachmentNotReady(f"{eni_id} is attached to {eni.instance_id}, not {instance_id}")
    wait = WaitProgress.from_dict(state.get("attachWait"))
    beat = heartbeat_as_of(task, settings.heartbeat_timeout)
    ours = eni.instance_id == instance_id
    if not (ours and eni.attachment_status == "attached"):
        # attaching, or not shown yet: EC2's describes are eventually consistent and may lag
        # the attach by a moment; the bound tells a lag from an ENI detached meanwhile
        if wait.exhausted(settings.attach_wait_seconds, task.now):
            seen = eni.attachment_status if ours else "not attached"
            raise AttachmentNotReady(
                f"{eni_id} still {seen} on {instance_id} after {wait.waited(task.now):.0f}s"
            )
        wait, beat = after_poll(task, wait, settings.heartbeat_timeout)
    shown = eni.to_dict() if ours else state["eni"]  # a lagging describe: keep our own view
    return {**state, "eni": shown, "attachWait": wait.to_dict(), "heartbeat": beat}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return check(client("ec2"), TaskInput.of(event))
