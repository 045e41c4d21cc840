"""AWS's eventual consistency, limits and clocks, as the sandbox puts them back into moto. Each
test names the AWS behaviour it restores (docs/aws-contract.md links AWS's page for each)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from conftest import load_event, wait_until

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


@pytest.fixture
def bare(sandbox: Factory) -> Iterator[Sandbox]:
    """A sandbox without the stack: only EC2, Step Functions' engine and the clock."""
    yield sandbox(azs=1, pool_per_az=2, deploy=False, boot_delay=20, visibility_delay=5)


def run_instance(sb: Sandbox) -> str:
    ec2 = sb.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    subnet = sb.world.subnets["us-east-1a"]
    reservation = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet)
    return str(reservation["Instances"][0]["InstanceId"])


def shown_state(sb: Sandbox, instance_id: str) -> str:
    found = sb.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(found[0]["Instances"][0]["State"]["Name"])


# ------------------------------------------------------------------ EC2


def test_one_ec2_filter_takes_at_most_200_values(bare: Sandbox) -> None:
    ec2 = bare.client("ec2")
    ids = [f"i-{n:017x}" for n in range(201)]
    ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": ids[:200]}])
    too_many = [{"Name": "instance-id", "Values": ids}]
    assert error_code(lambda: ec2.describe_instances(Filters=too_many)) == "FilterLimitExceeded"
    enis = [{"Name": "network-interface-id", "Values": [f"eni-{n:017x}" for n in range(201)]}]
    code = error_code(lambda: ec2.describe_network_interfaces(Filters=enis))
    assert code == "FilterLimitExceeded"


def test_describe_instances_may_not_show_an_instance_launched_a_moment_ago(
    sandbox: Factory,
) -> None:
    bare = sandbox(azs=1, pool_per_az=1, deploy=False, visibility_delay=200)
    instance_id = run_instance(bare)
    ec2 = bare.client("ec2")
    # by id: NotFound, though the instance exists (EC2's eventual consistency)
    by_id = lambda: ec2.describe_instances(InstanceIds=[instance_id])  # noqa: E731
    assert error_code(by_id) == "InvalidInstanceID.NotFound"
    # by filter: simply not there yet
    filters = [{"Name": "instance-id", "Values": [instance_id]}]
    assert ec2.describe_instances(Filters=filters)["Reservations"] == []
    wait_until(lambda: bool(ec2.describe_instances(Filters=filters)["Reservations"]), bare, 400)
    assert ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]


def test_a_new_instance_is_pending_and_refuses_an_attach_until_it_runs(bare: Sandbox) -> None:
    instance_id = run_instance(bare)
    bare.clock.sleep(6)  # visible by now, still starting
    assert shown_state(bare, instance_id) == "pending"
    ec2 = bare.client("ec2")
    eni = bare.world.pool["us-east-1a"][0]
    attach = lambda: ec2.attach_network_interface(  # noqa: E731
        NetworkInterfaceId=eni, InstanceId=instance_id, DeviceIndex=1
    )
    assert error_code(attach) == "IncorrectInstanceState"
    wait_until(lambda: shown_state(bare, instance_id) == "running", bare, 30)
    attach()
    on = lambda: ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])[  # noqa: E731
        "NetworkInterfaces"
    ][0].get("Attachment", {})
    wait_until(lambda: on().get("InstanceId") == instance_id, bare, 30)


def test_a_stopped_pending_launch_stays_stopped(bare: Sandbox) -> None:
    instance_id = run_instance(bare)
    bare.client("ec2").stop_instances(InstanceIds=[instance_id])
    bare.clock.sleep(25)  # past the start-up that would have made it running
    assert shown_state(bare, instance_id) == "stopped"


def test_launch_time_is_aws_time_and_is_set_again_at_every_start(bare: Sandbox) -> None:
    before = bare.clock.now()
    instance_id = run_instance(bare)
    after = bare.clock.now()
    bare.clock.sleep(25)
    ec2 = bare.client("ec2")
    first = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    launched = first["Instances"][0]["LaunchTime"]
    # the launch's moment on the sandbox clock, to the second, however loaded the machine
    assert before - timedelta(seconds=1) <= launched <= after
    ec2.stop_instances(InstanceIds=[instance_id])
    bare.clock.sleep(100)
    ec2.start_instances(InstanceIds=[instance_id])
    again = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    assert again["Instances"][0]["LaunchTime"] - launched >= timedelta(seconds=90)


