"""Each test pins one EC2 ENI behaviour that plain moto lacks and Ec2Fidelity restores."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from unittest.mock import patch

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from enipin_lab.sandbox.base import REGION
from enipin_lab.sandbox.clock import FAST_SCALE, Clock
from enipin_lab.sandbox.ec2 import Ec2Fidelity

POOL_TAG = {"Key": "Type", "Value": "Dedicated-ENI"}
# One botocore session for the file: it caches the EC2 model, so each test's
# client costs milliseconds instead of a quarter second.
UNKNOWN_ATTACHMENT = "eni-attach-0000000000000000"
SESSION = boto3.session.Session(region_name=REGION)


@dataclass
class Rig:
    ec2: Any
    clock: Clock
    image_id: str
    subnet_a: str
    subnet_b: str
    fidelity: Ec2Fidelity

    def run(self, count: int = 1, subnet: str | None = None) -> list[str]:
        reservation = self.ec2.run_instances(
            ImageId=self.image_id, MinCount=count, MaxCount=count, SubnetId=subnet or self.subnet_a
        )
        return [i["InstanceId"] for i in reservation["Instances"]]

    def create_eni(self, subnet: str | None = None) -> str:
        eni = self.ec2.create_network_interface(
            SubnetId=subnet or self.subnet_a,
            TagSpecifications=[{"ResourceType": "network-interface", "Tags": [POOL_TAG]}],
        )
        return str(eni["NetworkInterface"]["NetworkInterfaceId"])

    def attach(self, eni_id: str, instance_id: str, device_index: int = 1) -> str:
        answer = self.ec2.attach_network_interface(
            NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=device_index
        )
        return str(answer["AttachmentId"])

    def eni(self, eni_id: str) -> dict[str, Any]:
        enis = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        return dict(enis["NetworkInterfaces"][0])

    def attachment_status(self, eni_id: str) -> str | None:
        attachment = self.eni(eni_id).get("Attachment")
        return None if attachment is None else str(attachment["Status"])


@contextmanager
def rig(*, attach_delay: float = 0.0, release_delay: float = 0.0) -> Iterator[Rig]:
    clock = Clock(FAST_SCALE)
    try:
        with ExitStack() as stack:
            # moto's ~2,600 default AMIs cost a quarter second per test; one image is enough.
            stack.enter_context(patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}))
            stack.enter_context(mock_aws())
            # describes that lag an attach are pinned in test_aws_consistency.py
            fidelity = Ec2Fidelity(
                clock, attach_delay=attach_delay, release_delay=release_delay, describe_lag=0.0
            )
            fidelity.install(stack)
            ec2 = SESSION.client("ec2")
            image_id = ec2.register_image(Name="sandbox", RootDeviceName="/dev/xvda")["ImageId"]
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnets = [
                ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]
                for cidr, az in (("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b"))
            ]
            subnet_a, subnet_b = (s["SubnetId"] for s in subnets)
            yield Rig(ec2, clock, image_id, subnet_a, subnet_b, fidelity)
    finally:
        clock.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def error_of(call: Callable[[], object]) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    return dict(info.value.response["Error"])


def test_concurrent_attaches_of_one_eni_let_exactly_one_instance_win() -> None:
    with rig(attach_delay=2.0) as w:
        instances = w.run(16)
        eni_id = w.create_eni()
        barrier = threading.Barrier(len(instances))
        winners: list[str] = []
        codes: list[str] = []
        messages: set[str] = set()

        def contend(instance_id: str) -> None:
            barrier.wait()
            try:
                w.attach(eni_id, instance_id)
                winners.append(instance_id)
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
                messages.add(exc.response["Error"]["Message"])

        threads = [threading.Thread(target=contend, args=(i,)) for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert len(winners) == 1
        assert codes == ["InvalidNetworkInterface.InUse"] * 15
        assert messages == {f"Interface: [{eni_id}] in use."}
        assert w.eni(eni_id)["Attachment"]["InstanceId"] == winners[0]
        holders = [
            i["InstanceId"]
            for r in w.ec2.describe_instances(InstanceIds=instances)["Reservations"]
            for i in r["Instances"]
            if any(n["NetworkInterfaceId"] == eni_id for n in i["NetworkInterfaces"])
        ]
        assert holders == winners


@pytest.mark.parametrize("attach_delay", [0.0, 600.0], ids=["attached", "attaching"])
def test_attaching_an_in_use_eni_fails_with_invalid_network_interface_in_use(
    attach_delay: float,
) -> None:
    with rig(attach_delay=attach_delay) as w:
        first, second = w.run(2)
        eni_id = w.create_eni()
        w.attach(eni_id, first)

        error = error_of(lambda: w.attach(eni_id, second))

        assert error["Code"] == "InvalidNetworkInterface.InUse"
        assert error["Message"] == f"Interface: [{eni_id}] in use."
        assert w.eni(eni_id)["Attachment"]["InstanceId"] == first


def test_attaching_across_availability_zones_fails_with_invalid_parameter_combination() -> None:
    with rig() as w:
        (instance_id,) = w.run(subnet=w.subnet_a)
        eni_id = w.create_eni(subnet=w.subnet_b)

        error = error_of(lambda: w.attach(eni_id, instance_id))

        assert error["Code"] == "InvalidParameterCombination"
        assert "same availability zone" in error["Message"]
        assert w.eni(eni_id)["Status"] == "available"


def test_attaching_at_a_used_device_index_fails_with_invalid_parameter_value() -> None:
    with rig() as w:
        (instance_id,) = w.run()
        taken, refused = w.create_eni(), w.create_eni()
        w.attach(taken, instance_id, device_index=1)

        error = error_of(lambda: w.attach(refused, instance_id, device_index=1))

        assert error["Code"] == "InvalidParameterValue"
        assert error["Message"] == (
            f"Instance '{instance_id}' already has an interface attached at device index '1'."
        )
        assert w.eni(refused)["Status"] == "available"
        assert w.eni(taken)["Attachment"]["DeviceIndex"] == 1


def test_attaching_to_a_terminated_instance_fails_with_incorrect_instance_state() -> None:
    with rig() as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        w.ec2.terminate_instances(InstanceIds=[instance_id])

        error = error_of(lambda: w.attach(eni_id, instance_id))

        assert error["Code"] == "IncorrectInstanceState"
        assert error["Message"] == (
            f"The instance '{instance_id}' is not in a valid state for this operation."
        )
        assert w.eni(eni_id)["Status"] == "available"


def test_attachment_goes_through_attaching_to_attached_after_the_attach_delay() -> None:
    with rig(attach_delay=100.0) as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()

        w.attach(eni_id, instance_id)

        assert w.attachment_status(eni_id) == "attaching"
        assert w.eni(eni_id)["Status"] == "in-use"
        wait_until(lambda: w.attachment_status(eni_id) == "attached")
        assert w.eni(eni_id)["Attachment"]["InstanceId"] == instance_id


def test_detach_goes_through_detaching_to_available_after_the_attach_delay() -> None:
    with rig(attach_delay=100.0) as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)
        wait_until(lambda: w.attachment_status(eni_id) == "attached")

        w.ec2.detach_network_interface(AttachmentId=attachment_id)

        assert w.attachment_status(eni_id) == "detaching"
        assert w.eni(eni_id)["Status"] == "in-use"
        wait_until(lambda: w.eni(eni_id)["Status"] == "available")
        assert "Attachment" not in w.eni(eni_id)


def test_terminating_an_instance_releases_its_pooled_eni_only_after_the_release_delay() -> None:
    with rig(release_delay=100.0) as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        w.attach(eni_id, instance_id)
        assert w.eni(eni_id)["Attachment"]["DeleteOnTermination"] is False

        w.ec2.terminate_instances(InstanceIds=[instance_id])

        still = w.eni(eni_id)
        assert still["Status"] == "in-use"
        assert still["Attachment"]["InstanceId"] == instance_id
        wait_until(lambda: w.eni(eni_id)["Status"] == "available")
        assert "Attachment" not in w.eni(eni_id)
        (left,) = w.fidelity.left_on_termination
        assert (left["eni_id"], left["instance_id"]) == (eni_id, instance_id)


def test_an_eni_detached_before_termination_is_not_left_for_ec2_to_release() -> None:
    with rig() as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        w.ec2.detach_network_interface(AttachmentId=w.attach(eni_id, instance_id))

        w.ec2.terminate_instances(InstanceIds=[instance_id])

        assert w.fidelity.left_on_termination == []


def test_terminating_a_terminated_instance_again_succeeds_and_changes_nothing() -> None:
    """TerminateInstances is idempotent: a second call succeeds (moto re-deleted the primary
    ENI and failed with InvalidNetworkInterfaceID.NotFound)."""
    with rig() as w:
        (instance_id,) = w.run()
        w.ec2.terminate_instances(InstanceIds=[instance_id])

        (again,) = w.ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]

        assert again["PreviousState"]["Name"] == "terminated"
        (reservation,) = w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        assert reservation["Instances"][0]["State"]["Name"] == "terminated"


def test_terminating_an_instance_deletes_enis_marked_delete_on_termination() -> None:
    with rig(release_delay=100.0) as w:
        (instance_id,) = w.run()
        primary = w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
            "Instances"
        ][0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)
        w.ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni_id,
            Attachment={"AttachmentId": attachment_id, "DeleteOnTermination": True},
        )

        w.ec2.terminate_instances(InstanceIds=[instance_id])

        for gone in (eni_id, primary):
            error = error_of(partial(w.eni, gone))
            assert error["Code"] == "InvalidNetworkInterfaceID.NotFound"


def test_a_stale_release_never_frees_an_eni_that_was_attached_again() -> None:
    with rig(attach_delay=10.0, release_delay=100.0) as w:
        first, second = w.run(2)
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, first)
        wait_until(lambda: w.attachment_status(eni_id) == "attached")
        w.ec2.detach_network_interface(AttachmentId=attachment_id)
        w.ec2.terminate_instances(InstanceIds=[first])  # schedules a release at +100 s
        wait_until(lambda: w.eni(eni_id)["Status"] == "available")

        w.attach(eni_id, second)
        released_by = w.clock.monotonic() + 100.0
        wait_until(lambda: w.clock.monotonic() > released_by + 20.0)

        assert w.eni(eni_id)["Status"] == "in-use"
        assert w.eni(eni_id)["Attachment"]["InstanceId"] == second


def test_modified_delete_on_termination_is_kept_and_described() -> None:
    with rig() as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)

        w.ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni_id,
            Attachment={"AttachmentId": attachment_id, "DeleteOnTermination": True},
        )

        assert w.eni(eni_id)["Attachment"]["DeleteOnTermination"] is True
        error = error_of(
            lambda: w.ec2.modify_network_interface_attribute(
                NetworkInterfaceId=eni_id,
                Attachment={
                    "AttachmentId": "eni-attach-0000000000000000",
                    "DeleteOnTermination": False,
                },
            )
        )
        assert error["Code"] == "InvalidAttachmentID.NotFound"
        assert w.eni(eni_id)["Attachment"]["DeleteOnTermination"] is True


def test_describe_network_interfaces_pages_filtered_enis_by_max_results_and_next_token() -> None:
    with rig() as w:
        pooled = {w.create_eni() for _ in range(25)}
        w.ec2.create_network_interface(SubnetId=w.subnet_a)  # untagged: filtered out
        paginator = w.ec2.get_paginator("describe_network_interfaces")

        pages = list(
            paginator.paginate(
                Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}],
                PaginationConfig={"PageSize": 5},
            )
        )

        assert [len(page["NetworkInterfaces"]) for page in pages] == [5] * 5
        seen = [eni["NetworkInterfaceId"] for page in pages for eni in page["NetworkInterfaces"]]
        assert set(seen) == pooled
        assert len(seen) == 25


def test_describe_network_interfaces_rejects_max_results_outside_5_to_1000() -> None:
    with rig() as w:
        # botocore itself refuses MaxResults < 5; switch that off to reach the service.
        raw = SESSION.client("ec2", config=Config(parameter_validation=False))
        for bad in (4, 1001):
            error = error_of(partial(raw.describe_network_interfaces, MaxResults=bad))
            assert error["Code"] == "InvalidParameterValue"
            assert f"Value ( {bad} ) for parameter maxResults is invalid." in error["Message"]
        assert len(w.ec2.describe_network_interfaces(MaxResults=5)["NetworkInterfaces"]) == 0


def test_attachment_status_and_instance_id_filters_select_enis() -> None:
    with rig(attach_delay=600.0) as w:
        (instance_id,) = w.run()
        attaching, free = w.create_eni(), w.create_eni()
        w.attach(attaching, instance_id)

        def ids(*filters: tuple[str, str]) -> set[str]:
            answer = w.ec2.describe_network_interfaces(
                Filters=[{"Name": name, "Values": [value]} for name, value in filters]
                + [{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
            )
            return {eni["NetworkInterfaceId"] for eni in answer["NetworkInterfaces"]}

        assert ids(("attachment.status", "attaching")) == {attaching}
        assert ids(("attachment.status", "attached")) == set()
        assert ids(("attachment.instance-id", instance_id)) == {attaching}
        assert ids(("status", "available")) == {free}


def test_describe_instances_filters_by_network_interface_mac_address() -> None:
    with rig() as w:
        holder, _ = w.run(2)
        eni_id = w.create_eni()
        w.attach(eni_id, holder)
        mac = w.eni(eni_id)["MacAddress"]

        reservations = w.ec2.describe_instances(
            Filters=[{"Name": "network-interface.mac-address", "Values": [mac]}]
        )["Reservations"]

        found = [i["InstanceId"] for r in reservations for i in r["Instances"]]
        assert found == [holder]


def test_forced_detach_makes_the_eni_available() -> None:
    with rig(attach_delay=2.0) as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)

        w.ec2.detach_network_interface(AttachmentId=attachment_id, Force=True)

        wait_until(lambda: w.eni(eni_id)["Status"] == "available")
        assert "Attachment" not in w.eni(eni_id)


def test_a_detach_the_guest_holds_up_stays_detaching_until_it_is_forced() -> None:
    # EC2: a graceful detach needs the instance to let go; Force is the documented last resort
    with rig(attach_delay=2.0) as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)
        wait_until(lambda: w.attachment_status(eni_id) == "attached")
        w.fidelity.hold_in_guest(eni_id)

        w.ec2.detach_network_interface(AttachmentId=attachment_id)
        time.sleep(FAST_SCALE * 20)  # ten times the detach delay

        assert w.attachment_status(eni_id) == "detaching"
        assert w.eni(eni_id)["Status"] == "in-use"
        w.ec2.detach_network_interface(AttachmentId=attachment_id, Force=True)
        wait_until(lambda: w.eni(eni_id)["Status"] == "available")


def test_detaching_an_eni_that_is_not_attached_fails_with_invalid_attachment_id_not_found() -> None:
    with rig() as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)
        w.ec2.detach_network_interface(AttachmentId=attachment_id)

        error = error_of(lambda: w.ec2.detach_network_interface(AttachmentId=attachment_id))

        assert error["Code"] == "InvalidAttachmentID.NotFound"
        assert w.eni(eni_id)["Status"] == "available"


@pytest.mark.parametrize("attach_delay", [0.0, 600.0], ids=["attached", "attaching"])
def test_deleting_an_eni_in_use_fails_with_invalid_network_interface_in_use(
    attach_delay: float,
) -> None:
    """EC2 deletes only a detached ENI: the ENI must be detached first."""
    with rig(attach_delay=attach_delay) as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        w.attach(eni_id, instance_id)

        error = error_of(lambda: w.ec2.delete_network_interface(NetworkInterfaceId=eni_id))

        assert error["Code"] == "InvalidNetworkInterface.InUse"
        assert w.eni(eni_id)["Attachment"]["InstanceId"] == instance_id


def test_a_detached_eni_can_be_deleted() -> None:
    with rig() as w:
        (instance_id,) = w.run()
        eni_id = w.create_eni()
        attachment_id = w.attach(eni_id, instance_id)
        w.ec2.detach_network_interface(AttachmentId=attachment_id)

        w.ec2.delete_network_interface(NetworkInterfaceId=eni_id)

        assert error_of(lambda: w.eni(eni_id))["Code"] == "InvalidNetworkInterfaceID.NotFound"
