"""Real Linux network namespaces standing in for guest OSes: veth NICs named, addressed and up or
down as a guest shows them, and a shell script run inside the way the SSM agent runs it.

Needs root and iproute2; ``unavailable_reason()`` says why not when they are missing.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from enipin_lab.sandbox.template import load as load_template

PREFIX = "enipin"
# What a minimal guest image offers the script on its PATH (the script calls some of these; a
# script that starts calling something else fails here first: add it). The network tools are not
# among them: each image gets its own fakes (see Image and Toolbox).
GUEST_TOOLS = (
    "ip", "awk", "sed", "tr", "grep", "cat", "timeout", "head", "tail", "cut", "wc", "sort",
    "uniq", "env", "ls", "readlink", "basename", "dirname", "date", "logger", "ethtool",
)  # fmt: skip
# Shorthands for the simple images: networkd managing every NIC, one DHCP client, or nothing.
DhcpClient = Literal["networkctl", "dhclient", "dhcpcd", "none"]
DhcpProgram = Literal["dhclient", "dhcpcd"]
# Which links systemd-networkd manages: those a .network file matches. "hotplug": every NIC, the
# hot-plugged ones too (AL2023: amazon-ec2-net-utils' udev rules give each ENI its own .network);
# "boot": only the NICs a .network file named at boot (Ubuntu: netplan matches the boot NIC by
# MAC; a hot-plugged ENI stays "unmanaged" without a hotplug rule); "absent": no networkd.
Networkd = Literal["hotplug", "boot", "absent"]
# Tokens ip's batch mode reads back unchanged; anything else goes through argv.
_PLAIN = re.compile(r"^[A-Za-z0-9._:/-]+$")
_LABEL = re.compile(r"[^A-Za-z0-9-]")
_OWNED = re.compile(rf"^{PREFIX}-(\d+)-")


class NetnsError(RuntimeError):
    """An ip command failed: the namespace is not in the state asked for."""


class NetnsUnavailable(NetnsError):
    """This machine cannot create network namespaces (not root, no iproute2, ...)."""


@dataclass(frozen=True)
class Link:
    """One guest NIC to create: the guest end of a veth pair."""

    name: str
    mac: str
    altnames: tuple[str, ...] = ()
    up: bool = True
    addresses: tuple[str, ...] = ()  # with prefix length: "10.0.1.5/24"


@dataclass(frozen=True)
class ScriptRun:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Image:
    """How a guest image gets a NIC its address: systemd-networkd (and which links it manages)
    and the DHCP client programs on its PATH."""

    networkd: Networkd = "absent"
    dhcp_clients: tuple[DhcpProgram, ...] = ()

    @classmethod
    def of(cls, image: Image | DhcpClient) -> Image:
        """An image, or the simple image a shorthand names."""
        if isinstance(image, Image):
            return image
        if image == "networkctl":
            return cls(networkd="hotplug")
        if image in ("dhclient", "dhcpcd"):
            return cls(dhcp_clients=(image,))
        return cls()

    @property
    def label(self) -> str:
        return "-".join((f"networkd_{self.networkd}", *self.dhcp_clients))


# -- what the machine allows ---------------------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """None when namespaces with veth NICs and altnames can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "bash", "sh") if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (iproute2 provides ip)"
    probe = f"{PREFIX}-{os.getpid()}-probe{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as error:
        return f"ip netns add failed: {error}"
    try:
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        _ip("-n", probe, "link", "property", "add", "dev", "probe0", "altname", "probe-alt")
    except NetnsError as error:
        return f"veth interfaces with altnames unavailable: {error}"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


# -- the script as the document holds it ---------------------------------------------------------


def document_script(content: Mapping[str, Any]) -> str:
    """The file the SSM agent writes for a Command document's first aws:runShellScript step:
    its runCommand lines, one per line (``_script.sh``, run as ``sh -c <file>``)."""
    for step in content.get("mainSteps") or []:
        if isinstance(step, dict) and step.get("action") == "aws:runShellScript":
            lines = [str(line) for line in step.get("inputs", {}).get("runCommand") or []]
            return "".join(line if line.endswith("\n") else f"{line}\n" for line in lines)
    raise ValueError("the document has no aws:runShellScript step")


