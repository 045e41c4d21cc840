"""The ENI pool: which pool ENIs are free, which one an instance gets, attach and release.

EC2's own attach is the only lock. Simultaneous launches in one AZ are matched to its free ENIs
by rank, from one look at the group's launching instances and one at the pool
(``rank_candidates``), so they seldom collide; a lost race simply moves on to the next candidate.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from enipin_core.aws import chunked, error_code, error_message
from enipin_core.errors import (
    AwsTransientError,
    DeviceIndexInUse,
    EnipinError,
    InstanceNotFound,
    InstanceTerminating,
)
from enipin_core.runstate import field_values, state_dict

ENI_GONE = "InvalidNetworkInterfaceID.NotFound"  # deleted since it was listed
LEAVING = frozenset({"shutting-down", "terminated"})  # instance states that never take an ENI
# Codes EC2 gives when the chosen ENI is no longer free (or not attachable to this instance).
TAKEN_CODES = frozenset(
    {"InvalidNetworkInterface.InUse", "InvalidParameterValue", "InvalidParameterCombination"}
)
# ... of which this one is also EC2's answer to a device index already in use on the instance.
AMBIGUOUS_CODE = "InvalidParameterValue"


@dataclass(frozen=True)
class AzCount:
    """A pool's ENIs in one AZ, and how many a launch could take (anything not ``available``,
    whether in-use, attaching or detaching, cannot be)."""

    az: str
    total: int
    free: int

    @property
    def in_use(self) -> int:
        return self.total - self.free

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"in_use": self.in_use}


@dataclass(frozen=True)
class Eni:
    id: str
    mac: str
    private_ip: str
    az: str
    subnet_id: str
    status: str
    attachment_id: str | None = None
    attachment_status: str | None = None
    instance_id: str | None = None
    device_index: int | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Eni:
        att = data.get("Attachment") or {}
        return cls(
            id=data["NetworkInterfaceId"],
            mac=data["MacAddress"],
            private_ip=data["PrivateIpAddress"],
            az=data["AvailabilityZone"],
            subnet_id=data["SubnetId"],
            status=data["Status"],
            attachment_id=att.get("AttachmentId"),
            attachment_status=att.get("Status"),
            instance_id=att.get("InstanceId"),
            device_index=att.get("DeviceIndex"),
        )

    def to_dict(self) -> dict[str, Any]:
        """As the run state carries it (``$.eni``, ``$.candidates``, ``$.enis``): camelCase."""
        return state_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Eni:
        return cls(**field_values(data))


@dataclass(frozen=True)
class Instance:
    id: str
    az: str
    vpc_id: str
    state: str
    group_name: str | None
    launched_at: str | None = None  # ISO 8601; None in a run started before it was kept

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Instance:
        tags = {t["Key"]: t["Value"] for t in data.get("Tags", [])}
        launched = data.get("LaunchTime")
        return cls(
            id=data["InstanceId"],
            az=data["Placement"]["AvailabilityZone"],
            vpc_id=data.get("VpcId", ""),
            state=data["State"]["Name"],
            group_name=tags.get("aws:autoscaling:groupName"),
            launched_at=launched.isoformat() if launched is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """As ``$.instance`` carries it: camelCase."""
        return state_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        return cls(**field_values(data))


def describe_instance(ec2: Any, instance_id: str) -> Instance:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if error_code(exc) == "InvalidInstanceID.NotFound":
            raise InstanceNotFound(f"EC2 does not know instance {instance_id}") from None
        if error_code(exc) == "InvalidInstanceID.Malformed":
            raise InstanceNotFound(f"{instance_id} is not an instance id") from None
        raise
    data = reservations[0]["Instances"][0] if reservations else None
    if data is None:
        raise InstanceNotFound(f"EC2 does not know instance {instance_id}")
    return Instance.from_api(data)


def _describe_enis(ec2: Any, filters: list[dict[str, Any]]) -> list[Eni]:
    paginator = ec2.get_paginator("describe_network_interfaces")
    enis: list[Eni] = []
    for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 1000}):
        enis.extend(Eni.from_api(d) for d in page["NetworkInterfaces"])
    return enis


def _tag_filter(tag_key: str, tag_value: str) -> dict[str, Any]:
    return {"Name": f"tag:{tag_key}", "Values": [tag_value]}


def free_enis(ec2: Any, instance: Instance, tag_key: str, tag_value: str) -> list[Eni]:
    """Pool ENIs available in the instance's AZ and VPC (same AZ is what EC2 requires)."""
    return _describe_enis(
        ec2,
        [
            _tag_filter(tag_key, tag_value),
            {"Name": "status", "Values": ["available"]},
            {"Name": "availability-zone", "Values": [instance.az]},
            {"Name": "vpc-id", "Values": [instance.vpc_id]},
        ],
    )


