"""The guest OS of each sandbox instance as its network stack sees it, derived from live EC2 state.

A guest shows every ENI attached to its instance as a NIC named the way its OS flavour names it,
with the faults real images show (hot-plugged NIC left down or unaddressed, NIC never appearing,
SSM agent never starting), and runs the ENI verification script of the stack's SSM document.

Two modes: ``netns`` runs the document's own script inside a real Linux network namespace per
instance whose veth NICs mirror the instance's EC2 attachments (needs root and iproute2);
``model`` imitates the script in Python. ``auto`` picks netns where the machine allows it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast, get_args
from unittest import mock

from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.instances import Instance

from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.clock import Clock
from enipin_lab.sandbox.netns import (
    Fabric,
    Image,
    Link,
    Mirror,
    Namespace,
    NetnsUnavailable,
    Toolbox,
    scratch_dir,
    unavailable_reason,
)

Flavour = Literal["al2", "al2023", "ubuntu"]
FLAVOURS: frozenset[str] = frozenset(get_args(Flavour))
GuestMode = Literal["auto", "netns", "model"]
MODES: frozenset[str] = frozenset(get_args(GuestMode))
PLUG_WORKERS = 4  # namespaces set up at once (the kernel serialises much of it anyway)
# How each image gets a NIC its address (what the verification script finds on its PATH):
# - Amazon Linux 2 runs dhclient, no networkd.
# - AL2023 runs systemd-networkd, and amazon-ec2-net-utils' udev rules write a .network file for
#   every hot-plugged ENI: networkd manages it; no dhclient on the image.
# - Ubuntu 22.04 (the "ubuntu" flavour; DescribeInstanceInformation says 22.04) runs networkd
#   under netplan, whose cloud-init config matches only the boot NIC: a hot-plugged ENI is
#   "unmanaged" (networkctl reconfigure does nothing) unless hotplug is enabled. The image
#   ships isc-dhcp-client (dhclient). 24.04 ships dhcpcd-base instead; the namespace tests run
#   the script against that image too (UBUNTU_2404).
IMAGES: dict[Flavour, Image] = {
    "al2": Image(dhcp_clients=("dhclient",)),
    "al2023": Image(networkd="hotplug"),
    "ubuntu": Image(networkd="boot", dhcp_clients=("dhclient",)),
}
UBUNTU_2404 = Image(networkd="boot", dhcp_clients=("dhcpcd",))
# The verification document's parameters, as the script reads them (SSM_<name>).
PARAMETERS = ("MacAddress", "ExpectedIp", "Remediate")
# AWS's fallback for agents older than 3.3.2746.0 (no SSM_<name> variables), as the agent leaves
# it on disk with {{name}} already replaced by the value; the model honours exactly this form.
# https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-troubleshooting.html
FALLBACK = re.compile(
    r'^[ \t]*if \[ -z "\$\{SSM_(?P<name>[A-Za-z0-9]+)\+x\}" \]; then '
    r'export SSM_(?P=name)="(?P<value>[^"\n]*)"; fi[ \t]*$',
    re.MULTILINE,
)
# nic_down: link stays DOWN until remediated; no_address: no IPv4 until remediation's DHCP;
# nic_absent: the NIC never shows up in the OS; agent_absent: the SSM agent never registers.
FAULTS = frozenset({"nic_down", "no_address", "nic_absent", "agent_absent"})

# The same constraints the stack's SSM document declares; the script re-checks them itself.
MAC_PATTERN = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
IPV4_PATTERN = re.compile(
    r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
)

BootListener = Callable[[str, int], None]


@dataclass(frozen=True)
class Nic:
    """One network interface as `ip addr` on the guest would show it."""

    mac: str
    name: str
    altnames: tuple[str, ...]
    up: bool
    ipv4: tuple[str, ...]
    eni_id: str
    device_index: int
    attachment_id: str
    # What the VPC's DHCP hands this MAC, whether or not the guest holds it yet.
    private_ip: str = ""
    prefix_len: int = 24

    def link(self) -> Link:
        """This NIC as a namespace shows it."""
        addresses = tuple(f"{ip}/{self.prefix_len}" for ip in self.ipv4)
        return Link(self.name, self.mac, self.altnames, self.up, addresses)


@dataclass
class Guest:
    """Per-instance OS state the EC2 API does not hold: flavour, faults, boots, remediations."""

    instance_id: str
    flavour: Flavour
    faults: frozenset[str]
    boots: int = 0
    booted_at: float | None = None
    # attachment id -> remediations applied to that NIC ("link_up", "dhcp")
    remediated: dict[str, frozenset[str]] = field(default_factory=dict)
    # One verification script at a time per guest; never taken by moto hooks.
    script: threading.Lock = field(default_factory=threading.Lock, repr=False)


class GuestFleet:
    """Thread-safe set of guests, one per instance id, created on demand.

    ``install`` hooks moto's Instance model to note, in AWS seconds on ``clock``, when each
    instance boots and when each ENI is attached; everything else is read from moto each time.
    Faults touch hot-plugged NICs only (device index >= 1): the primary NIC carries the agent.
    The fleet lock is only held for its own dicts, never while reading moto, because other
    adaptations call the hooks below while holding their own locks.

    ``mode`` (auto, netns, model) is resolved here: ``self.mode`` is what runs, and
    ``mode_reason`` says why netns was not used when auto fell back to the model.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        flavour: Flavour = "al2023",
        nic_delay: float = 1.0,
        faults: Iterable[str] = (),
        account_id: str = ACCOUNT_ID,
        region: str = REGION,
        mode: str = "model",
    ) -> None:
        self.mode, self.mode_reason = _resolved_mode(mode)
        self.clock = clock
        self.nic_delay = nic_delay
        self.account_id = account_id
        self.region = region
        self._default_flavour: Flavour = _checked_flavour(flavour)
        self._default_faults = _checked_faults(faults)
        self._lock = threading.RLock()
        self._guests: dict[str, Guest] = {}
        self._attached_at: dict[str, float] = {}
        self._listeners: list[BootListener] = []
        self._installed = False
        self._installed_at = 0.0
        self._fabric: Fabric | None = None
        self._mirror: Mirror | None = None
        self._toolbox: Toolbox | None = None
        self._workers: ThreadPoolExecutor | None = None

    # -- configuration -------------------------------------------------------------------------

    def set_default_flavour(self, flavour: Flavour) -> None:
        """Flavour of guests created from now on."""
        with self._lock:
            self._default_flavour = _checked_flavour(flavour)

    def set_default_faults(self, faults: Iterable[str]) -> None:
        """Faults of guests created from now on (instances launched after this call)."""
        with self._lock:
            self._default_faults = _checked_faults(faults)

    def set_flavour(self, instance_id: str, flavour: Flavour) -> None:
        with self._lock:
            self.guest(instance_id).flavour = _checked_flavour(flavour)

    def set_faults(self, instance_id: str, faults: Iterable[str]) -> None:
        """Replace one instance's faults (an empty iterable heals it)."""
        with self._lock:
            self.guest(instance_id).faults = _checked_faults(faults)

    def heal(self, fault: str) -> list[str]:
        """Take ``fault`` from every instance that has it (an operator's repair); the ids."""
        _checked_faults({fault})
        with self._lock:
            healed = sorted(i for i, g in self._guests.items() if fault in g.faults)
            for instance_id in healed:
                self._guests[instance_id].faults = self._guests[instance_id].faults - {fault}
        return healed

    def on_boot(self, listener: BootListener) -> None:
        """Call ``listener(instance_id, boot_number)`` whenever an instance starts running."""
        with self._lock:
            self._listeners.append(listener)

    # -- live view -----------------------------------------------------------------------------

    def guest(self, instance_id: str) -> Guest:
        with self._lock:
            guest = self._guests.get(instance_id)
            if guest is None:
                guest = Guest(instance_id, self._default_flavour, self._default_faults)
                self._guests[instance_id] = guest
            return guest

    def boot_number(self, instance_id: str) -> int:
        with self._lock:
            return self.guest(instance_id).boots

    def instance(self, instance_id: str) -> Instance | None:
        # What moto's get_instance_by_id answers, without its copy of every reservation per
        # lookup (quadratic once a few hundred instances ask after themselves).
        for reservation in list(self._ec2().reservations.values()):
            for instance in reservation.instances:
                if instance.id == instance_id:
                    return instance
        return None

    def is_running(self, instance_id: str) -> bool:
        instance = self.instance(instance_id)
        return instance is not None and instance.state == "running"

    def has_fault(self, instance_id: str, fault: str) -> bool:
        with self._lock:
            return fault in self.guest(instance_id).faults

    def nics(self, instance_id: str) -> list[Nic]:
        """The NICs the guest OS shows right now (none while the instance is not running)."""
        if not self.is_running(instance_id):
            return []
        now = self.clock.monotonic()
        with self._lock:  # a copy: moto, and its adaptations' locks, are read without ours
            live = self.guest(instance_id)
            guest = replace(live, remediated=dict(live.remediated))
        views = (self._nic_view(guest, eni, now) for eni in list(self._ec2().enis.values()))
        return sorted((nic for nic in views if nic), key=lambda nic: nic.device_index)

    def run_verification(
        self,
        instance_id: str,
        mac: str,
        expected_ip: str,
        remediate: bool | str,
        script: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, str, str]:
        """Run the stack's verification script on the guest: (exit status, stdout, stderr).

        ``script`` and ``env`` are what the SSM agent hands the shell: the command text with
        its parameter references replaced, and the ``SSM_<name>`` variables (an agent older
        than 3.3.2746.0 sets none). Without ``env`` the parameters arrive as variables, as a
        current agent delivers them. In netns mode ``script`` runs for real in the instance's
        namespace; without it, or in model mode, the model imitates it, reading the parameters
        where the script does: the variables, else its documented fallback lines.
        """
        if env is None:
            env = _new_agent_env(mac, expected_ip, remediate)
        if self.mode == "netns" and script is not None:
            return self._run_in_namespace(instance_id, script, env)
        mac, expected_ip, remediate = _script_inputs(env, script)
        error = _parameter_error(mac, expected_ip, remediate)
        if error:
            return 2, "", f"error: {error}\n"
        wanted = mac.lower()
        remediated: list[str] = []
        with self.guest(instance_id).script:  # the script runs as one unit on its guest
            nic = self._find(instance_id, wanted)
            if nic and _truthy(remediate) and not nic.up:
                nic = self._remediate(instance_id, nic, "link_up", remediated)
            if (
                nic
                and _truthy(remediate)
                and nic.up
                and expected_ip not in nic.ipv4
                and self._can_request_address(instance_id, nic)
            ):
                nic = self._remediate(instance_id, nic, "dhcp", remediated)
        return 0, json.dumps(_report(wanted, nic, expected_ip, remediated)) + "\n", ""

    def namespace(self, instance_id: str) -> Namespace | None:
        """The instance's network namespace (netns mode, once its NICs were plugged)."""
        return self._mirror.namespace(instance_id) if self._mirror else None

    def namespaces(self) -> list[str]:
        """Every network namespace this fleet has made and not deleted yet (netns mode)."""
        return self._fabric.names() if self._fabric else []

    # -- moto hooks ----------------------------------------------------------------------------

    def install(self, stack: ExitStack) -> None:
        """Note boots and attachments from now on; idempotent while ``stack`` is open."""
        with self._lock:
            if self._installed:
                return
            self._installed = True
            self._installed_at = self.clock.monotonic()
        stack.callback(self._uninstall)
        if self.mode == "netns":
            self._open_namespaces(stack)
        fleet = self
        original_init = Instance.__init__
        original_start = Instance.start
        original_attach = Instance.attach_eni

        def init(instance: Instance, *args: Any, **kwargs: Any) -> None:
            original_init(instance, *args, **kwargs)
            # The OS boots once EC2 runs the instance: now, or when a pending launch starts
            if instance.state == "running":
                fleet._booted(instance.id)

        def start(instance: Instance) -> Any:
            previous = original_start(instance)
            if previous.name != "running":
                fleet._booted(instance.id)
            return previous

        def attach_eni(instance: Instance, eni: Any, device_index: int) -> str:
            attachment_id = original_attach(instance, eni, device_index)
            with fleet._lock:
                fleet._attached_at[attachment_id] = fleet.clock.monotonic()
            fleet._plug_soon(instance.id, attachment_id)
            return attachment_id

        stack.enter_context(mock.patch.object(Instance, "__init__", init))
        stack.enter_context(mock.patch.object(Instance, "start", start))
        stack.enter_context(mock.patch.object(Instance, "attach_eni", attach_eni))
        for instance in self._ec2().all_running_instances():  # launched before install
            self._booted(instance.id)

    def _uninstall(self) -> None:
        with self._lock:
            self._installed = False

    def _open_namespaces(self, stack: ExitStack) -> None:
        """The fabric of namespaces, the guests' tools and the workers that plug NICs, all gone
        when ``stack`` closes (workers first, then namespaces, then files)."""
        root = scratch_dir()
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        self._fabric = fabric = Fabric()
        stack.callback(fabric.close)
        # The guest's clock is the sandbox's: the script's own sleeps are scaled like AWS waits.
        self._toolbox = Toolbox(root, sleep_scale=self.clock.scale)
        self._mirror = Mirror(fabric)
        self._workers = ThreadPoolExecutor(PLUG_WORKERS, thread_name_prefix="guest-hotplug")
        stack.callback(self._workers.shutdown, wait=True, cancel_futures=True)

    def _booted(self, instance_id: str) -> None:
        with self._lock:
            guest = self.guest(instance_id)
            guest.boots += 1
            guest.booted_at = self.clock.monotonic()
            boot, listeners = guest.boots, list(self._listeners)
        for listener in listeners:  # outside the lock: listeners take their own locks
            listener(instance_id, boot)
        self._plug_soon(instance_id, None)

    # -- internals -----------------------------------------------------------------------------

    def _ec2(self) -> EC2Backend:
        return ec2_backends[self.account_id][self.region]

    def _nic_view(self, guest: Guest, eni: Any, now: float) -> Nic | None:
        try:
            attachment = eni.attachment
        except AssertionError:  # detached between moto's two field writes
            return None
        if (
            attachment is None
            or attachment.instance_id != guest.instance_id
            or attachment.status != "attached"
        ):
            return None
        index = int(attachment.device_index)
        hot_plugged = index >= 1
        faults = guest.faults if hot_plugged else frozenset()
        with self._lock:
            appears_at = self._attached_at.get(attachment.attachment_id, self._installed_at)
        if "nic_absent" in faults or now < appears_at + self.nic_delay:
            return None
        done = guest.remediated.get(attachment.attachment_id, frozenset())
        unconfigured = hot_plugged and guest.flavour == "ubuntu"  # cloud-init without hotplug
        up = "link_up" in done or not (unconfigured or "nic_down" in faults)
        addressed = "dhcp" in done or not (unconfigured or "no_address" in faults)
        ip = eni.private_ip_address
        name, altnames = _names(guest.flavour, index, eni.id)
        return Nic(
            mac=str(eni.mac_address).lower(),
            name=name,
            altnames=altnames,
            up=up,
            ipv4=(ip,) if addressed and ip else (),
            eni_id=eni.id,
            device_index=index,
            attachment_id=attachment.attachment_id,
            private_ip=ip or "",
            prefix_len=_prefix_len(eni),
        )

    def _run_in_namespace(
        self, instance_id: str, script: str, env: Mapping[str, str]
    ) -> tuple[int, str, str]:
        guest = self.guest(instance_id)
        with guest.script:  # the script runs as one unit on its guest
            namespace, nics = self._sync_namespace(instance_id)
            toolbox = self._netns_toolbox()
            with self._lock:
                image = IMAGES[guest.flavour]
            file = toolbox.script(script)
            run = namespace.run_script(file, env, path=toolbox.path(image), cwd=file.parent)
            self._note_remediations(instance_id, nics, run.stdout)
        return run.code, run.stdout, run.stderr

    def _sync_namespace(self, instance_id: str) -> tuple[Namespace, list[Nic]]:
        """Make the instance's namespace show the NICs its guest shows now; hold its script lock."""
        if self._mirror is None:
            raise RuntimeError("netns guests exist only while installed")
        toolbox = self._netns_toolbox()
        nics = self.nics(instance_id)
        for nic in nics:  # the VPC's DHCP knows every attached ENI's address
            if nic.private_ip:
                toolbox.lease(nic.mac, f"{nic.private_ip}/{nic.prefix_len}")
            if nic.device_index == 0:  # the boot NIC: the image's own .network matches it
                toolbox.match(nic.mac)
        links = {nic.attachment_id: nic.link() for nic in nics}
        return self._mirror.sync(instance_id, self.boot_number(instance_id), links), nics

    def _netns_toolbox(self) -> Toolbox:
        if self._toolbox is None:
            raise RuntimeError("netns guests exist only while installed")
        return self._toolbox

    def _plug_soon(self, instance_id: str, attachment_id: str | None, tries: int = 5) -> None:
        """netns: bring the namespace up to date soon after a boot or an attach, off the clock's
        thread, as the OS handles a hot-plug on its own; a verification then finds it ready
        (and still syncs first). An attachment still ``attaching`` is looked for again."""
        workers = self._workers
        if workers is None:
            return

        def submit() -> None:
            with suppress(RuntimeError):  # shut down: the sandbox is closing
                workers.submit(self._plug, instance_id, attachment_id, tries)

        self.clock.call_later(self.nic_delay, submit)

    def _plug(self, instance_id: str, attachment_id: str | None, tries: int) -> None:
        try:
            with self.guest(instance_id).script:
                _, nics = self._sync_namespace(instance_id)
        except Exception:  # nobody waits on this: the next verification syncs and fails loudly
            logging.getLogger(__name__).exception("netns: could not plug %s's NICs", instance_id)
            return
        seen = {nic.attachment_id for nic in nics}
        if attachment_id and attachment_id not in seen and tries > 1:
            self._plug_soon(instance_id, attachment_id, tries - 1)

    def _note_remediations(self, instance_id: str, nics: list[Nic], stdout: str) -> None:
        """What the script fixed in the kernel, kept in the model too (a rebuilt namespace, after
        a reboot, starts from the model's view)."""
        try:
            report = json.loads(stdout)
        except ValueError:
            return
        if not isinstance(report, dict) or not report.get("remediated"):
            return
        nic = next((n for n in nics if n.mac == str(report.get("mac", "")).lower()), None)
        if nic is None:
            return
        with self._lock:
            done = self.guest(instance_id).remediated
            fixed = frozenset(str(action) for action in report["remediated"])
            done[nic.attachment_id] = done.get(nic.attachment_id, frozenset()) | fixed

    def _can_request_address(self, instance_id: str, nic: Nic) -> bool:
        """What the script's request_address achieves on this image: networkd's reconfigure
        where networkd manages the link, else (after its brief wait) a DHCP client."""
        with self._lock:
            image = IMAGES[self.guest(instance_id).flavour]
        managed = image.networkd == "hotplug" or (
            image.networkd == "boot" and nic.device_index == 0
        )
        return managed or bool(image.dhcp_clients)

    def _find(self, instance_id: str, mac: str) -> Nic | None:
        return next((nic for nic in self.nics(instance_id) if nic.mac == mac), None)

    def _remediate(self, instance_id: str, nic: Nic, action: str, log: list[str]) -> Nic | None:
        with self._lock:
            done = self.guest(instance_id).remediated
            done[nic.attachment_id] = done.get(nic.attachment_id, frozenset()) | {action}
        log.append(action)
        return self._find(instance_id, nic.mac)


