"""The scheduled pool metrics: what it publishes per AZ is what EC2 says, and an AZ whose pool
ran dry drives the lowest-free metric (the low-pool alarm's input) to zero."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
FUNCTION = "enipin-PublishPoolMetricsFunction"


def run_task(sb: Sandbox) -> dict[str, Any]:
    response = sb.client("lambda").invoke(FunctionName=FUNCTION, Payload=b"{}")
    assert "FunctionError" not in response, response["Payload"].read()
    result: dict[str, Any] = json.loads(response["Payload"].read())
    return result


def published(sb: Sandbox) -> dict[tuple[str, str | None], float]:
    """Metric name and AZ -> value, from the EMF lines the function printed (last wins)."""
    values: dict[tuple[str, str | None], float] = {}
    for line in "".join(sb.lambdas.logs[FUNCTION]).splitlines():
        if '"_aws"' not in line:
            continue
        record = json.loads(line)
        for definition in record["_aws"]["CloudWatchMetrics"]:
            assert definition["Namespace"] == "enipin"
            for metric in definition["Metrics"]:
                value = record[metric["Name"]]  # EMF may carry a list of values
                last = value[-1] if isinstance(value, list) else value
                values[metric["Name"], record.get("AvailabilityZone")] = last
    return values


def test_pool_metrics_follow_ec2_and_flag_the_az_that_ran_dry(sandbox: Factory) -> None:
    sb = sandbox(azs=2, pool_per_az=3)
    sb.scale_out(2)
    sb.settle()
    result = run_task(sb)
    assert result["azs"] == [
        {"az": "us-east-1a", "total": 3, "free": 2, "in_use": 1},
        {"az": "us-east-1b", "total": 3, "free": 2, "in_use": 1},
    ]
    metrics = published(sb)
    assert metrics["FreePoolEnis", "us-east-1a"] == 2
    assert metrics["InUsePoolEnis", "us-east-1b"] == 1
    assert metrics["TotalPoolEnis", "us-east-1b"] == 3
    assert metrics["LowestFreePoolEnis", None] == 2
    # WHEN us-east-1b loses its free ENIs
    ec2 = sb.client("ec2")
    for eni_id in sb.world.pool["us-east-1b"]:
        if (
            ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0][
                "Status"
            ]
            == "available"
        ):
            ec2.delete_network_interface(NetworkInterfaceId=eni_id)
    result = run_task(sb)
    # THEN that AZ reports none free, and the lowest-free metric says so
    assert result["azs"][1] == {"az": "us-east-1b", "total": 1, "free": 0, "in_use": 1}
    assert result["lowestFree"] == 0
    assert published(sb)["LowestFreePoolEnis", None] == 0
