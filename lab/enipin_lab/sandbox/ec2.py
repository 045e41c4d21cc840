"""EC2 fidelity for the sandbox: ENI attachment and release behave as on AWS.

Plain moto attaches any ENI anywhere, at once and without a lock, and never lets
go of an ENI when its instance dies. This adaptation puts back EC2's atomic,
validated, timed attach/detach, the delayed release on termination, the kept
``DeleteOnTermination`` flag, ``DescribeNetworkInterfaces`` paging and the
attachment/MAC filters the workflow relies on, the refusal to delete an ENI in use, and the
eventual consistency of ``DescribeNetworkInterfaces``, which may show an ENI as it was before an
attach for a moment after it (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
"""

from __future__ import annotations

import base64
import binascii
import copy
import fnmatch
import functools
import itertools
import json
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Protocol
from unittest.mock import patch

from moto.core.responses import ActionResult, EmptyResult
from moto.ec2 import utils as ec2_utils
from moto.ec2.exceptions import (
    EC2ClientError,
    InvalidNetworkAttachmentIdError,
    InvalidNextToken,
    InvalidParameterCombination,
    LastEniDetachError,
)
from moto.ec2.models import EC2Backend
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.elastic_network_interfaces import (
    Attachment,
    NetworkInterface,
    NetworkInterfaceBackend,
)
from moto.ec2.models.instances import Instance
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

from enipin_lab.sandbox.clock import Clock

# "You can attach a network interface to an instance when it's running or stopped": one still
# pending, or on its way out, is refused (network-interface-attachments.html).
_ATTACHABLE_STATES = frozenset({"running", "stopped"})
# DescribeNetworkInterfaces MaxResults range (EC2 API reference).
_MIN_RESULTS, _MAX_RESULTS = 5, 1000
_MAC_FILTER = "network-interface.mac-address"


class _Handle(Protocol):
    def cancel(self) -> None: ...


class _BeforeAttach:
    """An ENI as DescribeNetworkInterfaces still shows it just after an attach: free."""

    status = "available"
    attachment = None

    def __init__(self, eni: NetworkInterface) -> None:
        self._eni = eni

    def __getattr__(self, name: str) -> Any:
        return getattr(self._eni, name)


# Filters answered from what an ENI shows, which lags an attach (see ``_BeforeAttach``).
_SHOWN_FILTERS = {
    "status": "available",
    "attachment.instance-id": None,
    "attachment.attachment-id": None,
    "attachment.status": None,
}


