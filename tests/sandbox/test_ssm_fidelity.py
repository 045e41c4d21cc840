"""SSM Run Command fidelity and the guest OS model; each test names the AWS behaviour it pins."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.ssm.models import SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse

from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.clock import FAST_SCALE, Clock
from enipin_lab.sandbox.guest import Flavour, GuestFleet
from enipin_lab.sandbox.ssm import (
    DEFAULT_AGENT_VERSION,
    ENV_VAR_SINCE,
    SsmFidelity,
    agent_delivery,
)

T = TypeVar("T")
DOCUMENT = "enipin-verify-eni"
MAC_PATTERN = "^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"
IP_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IP_PATTERN = f"^({IP_OCTET}\\.){{3}}{IP_OCTET}$"
OLD_AGENT = "3.2.582.0"  # before interpolationType ENV_VAR (3.3.2746.0)
ENV_VAR = {"interpolationType": "ENV_VAR"}
VERIFICATION_DOCUMENT = {
    "schemaVersion": "2.2",
    "description": "Find the NIC of an ENI by MAC and check link and address.",
    "parameters": {
        "MacAddress": {"type": "String", "allowedPattern": MAC_PATTERN, **ENV_VAR},
        "ExpectedIp": {"type": "String", "allowedPattern": IP_PATTERN, **ENV_VAR},
        "Remediate": {
            "type": "String",
            "allowedValues": ["true", "false"],
            "default": "false",
            **ENV_VAR,
        },
    },
    "mainSteps": [
        {
            "action": "aws:runShellScript",
            "name": "verifyEni",
            "inputs": {"runCommand": ["/usr/local/bin/enipin-verify"]},
        }
    ],
}


@dataclass
class Rig:
    ec2: Any
    ssm: Any
    guests: GuestFleet
    agents: SsmFidelity
    subnet_id: str

    def launch(self, count: int = 1) -> list[str]:
        reservation = self.ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=self.subnet_id
        )
        return [instance["InstanceId"] for instance in reservation["Instances"]]

    def attach_eni(self, instance_id: str, device_index: int = 1) -> dict[str, str]:
        eni = self.ec2.create_network_interface(SubnetId=self.subnet_id)["NetworkInterface"]
        attachment = self.ec2.attach_network_interface(
            NetworkInterfaceId=eni["NetworkInterfaceId"],
            InstanceId=instance_id,
            DeviceIndex=device_index,
        )
        return {
            "id": eni["NetworkInterfaceId"],
            "mac": eni["MacAddress"],
            "ip": eni["PrivateIpAddress"],
            "attachment": attachment["AttachmentId"],
        }

    def information(self, instance_id: str) -> dict[str, Any] | None:
        found = self.ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
        )["InstanceInformationList"]
        return dict(found[0]) if found else None

    def ping_status(self, instance_id: str) -> str | None:
        found = self.information(instance_id)
        return found["PingStatus"] if found else None

    def _online_or_none(self, instance_id: str) -> bool | None:
        return self.ping_status(instance_id) == "Online" or None

    def wait_online(self, *instance_ids: str) -> None:
        for instance_id in instance_ids:
            eventually(partial(self._online_or_none, instance_id))

    def send(
        self,
        instance_id: str,
        mac: str,
        ip: str,
        remediate: str = "false",
        document: str = DOCUMENT,
    ) -> str:
        command = self.ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName=document,
            Parameters={"MacAddress": [mac], "ExpectedIp": [ip], "Remediate": [remediate]},
        )["Command"]
        return str(command["CommandId"])

    def invocation(self, command_id: str, instance_id: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            )
        except ClientError as error:
            assert error.response["Error"]["Code"] == "InvocationDoesNotExist"
            return None

    def finished(self, command_id: str, instance_id: str) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            invocation = self.invocation(command_id, instance_id)
            return invocation if invocation and invocation["Status"] != "InProgress" else None

        return eventually(final)

    def verify(
        self, instance_id: str, mac: str, ip: str, remediate: str = "false"
    ) -> dict[str, Any]:
        invocation = self.finished(self.send(instance_id, mac, ip, remediate), instance_id)
        assert invocation["Status"] == "Success", invocation
        report: dict[str, Any] = json.loads(invocation["StandardOutputContent"])
        return report


def aws_seconds(real: float) -> float:
    """The AWS delay that takes ``real`` seconds on the fast clock, whatever its scale."""
    return real / FAST_SCALE


# Quick defaults; the tests about timing set their own delays.
QUICK = {
    "agent_delay": aws_seconds(0.02),
    "invocation_lag": aws_seconds(0.005),
    "run_time": aws_seconds(0.01),
}


def eventually(probe: Callable[[], T | None], timeout: float = 5.0) -> T:
    """Poll ``probe`` until it returns something other than None (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout} s")


