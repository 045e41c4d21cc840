"""Launches on guests whose SSM Agent predates interpolationType ENV_VAR (3.3.2746.0): the agent
sets no SSM_ variables and the verification document's fallback lines carry the parameters; and
on Ubuntu, whose networkd leaves the hot-plugged ENI unmanaged. Each runs with the document's own
script in network namespaces (where the machine allows them) and with the guest model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import assert_pinned, executions_for, in_service, path_of

from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.netns import unavailable_reason
from enipin_lab.sandbox.ssm import DEFAULT_AGENT_VERSION

Factory = Callable[..., Sandbox]
OLD_AGENT = "3.2.582.0"


@pytest.fixture(params=["netns", "model"])
def guest_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    if mode == "netns" and (reason := unavailable_reason()) is not None:
        pytest.skip(f"network namespaces unavailable here: {reason}")
    return mode


def reports(sb: Sandbox, instance_id: str) -> list[dict[str, Any]]:
    """The verification script's reports on the instance, oldest first (SSM's own record)."""
    rows = sb.client("ssm").list_command_invocations(InstanceId=instance_id, Details=True)
    ordered = sorted(rows["CommandInvocations"], key=lambda row: row["RequestedDateTime"])
    return [json.loads(row["CommandPlugins"][0]["Output"]) for row in ordered]


def agent_version(sb: Sandbox, instance_id: str) -> str:
    [info] = sb.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
    )["InstanceInformationList"]
    return str(info["AgentVersion"])


def launch_one(sb: Sandbox) -> tuple[str, dict[str, Any]]:
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    (run,) = executions_for(sb, instance_id)
    return instance_id, run


def test_a_launch_on_an_old_ssm_agent_is_pinned_and_verified(
    sandbox: Factory, guest_mode: str
) -> None:
    # GIVEN instances whose AMI ships an agent that sets no SSM_ variables
    sb = sandbox(azs=1, pool_per_az=1, guest_mode=guest_mode)
    sb.ssm.set_default_agent_version(OLD_AGENT)
    # WHEN one launches
    instance_id, run = launch_one(sb)
    # THEN the document's fallback carried its parameters: verified at the first look
    assert sb.guests.mode == guest_mode
    assert agent_version(sb, instance_id) == OLD_AGENT
    assert run["status"] == "SUCCEEDED"
    assert json.loads(run["output"])["lifecycleResult"] == "CONTINUE"
    assert [r["verdict"] for r in reports(sb, instance_id)] == ["VERIFIED"]


@pytest.mark.parametrize("agent", [OLD_AGENT, DEFAULT_AGENT_VERSION])
def test_ubuntu_launch_remediates_the_unmanaged_nic_through_dhcp_whatever_the_agent(
    sandbox: Factory, guest_mode: str, agent: str
) -> None:
    sb = sandbox(azs=1, pool_per_az=1, flavour="ubuntu", guest_mode=guest_mode)
    sb.ssm.set_default_agent_version(agent)

    instance_id, run = launch_one(sb)

    assert run["status"] == "SUCCEEDED"
    assert "RemediateNic" in path_of(sb, run["executionArn"])
    seen = reports(sb, instance_id)
    assert seen[-1]["verdict"] == "VERIFIED"
    assert any("dhcp" in report["remediated"] for report in seen)
