"""CompleteTermination: let the termination go on (CONTINUE), whatever happened before.

The same task ends the failure path: a release that failed must never hold the instance, so it
still continues and counts the failure for the alarm; the execution then fails with the error.

On the way that released, it looks once more before the CONTINUE: a launch run's attach may have
landed since FindPoolEnis looked, and CONTINUE lets the instance go with whatever it carries.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import EniAttachedSinceLook
from enipin_core.lifecycle import complete_action
from enipin_core.pool import pool_enis_on
from enipin_core.settings import Settings
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def complete(ec2: Any, autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    if not state.get("lifecycle"):  # a replay or repair with no action waiting
        return {**state, "lifecycleResult": None}
    if state.get("action") == "RELEASE" and not state.get("error"):  # not into a pool that keeps
        _refuse_an_eni_attached_since_look(ec2, state)
    outcome = complete_action(autoscaling, state["lifecycle"], "CONTINUE")
    if state.get("error"):
        count("ReleaseFailed")  # after the call: a retried invocation does not count twice
    logger.info("termination continues", extra={"outcome": outcome, "error": state.get("error")})
    return {**state, "lifecycleResult": "CONTINUE", "lifecycleOutcome": outcome}


def _refuse_an_eni_attached_since_look(ec2: Any, state: dict[str, Any]) -> None:
    """The ASL catches the error and sends the run back to FindPoolEnis. An ENI this run
    released already is not news, even while a lagging describe still shows it attached, nor is
    one a launch run is taking off already."""
    settings = Settings.from_dict(state["settings"])
    seen = {e.get("attachmentId") for e in state.get("enis", [])}
    found = pool_enis_on(ec2, state["instanceId"], settings.pool_tag_key, settings.pool_tag_value)
    late = [
        e.id
        for e in found
        if e.attachment_id not in seen and e.attachment_status not in ("detaching", "detached")
    ]
    if late:
        raise EniAttachedSinceLook(f"{state['instanceId']} now carries {', '.join(late)}")


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return complete(client("ec2"), client("autoscaling"), TaskInput.of(event).state)
