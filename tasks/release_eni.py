"""ReleaseEni: undo this execution's attach before the launch is given up. A pool ENI the
instance already carried (kept through the warm pool, or pinned by an earlier run of this
action) goes too when the action is given up with ABANDON, while it still waits: Auto Scaling
then terminates the instance without running its terminate hooks, so nothing else would release
it. That holds on every way to AbandonLaunch, ValidateEvent's failure included."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.lifecycle import lifecycle_state, may_carry_eni, still_holds
from enipin_core.pool import detach, detach_if_still_on, pool_enis_on
from enipin_core.settings import Settings
from enipin_core.telemetry import logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def release(ec2: Any, autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.of_run(state)
    eni = state.get("eni")
    if eni and state.get("attachedHere"):
        if _stays(autoscaling, state, settings):
            logger.info("the action moved on without this run: the ENI stays", extra={"eni": eni})
            return {**state, "released": False}
        released = detach_if_still_on(ec2, eni["id"], state["instanceId"], eni.get("attachmentId"))
        logger.info("release after failure", extra={"eni": eni["id"], "released": released})
        return {**state, "released": released}
    if not _abandoned_with_it(autoscaling, state, settings):
        return {**state, "released": False}
    # Whatever pool ENI the instance carries: the run may not have looked (ValidateEvent
    # failed before it could), or found one it did not attach.
    kept = pool_enis_on(ec2, state["instanceId"], settings.pool_tag_key, settings.pool_tag_value)
    released = any([detach(ec2, e, force=False) for e in kept])
    logger.info("kept ENI released before ABANDON", extra={"enis": [e.id for e in kept]})
    return {**state, "released": released}


def _stays(autoscaling: Any, state: dict[str, Any], settings: Settings) -> bool:
    """Does the ENI this run attached stay? Not while this run's action still waits: the run
    gives it up. Once the action has moved on without the run (another run let the instance
    into service, or a scale-in sent it back to a warm pool that keeps ENIs: chaos seed 319),
    where the instance is now decides, as for any attach."""
    lifecycle = state.get("lifecycle")
    if lifecycle and still_holds(autoscaling, lifecycle):
        return False
    where = lifecycle_state(autoscaling, state["instanceId"])
    if not lifecycle:  # a replay's own pin that failed: only a warm pool that keeps ENIs keeps it
        return where is not None and where.startswith("Warmed:") and settings.warm_pool_keeps_eni
    return may_carry_eni(where, settings.warm_pool_keeps_eni)


def _abandoned_with_it(autoscaling: Any, state: dict[str, Any], settings: Settings) -> bool:
    """Will the instance be terminated with an ENI this run did not attach? Only when this run
    gives its still-waiting action up with ABANDON: an instance another run let into service
    keeps it, and so does one a scale-in sent back to the warm pool, whose state
    (``Warmed:Pending:Wait``) a launch action shares (chaos seed 368): the heartbeat asks after
    this very action."""
    lifecycle = state.get("lifecycle")
    if not lifecycle:  # a replay or repair without an action leaves the instance as it is
        return False
    if settings.launch_failure_result != "ABANDON":
        return False
    return still_holds(autoscaling, lifecycle)


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return release(client("ec2"), client("autoscaling"), TaskInput.of(event).state)