# One session keeps botocore's parsed service models between tests.
SESSION = boto3.Session(region_name=REGION)


@pytest.fixture
def make_rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Rig]]:
    """Build a sandbox with the SSM adaptation; keyword arguments go to SsmFidelity."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # AMIs are not needed here
    with mock_aws(), ExitStack() as stack:
        clock = Clock(FAST_SCALE)
        stack.callback(clock.close)

        def build(
            flavour: Flavour = "al2023",
            nic_delay: float = aws_seconds(0.005),
            agent_version: str = DEFAULT_AGENT_VERSION,
            **timing: float,
        ) -> Rig:
            guests = GuestFleet(clock, flavour=flavour, nic_delay=nic_delay)
            agents = SsmFidelity(clock, guests, agent_version=agent_version, **{**QUICK, **timing})
            agents.install(stack)
            ec2 = SESSION.client("ec2")
            ssm = SESSION.client("ssm")
            vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24")["Subnet"][
                "SubnetId"
            ]
            ssm.create_document(
                Name=DOCUMENT, DocumentType="Command", Content=json.dumps(VERIFICATION_DOCUMENT)
            )
            return Rig(ec2, ssm, guests, agents, subnet_id)

        yield build


def error_of(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


# -- agent registration and DescribeInstanceInformation ---------------------------------------


def test_the_agent_registers_only_agent_delay_after_launch(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(agent_delay=aws_seconds(0.3))
    [instance_id] = rig.launch()

    assert rig.ping_status(instance_id) is None
    rig.wait_online(instance_id)


def test_send_command_before_the_agent_registers_fails_with_invalid_instance_id(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(agent_delay=aws_seconds(0.3))
    [instance_id] = rig.launch()

    code, message = error_of(lambda: rig.send(instance_id, "02:00:00:00:00:01", "10.0.1.5"))

    assert code == "InvalidInstanceId"
    assert message == f"Instances [[{instance_id}]] not in a valid state for account {ACCOUNT_ID}"


def test_describe_instance_information_reports_connection_lost_once_the_instance_stops(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    first, second = rig.launch(2)
    rig.wait_online(first, second)

    rig.ec2.stop_instances(InstanceIds=[first])
    rig.ec2.terminate_instances(InstanceIds=[second])

    assert rig.ping_status(first) == "ConnectionLost"
    assert rig.ping_status(second) == "ConnectionLost"
    code, _ = error_of(lambda: rig.send(second, "02:00:00:00:00:01", "10.0.1.5"))
    assert code == "InvalidInstanceId"


def test_a_restarted_instance_is_online_again_after_its_agent_reregisters(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    rig.ec2.stop_instances(InstanceIds=[instance_id])

    rig.ec2.start_instances(InstanceIds=[instance_id])

    assert rig.ping_status(instance_id) == "ConnectionLost"
    rig.wait_online(instance_id)


def test_describe_instance_information_filters_by_instance_ids_and_ping_status_and_paginates(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    instance_ids = rig.launch(7)
    rig.wait_online(*instance_ids)
    rig.ec2.stop_instances(InstanceIds=instance_ids[:1])

    pages = rig.ssm.get_paginator("describe_instance_information").paginate(
        PaginationConfig={"PageSize": 5}
    )
    listed = [info["InstanceId"] for page in pages for info in page["InstanceInformationList"]]
    online = rig.ssm.describe_instance_information(
        Filters=[{"Key": "PingStatus", "Values": ["Online"]}]
    )["InstanceInformationList"]
    chosen = rig.ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": instance_ids[:2]}]
    )["InstanceInformationList"]

    assert sorted(listed) == sorted(instance_ids)
    assert {info["InstanceId"] for info in online} == set(instance_ids[1:])
    assert {info["InstanceId"] for info in chosen} == set(instance_ids[:2])
    assert {info["PlatformName"] for info in chosen} == {"Amazon Linux"}


def test_an_instance_without_an_agent_never_registers_and_cannot_be_sent_commands(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.guests.set_default_faults({"agent_absent"})
    [silent] = rig.launch()
    rig.guests.set_default_faults(())
    [healthy] = rig.launch()
    rig.wait_online(healthy)

    assert rig.ping_status(silent) is None
    code, _ = error_of(lambda: rig.send(silent, "02:00:00:00:00:01", "10.0.1.5"))
    assert code == "InvalidInstanceId"


# -- agent versions and how they deliver parameters --------------------------------------------

# A Command document whose script only shows what it was handed: the text and the variables.
ECHO_DOCUMENT = {
    "schemaVersion": "2.2",
    "parameters": {
        "Name": {"type": "String", "allowedPattern": "^[a-z]+$", **ENV_VAR},
        "Plain": {"type": "String", "allowedPattern": "^[a-z]+$"},
    },
    "mainSteps": [
        {
            "action": "aws:runShellScript",
            "name": "show",
            "inputs": {"runCommand": ["echo '{{ Name }}' '{{Name}}' '{{Plain}}'", "env"]},
        }
    ],
}
ECHO_VALUES = {"Name": ["alpha"], "Plain": ["beta"]}


def test_an_agent_before_3_3_2746_sets_no_ssm_variables_and_fills_values_into_the_text() -> None:
    delivered = agent_delivery(ECHO_DOCUMENT, ECHO_VALUES, OLD_AGENT)

    assert delivered.env == {}  # interpolationType ignored
    assert delivered.script == "echo 'alpha' 'alpha' 'beta'\nenv\n"  # {{ Name }} and {{Name}}


@pytest.mark.parametrize("version", [ENV_VAR_SINCE, "3.3.3572.0", "3.10.0.0", "4.0.0.0"])
def test_an_agent_from_3_3_2746_sets_ssm_variables_for_env_var_parameters(version: str) -> None:
    delivered = agent_delivery(ECHO_DOCUMENT, ECHO_VALUES, version)

    assert delivered.env == {"SSM_Name": "alpha"}  # only the parameter declared ENV_VAR
    assert delivered.script == "echo 'alpha' 'alpha' 'beta'\nenv\n"  # and still the text


def test_describe_instance_information_reports_each_instances_agent_version(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    current, downgraded = rig.launch(2)
    rig.agents.set_default_agent_version(OLD_AGENT)
    rig.agents.set_agent_version(downgraded, OLD_AGENT)
    [old_ami] = rig.launch()
    rig.wait_online(current, downgraded, old_ami)

    versions = {
        i: (info["AgentVersion"], info["IsLatestVersion"])
        for i in (current, downgraded, old_ami)
        if (info := rig.information(i))
    }
    filtered = rig.ssm.describe_instance_information(
        Filters=[{"Key": "AgentVersion", "Values": [OLD_AGENT]}]
    )["InstanceInformationList"]

    assert versions == {
        current: (DEFAULT_AGENT_VERSION, True),
        downgraded: (OLD_AGENT, False),
        old_ami: (OLD_AGENT, False),
    }
    assert {info["InstanceId"] for info in filtered} == {downgraded, old_ami}


def test_an_agents_version_survives_a_reboot(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(agent_version=OLD_AGENT)
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    rig.agents.set_default_agent_version(DEFAULT_AGENT_VERSION)

    rig.ec2.stop_instances(InstanceIds=[instance_id])
    rig.ec2.start_instances(InstanceIds=[instance_id])
    rig.wait_online(instance_id)

    assert rig.agents.agent_version(instance_id) == OLD_AGENT
    assert (rig.information(instance_id) or {})["AgentVersion"] == OLD_AGENT


def test_an_unknown_agent_version_is_refused(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()

    with pytest.raises(ValueError, match="not of the form"):
        rig.agents.set_default_agent_version("latest")


def test_on_an_old_agent_a_script_without_the_fallback_gets_no_parameters_and_exits_2(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(agent_version=OLD_AGENT)
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    done = rig.finished(rig.send(instance_id, eni["mac"], eni["ip"]), instance_id)

    assert (done["Status"], done["ResponseCode"]) == ("Failed", 2)
    assert done["StandardErrorContent"].startswith("error: invalid MacAddress")


def test_on_an_old_agent_the_documented_fallback_lines_carry_the_parameters(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(agent_version=OLD_AGENT)
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    rig.guests.set_faults(instance_id, {"nic_down"})
    eni = rig.attach_eni(instance_id)
    fallback = [  # AWS's fallback, as parameter-troubleshooting.html gives it
        f'if [ -z "${{SSM_{name}+x}}" ]; then export SSM_{name}="{{{{{name}}}}}"; fi'
        for name in ("MacAddress", "ExpectedIp", "Remediate")
    ]
    with_fallback = json.loads(json.dumps(VERIFICATION_DOCUMENT))
    step = with_fallback["mainSteps"][0]["inputs"]
    step["runCommand"] = [*fallback, *step["runCommand"]]
    rig.ssm.create_document(
        Name="verify-old-agents", DocumentType="Command", Content=json.dumps(with_fallback)
    )

    command_id = rig.send(instance_id, eni["mac"], eni["ip"], "true", "verify-old-agents")

    done = rig.finished(command_id, instance_id)
    assert (done["Status"], done["ResponseCode"]) == ("Success", 0)
    report = json.loads(done["StandardOutputContent"])
    assert (report["verdict"], report["remediated"]) == ("VERIFIED", ["link_up"])


# -- SendCommand ------------------------------------------------------------------------------


def test_send_command_targets_only_the_given_instances(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    chosen, other = rig.launch(2)
    rig.wait_online(chosen, other)

    command = rig.ssm.send_command(
        InstanceIds=[chosen],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["ip -br addr"]},
    )["Command"]

    targeted = rig.ssm.send_command(
        Targets=[{"Key": "InstanceIds", "Values": [chosen]}],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["ip -br addr"]},
    )["Command"]

    assert command["InstanceIds"] == [chosen]
    assert targeted["InstanceIds"] == [chosen]
    invocations = rig.ssm.list_command_invocations(CommandId=command["CommandId"])
    assert [i["InstanceId"] for i in invocations["CommandInvocations"]] == [chosen]
    assert rig.invocation(command["CommandId"], other) is None


def test_send_command_with_values_breaking_the_documents_constraints_fails_with_invalid_parameters(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    def send(**parameters: list[str]) -> Callable[[], object]:
        return lambda: rig.ssm.send_command(
            InstanceIds=[instance_id], DocumentName=DOCUMENT, Parameters=parameters
        )

    bad_calls = [
        send(MacAddress=["eth1"], ExpectedIp=[eni["ip"]]),
        send(MacAddress=[eni["mac"]], ExpectedIp=["10.0.1.256"]),
        send(MacAddress=[eni["mac"]], ExpectedIp=[eni["ip"]], Remediate=["yes"]),
        send(MacAddress=[eni["mac"]]),
        send(MacAddress=[eni["mac"]], ExpectedIp=[eni["ip"]], commands=["reboot"]),
    ]
    assert [error_of(call)[0] for call in bad_calls] == ["InvalidParameters"] * len(bad_calls)
    assert rig.ssm.list_commands()["Commands"] == []


# -- GetCommandInvocation timing --------------------------------------------------------------


def test_get_command_invocation_right_after_send_fails_with_invocation_does_not_exist(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(invocation_lag=aws_seconds(0.3), run_time=aws_seconds(0.6))
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    command_id = rig.send(instance_id, eni["mac"], eni["ip"])

    assert rig.invocation(command_id, instance_id) is None
    assert rig.ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"] == []
    running = eventually(lambda: rig.invocation(command_id, instance_id))
    assert (running["Status"], running["StatusDetails"]) == ("InProgress", "InProgress")
    assert running["StandardOutputContent"] == ""
    assert rig.ssm.list_commands(CommandId=command_id)["Commands"][0]["Status"] == "InProgress"
    done = rig.finished(command_id, instance_id)
    assert (done["Status"], done["ResponseCode"]) == ("Success", 0)


def test_an_invocation_whose_instance_terminates_before_it_runs_is_undeliverable(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(invocation_lag=aws_seconds(0.2), run_time=aws_seconds(0.2))
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)
    command_id = rig.send(instance_id, eni["mac"], eni["ip"])

    rig.ec2.terminate_instances(InstanceIds=[instance_id])

    done = rig.finished(command_id, instance_id)
    assert (done["Status"], done["StatusDetails"]) == ("Failed", "Undeliverable")
    assert rig.ssm.list_commands(CommandId=command_id)["Commands"][0]["Status"] == "Failed"


def test_list_command_invocations_agrees_with_get_command_invocation(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)
    command_id = rig.send(instance_id, eni["mac"], eni["ip"])
    done = rig.finished(command_id, instance_id)

    listed = rig.ssm.list_command_invocations(CommandId=command_id, Details=True)
    [row] = listed["CommandInvocations"]
    assert (row["InstanceId"], row["Status"]) == (instance_id, done["Status"])
    assert row["CommandPlugins"][0]["Name"] == done["PluginName"] == "verifyEni"
    assert row["CommandPlugins"][0]["Output"] == done["StandardOutputContent"]
    [command] = rig.ssm.list_commands(CommandId=command_id)["Commands"]
    assert (command["Status"], command["CompletedCount"]) == ("Success", 1)


def test_a_script_that_exits_non_zero_fails_with_its_exit_status_as_response_code(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    loose = json.loads(json.dumps(VERIFICATION_DOCUMENT))
    del loose["parameters"]["MacAddress"]["allowedPattern"]  # SSM lets a bad MAC through
    rig.ssm.create_document(Name="loose-verify", DocumentType="Command", Content=json.dumps(loose))

    command_id = rig.ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="loose-verify",
        Parameters={"MacAddress": ["eth1"], "ExpectedIp": ["10.0.1.5"]},
    )["Command"]["CommandId"]

    done = rig.finished(command_id, instance_id)
    assert (done["Status"], done["ResponseCode"]) == ("Failed", 2)
    assert done["StandardOutputContent"] == ""
    assert done["StandardErrorContent"].startswith("error: invalid MacAddress")


# -- the verification document against the guest model ---------------------------------------


def test_amazon_linux_2_names_the_second_nic_eth1(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(flavour="al2")
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    report = rig.verify(instance_id, eni["mac"], eni["ip"])

    assert report == {
        "mac": eni["mac"],
        "found": True,
        "name": "eth1",
        "altnames": [],
        "up": True,
        "ipv4": [eni["ip"]],
        "remediated": [],
        "verdict": "VERIFIED",
    }


def test_amazon_linux_2023_names_the_second_nic_ens6_with_eni_and_device_number_altnames(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(flavour="al2023")
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    report = rig.verify(instance_id, eni["mac"], eni["ip"])

    assert (report["name"], report["verdict"]) == ("ens6", "VERIFIED")
    assert report["altnames"] == [eni["id"], "device-number-1"]


def test_the_nic_is_found_by_mac_case_insensitively(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    report = rig.verify(instance_id, eni["mac"].upper(), eni["ip"])

    assert (report["found"], report["verdict"]) == (True, "VERIFIED")


def test_with_two_nics_the_one_with_the_given_mac_is_checked(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    first = rig.attach_eni(instance_id, device_index=1)
    second = rig.attach_eni(instance_id, device_index=2)

    report = rig.verify(instance_id, second["mac"], second["ip"])
    crossed = rig.verify(instance_id, second["mac"], first["ip"])

    assert (report["name"], report["ipv4"], report["verdict"]) == (
        "ens7",
        [second["ip"]],
        "VERIFIED",
    )
    assert crossed["verdict"] == "NO_ADDRESS"


def test_a_detached_eni_is_no_longer_found_in_the_guest(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)
    assert rig.verify(instance_id, eni["mac"], eni["ip"])["verdict"] == "VERIFIED"

    rig.ec2.detach_network_interface(AttachmentId=eni["attachment"])

    report = rig.verify(instance_id, eni["mac"], eni["ip"])
    assert (report["verdict"], report["name"], report["up"]) == ("NOT_FOUND", None, False)


def test_a_nic_whose_link_is_down_reports_down_and_remediation_brings_it_up(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    rig.guests.set_faults(instance_id, {"nic_down"})
    eni = rig.attach_eni(instance_id)

    checked = rig.verify(instance_id, eni["mac"], eni["ip"])
    remediated = rig.verify(instance_id, eni["mac"], eni["ip"], remediate="true")
    rechecked = rig.verify(instance_id, eni["mac"], eni["ip"])

    assert (checked["verdict"], checked["up"]) == ("DOWN", False)
    assert (remediated["verdict"], remediated["remediated"]) == ("VERIFIED", ["link_up"])
    assert rechecked["verdict"] == "VERIFIED"


def test_a_nic_without_its_address_reports_no_address_and_remediation_requests_dhcp(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    rig.guests.set_faults(instance_id, {"no_address"})
    eni = rig.attach_eni(instance_id)

    checked = rig.verify(instance_id, eni["mac"], eni["ip"])
    remediated = rig.verify(instance_id, eni["mac"], eni["ip"], remediate="true")

    assert (checked["verdict"], checked["up"], checked["ipv4"]) == ("NO_ADDRESS", True, [])
    assert (remediated["verdict"], remediated["remediated"]) == ("VERIFIED", ["dhcp"])
    assert remediated["ipv4"] == [eni["ip"]]


def test_remediation_cannot_fix_a_wrong_expected_address(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    report = rig.verify(instance_id, eni["mac"], "10.0.1.254", remediate="true")

    assert (report["verdict"], report["remediated"]) == ("NO_ADDRESS", ["dhcp"])
    assert report["ipv4"] == [eni["ip"]]


def test_a_nic_that_never_appears_is_not_found_even_with_remediation(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    rig.guests.set_faults(instance_id, {"nic_absent"})
    eni = rig.attach_eni(instance_id)

    report = rig.verify(instance_id, eni["mac"], eni["ip"], remediate="true")

    assert report == {
        "mac": eni["mac"],
        "found": False,
        "name": None,
        "altnames": [],
        "up": False,
        "ipv4": [],
        "remediated": [],
        "verdict": "NOT_FOUND",
    }


def test_ubuntu_leaves_a_hot_plugged_nic_down_and_unaddressed_until_remediated(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(flavour="ubuntu")
    [instance_id] = rig.launch()
    rig.wait_online(instance_id)
    eni = rig.attach_eni(instance_id)

    checked = rig.verify(instance_id, eni["mac"], eni["ip"])
    remediated = rig.verify(instance_id, eni["mac"], eni["ip"], remediate="true")

    assert (checked["name"], checked["verdict"], checked["ipv4"]) == ("ens6", "DOWN", [])
    assert remediated["remediated"] == ["link_up", "dhcp"]
    assert (remediated["verdict"], remediated["ipv4"]) == ("VERIFIED", [eni["ip"]])


# -- the guest model directly -----------------------------------------------------------------


def test_a_nic_appears_in_the_guest_os_only_nic_delay_after_attachment(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(nic_delay=aws_seconds(0.2))
    [instance_id] = rig.launch()
    eni = rig.attach_eni(instance_id)

    def verdict() -> str:
        _, stdout, _ = rig.guests.run_verification(instance_id, eni["mac"], eni["ip"], False)
        return str(json.loads(stdout)["verdict"])

    assert verdict() == "NOT_FOUND"
    eventually(lambda: verdict() == "VERIFIED" or None)


def test_the_verification_script_exits_2_on_invalid_parameters(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    [instance_id] = rig.launch()

    results = [
        rig.guests.run_verification(instance_id, "eth1", "10.0.1.5", False),
        rig.guests.run_verification(instance_id, "02:00:00:00:00:01", "10.0.1", False),
        rig.guests.run_verification(instance_id, "02:00:00:00:00:01", "10.0.1.5", "yes"),
    ]

    assert [(code, stdout) for code, stdout, _ in results] == [(2, "")] * 3
    assert all(stderr.startswith("error: ") for _, _, stderr in results)


def test_closing_the_stack_restores_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    originals = (
        SimpleSystemManagerBackend.send_command,
        SimpleSystemManagerBackend.get_command_invocation,
    )
    with mock_aws():
        clock = Clock(FAST_SCALE)
        try:
            with ExitStack() as stack:
                SsmFidelity(clock, GuestFleet(clock)).install(stack)
                assert hasattr(SimpleSystemManagerResponse, "describe_instance_information")
        finally:
            clock.close()

    assert not hasattr(SimpleSystemManagerResponse, "describe_instance_information")
    assert (
        SimpleSystemManagerBackend.send_command,
        SimpleSystemManagerBackend.get_command_invocation,
    ) == originals