def test_describe_network_interfaces_may_show_an_eni_free_a_moment_after_its_attach(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=1, deploy=False, boot_delay=0, visibility_delay=0)
    sb.ec2.describe_lag = 30.0
    instance_id = run_instance(sb)
    eni = sb.world.pool["us-east-1a"][0]
    ec2 = sb.client("ec2")
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance_id, DeviceIndex=1)
    # the answer and the filters still show it free ...
    (shown,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    assert shown["Status"] == "available" and "Attachment" not in shown
    on_it = [
        {"Name": "attachment.instance-id", "Values": [instance_id]},
        {"Name": "tag:Type", "Values": ["Dedicated-ENI"]},
    ]
    assert ec2.describe_network_interfaces(Filters=on_it)["NetworkInterfaces"] == []
    free = [{"Name": "status", "Values": ["available"]}]
    assert [
        e["NetworkInterfaceId"]
        for e in ec2.describe_network_interfaces(Filters=free)["NetworkInterfaces"]
    ] == [eni]
    # ... while EC2 itself knows better: a second attach is refused
    other = run_instance(sb)
    taken = lambda: ec2.attach_network_interface(  # noqa: E731
        NetworkInterfaceId=eni, InstanceId=other, DeviceIndex=1
    )
    assert error_code(taken) == "InvalidNetworkInterface.InUse"
    wait_until(
        lambda: bool(ec2.describe_network_interfaces(Filters=on_it)["NetworkInterfaces"]), sb, 60
    )


# ------------------------------------------------------------------ Step Functions, EventBridge


def test_list_executions_catches_up_with_a_start_a_moment_later(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, list_lag=20)
    sfn = sb.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=sb.state_machine_arn(),
        input=json.dumps(load_event("test-notification")),
    )["executionArn"]
    listed = lambda: [e["executionArn"] for e in sb.executions()]  # noqa: E731
    assert arn not in listed()
    assert sfn.describe_execution(executionArn=arn)["executionArn"] == arn  # exists all along
    wait_until(lambda: arn in listed(), sb, 60)


def test_step_functions_stamps_states_history_and_executions_with_aws_time(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    before = sb.clock.now()
    sb.clock.sleep(120)  # two AWS minutes: about 2 real seconds on the fast clock
    sfn = sb.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=sb.state_machine_arn(),
        input=json.dumps(load_event("test-notification")),
    )["executionArn"]
    wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", sb, 60)
    run = sfn.describe_execution(executionArn=arn)
    assert run["startDate"] - before >= timedelta(seconds=115)
    assert run["stopDate"] >= run["startDate"]
    events = sfn.get_execution_history(executionArn=arn)["events"]
    assert all(e["timestamp"] - before >= timedelta(seconds=115) for e in events)
    assert datetime.now(UTC) < run["startDate"]  # AWS time runs ahead of the host's


def test_eventbridge_delivers_an_events_time_as_an_iso_8601_string(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    sb.scale_out(1)
    wait_until(lambda: bool(sb.executions()), sb, 60)
    run = sb.client("stepfunctions").describe_execution(
        executionArn=sb.executions()[0]["executionArn"]
    )
    stamp = json.loads(run["input"])["time"]
    assert isinstance(stamp, str)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((parsed - sb.clock.now()).total_seconds()) < 120


def test_a_lifecycle_event_can_arrive_late(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    sb.autoscaling.delay_next(1, "autoscaling:EC2_INSTANCE_LAUNCHING", delay=100)
    sb.scale_out(1)
    sb.clock.sleep(60)
    assert sb.executions() == [] and sb.autoscaling.pending_actions()
    wait_until(lambda: bool(sb.executions()), sb, 120)
    (log,) = sb.autoscaling.event_log()
    assert log["copies"] == 1


# ------------------------------------------------------------------ the ledger's faults


def test_a_broken_connection_raises_botocores_own_error_after_its_retries(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=1, deploy=False)
    sb.ledger.fault("ec2", "DescribeVpcs", "read_timeout", times=10)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        ec2.describe_vpcs()
    assert time.monotonic() - started < 30
    failed = [c for c in sb.ledger.calls if c.operation == "DescribeVpcs"]
    assert {c.outcome for c in failed} == {"ReadTimeoutError"}
    assert len(failed) > 1  # botocore retried it, as it would a real timeout


def test_an_injected_client_error_reaches_the_caller_with_its_code(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, deploy=False)
    sb.ledger.fault("ec2", "DescribeVpcs", "client_error", code="UnauthorizedOperation", times=1)
    ec2 = sb.client("ec2")
    assert error_code(ec2.describe_vpcs) == "UnauthorizedOperation"
    assert ec2.describe_vpcs()["Vpcs"]  # once only
