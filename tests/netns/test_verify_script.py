"""The SSM document's verification script, run for real against Linux interfaces in a network
namespace: the NIC is found by MAC whatever its name, and the JSON report tells verified, down,
unaddressed and absent apart; remediation brings links up and gets the DHCP lease, on each image's
own tools; parameters reach it from old SSM agents and new ones.

Each test runs twice: as the SSM agent runs it (``sh -c <file>``, the #! line picks bash) and
under a POSIX sh, so the script stays right if the shell ever changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from real_guest import RealGuest, Shell, fabric_or_skip

from enipin_lab.sandbox.guest import IMAGES, UBUNTU_2404
from enipin_lab.sandbox.netns import DhcpClient, Image, Toolbox
from enipin_lab.sandbox.ssm import DEFAULT_AGENT_VERSION, ENV_VAR_SINCE

pytestmark = pytest.mark.netns

PRIMARY_MAC, PRIMARY_IP = "02:0e:4e:00:00:01", "10.0.0.4"
MAC, IP = "02:0e:4e:00:0a:bc", "10.0.1.10"
OTHER_MAC, OTHER_IP = "02:0e:4e:00:0d:ef", "10.0.1.11"
OLD_AGENT = "3.2.582.0"  # sets no SSM_ variables (interpolationType ENV_VAR needs 3.3.2746.0)
UBUNTU_2204 = IMAGES["ubuntu"]  # networkd for the boot NIC only, and dhclient
MakeGuest = Callable[..., RealGuest]


@pytest.fixture(params=["agent", "posix"])
def make_guest(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[MakeGuest]:
    """Guests in fresh namespaces; all of them are deleted after the test, even on failure."""
    shell: Shell = request.param
    toolbox = Toolbox(tmp_path_factory.mktemp("toolbox"), sleep_scale=0.02)
    with fabric_or_skip("script") as fabric:

        def make(dhcp: Image | DhcpClient = "dhclient", primary: str = "eth0") -> RealGuest:
            workdir = tmp_path_factory.mktemp("cwd")
            guest = RealGuest(fabric.namespace("guest"), toolbox, workdir, dhcp, shell)
            guest.plug(primary, PRIMARY_MAC, PRIMARY_IP, boot=True)  # the instance's own NIC
            return guest

        yield make


def report(
    name: str | None,
    *,
    mac: str = MAC,
    up: bool = True,
    ipv4: tuple[str, ...] = (IP,),
    altnames: tuple[str, ...] = (),
    remediated: tuple[str, ...] = (),
    verdict: str = "VERIFIED",
) -> dict[str, Any]:
    """The report the script should print (for a NIC that exists)."""
    return {
        "mac": mac,
        "found": True,
        "name": name,
        "altnames": list(altnames),
        "up": up,
        "ipv4": list(ipv4),
        "remediated": list(remediated),
        "verdict": verdict,
    }


# -- found by MAC ------------------------------------------------------------------------------


def test_amazon_linux_2_second_nic_eth1_up_with_its_address_is_verified(
    make_guest: MakeGuest,
) -> None:
    guest = make_guest(dhcp="dhclient", primary="eth0")
    guest.plug("eth1", MAC, IP)

    out = guest.verify(MAC, IP)

    assert (out.code, out.stderr) == (0, "")
    assert out.report == report("eth1")


def test_amazon_linux_2023_second_nic_ens6_is_reported_with_its_altnames(
    make_guest: MakeGuest,
) -> None:
    guest = make_guest(dhcp="networkctl", primary="ens5")
    guest.plug("ens6", MAC, IP, altnames=("eni-0a1b2c3d4e5f60718", "device-number-1"))

    out = guest.verify(MAC, IP)

    assert out.report == report("ens6", altnames=("eni-0a1b2c3d4e5f60718", "device-number-1"))


@pytest.mark.parametrize("name", ["eth1", "ens6", "enp0s6", "enX1", "pool0"])
@pytest.mark.parametrize("given", [MAC, MAC.upper(), "02:0E:4e:00:0A:bc"])
def test_the_nic_is_found_by_mac_whatever_its_name_and_the_case_given(
    make_guest: MakeGuest, name: str, given: str
) -> None:
    guest = make_guest()
    guest.plug(name, MAC, IP)

    out = guest.verify(given, IP)

    assert out.report == report(name)  # the report names the MAC in lower case


def test_with_several_nics_the_one_carrying_the_mac_is_checked(make_guest: MakeGuest) -> None:
    guest = make_guest(primary="ens5")
    guest.plug("ens6", OTHER_MAC, OTHER_IP)
    guest.plug("ens7", MAC, IP)

    right = guest.verify(MAC, IP)
    crossed = guest.verify(MAC, OTHER_IP)

    assert right.report == report("ens7")
    assert crossed.report == report("ens7", verdict="NO_ADDRESS")


def test_a_mac_on_no_nic_is_not_found_and_nothing_is_remediated(make_guest: MakeGuest) -> None:
    guest = make_guest()
    guest.plug("eth1", OTHER_MAC, OTHER_IP, up=False, addressed=False)

    out = guest.verify(MAC, IP, remediate="true")

    assert (out.code, out.stderr) == (0, "")
    assert out.report == {
        "mac": MAC,
        "found": False,
        "name": None,
        "altnames": [],
        "up": False,
        "ipv4": [],
        "remediated": [],
        "verdict": "NOT_FOUND",
    }
    assert not guest.is_up("eth1")  # another NIC is never touched


# -- down, unaddressed, remediated ---------------------------------------------------------------


def test_a_nic_whose_link_is_down_is_reported_down_and_left_alone(make_guest: MakeGuest) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP, up=False)

    out = guest.verify(MAC, IP)

    assert out.report == report("eth1", up=False, verdict="DOWN")
    assert not guest.is_up("eth1")


def test_remediation_brings_a_down_link_up(make_guest: MakeGuest) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP, up=False)

    out = guest.verify(MAC, IP, remediate="true")

    assert out.report == report("eth1", remediated=("link_up",))
    assert guest.is_up("eth1")
    assert guest.verify(MAC, IP).report == report("eth1")  # and it stays up


def test_a_nic_up_without_an_address_is_reported_no_address(make_guest: MakeGuest) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP, addressed=False)

    out = guest.verify(MAC, IP)

    assert out.report == report("eth1", ipv4=(), verdict="NO_ADDRESS")


@pytest.mark.parametrize(("dhcp", "name"), [("dhclient", "eth1"), ("networkctl", "ens6")])
def test_remediation_gets_the_address_from_the_guests_dhcp_client(
    make_guest: MakeGuest, dhcp: DhcpClient, name: str
) -> None:
    guest = make_guest(dhcp=dhcp)
    guest.plug(name, MAC, IP, addressed=False)

    out = guest.verify(MAC, IP, remediate="true")

    assert out.report == report(name, remediated=("dhcp",))
    assert guest.ipv4(name) == [IP]


def test_without_a_dhcp_client_remediation_reports_the_address_still_missing(
    make_guest: MakeGuest,
) -> None:
    guest = make_guest(dhcp="none")
    guest.plug("eth1", MAC, IP, addressed=False)

    out = guest.verify(MAC, IP, remediate="true")

    assert out.report == report("eth1", ipv4=(), verdict="NO_ADDRESS")


@pytest.mark.parametrize(
    "image", [UBUNTU_2204, UBUNTU_2404], ids=["22.04-dhclient", "24.04-dhcpcd"]
)
def test_ubuntu_unmanaged_hot_plugged_nic_down_and_unaddressed_is_remediated_by_its_dhcp_client(
    make_guest: MakeGuest, image: Image
) -> None:
    # networkd leaves the hot-plugged NIC alone (no .network matches it): reconfigure does nothing
    guest = make_guest(dhcp=image, primary="ens5")
    guest.plug("ens6", MAC, IP, up=False, addressed=False)

    checked = guest.verify(MAC, IP)
    remediated = guest.verify(MAC, IP, remediate="true")

    assert checked.report == report("ens6", up=False, ipv4=(), verdict="DOWN")
    assert remediated.report == report("ens6", remediated=("link_up", "dhcp"))
    assert guest.is_up("ens6") and guest.ipv4("ens6") == [IP]


def test_networkd_ignoring_the_nic_and_no_dhcp_client_leave_it_unaddressed(
    make_guest: MakeGuest,
) -> None:
    guest = make_guest(dhcp=Image(networkd="boot"), primary="ens5")
    guest.plug("ens6", MAC, IP, addressed=False)

    out = guest.verify(MAC, IP, remediate="true")

    # reconfigure exited 0 but no address came: remediation does not claim "dhcp"
    assert out.report == report("ens6", ipv4=(), verdict="NO_ADDRESS")


# -- SSM agents old and new -----------------------------------------------------------------------


@pytest.mark.parametrize("agent", [OLD_AGENT, "3.3.1142.0", ENV_VAR_SINCE, DEFAULT_AGENT_VERSION])
def test_the_documents_script_verifies_whatever_the_agent_version(
    make_guest: MakeGuest, agent: str
) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    out = guest.verify(MAC.upper(), IP, agent=agent)

    assert (out.code, out.stderr) == (0, "")
    assert out.report == report("eth1")


@pytest.mark.parametrize("agent", [OLD_AGENT, DEFAULT_AGENT_VERSION])
def test_an_old_agent_and_a_new_one_both_remediate_an_ubuntu_nic(
    make_guest: MakeGuest, agent: str
) -> None:
    guest = make_guest(dhcp=UBUNTU_2204, primary="ens5")
    guest.plug("ens6", MAC, IP, up=False, addressed=False)

    out = guest.verify(MAC, IP, remediate="true", agent=agent)

    assert out.report == report("ens6", remediated=("link_up", "dhcp"))


def test_an_old_agents_values_written_into_the_text_are_checked_again(
    make_guest: MakeGuest,
) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    out = guest.verify("02:0e:4e:00:0a:zz", IP, agent=OLD_AGENT)  # SSM's pattern bypassed

    assert (out.code, out.stdout, out.stderr) == (2, "", "invalid MacAddress\n")


def test_remediation_cannot_make_a_wrong_expected_address_right(make_guest: MakeGuest) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    out = guest.verify(MAC, OTHER_IP, remediate="true")

    # DHCP was asked (the address was missing) and gave the ENI's own address again
    assert out.report == report("eth1", remediated=("dhcp",), verdict="NO_ADDRESS")


def test_a_second_address_on_the_nic_does_not_hide_the_expected_one(
    make_guest: MakeGuest,
) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)
    guest.namespace.ip("addr", "add", f"{OTHER_IP}/24", "dev", "eth1")

    out = guest.verify(MAC, IP)

    assert out.report == report("eth1", ipv4=(IP, OTHER_IP))
