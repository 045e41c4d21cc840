"""CheckDetached: are the instance's pool ENIs back in the pool? Escalate to a forced detach
after the grace period, and give up (named error) after the whole wait."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import EniStuckDetaching
from enipin_core.pool import Eni, describe_enis
from enipin_core.settings import Settings
from enipin_core.telemetry import task_handler
from enipin_core.waiting import Heartbeat, TaskInput, WaitProgress, after_poll


@named_aws_errors
def check(ec2: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    ids = [Eni.from_dict(e).id for e in state["enis"]]
    # Released: available again, or no longer on this instance (deleted, or moved on).
    held = [e.id for e in describe_enis(ec2, ids) if e.instance_id == state["instanceId"]]
    wait = WaitProgress.from_dict(state.get("detachWait"))
    force = bool(state.get("force"))
    beat = Heartbeat.of(state).to_dict()
    if held:
        if wait.exhausted(settings.detach_wait_seconds, task.now):
            how = "a forced detach" if force else "a graceful detach"
            raise EniStuckDetaching(
                f"{', '.join(held)} still on {state['instanceId']} after "
                f"{wait.waited(task.now):.0f}s and {how}"
            )
        wait, beat = after_poll(task, wait, settings.heartbeat_timeout)
    force_now = bool(held) and not force and wait.exhausted(settings.detach_grace_seconds, task.now)
    return {
        **state,
        "released": not held,
        "stillAttached": held,
        "forceNow": force_now,
        "force": force or force_now,
        "detachWait": wait.to_dict(),
        "heartbeat": beat,
    }


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return check(client("ec2"), TaskInput.of(event))