def _error(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


def _check_attachable(eni: NetworkInterface, instance: Instance, device_index: int) -> None:
    """AWS's attach preconditions, read from moto's live objects."""
    if instance.state not in _ATTACHABLE_STATES:
        raise _error(
            "IncorrectInstanceState",
            f"The instance '{instance.id}' is not in a valid state for this operation.",
        )
    if eni.attachment_id is not None or eni.instance is not None:
        raise _error("InvalidNetworkInterface.InUse", f"Interface: [{eni.id}] in use.")
    if eni.availability_zone != instance.availability_zone:
        raise InvalidParameterCombination(
            "You may not attach a network interface to an instance if they are not in the "
            "same availability zone"
        )
    if device_index in instance.nics:
        raise _error(
            "InvalidParameterValue",
            f"Instance '{instance.id}' already has an interface attached at device index "
            f"'{device_index}'.",
        )


def _eni_by_attachment(backend: EC2Backend, attachment_id: str) -> NetworkInterface:
    for eni in list(backend.enis.values()):
        if eni.attachment_id == attachment_id:
            return eni
    raise InvalidNetworkAttachmentIdError(attachment_id)


def _is_live(eni: NetworkInterface) -> bool:
    return eni.ec2_backend.enis.get(eni.id) is eni


def _check_page_request(eni_ids: list[str], max_results: int | None) -> None:
    if max_results is None:
        return
    if eni_ids:
        raise InvalidParameterCombination(
            "The parameter NetworkInterfaceIds cannot be used with the parameter maxResults"
        )
    if max_results < _MIN_RESULTS:
        raise _error(
            "InvalidParameterValue",
            f"Value ( {max_results} ) for parameter maxResults is invalid. "
            f"Expecting a value greater than {_MIN_RESULTS}.",
        )
    if max_results > _MAX_RESULTS:
        raise _error(
            "InvalidParameterValue",
            f"Value ( {max_results} ) for parameter maxResults is invalid. "
            f"Expecting a value less than or equal to {_MAX_RESULTS}.",
        )


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def _decode_token(token: str) -> str:
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidNextToken(token) from exc
    if not isinstance(after, str):
        raise InvalidNextToken(token)
    return after


def _page(
    enis: list[NetworkInterface], max_results: int | None, token: str | None
) -> tuple[list[NetworkInterface], str | None]:
    """One page of already-filtered ENIs. Ordered by id, the token names the last
    one returned, so ENIs created or deleted between pages never shift a page."""
    if max_results is None and token is None:
        return enis, None
    ordered = sorted(enis, key=lambda eni: eni.id)
    if token is not None:
        after = _decode_token(token)
        ordered = [eni for eni in ordered if eni.id > after]
    if max_results is None or len(ordered) <= max_results:
        return ordered, None
    page = ordered[:max_results]
    return page, _encode_token(page[-1].id)


def _matches_mac(instance: Instance, patterns: list[str]) -> bool:
    macs = [eni.mac_address for eni in instance.nics.values()]
    return any(fnmatch.fnmatchcase(mac, pattern) for mac in macs for pattern in patterns)


def _own_tags(resource: TaggedEC2Resource) -> list[dict[str, str]]:
    """moto's answer (``describe_tags`` filtered on the id) read straight from the tag map:
    moto scans every tag in the Region for it, for every ENI and instance it describes."""
    resource_id = getattr(resource, "id", None)
    if not resource_id:
        return []
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    tags = resource.ec2_backend.tags.get(resource_id, {})  # type: ignore[attr-defined]
    return [
        {"resource_id": resource_id, "key": k, "value": v, "resource_type": kind}
        for k, v in list(tags.items())
    ]


def _as_bool(value: Any) -> bool:
    return str(value).lower() == "true"


class Ec2Fidelity:
    """ENI attach/detach/release as EC2 does it, on moto's live ENIs and instances.

    ``attach_delay`` is how long (AWS seconds) an attachment stays ``attaching``
    and a detach stays ``detaching``; ``release_delay`` is how long an ENI that
    survives its instance's termination still shows ``in-use`` on the dead
    instance before it becomes ``available``. 0 means instant.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        release_delay: float = 20.0,
        attach_delay: float = 2.0,
        describe_lag: float = 1.0,
    ) -> None:
        self._clock = clock
        self.release_delay = release_delay
        self.attach_delay = attach_delay
        self.describe_lag = describe_lag
        # ENI id -> until when (clock.monotonic()) describes still show it as before its attach
        self._lagging: dict[str, float] = {}
        # One lock for every ENI/instance change: EC2's attach is the only atomic
        # lock the workflow has, so check-and-attach must be indivisible here too.
        self._lock = threading.RLock()
        # Attachment id -> "attaching"/"detaching"; an attachment not listed is "attached".
        self._transitional: dict[str, str] = {}
        # ENIs whose guest holds on to them: a graceful detach stays ``detaching`` until forced.
        self._held: set[str] = set()
        # Pending scheduled events, cancelled when the adaptation is uninstalled.
        self._timers: dict[int, _Handle] = {}
        self._timer_keys = itertools.count()
        # Secondary ENIs still attached when their instance terminated, which EC2 itself then
        # had to release: what the terminate hook is there to prevent.
        self.left_on_termination: list[dict[str, Any]] = []

    def hold_in_guest(self, eni_id: str) -> None:
        """Fault: the guest keeps using ``eni_id``, so only ``Force=True`` detaches it (EC2
        documents forced detach as the last resort for an instance that will not let go)."""
        with self._lock:
            self._held.add(eni_id)

    # -- installation -------------------------------------------------------------

    def install(self, stack: ExitStack) -> None:
        for target, name, new in self._patches():
            stack.enter_context(patch.object(target, name, new))
        stack.callback(self._cancel_timers)

    def _patches(self) -> list[tuple[Any, str, Any]]:
        return [
            (NetworkInterfaceBackend, "attach_network_interface", self._backend_attach()),
            (NetworkInterfaceBackend, "detach_network_interface", self._backend_detach()),
            (NetworkInterface, "attachment", property(self._attachment_of)),
            (
                NetworkInterface,
                "get_filter_value",
                self._eni_filter(NetworkInterface.get_filter_value),
            ),
            (TaggedEC2Resource, "get_tags", _own_tags),
            (Instance, "terminate", self._instance_terminate(Instance.terminate)),
            (Instance, "prep_nics", self._instance_prep_nics(Instance.prep_nics)),
            (ec2_utils, "passes_filter_dict", self._instance_filter(ec2_utils.passes_filter_dict)),
            (ElasticNetworkInterfaces, "describe_network_interfaces", self._describe_response()),
            (ElasticNetworkInterfaces, "detach_network_interface", self._detach_response()),
            (
                ElasticNetworkInterfaces,
                "delete_network_interface",
                self._delete_response(ElasticNetworkInterfaces.delete_network_interface),
            ),
            (
                ElasticNetworkInterfaces,
                "modify_network_interface_attribute",
                self._modify_response(ElasticNetworkInterfaces.modify_network_interface_attribute),
            ),
        ]

    def _backend_attach(self) -> Callable[..., Attachment]:
        def attach_network_interface(
            backend: EC2Backend, eni_id: str, instance_id: str, device_index: int
        ) -> Attachment:
            return self._attach(backend, eni_id, instance_id, int(device_index))

        return attach_network_interface

    def _backend_detach(self) -> Callable[..., None]:
        def detach_network_interface(
            backend: EC2Backend, attachment_id: str, force: bool = False
        ) -> None:
            self._detach(backend, attachment_id, force)

        return detach_network_interface

    def _delete_response(
        self, original: Callable[[ElasticNetworkInterfaces], ActionResult]
    ) -> Callable[..., ActionResult]:
        # EC2 refuses to delete an ENI that is attached, attaching or detaching. Only the API
        # is checked: moto's terminate deletes DeleteOnTermination ENIs through the backend.
        def delete_network_interface(response: ElasticNetworkInterfaces) -> ActionResult:
            eni_id = response._get_param("NetworkInterfaceId")
            with self._lock:
                eni = response.ec2_backend.enis.get(eni_id)
                if eni is not None and eni.attachment_id is not None:
                    raise _error(
                        "InvalidNetworkInterface.InUse",
                        f"The network interface '{eni_id}' is currently in use.",
                    )
                return original(response)

        return delete_network_interface

    def _detach_response(self) -> Callable[..., ActionResult]:
        # moto's response drops the Force parameter; the backend needs it.
        def detach_network_interface(response: ElasticNetworkInterfaces) -> ActionResult:
            response.error_on_dryrun()
            response.ec2_backend.detach_network_interface(
                response._get_param("AttachmentId"), _as_bool(response._get_param("Force"))
            )
            return EmptyResult()

        return detach_network_interface

    def _eni_filter(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def get_filter_value(
            eni: NetworkInterface, filter_name: str, method_name: str | None = None
        ) -> Any:
            if filter_name in _SHOWN_FILTERS and self._lags(eni):
                return _SHOWN_FILTERS[filter_name]
            if filter_name == "attachment.status":
                return self._status_of(eni)
            if filter_name.startswith("tag:"):
                # moto answers by scanning every tag in the Region (describe_tags), once per
                # ENI and filter: quadratic in a large pool. Same answer, straight from the map.
                return eni.ec2_backend.tags.get(eni.id, {}).get(filter_name[4:])
            return original(eni, filter_name, method_name)

        return get_filter_value

    def _instance_terminate(self, original: Callable[[Instance], Any]) -> Callable[..., Any]:
        def terminate(instance: Instance) -> Any:
            return self._terminate(original, instance)

        return terminate

    def _instance_prep_nics(self, original: Callable[..., None]) -> Callable[..., None]:
        def prep_nics(
            instance: Instance, nic_spec: list[dict[str, Any]], *a: Any, **kw: Any
        ) -> None:
            primary_spec = next((n for n in nic_spec if int(n.get("DeviceIndex", -1)) == 0), None)
            original(instance, nic_spec, *a, **kw)
            # On AWS the primary ENI that a launch creates is deleted with the
            # instance unless the request says otherwise; moto defaults it to false.
            created = primary_spec is None or not primary_spec.get("NetworkInterfaceId")
            explicit = primary_spec is not None and "DeleteOnTermination" in primary_spec
            primary = instance.nics.get(0)
            if primary is not None and created and not explicit:
                primary.delete_on_termination = True

        return prep_nics

    def _instance_filter(self, original: Callable[..., bool]) -> Callable[..., bool]:
        def passes_filter_dict(instance: Instance, filter_dict: dict[str, Any]) -> bool:
            rest = dict(filter_dict)
            macs = rest.pop(_MAC_FILTER, None)
            if macs is not None and not _matches_mac(instance, list(macs)):
                return False
            return original(instance, rest)

        return passes_filter_dict

    def _describe_response(self) -> Callable[..., ActionResult]:
        def describe_network_interfaces(response: ElasticNetworkInterfaces) -> ActionResult:
            eni_ids = response._get_param("NetworkInterfaceIds", [])
            filters = response._filters_from_querystring()
            max_results = response._get_int_param("MaxResults")
            token = response._get_param("NextToken")
            response.error_on_dryrun()
            _check_page_request(eni_ids, max_results)
            # Filters first, then the page, as EC2 does.
            enis = response.ec2_backend.get_all_network_interfaces(eni_ids, filters)
            page, next_token = _page(enis, max_results, token)
            shown = [_BeforeAttach(eni) if self._lags(eni) else eni for eni in page]
            return ActionResult({"NetworkInterfaces": shown, "NextToken": next_token})

        return describe_network_interfaces

    def _modify_response(
        self, original: Callable[..., ActionResult]
    ) -> Callable[..., ActionResult]:
        def modify_network_interface_attribute(response: ElasticNetworkInterfaces) -> ActionResult:
            attachment = response._get_param("Attachment")
            if attachment:
                eni_id = response._get_param("NetworkInterfaceId")
                self._modify_attachment(response.ec2_backend, eni_id, attachment)
            return original(response)

        return modify_network_interface_attribute

    # -- behaviour ----------------------------------------------------------------

    def _attach(
        self, backend: EC2Backend, eni_id: str, instance_id: str, device_index: int
    ) -> Attachment:
        with self._lock:
            eni = backend.get_network_interface(eni_id)
            instance = backend.get_instance(instance_id)
            _check_attachable(eni, instance, device_index)
            attachment_id = instance.attach_eni(eni, device_index)
            # DeleteOnTermination belongs to the attachment: a new one starts false.
            eni.delete_on_termination = False
            if self.describe_lag > 0:
                self._lagging[eni.id] = self._clock.monotonic() + self.describe_lag
            self._transition(
                attachment_id,
                "attaching",
                self.attach_delay,
                functools.partial(self._finish_attach, attachment_id),
            )
            attachment = eni.attachment
        assert attachment is not None
        return attachment

    def _finish_attach(self, attachment_id: str) -> None:
        # Only an attachment still attaching becomes attached; a detach or a
        # release in between has already moved it on.
        if self._transitional.get(attachment_id) == "attaching":
            del self._transitional[attachment_id]

    def _detach(self, backend: EC2Backend, attachment_id: str, force: bool = False) -> None:
        with self._lock:
            eni = _eni_by_attachment(backend, attachment_id)
            if eni.device_index == 0:
                raise LastEniDetachError()
            held = eni.id in self._held and not force
            if held or (self._transitional.get(attachment_id) == "detaching" and not force):
                self._transitional[attachment_id] = "detaching"  # on its way out, or stuck
                return
            if force:
                self._held.discard(eni.id)
            self._transition(
                attachment_id,
                "detaching",
                self.attach_delay,
                functools.partial(self._release, eni, attachment_id),
            )

    def _release(self, eni: NetworkInterface, attachment_id: str) -> None:
        """Detach ``eni`` and make it available, if it is still that attachment."""
        self._transitional.pop(attachment_id, None)
        # Re-check the live ENI: re-attached, already detached or deleted meanwhile.
        if eni.attachment_id != attachment_id or eni.instance is None or not _is_live(eni):
            return
        eni.instance.detach_eni(eni)

    def _terminate(self, original: Callable[[Instance], Any], instance: Instance) -> Any:
        with self._lock:
            if instance.state == "terminated":  # TerminateInstances again: a no-op on AWS
                return copy.copy(instance._state)
            kept = [
                (eni, eni.attachment_id)
                for eni in instance.nics.values()
                if eni.attachment_id is not None and not eni.delete_on_termination
            ]
            previous = original(instance)  # moto deletes the DeleteOnTermination=true ENIs
            # The others stay in-use on the dead instance for a while, as on AWS.
            for eni, attachment_id in kept:
                if self._transitional.get(attachment_id) != "detaching":  # not already leaving
                    self.left_on_termination.append(
                        {
                            "eni_id": eni.id,
                            "instance_id": instance.id,
                            "at": self._clock.monotonic(),
                        }
                    )
                self._later(
                    self.release_delay, functools.partial(self._release, eni, attachment_id)
                )
        return previous

    def _modify_attachment(
        self, backend: EC2Backend, eni_id: str, attachment: dict[str, Any]
    ) -> None:
        with self._lock:
            eni = backend.get_network_interface(eni_id)
            attachment_id = attachment.get("AttachmentId")
            if attachment_id is None or attachment_id != eni.attachment_id:
                raise InvalidNetworkAttachmentIdError(str(attachment_id))
            if "DeleteOnTermination" in attachment:
                eni.delete_on_termination = _as_bool(attachment["DeleteOnTermination"])

    # The three reads below take no lock: each reads a dict entry or two, which is atomic, and a
    # describe renders them for every ENI of every instance it shows. Hundreds of threads taking
    # the lock for each queued behind one another (a convoy, a thread switch per acquire).

    def _lags(self, eni: NetworkInterface) -> bool:
        """Do describes still show ``eni`` as it was before its latest attach?"""
        until = self._lagging.get(eni.id)
        return (
            until is not None and eni.attachment_id is not None and self._clock.monotonic() < until
        )

    def _status_of(self, eni: NetworkInterface) -> str | None:
        attachment_id = eni.attachment_id
        if attachment_id is None:
            return None
        return self._transitional.get(attachment_id, "attached")

    def _attachment_of(self, eni: NetworkInterface) -> Attachment | None:
        attachment_id = eni.attachment_id
        if attachment_id is None or eni.instance is None:
            return None
        attachment = Attachment(eni)
        attachment.status = self._transitional.get(attachment_id, "attached")
        return attachment

    # -- timing -------------------------------------------------------------------

    def _transition(
        self, attachment_id: str, status: str, delay: float, finish: Callable[[], None]
    ) -> None:
        """Hold ``attachment_id`` in ``status`` for ``delay`` AWS seconds, then finish."""
        if delay <= 0:
            finish()
            return
        self._transitional[attachment_id] = status
        self._later(delay, finish)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        if delay <= 0:
            fn()
            return
        key = next(self._timer_keys)

        def fire() -> None:
            with self._lock:
                self._timers.pop(key, None)
                fn()

        with self._lock:
            self._timers[key] = self._clock.call_later(delay, fire)

    def _cancel_timers(self) -> None:
        with self._lock:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
