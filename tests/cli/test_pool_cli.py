"""``enipin pool`` through click, in the sandbox: outcomes are read back with plain boto3."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import group_instances, wait_until

from enipin.cli import main
from enipin.pool import Group, PoolEni, check_capacity
from enipin_lab.sandbox import Sandbox

REGION = "us-east-1"
POOL_FILTER = [{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
ENI_HEADERS = ["ENI", "AZ", "SUBNET", "MAC", "IP", "STATUS", "INSTANCE", "GROUP"]

Factory = Callable[..., Sandbox]


def enipin(*args: str) -> Result:
    return CliRunner().invoke(main, ["--region", REGION, *args])


def pool_json(*args: str) -> dict[str, Any]:
    result = enipin("pool", *args, "--json")
    assert result.exit_code in (0, 1), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def all_enis(sb: Sandbox, filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    pages = (
        sb.client("ec2")
        .get_paginator("describe_network_interfaces")
        .paginate(Filters=filters or [])
    )
    return [eni for page in pages for eni in page["NetworkInterfaces"]]


def assert_one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"enipin: {message}"]


def tags(eni: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in eni.get("TagSet", [])}


def free_cells(eni: dict[str, Any]) -> list[str]:
    """The rest of a free ENI's status row: no instance, no group."""
    return [eni["MacAddress"], eni["PrivateIpAddress"], "available", "-", "-"]


# -- create ------------------------------------------------------------------------------------


def test_create_adds_exactly_n_tagged_enis_in_the_subnets_az(sandbox: Factory) -> None:
    # GIVEN a pool of one ENI per AZ
    sb = sandbox(azs=2, pool_per_az=1)
    subnet = sb.world.subnets["us-east-1b"]
    before = {e["NetworkInterfaceId"] for e in all_enis(sb)}

    # WHEN three are created in the second AZ's subnet
    result = enipin("pool", "create", "--subnet", subnet, "--count", "3", "--json")

    # THEN exactly three new ENIs exist there, tagged for the pool as they were created
    assert result.exit_code == 0, result.output
    new = [e for e in all_enis(sb) if e["NetworkInterfaceId"] not in before]
    assert len(new) == 3
    for eni in new:
        assert (eni["SubnetId"], eni["AvailabilityZone"], eni["Status"]) == (
            subnet,
            "us-east-1b",
            "available",
        )
        assert tags(eni) == {"Type": "Dedicated-ENI", "Name": "enipin-pool"}
    created = json.loads(result.stdout)["enis"]
    assert {e["eni"] for e in created} == {e["NetworkInterfaceId"] for e in new}
    assert {e["mac"] for e in created} == {e["MacAddress"] for e in new}

    # AND the pool shows them
    status = pool_json("status")
    assert {"az": "us-east-1b", "total": 4, "free": 4, "in_use": 0} in status["azs"]
    assert {e["eni"] for e in created} <= {e["eni"] for e in status["enis"]}


def test_create_refuses_unknown_subnet_and_zero_count_creating_nothing(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    before = len(all_enis(sb))

    unknown = enipin("pool", "create", "--subnet", "subnet-0000000000000000", "--count", "2")
    assert_one_line_error(unknown, f"subnet subnet-0000000000000000 not found in {REGION}")

    zero = enipin("pool", "create", "--subnet", sb.world.subnets["us-east-1a"], "--count", "0")
    assert zero.exit_code == 2
    assert "--count" in zero.stderr
    assert len(all_enis(sb)) == before


# -- status ------------------------------------------------------------------------------------


def test_status_table_is_a_per_az_summary_then_one_aligned_row_per_eni(sandbox: Factory) -> None:
    sb = sandbox(azs=2, pool_per_az=2)

    result = enipin("pool", "status")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "AZ          TOTAL  FREE  IN_USE",
        "us-east-1a  2      2     0",
        "us-east-1b  2      2     0",
        "",
    ]
    # moto's ENI ids, MACs and IPs are random: check the structure against what EC2 says.
    header, rows = lines[4], lines[5:]
    assert header.split() == ENI_HEADERS
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    by_place = sorted(
        all_enis(sb, POOL_FILTER),
        key=lambda e: (e["AvailabilityZone"], e["SubnetId"], e["NetworkInterfaceId"]),
    )
    expected = [
        [*(e[k] for k in ("NetworkInterfaceId", "AvailabilityZone", "SubnetId")), *free_cells(e)]
        for e in by_place
    ]
    assert [row.split() for row in rows] == expected
    for row in rows:
        assert [m.start() for m in re.finditer(r"\S+", row)] == starts, row


