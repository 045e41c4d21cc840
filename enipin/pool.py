"""The pool's plain logic: create tagged ENIs, read the pool per AZ, size it against a group.

Functions take boto3 clients and return dataclasses, so the CLI, the tests and a reconciler can
call the same code; printing is the CLI's business.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import ClientError

from enipin_core.aws import FILTER_VALUES_LIMIT, chunked
from enipin_core.pool import AzCount, Eni, pool_enis

POOL_NAME = "enipin-pool"
GROUP_TAG = "aws:autoscaling:groupName"

PoolTag = tuple[str, str]


# -- reading the pool --------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolEni:
    eni: str
    az: str
    subnet: str
    mac: str
    ip: str
    status: str
    instance: str | None = None
    group: str | None = None

    @property
    def free(self) -> bool:
        return self.status == "available"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PoolStatus:
    azs: list[AzCount]
    enis: list[PoolEni]

    def to_dict(self) -> dict[str, Any]:
        return {"azs": [a.to_dict() for a in self.azs], "enis": [e.to_dict() for e in self.enis]}


def read_pool(ec2: Any, tag: PoolTag) -> PoolStatus:
    """Every ENI carrying the pool tag, with the instance and group each one is pinned to."""
    found = pool_enis(ec2, *tag)
    attached = sorted({e.instance_id for e in found if e.instance_id})
    groups = instance_groups(ec2, attached)
    enis = sorted((_pool_eni(e, groups) for e in found), key=lambda e: (e.az, e.subnet, e.eni))
    return PoolStatus(count_by_az(enis), enis)


def count_by_az(enis: Iterable[PoolEni]) -> list[AzCount]:
    # Anything not `available` (in-use, attaching, detaching) cannot be taken by a launch.
    total: Counter[str] = Counter()
    free: Counter[str] = Counter()
    for eni in enis:
        total[eni.az] += 1
        free[eni.az] += eni.free
    return [AzCount(az, total[az], free[az]) for az in sorted(total)]


def instance_groups(ec2: Any, instance_ids: Sequence[str]) -> dict[str, str | None]:
    """Instance id -> its Auto Scaling group (None when it has none), in batched describes.

    A filter rather than ``InstanceIds``: one instance gone for good must not fail the lot.
    """
    groups: dict[str, str | None] = {}
    paginator = ec2.get_paginator("describe_instances")
    for chunk in chunked(list(instance_ids), FILTER_VALUES_LIMIT):
        pages = paginator.paginate(Filters=[{"Name": "instance-id", "Values": chunk}])
        for page in pages:
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    groups[instance["InstanceId"]] = _tag(instance, GROUP_TAG)
    return groups


def _pool_eni(eni: Eni, groups: dict[str, str | None]) -> PoolEni:
    return PoolEni(
        eni=eni.id,
        az=eni.az,
        subnet=eni.subnet_id,
        mac=eni.mac,
        ip=eni.private_ip,
        status=eni.status,
        instance=eni.instance_id,
        group=groups.get(eni.instance_id) if eni.instance_id else None,
    )


def _tag(resource: dict[str, Any], key: str) -> str | None:
    tags = resource.get("Tags") or resource.get("TagSet") or []
    return next((t["Value"] for t in tags if t["Key"] == key), None)


# -- creating pool ENIs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Subnet:
    id: str
    az: str
    vpc: str


def find_subnet(ec2: Any, subnet_id: str) -> Subnet | None:
    try:
        found = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "").startswith("InvalidSubnetID"):
            return None
        raise
    if not found:
        return None
    return Subnet(found[0]["SubnetId"], found[0]["AvailabilityZone"], found[0]["VpcId"])


def create_pool_eni(
    ec2: Any,
    subnet: Subnet,
    tag: PoolTag,
    description: str,
    security_groups: Sequence[str] = (),
    extra_tags: dict[str, str] | None = None,
) -> PoolEni:
    """One pool ENI, tagged as it is created: an untagged ENI would be invisible to the pool.

    botocore fills ``ClientToken`` itself, so an SDK retry of a timed-out call cannot create
    a second ENI.
    """
    tags = [{"Key": tag[0], "Value": tag[1]}, {"Key": "Name", "Value": POOL_NAME}]
    tags += [{"Key": k, "Value": v} for k, v in (extra_tags or {}).items()]
    extra: dict[str, Any] = {"Groups": list(security_groups)} if security_groups else {}
    raw = ec2.create_network_interface(
        SubnetId=subnet.id,
        Description=description,
        TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}],
        **extra,
    )["NetworkInterface"]
    return _pool_eni(Eni.from_api(raw), {})


# -- sizing the pool against a group -----------------------------------------------------------


@dataclass(frozen=True)
class Group:
    name: str
    max_size: int
    azs: tuple[str, ...]

    @property
    def per_az(self) -> int:
        """The most instances one AZ holds while the group is balanced at its maximum."""
        return math.ceil(self.max_size / len(self.azs)) if self.azs else 0


def find_group(autoscaling: Any, ec2: Any, name: str) -> Group | None:
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not found["AutoScalingGroups"]:
        return None
    group = found["AutoScalingGroups"][0]
    return Group(name, int(group["MaxSize"]), _group_azs(ec2, group))


def _group_azs(ec2: Any, group: dict[str, Any]) -> tuple[str, ...]:
    # A VPC group launches only into its subnets: their AZs are the truth.
    subnets = [s.strip() for s in (group.get("VPCZoneIdentifier") or "").split(",") if s.strip()]
    if not subnets:
        return tuple(sorted(set(group.get("AvailabilityZones", []))))
    described = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    return tuple(sorted({s["AvailabilityZone"] for s in described}))


@dataclass(frozen=True)
class AzCapacity:
    az: str
    need: int
    usable: int
    free: int

    @property
    def short(self) -> int:
        return max(self.need - self.usable, 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "short": self.short}


@dataclass(frozen=True)
class CapacityCheck:
    group: Group
    spare: int
    azs: list[AzCapacity]
    unused: dict[str, int]  # AZ the group does not use -> pool ENIs there
    sharing: tuple[Group, ...] = ()  # the other groups that draw on the same pool

    @property
    def ok(self) -> bool:
        return not self.shortfalls

    @property
    def shortfalls(self) -> list[AzCapacity]:
        return [a for a in self.azs if a.short]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group.name,
            "max_size": self.group.max_size,
            "per_az": self.group.per_az,
            "spare": self.spare,
            "ok": self.ok,
            "azs": [a.to_dict() for a in self.azs],
            "unused_azs": self.unused,
            "shared_with": [g.name for g in self.sharing],
        }


def check_capacity(
    enis: Sequence[PoolEni], group: Group, spare: int, sharing: Sequence[Group] = ()
) -> CapacityCheck:
    """Per AZ: the balanced maximum plus ``spare`` (a rolling replacement launches the new
    instance before the old one lets its ENI go) against the ENIs this group can hold. Groups
    ``sharing`` the pool count once, together: at their maximums they hold theirs at the same
    time, so an AZ needs every group's maximum there, and their ENIs are usable to them all."""
    others = tuple(g for g in sharing if g.name != group.name)
    names = {group.name} | {g.name for g in others}
    rows = []
    for az in group.azs:
        need = group.per_az + sum(g.per_az for g in others if az in g.azs) + spare
        here = [e for e in enis if e.az == az]
        usable = sum(1 for e in here if e.free or e.group in names)
        rows.append(AzCapacity(az, need, usable, sum(1 for e in here if e.free)))
    unused = Counter(e.az for e in enis if e.az not in group.azs)
    return CapacityCheck(group, spare, rows, dict(sorted(unused.items())), others)
