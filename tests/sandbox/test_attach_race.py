"""EC2's attach is atomic: of concurrent attaches of one ENI exactly one wins, even when every
racer has already passed the checks before any of them attaches."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from typing import Any
from unittest.mock import patch

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from enipin_lab.sandbox import ec2 as ec2_fidelity
from enipin_lab.sandbox.base import REGION
from enipin_lab.sandbox.clock import FAST_SCALE, Clock
from enipin_lab.sandbox.ec2 import Ec2Fidelity

RACERS = 8
# How long (real seconds) a racer that passed the checks waits for the others to pass them too.
# Only a broken lock lets more than one get there: with it, the first waits this long, alone.
STAGING_TIMEOUT = 0.5


@pytest.fixture
def ec2() -> Iterator[Any]:
    """moto's EC2 with the sandbox's EC2 fidelity installed, and nothing else."""
    clock = Clock(FAST_SCALE)
    try:
        with ExitStack() as stack:
            stack.enter_context(patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}))
            stack.enter_context(mock_aws())
            # no describe lag: the race is about the attach's lock, and a describe within a
            # (fast-clock) second of the winning attach may rightly still show the ENI free
            Ec2Fidelity(clock, attach_delay=2.0, release_delay=0.0, describe_lag=0.0).install(stack)
            yield boto3.client("ec2", region_name=REGION)
    finally:
        clock.close()


def test_racers_that_all_passed_the_checks_still_let_exactly_one_attach_win(ec2: Any) -> None:
    # GIVEN one free ENI and RACERS instances in its AZ
    image = ec2.register_image(Name="sandbox", RootDeviceName="/dev/xvda")["ImageId"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")
    subnet_id = subnet["Subnet"]["SubnetId"]
    instances = [
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId=image, MinCount=RACERS, MaxCount=RACERS, SubnetId=subnet_id
        )["Instances"]
    ]
    eni_id = ec2.create_network_interface(SubnetId=subnet_id)["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    # AND a window between EC2's checks and its attach that every racer could reach at once:
    # each one that passes the checks waits there for all the others to pass them too
    real_check = ec2_fidelity._check_attachable
    staged = threading.Barrier(RACERS)
    checked: list[str] = []

    def check_then_wait(eni: Any, instance: Any, device_index: int) -> None:
        checked.append(instance.id)
        real_check(eni, instance, device_index)
        with suppress(threading.BrokenBarrierError):  # with the lock, it waits alone
            staged.wait(timeout=STAGING_TIMEOUT)

    start = threading.Barrier(RACERS)
    winners: list[str] = []
    errors: list[tuple[str, str]] = []

    def contend(instance_id: str) -> None:
        start.wait()
        try:
            ec2.attach_network_interface(
                NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=1
            )
            winners.append(instance_id)
        except ClientError as exc:
            errors.append((exc.response["Error"]["Code"], exc.response["Error"]["Message"]))

    # WHEN they all attach it at the same moment
    with patch.object(ec2_fidelity, "_check_attachable", check_then_wait):
        threads = [threading.Thread(target=contend, args=(i,)) for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    # THEN every racer reached EC2's checks, exactly one attached, the others were told it is
    # in use, and the ENI sits on the winner alone
    assert sorted(checked) == sorted(instances)
    assert len(winners) == 1, f"{len(winners)} attaches of one ENI succeeded"
    assert errors == [("InvalidNetworkInterface.InUse", f"Interface: [{eni_id}] in use.")] * (
        RACERS - 1
    )
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    assert eni["Attachment"]["InstanceId"] == winners[0]
    holders = [
        i["InstanceId"]
        for r in ec2.describe_instances(InstanceIds=instances)["Reservations"]
        for i in r["Instances"]
        if any(n["NetworkInterfaceId"] == eni_id for n in i["NetworkInterfaces"])
    ]
    assert holders == winners