def test_status_counts_and_names_what_a_scale_out_pinned(sandbox: Factory) -> None:
    # GIVEN three pool ENIs per AZ and a group of at most four
    sb = sandbox(azs=2, pool_per_az=3, max_size=4)

    # WHEN the group scales out by three and every launch has been pinned
    sb.scale_out(3)
    sb.settle()
    status = pool_json("status")

    # THEN the JSON has the documented shape
    assert set(status) == {"azs", "enis"}
    assert {tuple(a) for a in status["azs"]} == {("az", "total", "free", "in_use")}
    assert {tuple(e) for e in status["enis"]} == {
        ("eni", "az", "subnet", "mac", "ip", "status", "instance", "group")
    }
    # AND its numbers are EC2's
    attached = {
        e["NetworkInterfaceId"]: e["Attachment"]["InstanceId"]
        for e in all_enis(sb, POOL_FILTER)
        if e.get("Attachment")
    }
    assert len(attached) == 3
    assert sum(a["in_use"] for a in status["azs"]) == 3
    assert sum(a["free"] for a in status["azs"]) == 3
    assert all(a["total"] == 3 and a["free"] + a["in_use"] == 3 for a in status["azs"])
    in_use = [e for e in status["enis"] if e["instance"]]
    assert {e["eni"]: e["instance"] for e in in_use} == attached
    assert set(attached.values()) == set(group_instances(sb))
    assert {e["group"] for e in in_use} == {"enipin-demo"}

    # AND a pool of max per AZ + 1 passes the check: ENIs on the group's own instances count
    check = enipin("pool", "check", "--asg", "enipin-demo")
    assert check.exit_code == 0, check.output
    assert check.stdout.splitlines()[-1] == "ok: every AZ of enipin-demo has enough pool ENIs"
    assert "need per AZ: ceil(max 4 / 2 AZs) + 1 spare = 3" in check.stdout


# -- check -------------------------------------------------------------------------------------


def attach_to_foreign_instance(sb: Sandbox, eni_id: str, subnet: str) -> str:
    """An instance outside the group holds a pool ENI (someone attached it by hand)."""
    ec2 = sb.client("ec2")
    image = ec2.describe_images(Owners=["self"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet)[
        "Instances"
    ][0]["InstanceId"]
    wait_until(lambda: sb.guests.is_running(instance), sb)  # EC2 attaches to running instances
    ec2.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=instance, DeviceIndex=1)

    def shown() -> bool:  # a describe may lag the attach for a moment
        found = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
        return bool(found[0].get("Attachment"))

    wait_until(shown, sb)
    return str(instance)


def test_check_exits_1_naming_the_short_az_and_how_many_it_lacks(sandbox: Factory) -> None:
    # GIVEN a group of at most 4 over two AZs (3 ENIs per AZ needed with one spare):
    # us-east-1a has 4 pool ENIs but one is held by an instance outside the group,
    # us-east-1b has 2, and us-east-1c, where the group does not launch, has 1.
    sb = sandbox(azs=2, pool_per_az=2, max_size=4)
    subnet_a = sb.world.subnets["us-east-1a"]
    extra_a = sb.world.add_pool_enis(subnet_a, 2)
    attach_to_foreign_instance(sb, extra_a[0], subnet_a)
    subnet_c = sb.client("ec2").create_subnet(
        VpcId=sb.world.vpc_id, CidrBlock="10.0.9.0/24", AvailabilityZone="us-east-1c"
    )["Subnet"]["SubnetId"]
    sb.world.add_pool_enis(subnet_c, 1)

    # WHEN the pool is checked against the group
    result = enipin("pool", "check", "--asg", "enipin-demo")

    # THEN it fails naming us-east-1b, and warns about the ENI it cannot use in us-east-1c
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1] == "short: us-east-1b needs 1 more ENI"
    assert result.stderr.splitlines() == [
        "warning: 1 pool ENI in us-east-1c, where enipin-demo launches no instances"
    ]
    # (without --asg the check sizes for the group the stack serves)
    data = json.loads(enipin("pool", "check", "--json").stdout)
    assert data["ok"] is False
    assert data["azs"] == [
        {"az": "us-east-1a", "need": 3, "usable": 3, "free": 3, "short": 0},
        {"az": "us-east-1b", "need": 3, "usable": 2, "free": 2, "short": 1},
    ]
    assert data["unused_azs"] == {"us-east-1c": 1}

    # AND more spares make both AZs short
    spares = enipin("pool", "check", "--asg", "enipin-demo", "--spare", "2")
    assert spares.exit_code == 1
    assert spares.stdout.splitlines()[-1] == (
        "short: us-east-1a needs 1 more ENI, us-east-1b needs 2 more ENIs"
    )

    # AND an unknown group is one line
    assert_one_line_error(
        enipin("pool", "check", "--asg", "nope"), "Auto Scaling group nope not found"
    )