def az_pool(ec2: Any, instance: Instance, tag_key: str, tag_value: str) -> list[Eni]:
    """Every pool ENI the instance could ever take (its AZ and VPC), free or not: one look
    that shows the free ones and which instances hold the others."""
    return _describe_enis(
        ec2,
        [
            _tag_filter(tag_key, tag_value),
            {"Name": "availability-zone", "Values": [instance.az]},
            {"Name": "vpc-id", "Values": [instance.vpc_id]},
        ],
    )


def rank_candidates(
    pool: list[Eni], launching: list[str], instance_id: str, limit: int
) -> list[Eni]:
    """The free ENIs in the order this instance tries them, matched by rank: the AZ's launching
    instances that hold no pool ENI, by id, against its free ENIs by id. Runs that look at the
    same moment agree; an attach that lands between two looks takes its instance and its ENI out
    of both lists at the same rank, so later looks still agree. Rank k starts at free ENI k
    (wrapping round when more instances wait than ENIs are free)."""
    holders = {e.instance_id for e in pool if e.instance_id}
    waiting = sorted({i for i in launching if i not in holders} | {instance_id})
    free = sorted((e for e in pool if e.status == "available"), key=lambda e: e.id)
    if not free:
        return []
    rank = waiting.index(instance_id) % len(free)
    return (free[rank:] + free[:rank])[:limit]


def attach_turn(
    launching: list[str], instance_id: str, azs: int, burst: float, per_second: float
) -> int:
    """Whole seconds after a burst of launches began until this instance's attach finds a token
    in EC2's mutating bucket, if the ``azs`` launching AZs share it evenly: the burst passes at
    once, the rest at the refill rate, in the order of the AZ's launching instances by id
    (those already attached keep their places, so looks before and after an attach agree).
    An attach sent before its token is refused and retried with jittered back-off: later than
    the bucket needed, at the cost of a call and a transition each time."""
    rank = sorted(set(launching) | {instance_id}).index(instance_id)
    share = max(azs, 1)
    beyond = rank + 1 - burst / share
    if beyond <= 0:
        return 0
    return math.ceil(beyond * share / per_second)


def pool_enis_on(ec2: Any, instance_id: str, tag_key: str, tag_value: str) -> list[Eni]:
    return _describe_enis(
        ec2,
        [
            _tag_filter(tag_key, tag_value),
            {"Name": "attachment.instance-id", "Values": [instance_id]},
        ],
    )


def order_candidates(enis: list[Eni], instance_id: str, limit: int) -> list[Eni]:
    """A per-instance shuffle: concurrent launches start at different ENIs, a replay of the
    same instance tries them in the same order."""
    ordered = sorted(enis, key=lambda e: e.id)
    random.Random(instance_id).shuffle(ordered)
    return ordered[:limit]


def describe_eni(ec2: Any, eni_id: str) -> Eni | None:
    try:
        data = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
    except ClientError as exc:
        if error_code(exc) == "InvalidNetworkInterfaceID.NotFound":
            return None
        raise
    return Eni.from_api(data[0]) if data else None


@dataclass(frozen=True)
class AttachOutcome:
    eni: Eni | None
    attached_here: bool
    races_lost: int


