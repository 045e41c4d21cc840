"""The guest images' own network tools as the sandbox plays them in a namespace, each test naming
the behaviour it pins: systemd-networkd touches only links a .network file matches (Ubuntu leaves
a hot-plugged ENI "unmanaged" and `networkctl reconfigure` still succeeds; AL2023's
amazon-ec2-net-utils gives every ENI a .network file), and the DHCP clients get the lease."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from real_guest import PREFIX_LEN, fabric_or_skip

from enipin_lab.sandbox.guest import IMAGES, UBUNTU_2404
from enipin_lab.sandbox.netns import Image, Link, Namespace, ScriptRun, Toolbox

pytestmark = pytest.mark.netns

BOOT_MAC, BOOT_IP = "02:0e:4e:00:00:01", "10.0.0.4"
MAC, IP = "02:0e:4e:00:0a:bc", "10.0.1.10"


@dataclass
class Host:
    """One guest: the boot NIC ens5 (matched by the image's boot-time .network) and ens6,
    hot-plugged DOWN and unaddressed, with the VPC's DHCP offering each its address."""

    namespace: Namespace
    toolbox: Toolbox

    def run(self, image: Image, *argv: str) -> ScriptRun:
        return self.namespace.run(list(argv), {}, path=self.toolbox.path(image))

    def ipv4(self, name: str) -> list[str]:
        out = self.namespace.ip("-o", "-4", "addr", "show", "dev", name)
        return [line.split()[3].split("/")[0] for line in out.splitlines()]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    toolbox = Toolbox(tmp_path, sleep_scale=0.02)
    with fabric_or_skip("images") as fabric:
        namespace = fabric.namespace("guest")
        toolbox.lease(BOOT_MAC, f"{BOOT_IP}/{PREFIX_LEN}")
        toolbox.lease(MAC, f"{IP}/{PREFIX_LEN}")
        toolbox.match(BOOT_MAC)  # netplan's cloud-init config names the boot NIC by MAC
        namespace.add(
            Link("ens5", BOOT_MAC, addresses=(f"{BOOT_IP}/{PREFIX_LEN}",)),
            Link("ens6", MAC, up=False),
        )
        yield Host(namespace, toolbox)


def test_ubuntu_networkctl_reconfigure_of_an_unmanaged_hot_plugged_nic_succeeds_and_does_nothing(
    host: Host,
) -> None:
    done = host.run(IMAGES["ubuntu"], "networkctl", "reconfigure", "ens6")

    assert (done.code, done.stderr) == (0, "")
    assert host.ipv4("ens6") == []


def test_ubuntu_networkctl_status_shows_the_hot_plugged_nic_unmanaged_and_the_boot_nic_configured(
    host: Host,
) -> None:
    plugged = host.run(IMAGES["ubuntu"], "networkctl", "status", "ens6")
    boot = host.run(IMAGES["ubuntu"], "networkctl", "status", "ens5")

    assert plugged.code == 0
    assert plugged.stdout.splitlines()[0].endswith(": ens6")  # "● <ifindex>: ens6"
    fields = {
        k.strip(): v.strip()
        for k, _, v in (ln.partition(":") for ln in plugged.stdout.splitlines()[1:])
    }
    assert fields["State"] == "off (unmanaged)"
    assert fields["Network File"] == "n/a"
    assert "State: routable (configured)" in " ".join(boot.stdout.split())


def test_amazon_linux_2023_networkd_manages_a_hot_plugged_eni_and_reconfigure_gets_its_lease(
    host: Host,
) -> None:
    done = host.run(IMAGES["al2023"], "networkctl", "reconfigure", "ens6")
    status = host.run(IMAGES["al2023"], "networkctl", "status", "ens6")

    assert done.code == 0
    assert host.ipv4("ens6") == [IP]
    assert "State: routable (configured)" in " ".join(status.stdout.split())


@pytest.mark.parametrize(
    ("image", "argv"),
    [(IMAGES["ubuntu"], ("dhclient", "-1")), (UBUNTU_2404, ("dhcpcd", "-4", "-w"))],
    ids=["22.04-dhclient", "24.04-dhcpcd"],
)
def test_ubuntus_dhcp_client_gets_the_lease_networkd_would_not(
    host: Host, image: Image, argv: tuple[str, ...]
) -> None:
    done = host.run(image, "timeout", "20", *argv, "ens6")

    assert done.code == 0
    assert host.ipv4("ens6") == [IP]


def test_networkctl_refuses_a_link_that_does_not_exist(host: Host) -> None:
    done = host.run(IMAGES["ubuntu"], "networkctl", "reconfigure", "ens9")

    assert done.code == 1
    assert "No such device" in done.stderr