def template_document(template: Path, logical_id: str = "VerifyNicDocument") -> dict[str, Any]:
    """The content of an AWS::SSM::Document in a template, read with the sandbox's loader."""
    content: dict[str, Any] = load_template(template)["Resources"][logical_id]["Properties"][
        "Content"
    ]
    return content


def template_script(template: Path, logical_id: str = "VerifyNicDocument") -> str:
    """The script of an AWS::SSM::Document in a template, as the document holds it."""
    return document_script(template_document(template, logical_id))


# -- the guest image's PATH ---------------------------------------------------------------------


class Toolbox:
    """What a guest image offers the script: a PATH per image, and the VPC's DHCP answers.

    The network tools are fakes because no DHCP server answers inside a namespace: a DHCP client
    assigns the address the VPC's DHCP hands to the NIC's MAC, which is the ENI's private IP
    (EC2's DHCP serves exactly that). ``networkctl`` plays systemd-networkd: ``status`` succeeds,
    ``reconfigure`` asks DHCP again for a link networkd manages and, as the real one does, exits
    0 and does nothing for a link no .network file matches ("unmanaged"); ``status <link>`` says
    which. ``dhclient`` and ``dhcpcd`` play the ISC and Roy Marples clients (the interface is
    their last argument). Faking them also keeps the script away from the host's own networkd
    and DHCP clients. ``sleep`` runs on the sandbox clock: N seconds take N * ``sleep_scale``
    real seconds.
    """

    def __init__(self, root: Path, *, sleep_scale: float = 1.0) -> None:
        self.root = root
        self.leases = root / "leases"
        self.leases.mkdir(parents=True, exist_ok=True)
        self.network_files = root / "network"  # one file per MAC a boot-time .network matches
        self.network_files.mkdir(parents=True, exist_ok=True)
        self._sleep_scale = sleep_scale
        self._lock = threading.Lock()
        self._bins: dict[Image, Path] = {}
        self._lease_tool = self._write(root / "libexec" / "dhcp-lease", _lease_text(self.leases))

    def path(self, image: Image | DhcpClient) -> str:
        """The PATH of a guest built from ``image`` ("none": no way to get an address)."""
        image = Image.of(image)
        with self._lock:
            if image not in self._bins:
                self._bins[image] = self._make_bin(image)
            return str(self._bins[image])

    def lease(self, mac: str, address: str) -> None:
        """The VPC's DHCP offers ``address`` ("10.0.1.5/24") to ``mac`` from now on."""
        self._put(self.leases / mac.lower(), f"{address}\n")

    def match(self, mac: str) -> None:
        """A .network file written at boot matches ``mac`` (netplan's, for the boot NIC): an
        image whose networkd is "boot" manages that link."""
        self._put(self.network_files / mac.lower(), "[Match]\n")

    def script(self, text: str) -> Path:
        """The script as the agent leaves it on disk: an executable ``_script.sh``."""
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._write(self.root / "scripts" / digest / "_script.sh", text)

    def _make_bin(self, image: Image) -> Path:
        bin_dir = self.root / f"bin-{image.label}"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in GUEST_TOOLS:
            found = shutil.which(tool)
            if found and not (bin_dir / tool).exists():
                (bin_dir / tool).symlink_to(found)
        sleep = shutil.which("sleep") or "/bin/sleep"
        self._write(bin_dir / "sleep", _sleep_text(sleep, self._sleep_scale))
        if image.networkd != "absent":
            networkctl = _networkctl_text(self._lease_tool, image.networkd, self.network_files)
            self._write(bin_dir / "networkctl", networkctl)
        for client in image.dhcp_clients:
            self._write(bin_dir / client, _dhcp_client_text(client, self._lease_tool))
        return bin_dir

    @staticmethod
    def _put(target: Path, text: str) -> None:
        staging = target.with_name(f".{target.name}.{threading.get_ident()}")
        staging.write_text(text)
        staging.replace(target)  # readers never see half a file

    @staticmethod
    def _write(path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            staging = path.with_name(f".{path.name}.{threading.get_ident()}")
            staging.write_text(text)
            staging.chmod(0o700)
            staging.replace(path)
        return path


def _lease_text(leases: Path) -> str:
    ip = shlex.quote(_ip_path())
    return f"""#!/bin/sh
# The VPC's DHCP answering for one interface: the address leased to its MAC, or no offer.
dev=${{1:-}}
[ -n "$dev" ] && [ -r "/sys/class/net/$dev/address" ] || exit 1
lease={shlex.quote(str(leases))}/$(cat "/sys/class/net/$dev/address")
[ -r "$lease" ] || exit 2
{ip} link set dev "$dev" up && {ip} addr replace "$(cat "$lease")" dev "$dev"
"""


def _networkctl_text(lease_tool: Path, networkd: Networkd, network_files: Path) -> str:
    """systemd-networkd's client. Which links networkd manages: every one ("hotplug"), or those a
    boot-time .network file matches by MAC ("boot"). ``status <link>`` prints the fields
    networkctl(1) prints, among them "State: <operational> (<setup>)"."""
    ip = shlex.quote(_ip_path())
    lease = shlex.quote(str(lease_tool))
    if networkd == "hotplug":
        managed = "true"
        network_file = "/run/systemd/network/70-$dev.network"
    else:
        managed = f'[ -e {shlex.quote(str(network_files))}/"$(cat "/sys/class/net/$dev/address")" ]'
        network_file = "/run/systemd/network/10-netplan-$dev.network"
    return f"""#!/bin/sh
# systemd-networkd's client as the sandbox's guest answers it (links it manages: {networkd}).
managed() {{ {managed}; }}
exists() {{ [ -n "$dev" ] && [ -r "/sys/class/net/$dev/address" ]; }}
operational() {{
  if [ $(( $(cat "/sys/class/net/$dev/flags") & 1 )) -eq 0 ]; then echo off
  elif [ "$(cat "/sys/class/net/$dev/carrier" 2>/dev/null)" != 1 ]; then echo no-carrier
  elif [ -n "$({ip} -o -4 addr show dev "$dev" scope global 2>/dev/null)" ]; then echo routable
  elif [ -n "$({ip} -o addr show dev "$dev" 2>/dev/null)" ]; then echo degraded
  else echo carrier
  fi
}}
verb=${{1:-list}}
[ $# -gt 0 ] && shift
[ "${{1:-}}" = "--" ] && shift
case "$verb" in
  status)
    [ $# -eq 0 ] && {{ echo "           State: routable"; exit 0; }}
    for dev; do
      exists || {{ echo "Interface \\"$dev\\" not found." >&2; exit 1; }}
      if managed; then setup=configured; file="{network_file}"; else setup=unmanaged; file=n/a; fi
      printf '\\342\\227\\217 %s: %s\\n' "$(cat "/sys/class/net/$dev/ifindex")" "$dev"
      printf '%30s %s\\n' "Link File:" /usr/lib/systemd/network/99-default.link \\
        "Network File:" "$file" "State:" "$(operational) ($setup)" "Online state:" unknown \\
        "Type:" ether "Hardware Address:" "$(cat "/sys/class/net/$dev/address")"
    done ;;
  reconfigure)
    for dev; do
      exists || {{ echo "Failed to resolve interface \\"$dev\\": No such device" >&2; exit 1; }}
      # a link no .network file matches is left alone, and networkctl still succeeds
      if managed; then {lease} "$dev" || :; fi
    done ;;
  *) echo "networkctl: '$verb' is not modelled" >&2; exit 1 ;;
esac
"""


def _dhcp_client_text(client: DhcpProgram, lease_tool: Path) -> str:
    return f"""#!/bin/sh
# {client} as a guest image runs it: the interface is the last argument.
dev=""
for arg; do dev=$arg; done
exec {shlex.quote(str(lease_tool))} "$dev"
"""


def _sleep_text(sleep: str, scale: float) -> str:
    return f"""#!/bin/sh
# The guest's clock is the sandbox's: N seconds take N * {scale} real seconds.
exec {shlex.quote(sleep)} "$(awk -v s="${{1:-0}}" 'BEGIN {{ print s * {scale!r} }}')"
"""


# -- namespaces -----------------------------------------------------------------------------------


class Fabric:
    """The network namespaces of one owner (a sandbox, a test), uniquely named, all deleted by
    ``close``. Every guest NIC is one end of a veth pair whose other end lives, up, in the
    fabric's own namespace (the VPC side), so the guest's link has a carrier as an ENI's does.
    Thread-safe: concurrent launches create namespaces at once.
    """

    def __init__(self, owner: str = "sb") -> None:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        _sweep_dead_owners()
        self.prefix = f"{PREFIX}-{os.getpid()}-{_label(owner)}{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._names: list[str] = []
        self.vpc = self._add(f"{self.prefix}-vpc")

    def __enter__(self) -> Fabric:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespace(self, label: str) -> Namespace:
        """A new, empty namespace (only ``lo``, down): a guest before its NICs appear."""
        return Namespace(self, self._add(f"{self.prefix}-{_label(label)}{next(self._ids)}"))

    def peer_name(self) -> str:
        return f"p{next(self._ids)}"

    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def close(self) -> None:
        """Delete every namespace made here (their veth pairs go with them); idempotent."""
        with self._lock:
            names, self._names = self._names, []
        for name in reversed(names):
            _ip("netns", "delete", name, check=False)

    def delete(self, namespace: Namespace) -> None:
        with self._lock:
            if namespace.name in self._names:
                self._names.remove(namespace.name)
        _ip("netns", "delete", namespace.name, check=False)

    def _add(self, name: str) -> str:
        _ip("netns", "add", name)
        with self._lock:
            self._names.append(name)
        return name


class Namespace:
    """One guest's network stack."""

    def __init__(self, fabric: Fabric, name: str) -> None:
        self.fabric = fabric
        self.name = name

    def add(self, *links: Link) -> None:
        """Hot-plug NICs: each appears with its MAC and altnames, addressed and up as asked.
        Two ip processes whatever the number of NICs (the VPC side, then the guest side)."""
        plugs: list[list[str]] = []
        configure: list[list[str]] = []
        for link in links:
            peer = self.fabric.peer_name()
            guest_end = ["name", link.name, "address", link.mac, "netns", self.name]
            plugs += [
                ["link", "add", peer, "type", "veth", "peer", *guest_end],
                ["link", "set", "dev", peer, "up"],
            ]
            configure += _configuration(link)
        _ip_commands(self.fabric.vpc, plugs)
        _ip_commands(self.name, configure)

    def remove(self, name: str) -> None:
        """Unplug a NIC (its veth peer goes too)."""
        _ip("-n", self.name, "link", "delete", "dev", name)

    def run_script(
        self,
        script: Path,
        env: Mapping[str, str],
        *,
        path: str,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> ScriptRun:
        """Run ``script`` as the SSM agent does: ``sh -c <file>``, so its #! line picks the
        shell, with only ``env`` and ``path`` in its environment."""
        sh = shutil.which("sh") or "/bin/sh"
        return self.run([sh, "-c", str(script)], env, path=path, cwd=cwd, timeout=timeout)

    def run(
        self,
        argv: list[str],
        env: Mapping[str, str],
        *,
        path: str,
        cwd: Path | None = None,
        timeout: float = 60.0,
    ) -> ScriptRun:
        """Run ``argv`` inside this namespace (its own /sys too) with exactly this environment."""
        variables = [f"{key}={value}" for key, value in {"PATH": path, **env}.items()]
        env_tool = shutil.which("env") or "/usr/bin/env"
        command = [_ip_path(), "netns", "exec", self.name, env_tool, "-i", *variables, *argv]
        try:
            done = subprocess.run(
                command, capture_output=True, cwd=cwd, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as expired:
            return ScriptRun(124, _text(expired.stdout), f"timed out after {timeout:.0f} s\n")
        return ScriptRun(done.returncode, _text(done.stdout), _text(done.stderr))

    def ip(self, *args: str) -> str:
        """``ip <args>`` in this namespace: its output."""
        return _ip("-n", self.name, *args)


@dataclass
class _Mirrored:
    namespace: Namespace
    boot: int
    present: dict[str, str]  # NIC name -> key of the NIC it was created for


class Mirror:
    """One namespace per guest that follows the NICs the guest should show.

    ``sync`` creates NICs that appeared with the state asked for, removes those that went, and
    leaves the others alone: what a script changed in the kernel (link up, an address) stays, as
    on a real guest. A NIC whose key (attachment) changed is plugged anew; a new boot starts the
    namespace afresh. Calls for one guest must not overlap; different guests may.
    """

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self._lock = threading.Lock()
        self._guests: dict[str, _Mirrored] = {}

    def sync(self, guest_id: str, boot: int, links: Mapping[str, Link]) -> Namespace:
        """Make ``guest_id``'s namespace show ``links`` (key -> NIC); return the namespace."""
        mirrored = self._mirrored(guest_id, boot)
        wanted = {link.name: (key, link) for key, link in links.items()}
        for name, key in list(mirrored.present.items()):
            if wanted.get(name, ("", None))[0] != key:
                mirrored.namespace.remove(name)
                del mirrored.present[name]
        new = [(key, link) for name, (key, link) in wanted.items() if name not in mirrored.present]
        mirrored.namespace.add(*(link for _, link in new))
        mirrored.present.update({link.name: key for key, link in new})
        return mirrored.namespace

    def namespace(self, guest_id: str) -> Namespace | None:
        with self._lock:
            mirrored = self._guests.get(guest_id)
        return mirrored.namespace if mirrored else None

    def _mirrored(self, guest_id: str, boot: int) -> _Mirrored:
        with self._lock:
            mirrored = self._guests.get(guest_id)
        if mirrored is not None and mirrored.boot == boot:
            return mirrored
        if mirrored is not None:  # rebooted: the OS sets its NICs up from scratch
            self.fabric.delete(mirrored.namespace)
        mirrored = _Mirrored(self.fabric.namespace(guest_id), boot, {})
        with self._lock:
            self._guests[guest_id] = mirrored
        return mirrored


# -- ip ------------------------------------------------------------------------------------------


def _configuration(link: Link) -> list[list[str]]:
    """The guest-side ip commands that give a plugged NIC its altnames, addresses and state."""
    commands: list[list[str]] = []
    if link.altnames:
        alt = [token for name in link.altnames for token in ("altname", name)]
        commands.append(["link", "property", "add", "dev", link.name, *alt])
    commands += [["addr", "add", address, "dev", link.name] for address in link.addresses]
    if link.up:
        commands.append(["link", "set", "dev", link.name, "up"])
    return commands


@functools.cache
def _ip_path() -> str:
    """ip by its absolute path: given a bare name, subprocess looks it up in a way that resets
    every warnings registry (os.get_exec_path), and from threads not even safely."""
    return shutil.which("ip") or "ip"


def _ip(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(
        [_ip_path(), *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if check and done.returncode != 0:
        raise NetnsError(f"ip {shlex.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _ip_commands(namespace: str, commands: Iterable[list[str]]) -> None:
    """Run ip commands in ``namespace``: one batch process when every token is plain (fast),
    one process per command otherwise (a hostile name reaches ip byte for byte)."""
    commands = list(commands)
    if not commands:
        return
    if all(_PLAIN.match(token) for command in commands for token in command):
        _ip("-n", namespace, "-batch", "-", stdin="".join(" ".join(c) + "\n" for c in commands))
        return
    for command in commands:
        _ip("-n", namespace, *command)


def _text(raw: bytes | str | None) -> str:
    """Output as SSM returns it: text, with bytes that are not UTF-8 replaced."""
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")


def _label(text: str) -> str:
    return _LABEL.sub("", text)[:24]


def _sweep_dead_owners() -> None:
    """Delete namespaces left by enipin processes that died before closing them."""
    for line in _ip("netns", "list", check=False).splitlines():
        name = line.split(" ", 1)[0]
        owner = _OWNED.match(name)
        if owner and not alive(int(owner.group(1))):
            _ip("netns", "delete", name, check=False)


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scratch_dir(prefix: str = "enipin-guest-") -> Path:
    """A private directory for a Toolbox (removed by its owner)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
