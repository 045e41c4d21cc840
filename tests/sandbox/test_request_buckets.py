"""The account's request buckets: EC2's per API and Step Functions', as their pages give them
(token buckets, a size and a refill rate per API, per account and Region, shared with every
other caller), which plain moto lacks: it never throttles."""

from __future__ import annotations

from collections.abc import Callable

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import assert_no_eni_doubled, assert_pinned, in_service

from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.buckets import RequestBuckets

Factory = Callable[..., Sandbox]
FILTERED = {"Filter.1.Name": ["tag:Type"]}


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def served(
    buckets: RequestBuckets,
    service: str,
    operation: str,
    n: int,
    params: dict[str, list[str]] | None = None,
) -> int:
    return sum(not buckets.refuses(service, operation, params or {}) for _ in range(n))


def started(neighbour: float = 0.0) -> tuple[RequestBuckets, FakeClock]:
    clock = FakeClock()
    buckets = RequestBuckets(clock, neighbour)
    buckets.start()
    return buckets, clock


def test_an_ec2_describe_gets_100_at_once_then_20_a_second_on_its_own_bucket() -> None:
    buckets, clock = started()
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 150, FILTERED) == 100
    assert served(buckets, "ec2", "DescribeInstances", 150, {"InstanceId.1": ["i-1"]}) == 100
    clock.t += 1.0
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 50, FILTERED) == 20
    clock.t += 60.0  # refills up to its size, never past it
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 150, FILTERED) == 100


def test_unfiltered_describes_mutating_calls_and_step_functions_have_their_documented_sizes() -> (
    None
):
    buckets, clock = started()
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 80) == 50  # unfiltered: 50 / 10
    assert served(buckets, "ec2", "AttachNetworkInterface", 80) == 50  # mutating: 50 / 5
    assert served(buckets, "ec2", "DetachNetworkInterface", 80) == 50  # each API its own
    assert served(buckets, "sfn", "StartExecution", 1400) == 1300
    assert served(buckets, "sfn", "ListExecutions", 300) == 200
    clock.t += 1.0
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 80) == 10
    assert served(buckets, "ec2", "AttachNetworkInterface", 80) == 5
    assert served(buckets, "sfn", "StartExecution", 400) == 300
    # Auto Scaling and SSM publish no rate for these APIs: not limited
    assert served(buckets, "auto-scaling", "CompleteLifecycleAction", 500) == 500
    assert served(buckets, "ssm", "SendCommand", 500) == 500


def test_a_neighbour_holds_its_fraction_of_every_bucket_and_nothing_is_limited_before_start() -> (
    None
):
    buckets, clock = started(neighbour=0.5)
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 100, FILTERED) == 50
    clock.t += 1.0
    assert served(buckets, "ec2", "DescribeNetworkInterfaces", 100, FILTERED) == 10
    idle = RequestBuckets(FakeClock())
    assert served(idle, "ec2", "AttachNetworkInterface", 500) == 500
    with pytest.raises(ValueError, match="fraction"):
        RequestBuckets(FakeClock(), neighbour=1.0)


def test_a_call_past_its_bucket_gets_ec2s_own_error_and_the_ledger_records_it(
    sandbox: Factory,
) -> None:
    # the neighbour leaves 2 tokens of the describe bucket, refilled at 0.4 a second
    sb = sandbox(azs=1, pool_per_az=1, buckets=True, neighbour=0.98, fast=False)
    ec2 = boto3.client(
        "ec2", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1})
    )
    filters = [{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
    for _ in range(2):
        ec2.describe_network_interfaces(Filters=filters)
    with pytest.raises(ClientError) as refused:
        ec2.describe_network_interfaces(Filters=filters)
    assert refused.value.response["Error"]["Code"] == "RequestLimitExceeded"
    outcomes = [c.outcome for c in sb.ledger.calls if c.operation == "DescribeNetworkInterfaces"][
        -3:
    ]
    assert outcomes == ["ok", "ok", "RequestLimitExceeded"]


def test_launches_that_share_tight_buckets_with_a_busy_neighbour_are_all_pinned(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=2, pool_per_az=4, buckets=True, neighbour=0.97)  # 3 describes, 0.6 a second
    sb.scale_out(6)
    sb.settle()
    launched = in_service(sb)
    assert len(launched) == 6
    for instance in launched:
        assert_pinned(sb, instance)
    assert_no_eni_doubled(sb)
    throttled = [c for c in sb.ledger.calls if c.outcome == "RequestLimitExceeded" and c.caller]
    assert throttled, "the functions never met an empty bucket: the test shows nothing"
    assert {e["status"] for e in sb.executions()} == {"SUCCEEDED"}