@pytest.mark.parametrize(
    ("max_size", "azs", "spare", "need"),
    [(4, 2, 1, 3), (5, 2, 1, 4), (12, 3, 1, 5), (1, 3, 1, 2), (0, 2, 2, 2)],
)
def test_each_az_needs_its_balanced_share_of_the_maximum_plus_spares(
    max_size: int, azs: int, spare: int, need: int
) -> None:
    group = Group("g", max_size, tuple(f"{REGION}{z}" for z in "abc"[:azs]))
    result = check_capacity([], group, spare)
    assert [a.need for a in result.azs] == [need] * azs


def test_enis_on_other_instances_are_not_usable_but_the_groups_own_are() -> None:
    def eni(status: str, group: str | None = None) -> PoolEni:
        instance = "i-1" if status == "in-use" else None
        return PoolEni("eni-1", "us-east-1a", "subnet-1", "mac", "ip", status, instance, group)

    pool = [eni("available"), eni("in-use", "g"), eni("in-use", "other"), eni("in-use")]
    [row] = check_capacity(pool, Group("g", 2, ("us-east-1a",)), spare=1).azs
    assert (row.need, row.usable, row.free, row.short) == (3, 2, 1, 1)


def test_groups_sharing_a_pool_count_once_together_not_each_against_the_same_free_enis() -> None:
    # two groups of one stack draw on its one pool: at their maximums both hold theirs at once
    def eni(status: str, group: str | None = None) -> PoolEni:
        instance = "i-1" if status == "in-use" else None
        return PoolEni("eni-1", "us-east-1a", "subnet-1", "mac", "ip", status, instance, group)

    pool = [eni("available")] * 3 + [eni("in-use", "b")]
    a, b = Group("a", 2, ("us-east-1a",)), Group("b", 2, ("us-east-1a",))
    # each alone sees enough (3 needed; a: 3 free, b: 3 free + its own)
    assert check_capacity(pool, a, spare=1).ok
    # together: 2 + 2 + 1 spare against the 4 ENIs of the AZ, for either group
    for group, other in ((a, b), (b, a)):
        result = check_capacity(pool, group, spare=1, sharing=[other])
        [row] = result.azs
        assert (row.need, row.usable, row.short) == (5, 4, 1), group.name
        assert not result.ok and result.to_dict()["shared_with"] == [other.name]


# -- one-line errors ---------------------------------------------------------------------------


def test_unknown_stack_is_one_line(sandbox: Factory) -> None:
    sandbox(azs=1, pool_per_az=0, deploy=False)
    result = enipin("--stack", "nope", "pool", "status")
    assert_one_line_error(result, f"stack 'nope' not found in {REGION} (pass --stack NAME)")


def test_unknown_region_is_one_line() -> None:
    result = CliRunner().invoke(main, ["--region", "mars-1", "pool", "status"])
    assert_one_line_error(result, "unknown AWS Region 'mars-1'")


def test_missing_credentials_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # No sandbox: an empty credential chain, with nothing that could reach out for one.
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    result = enipin("pool", "status")

    assert_one_line_error(
        result, "no AWS credentials found: run `aws configure`, set AWS_PROFILE or pass --profile"
    )
