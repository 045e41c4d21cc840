"""The verification script against hostile input, on real interfaces: parameters carrying shell
(SSM checks allowedPattern first, the script checks again) and interface names with odd bytes.
Every case gives a clear result, and no injected command runs: each would create a marker file.

The values reach the script as SSM_ variables, the text as the document holds it: the script's own
checks are the second line. An agent older than 3.3.2746.0 writes values into the text instead
(AWS's documented fallback), which is safe only because SSM refuses them first: the last test here
holds the document's own constraints to every hostile value."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from real_guest import DOCUMENT, RealGuest, Shell, fabric_or_skip

from enipin_lab.sandbox.netns import Toolbox

pytestmark = pytest.mark.netns

PRIMARY_MAC, PRIMARY_IP = "02:0e:4e:00:00:01", "10.0.0.4"
MAC, IP = "02:0e:4e:00:0a:bc", "10.0.1.10"
MakeGuest = Callable[[], RealGuest]
# {m} is the marker file's absolute path; relative markers (names are short) land in the cwd.
SHELL_IN_MAC = [
    f"{MAC};touch {{m}}",
    f"{MAC}&&touch {{m}}",
    f"{MAC}|touch {{m}}",
    "$(touch {m})",
    f"{MAC}$(touch {{m}})",
    "`touch {m}`",
    f"{MAC}\ntouch {{m}}",
    f"{MAC}' ; touch {{m}} ; '",
    f'{MAC}" ; touch {{m}} ; "',
    "02:0e:4e:00:0a:*",
    "",
]
SHELL_IN_IP = [
    f"{IP};touch {{m}}",
    f"{IP} && touch {{m}}",
    "$(touch {m})",
    "`touch {m}`",
    f"{IP}\ntouch {{m}}",
    "10.0.1.*",
    "",
]
SHELL_IN_REMEDIATE = ["true;touch {m}", "$(touch {m})", "`touch {m}`", "true\ntouch {m}", "TRUE"]
LONG = 100_000  # characters: far beyond any pattern, still within one argument's limit


@pytest.fixture(params=["agent", "posix"])
def make_guest(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[MakeGuest]:
    shell: Shell = request.param
    toolbox = Toolbox(tmp_path_factory.mktemp("toolbox"), sleep_scale=0.02)
    with fabric_or_skip("hostile") as fabric:

        def make() -> RealGuest:
            workdir = tmp_path_factory.mktemp("cwd")
            guest = RealGuest(fabric.namespace("guest"), toolbox, workdir, "dhclient", shell)
            guest.plug("eth0", PRIMARY_MAC, PRIMARY_IP)
            return guest

        yield make


def rejected(guest: RealGuest, mac: str, ip: str, remediate: str, parameter: str) -> None:
    out = guest.verify(mac, ip, remediate)
    assert (out.code, out.stdout, out.stderr) == (2, "", f"invalid {parameter}\n")
    assert guest.nothing_ran()


@pytest.mark.parametrize("mac", SHELL_IN_MAC)
def test_a_mac_carrying_shell_is_rejected_and_nothing_runs(make_guest: MakeGuest, mac: str) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    rejected(guest, mac.format(m=guest.marker), IP, "true", "MacAddress")


@pytest.mark.parametrize("ip", SHELL_IN_IP)
def test_an_expected_ip_carrying_shell_is_rejected_and_nothing_runs(
    make_guest: MakeGuest, ip: str
) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    rejected(guest, MAC, ip.format(m=guest.marker), "true", "ExpectedIp")


@pytest.mark.parametrize("remediate", SHELL_IN_REMEDIATE)
def test_a_remediate_flag_carrying_shell_is_rejected_and_nothing_runs(
    make_guest: MakeGuest, remediate: str
) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP, up=False)

    rejected(guest, MAC, IP, remediate.format(m=guest.marker), "Remediate")
    assert not guest.is_up("eth1")


@pytest.mark.parametrize(
    ("mac", "ip", "parameter"),
    [
        (MAC + "0" * LONG, IP, "MacAddress"),
        ("a" * LONG, IP, "MacAddress"),
        (MAC, IP + "1" * LONG, "ExpectedIp"),
        (MAC, "1" * 16, "ExpectedIp"),
    ],
    ids=["mac-with-long-tail", "long-mac", "ip-with-long-tail", "ip-one-too-long"],
)
def test_over_long_values_are_rejected(
    make_guest: MakeGuest, mac: str, ip: str, parameter: str
) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    rejected(guest, mac, ip, "false", parameter)


@pytest.mark.parametrize("ip", [f"{IP}\nx", f"{IP}\n"], ids=["second-line", "trailing-newline"])
def test_an_expected_ip_of_several_lines_is_rejected(make_guest: MakeGuest, ip: str) -> None:
    guest = make_guest()
    guest.plug("eth1", MAC, IP)

    rejected(guest, MAC, ip, "false", "ExpectedIp")


# Linux lets an interface name hold anything but '/', ':' and white space, in 15 bytes.
ODD_NAMES = {
    "command-substitution": ("$(touch${IFS}I)", "$(touch${IFS}I)"),
    "backticks": ("`touch${IFS}I`", "`touch${IFS}I`"),
    "semicolons": (";touch${IFS}I;", ";touch${IFS}I;"),
    "quotes-backslash": ("e\"\\x'", "e\"\\x'"),
    "control-bytes": ("e\x01\x1bz", "ez"),  # the report drops control characters
    "glob": ("n*[?", "n*[?"),
    "leading-dash": ("-v", "-v"),
    "utf-8": ("café0", "café0"),
    "not-utf-8": ("x\udcff", "x\ufffd"),  # byte 0xff: SSM hands back U+FFFD
}


@pytest.mark.parametrize(("name", "shown"), list(ODD_NAMES.values()), ids=list(ODD_NAMES))
def test_a_nic_with_an_odd_name_is_reported_and_remediated_and_nothing_runs(
    make_guest: MakeGuest, name: str, shown: str
) -> None:
    guest = make_guest()
    altname = "eni-$(touch${IFS}INJECTED-alt)"
    guest.plug(name, MAC, IP, up=False, addressed=False, altnames=(altname,))

    # remediation hands the name to ip and to the DHCP client too
    out = guest.verify(MAC, IP, remediate="true")

    assert (out.code, out.stderr) == (0, "")
    assert out.report == {
        "mac": MAC,
        "found": True,
        "name": shown,
        "altnames": [altname],
        "up": True,
        "ipv4": [IP],
        "remediated": ["link_up", "dhcp"],
        "verdict": "VERIFIED",
    }
    assert guest.nothing_ran()


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("MacAddress", v) for v in SHELL_IN_MAC]
    + [("ExpectedIp", v) for v in SHELL_IN_IP]
    + [("Remediate", v) for v in SHELL_IN_REMEDIATE],
)
def test_ssm_refuses_every_hostile_value_before_an_old_agent_writes_it_into_the_script(
    parameter: str, value: str
) -> None:
    spec = DOCUMENT["parameters"][parameter]
    value = value.format(m="/tmp/INJECTED")
    allowed = spec.get("allowedValues")
    pattern = spec.get("allowedPattern")

    # SSM's checks, as SendCommand applies them (InvalidParameters): a value passes only both
    passes = (allowed is None or value in allowed) and (
        pattern is None or re.search(pattern, value) is not None
    )

    assert not passes