def _names(flavour: Flavour, index: int, eni_id: str) -> tuple[str, tuple[str, ...]]:
    if flavour == "al2":
        return f"eth{index}", ()
    if flavour == "al2023":  # amazon-ec2-net-utils 2.x adds these altnames through udev
        return f"ens{5 + index}", (eni_id, f"device-number-{index}")
    return f"ens{5 + index}", ()


def _prefix_len(eni: Any) -> int:
    cidr = str(getattr(eni.subnet, "cidr_block", "") or "")
    return int(cidr.split("/")[1]) if "/" in cidr else 24


def _resolved_mode(mode: str) -> tuple[Literal["netns", "model"], str | None]:
    """The mode that runs, and why netns does not when ``auto`` falls back to the model."""
    if mode not in MODES:
        raise ValueError(f"unknown guest mode {mode!r}; expected one of {sorted(MODES)}")
    if mode == "model":
        return "model", None
    reason = unavailable_reason()
    if reason is None:
        return "netns", None
    if mode == "netns":
        raise NetnsUnavailable(f"guest mode netns: {reason}")
    return "model", reason


def _report(mac: str, nic: Nic | None, expected_ip: str, remediated: list[str]) -> dict[str, Any]:
    if nic is None:
        verdict = "NOT_FOUND"
    elif not nic.up:
        verdict = "DOWN"
    elif expected_ip not in nic.ipv4:
        verdict = "NO_ADDRESS"
    else:
        verdict = "VERIFIED"
    return {
        "mac": mac,
        "found": nic is not None,
        "name": nic.name if nic else None,
        "altnames": list(nic.altnames) if nic else [],
        "up": nic.up if nic else False,
        "ipv4": list(nic.ipv4) if nic else [],
        "remediated": remediated,
        "verdict": verdict,
    }


