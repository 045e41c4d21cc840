"""The sandbox's SSM agent running the stack's own verification script in a network namespace per
instance, whose veth NICs follow the instance's EC2 attachments and the guest's faults."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import (
    assert_pinned,
    executions_for,
    group_instances,
    in_service,
    path_of,
    pool_enis_on,
    wait_until,
)
from real_guest import skip_without_namespaces

from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.netns import template_script

pytestmark = pytest.mark.netns
Factory = Callable[..., Sandbox]


@pytest.fixture
def netns_sandbox(sandbox: Factory) -> Iterator[Factory]:
    """Sandboxes whose guests are namespaces (skips where the machine cannot make them)."""
    skip_without_namespaces()
    yield lambda **kwargs: sandbox(guest_mode="netns", **kwargs)


def kernel_view(sb: Sandbox, instance_id: str) -> dict[str, dict[str, Any]]:
    """NIC name -> ``ip -j addr`` of the instance's namespace, as the kernel has it now."""
    namespace = sb.guests.namespace(instance_id)
    assert namespace is not None, f"{instance_id} has no namespace"
    links = json.loads(namespace.ip("-j", "addr", "show"))
    return {link["ifname"]: link for link in links if link["ifname"] != "lo"}


def ipv4(link: dict[str, Any]) -> list[str]:
    return [a["local"] for a in link["addr_info"] if a["family"] == "inet"]


def reports(sb: Sandbox, instance_id: str) -> list[dict[str, Any]]:
    """The verification script's reports on the instance, oldest first (SSM's own record)."""
    rows = sb.client("ssm").list_command_invocations(InstanceId=instance_id, Details=True)
    ordered = sorted(rows["CommandInvocations"], key=lambda row: row["RequestedDateTime"])
    return [json.loads(row["CommandPlugins"][0]["Output"]) for row in ordered]


def launched_one(sb: Sandbox) -> tuple[str, dict[str, Any], dict[str, Any]]:
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    eni = assert_pinned(sb, instance_id)
    (run,) = executions_for(sb, instance_id)
    return instance_id, eni, run


@pytest.mark.parametrize(
    ("flavour", "primary", "nic"), [("al2", "eth0", "eth1"), ("al2023", "ens5", "ens6")]
)
def test_a_launch_is_verified_on_real_interfaces_named_as_the_os_names_them(
    netns_sandbox: Factory, flavour: str, primary: str, nic: str
) -> None:
    sb = netns_sandbox(azs=1, pool_per_az=1, flavour=flavour)
    assert sb.guests.mode == "netns"

    instance_id, eni, run = launched_one(sb)

    assert run["status"] == "SUCCEEDED"
    assert json.loads(run["output"])["nicName"] == nic
    links = kernel_view(sb, instance_id)
    assert sorted(links) == [primary, nic]
    assert links[nic]["address"] == eni["MacAddress"]
    assert ipv4(links[nic]) == [eni["PrivateIpAddress"]]
    assert "UP" in links[nic]["flags"]
    if flavour == "al2023":  # amazon-ec2-net-utils' altnames
        assert links[nic]["altnames"] == [eni["NetworkInterfaceId"], "device-number-1"]


def test_a_nic_left_down_is_brought_up_by_the_scripts_remediation(
    netns_sandbox: Factory,
) -> None:
    sb = netns_sandbox(azs=1, pool_per_az=1)
    sb.guests.set_default_faults(["nic_down"])

    instance_id, _, run = launched_one(sb)

    assert "RemediateNic" in path_of(sb, run["executionArn"])
    assert json.loads(run["output"])["attempts"]["verificationRounds"] == 2
    assert "UP" in kernel_view(sb, instance_id)["ens6"]["flags"]


def test_ubuntu_unmanaged_nic_gets_its_lease_through_the_dhcp_client_fallback(
    netns_sandbox: Factory,
) -> None:
    # networkd leaves the hot-plugged ENI unmanaged: networkctl reconfigure gives it nothing
    sb = netns_sandbox(azs=1, pool_per_az=1, flavour="ubuntu")

    instance_id, eni, run = launched_one(sb)

    assert "RemediateNic" in path_of(sb, run["executionArn"])
    link = kernel_view(sb, instance_id)["ens6"]
    assert "UP" in link["flags"]
    assert ipv4(link) == [eni["PrivateIpAddress"]]
    assert [r["verdict"] for r in reports(sb, instance_id)][-1] == "VERIFIED"
    assert any("dhcp" in r["remediated"] for r in reports(sb, instance_id))


def test_a_nic_that_never_appears_is_not_found_and_the_launch_abandoned(
    netns_sandbox: Factory,
) -> None:
    sb = netns_sandbox(azs=1, pool_per_az=1)
    sb.guests.set_default_faults(["nic_absent"])
    sb.scale_out(1)
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)

    [failed] = [e for e in sb.executions() if e["status"] == "FAILED"]
    run = sb.client("stepfunctions").describe_execution(executionArn=failed["executionArn"])
    instance_id = json.loads(run["input"])["detail"]["EC2InstanceId"]
    assert (run["error"], "NOT_FOUND" in run["cause"]) == ("NicNotVerified", True)
    assert sorted(kernel_view(sb, instance_id)) == ["ens5"]  # only the primary NIC


def test_a_detached_eni_leaves_the_namespace_at_the_next_run(netns_sandbox: Factory) -> None:
    sb = netns_sandbox(azs=1, pool_per_az=2)
    instance_id, eni, _ = launched_one(sb)
    script = template_script(sb.template)

    sb.client("ec2").detach_network_interface(
        AttachmentId=eni["Attachment"]["AttachmentId"], Force=True
    )
    wait_until(lambda: not pool_enis_on(sb, instance_id), sb)
    code, stdout, _ = sb.guests.run_verification(
        instance_id, eni["MacAddress"], eni["PrivateIpAddress"], "true", script=script
    )

    assert (code, json.loads(stdout)["verdict"]) == (0, "NOT_FOUND")
    assert sorted(kernel_view(sb, instance_id)) == ["ens5"]


def test_simultaneous_launches_are_each_verified_in_their_own_namespace(
    netns_sandbox: Factory,
) -> None:
    # (the workflow suite's thirty simultaneous launches run in namespaces too where available)
    sb = netns_sandbox(azs=3, pool_per_az=4, max_size=12)

    sb.scale_out(12)
    sb.settle()

    serving = in_service(sb)
    assert len(serving) == len(group_instances(sb)) == 12
    for instance_id in serving:
        eni = assert_pinned(sb, instance_id)
        assert ipv4(kernel_view(sb, instance_id)["ens6"]) == [eni["PrivateIpAddress"]]
    assert len(sb.guests.namespaces()) == 12 + 1  # and the VPC side


def test_closing_the_sandbox_deletes_every_namespace_it_made(netns_sandbox: Factory) -> None:
    sb = netns_sandbox(azs=1, pool_per_az=1)
    launched_one(sb)
    mine = sb.guests.namespaces()
    assert len(mine) == 2  # the VPC side and the instance
    assert set(mine) <= set(listed_namespaces())

    sb.__exit__(None, None, None)

    assert not set(mine) & set(listed_namespaces())


def listed_namespaces() -> list[str]:
    ip = shutil.which("ip") or "ip"
    out = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split(" ", 1)[0] for line in out.stdout.splitlines()]
