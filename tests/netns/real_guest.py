"""Real guests for the namespace tests: a Linux network namespace with chosen NICs, and the SSM
document's own script (read from infra/template.yaml, never copied) run inside it, its parameters
delivered as the sandbox's SSM agent model of a given version delivers them."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from enipin_lab.sandbox.netns import (
    DhcpClient,
    Fabric,
    Image,
    Link,
    Namespace,
    Toolbox,
    document_script,
    template_document,
    unavailable_reason,
)
from enipin_lab.sandbox.ssm import agent_delivery

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
DOCUMENT = template_document(TEMPLATE)
SCRIPT = document_script(DOCUMENT)
PREFIX_LEN = 24
# The script's own sleeps (networkctl's settle time) at 1/50, as on the sandbox's fast clock.
SLEEP_SCALE = 0.02
# Set in CI: a machine that cannot make namespaces fails these tests instead of skipping them.
REQUIRE = "ENIPIN_REQUIRE_NETNS"

Shell = Literal["agent", "posix"]


def skip_without_namespaces() -> None:
    """Skip (fail, with REQUIRE set) where this machine cannot make network namespaces."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set but network namespaces are unavailable: {reason}")
        pytest.skip(f"network namespaces unavailable here: {reason}")


@contextmanager
def fabric_or_skip(owner: str) -> Iterator[Fabric]:
    """A fabric of namespaces for one test, deleted afterwards whatever happened."""
    skip_without_namespaces()
    with Fabric(owner) as fabric:
        yield fabric


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The script's one JSON line."""
        assert self.stdout.endswith("\n") and self.stdout.count("\n") == 1, self.stdout
        report: dict[str, Any] = json.loads(self.stdout)
        return report


class RealGuest:
    """One guest: a namespace, the image's tools (its DHCP client answered from a lease table
    holding what the VPC's DHCP would give each MAC) and a scratch working directory."""

    def __init__(
        self,
        namespace: Namespace,
        toolbox: Toolbox,
        workdir: Path,
        dhcp: Image | DhcpClient,
        shell: Shell,
    ) -> None:
        self.namespace = namespace
        self.toolbox = toolbox
        self.workdir = workdir
        self.dhcp = dhcp
        self.shell = shell
        self.marker = workdir / "INJECTED"

    def plug(
        self,
        name: str,
        mac: str,
        ip: str,
        *,
        up: bool = True,
        addressed: bool = True,
        altnames: tuple[str, ...] = (),
        boot: bool = False,
    ) -> None:
        """Hot-plug a NIC (``boot``: the NIC the image booted with, which its own .network file
        matches); the VPC's DHCP knows its address whether the guest holds it or not."""
        address = f"{ip}/{PREFIX_LEN}"
        self.toolbox.lease(mac, address)
        if boot:
            self.toolbox.match(mac)
        self.namespace.add(Link(name, mac, altnames, up, (address,) if addressed else ()))

    def verify(
        self, mac: str, expected_ip: str, remediate: str = "false", agent: str | None = None
    ) -> Outcome:
        """The script with these parameters. ``agent``: as an SSM agent of that version hands
        them over (the sandbox's model: values written into the text, SSM_ variables from
        3.3.2746.0 on). Without it: as the variables alone, the text as the document holds it,
        which is what reaches the script's own checks whatever SSM let through."""
        if agent is None:
            env = {"SSM_MacAddress": mac, "SSM_ExpectedIp": expected_ip, "SSM_Remediate": remediate}
            script = SCRIPT
        else:
            sent = {"MacAddress": [mac], "ExpectedIp": [expected_ip], "Remediate": [remediate]}
            delivery = agent_delivery(DOCUMENT, sent, agent)
            assert delivery.script is not None
            env, script = delivery.env, delivery.script
        return self.run(script, env)

    def run(self, script: str, env: dict[str, str]) -> Outcome:
        """``script`` as the agent runs it, with exactly ``env`` (and the image's PATH)."""
        path = self.toolbox.path(self.dhcp)
        if self.shell == "agent":  # sh -c <file>: the #!/bin/bash line picks bash
            file = self.toolbox.script(script)
            run = self.namespace.run_script(file, env, path=path, cwd=self.workdir)
        else:  # the same text under a POSIX sh, its #! line only a comment
            sh = shutil.which("sh") or "/bin/sh"
            run = self.namespace.run([sh, "-c", script], env, path=path, cwd=self.workdir)
        return Outcome(run.code, run.stdout, run.stderr)

    def link(self, name: str) -> dict[str, Any]:
        """``ip -j addr`` of one NIC as the kernel has it now."""
        [found] = json.loads(self.namespace.ip("-j", "addr", "show", "dev", name))
        return dict(found)

    def is_up(self, name: str) -> bool:
        return "UP" in self.link(name)["flags"]

    def ipv4(self, name: str) -> list[str]:
        return [a["local"] for a in self.link(name)["addr_info"] if a["family"] == "inet"]

    def nothing_ran(self) -> bool:
        """No injected command left its mark (relative ones land in the working directory)."""
        return not any(self.workdir.glob("INJECTED*")) and not self.marker.exists()