def attach_first_free(
    ec2: Any, instance: Instance, candidates: list[Eni], device_index: int
) -> AttachOutcome:
    """Attach the first candidate EC2 lets us have; a taken ENI is a lost race, not a failure."""
    races_lost = 0
    for candidate in candidates:
        try:
            resp = ec2.attach_network_interface(
                NetworkInterfaceId=candidate.id, InstanceId=instance.id, DeviceIndex=device_index
            )
        except ClientError as exc:
            code = error_code(exc)
            if code == "IncorrectInstanceState":
                raise _not_attachable(ec2, instance.id, exc) from exc
            if code == ENI_GONE:  # deleted since it was listed: as good as taken
                races_lost += 1
                continue
            if code not in TAKEN_CODES:
                raise
            if code == AMBIGUOUS_CODE and _index_taken(ec2, instance.id, device_index):
                # EC2 refused the instance side (device index in use), not the ENI. Asked of
                # the instance, not the ENI: a describe may still show an ENI free that a rival
                # attached a moment ago (EC2 is eventually consistent).
                raise DeviceIndexInUse(
                    f"{instance.id} refused {candidate.id} at device index {device_index}: "
                    f"{error_message(exc)}"
                ) from exc
            races_lost += 1
            continue
        # the guest's verification reads the attachment back: no second describe here
        attached = replace(
            candidate,
            status="in-use",
            attachment_id=resp["AttachmentId"],
            attachment_status="attaching",
            instance_id=instance.id,
            device_index=device_index,
        )
        return AttachOutcome(
            eni=attached,
            attached_here=True,
            races_lost=races_lost,
        )
    return AttachOutcome(eni=None, attached_here=False, races_lost=races_lost)


def _not_attachable(ec2: Any, instance_id: str, exc: ClientError) -> EnipinError:
    """EC2 attaches to running and stopped instances only: one on its way out will never take
    the ENI; one still starting will, so the state machine retries that as transient."""
    state = describe_instance(ec2, instance_id).state
    if state in LEAVING:
        return InstanceTerminating(f"{instance_id} is {state}: it will take no ENI")
    return AwsTransientError(f"{instance_id} is {state}: {error_message(exc)}")


def _index_taken(ec2: Any, instance_id: str, device_index: int) -> bool:
    """Does the instance already have an interface at ``device_index``?"""
    return eni_at(ec2, instance_id, device_index) is not None


def eni_at(ec2: Any, instance_id: str, device_index: int) -> str | None:
    """The ENI at ``device_index`` of the instance, as the instance itself shows it."""
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    interfaces = reservations[0]["Instances"][0].get("NetworkInterfaces", [])
    return next(
        (
            str(i["NetworkInterfaceId"])
            for i in interfaces
            if (i.get("Attachment") or {}).get("DeviceIndex") == device_index
        ),
        None,
    )


def detach_if_still_on(ec2: Any, eni_id: str, instance_id: str, attachment_id: str | None) -> bool:
    """Detach the ENI only while it still sits on this instance with our attachment. Knowing
    the attachment, EC2 itself is the judge (an attachment id names one ENI on one instance,
    and a describe may lag the attach); without it, what a describe shows."""
    if attachment_id:
        return _detach_attachment(ec2, attachment_id, force=False)
    eni = describe_eni(ec2, eni_id)
    if eni is None or eni.instance_id != instance_id:
        return False
    if attachment_id and eni.attachment_id != attachment_id:
        return False
    if eni.attachment_status in ("detaching", "detached"):
        return False
    return detach(ec2, eni, force=False)


def describe_enis(ec2: Any, eni_ids: list[str]) -> list[Eni]:
    """The ENIs that still exist among ``eni_ids`` (a deleted one is simply absent)."""
    return [
        eni
        for chunk in chunked(eni_ids)
        for eni in _describe_enis(ec2, [{"Name": "network-interface-id", "Values": chunk}])
    ]


def detach(ec2: Any, eni: Eni, force: bool) -> bool:
    """Ask EC2 to detach ``eni`` from where it is; False when it is no longer attached."""
    if eni.attachment_id is None:
        return False
    return _detach_attachment(ec2, eni.attachment_id, force)


def _detach_attachment(ec2: Any, attachment_id: str, force: bool) -> bool:
    try:
        ec2.detach_network_interface(AttachmentId=attachment_id, Force=force)
    except ClientError as exc:
        if error_code(exc) == "InvalidAttachmentID.NotFound":  # detached already
            return False
        raise
    return True


def pool_enis(ec2: Any, tag_key: str, tag_value: str) -> list[Eni]:
    """Every ENI of the pool, wherever it is."""
    return _describe_enis(ec2, [_tag_filter(tag_key, tag_value)])
