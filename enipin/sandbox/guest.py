"""The guest OS of each sandbox instance as its network stack sees it, derived from live EC2 state.

A guest shows every ENI attached to its instance as a NIC named the way its OS flavour names it,
with the faults real images show (hot-plugged NIC left down or unaddressed, NIC never appearing,
SSM agent never starting), and runs the ENI verification script of the stack's SSM document.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast, get_args
from unittest import mock

from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.instances import Instance

from enipin.sandbox.base import ACCOUNT_ID, REGION
from enipin.sandbox.clock import Clock

Flavour = Literal["al2", "al2023", "ubuntu"]
FLAVOURS: frozenset[str] = frozenset(get_args(Flavour))
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
    ) -> None:
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
        return self._ec2().get_instance_by_id(instance_id)

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
        self, instance_id: str, mac: str, expected_ip: str, remediate: bool | str
    ) -> tuple[int, str, str]:
        """Run the stack's verification script on the guest: (exit status, stdout, stderr)."""
        error = _parameter_error(mac, expected_ip, remediate)
        if error:
            return 2, "", f"error: {error}\n"
        wanted = mac.lower()
        remediated: list[str] = []
        with self.guest(instance_id).script:  # the script runs as one unit on its guest
            nic = self._find(instance_id, wanted)
            if nic and _truthy(remediate) and not nic.up:
                nic = self._remediate(instance_id, nic, "link_up", remediated)
            if nic and _truthy(remediate) and nic.up and expected_ip not in nic.ipv4:
                nic = self._remediate(instance_id, nic, "dhcp", remediated)
        return 0, json.dumps(_report(wanted, nic, expected_ip, remediated)) + "\n", ""

    # -- moto hooks ----------------------------------------------------------------------------

    def install(self, stack: ExitStack) -> None:
        """Note boots and attachments from now on; idempotent while ``stack`` is open."""
        with self._lock:
            if self._installed:
                return
            self._installed = True
            self._installed_at = self.clock.monotonic()
        stack.callback(self._uninstall)
        fleet = self
        original_init = Instance.__init__
        original_start = Instance.start
        original_attach = Instance.attach_eni

        def init(instance: Instance, *args: Any, **kwargs: Any) -> None:
            original_init(instance, *args, **kwargs)
            fleet._booted(instance.id)  # moto creates instances already running

        def start(instance: Instance) -> Any:
            previous = original_start(instance)
            if previous.name != "running":
                fleet._booted(instance.id)
            return previous

        def attach_eni(instance: Instance, eni: Any, device_index: int) -> str:
            attachment_id = original_attach(instance, eni, device_index)
            with fleet._lock:
                fleet._attached_at[attachment_id] = fleet.clock.monotonic()
            return attachment_id

        stack.enter_context(mock.patch.object(Instance, "__init__", init))
        stack.enter_context(mock.patch.object(Instance, "start", start))
        stack.enter_context(mock.patch.object(Instance, "attach_eni", attach_eni))
        for instance in self._ec2().all_running_instances():  # launched before install
            self._booted(instance.id)

    def _uninstall(self) -> None:
        with self._lock:
            self._installed = False

    def _booted(self, instance_id: str) -> None:
        with self._lock:
            guest = self.guest(instance_id)
            guest.boots += 1
            guest.booted_at = self.clock.monotonic()
            boot, listeners = guest.boots, list(self._listeners)
        for listener in listeners:  # outside the lock: listeners take their own locks
            listener(instance_id, boot)

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
        )

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
