"""FindFreeEni: the free pool ENIs in the instance's AZ, in this instance's own order."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import NoFreeEni
from enipin_core.pool import Instance, free_enis, order_candidates
from enipin_core.settings import Settings
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import Heartbeat, TaskInput, WaitProgress, after_poll


@named_aws_errors
def find(ec2: Any, task: TaskInput) -> dict[str, Any]:
    state = task.state
    settings = Settings.from_dict(state["settings"])
    instance = Instance.from_dict(state["instance"])
    free = free_enis(ec2, instance, settings.pool_tag_key, settings.pool_tag_value)
    candidates = order_candidates(free, instance.id, settings.max_attach_candidates)
    wait = WaitProgress.from_dict(state.get("poolWait"))
    beat = Heartbeat.of(state).to_dict()
    if not candidates:
        if wait.exhausted(settings.pool_wait_seconds, task.now):
            count("NoFreeEni")
            raise NoFreeEni(
                f"no free ENI tagged {settings.pool_tag_key}={settings.pool_tag_value} "
                f"in {instance.az} after {wait.waited(task.now):.0f}s"
            )
        wait, beat = after_poll(task, wait, settings.heartbeat_timeout)
        logger.info("pool exhausted, waiting for a release", extra={"az": instance.az})
    candidates_out = [c.to_dict() for c in candidates]
    return {**state, "candidates": candidates_out, "poolWait": wait.to_dict(), "heartbeat": beat}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return find(client("ec2"), TaskInput.of(event))
