"""CompleteLaunch: let the verified instance go into service, or an instance into the warm pool
(CONTINUE)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import InstanceTerminating
from enipin_core.lifecycle import ALREADY_FINISHED, complete_action, is_leaving, lifecycle_state
from enipin_core.telemetry import count, logger, task_handler
from enipin_core.waiting import TaskInput


@named_aws_errors
def complete(autoscaling: Any, state: dict[str, Any]) -> dict[str, Any]:
    outcome = complete_action(autoscaling, state["lifecycle"], "CONTINUE")
    if outcome == ALREADY_FINISHED:
        # A duplicate finished first (fine), or the instance was sent to termination while we
        # verified: then the ENI must not stay on it.
        # A retried call finds its own first attempt applied (Pending:Proceed, InService):
        # only an instance on its way out loses the ENI.
        where = lifecycle_state(autoscaling, state["instanceId"])
        if is_leaving(where):
            raise InstanceTerminating(
                f"{state['instanceId']} is {where or 'gone'}: its launch action ended unfinished"
            )
    logger.info("launch completed", extra={"outcome": outcome, "eni": state.get("eni")})
    if state.get("eni"):  # an instance entering the warm pool without an ENI is no pin
        count("LaunchPinned")  # after the call: a retried invocation does not count twice
    return {**state, "lifecycleResult": "CONTINUE", "lifecycleOutcome": outcome}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return complete(client("autoscaling"), TaskInput.of(event).state)
