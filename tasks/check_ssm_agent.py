"""CheckSsmAgent: is the instance's SSM agent registered and online?"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.errors import SsmAgentNotOnline
from enipin_core.settings import Settings
from enipin_core.telemetry import task_handler
from enipin_core.verification import agent_online
from enipin_core.waiting import TaskInput, WaitProgress, after_poll, heartbeat_as_of


@named_aws_errors
def check(ssm: Any, task: TaskInput) -> dict[str, Any]:
    # agentLost: SendCommand refused the instance (sent when the agent typically starts, or
    # although it had reported Online), so this look counts as one more poll of the agent
    # wait whatever it says: a refusal that persists stays bounded by AgentWaitSeconds.
    lost = "agentLost" in task.state
    state = {k: v for k, v in task.state.items() if k != "agentLost"}
    settings = Settings.from_dict(state["settings"])
    online = agent_online(ssm, state["instanceId"])
    wait = WaitProgress.from_dict(state.get("agentWait"))
    beat = heartbeat_as_of(task, settings.heartbeat_timeout)
    if lost or not online:
        if wait.exhausted(settings.agent_wait_seconds, task.now):
            raise SsmAgentNotOnline(
                f"SSM agent on {state['instanceId']} not online after {wait.waited(task.now):.0f}s"
            )
        wait, beat = after_poll(task, wait, settings.heartbeat_timeout)
    return {**state, "agentOnline": online, "agentWait": wait.to_dict(), "heartbeat": beat}


@task_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return check(client("ssm"), TaskInput.of(event))