def _new_agent_env(mac: str, expected_ip: str, remediate: bool | str) -> dict[str, str]:
    """The variables an SSM agent 3.3.2746.0 or later sets for the document's parameters."""
    flag = remediate if isinstance(remediate, str) else str(remediate).lower()
    return {"SSM_MacAddress": mac, "SSM_ExpectedIp": expected_ip, "SSM_Remediate": flag}


def _script_inputs(env: Mapping[str, str], script: str | None) -> tuple[str, str, str]:
    """The parameters as the script reads them: its SSM_<name> variables, each unset one taken
    from the script's fallback line if it has one, as bash would (``${SSM_x+x}``)."""
    seen = {name: env[f"SSM_{name}"] for name in PARAMETERS if f"SSM_{name}" in env}
    for line in FALLBACK.finditer(script or ""):
        seen.setdefault(line["name"], line["value"])
    # mac=${SSM_MacAddress:-}, want_ip=${SSM_ExpectedIp:-}, remediate=${SSM_Remediate:-false}
    return (
        seen.get("MacAddress", ""),
        seen.get("ExpectedIp", ""),
        seen.get("Remediate") or "false",
    )


def _parameter_error(mac: str, expected_ip: str, remediate: bool | str) -> str | None:
    if not MAC_PATTERN.match(mac):
        return f"invalid MacAddress {mac!r}"
    if not IPV4_PATTERN.match(expected_ip):
        return f"invalid ExpectedIp {expected_ip!r}"
    if not isinstance(remediate, bool) and remediate not in ("true", "false"):
        return f"invalid Remediate {remediate!r}"
    return None


def _truthy(remediate: bool | str) -> bool:
    return remediate is True or remediate == "true"


def _checked_flavour(flavour: str) -> Flavour:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown OS flavour {flavour!r}; expected one of {sorted(FLAVOURS)}")
    return cast(Flavour, flavour)


def _checked_faults(faults: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(faults)
    unknown = chosen - FAULTS
    if unknown:
        raise ValueError(
            f"unknown guest faults {sorted(unknown)}; expected some of {sorted(FAULTS)}"
        )
    return chosen
