"""PublishPoolMetrics (scheduled): how many pool ENIs each AZ of the managed groups has free,
in use and in total, and the lowest free count over those AZs (what the low-pool alarm
watches: one AZ running dry blocks that AZ's launches while the others look healthy)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.pool import pool_enis
from enipin_core.settings import Settings, managed_groups
from enipin_core.telemetry import logger, metrics, tracer

SETTINGS = Settings.from_env()
GROUPS = managed_groups()


@dataclass(frozen=True)
class AzCount:
    az: str
    total: int
    free: int

    @property
    def in_use(self) -> int:
        return self.total - self.free

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"in_use": self.in_use}


def group_azs(autoscaling: Any, groups: frozenset[str]) -> set[str]:
    if not groups:
        return set()
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        AutoScalingGroupNames=sorted(groups)
    )
    return {
        az for page in pages for g in page["AutoScalingGroups"] for az in g["AvailabilityZones"]
    }


@named_aws_errors
def count_pool(ec2: Any, settings: Settings, served_azs: set[str]) -> list[AzCount]:
    """Every AZ that has pool ENIs or serves a managed group; an AZ with none counts 0."""
    enis = pool_enis(ec2, settings.pool_tag_key, settings.pool_tag_value)
    total = Counter(e.az for e in enis)
    free = Counter(e.az for e in enis if e.status == "available")
    return [AzCount(az, total[az], free[az]) for az in sorted(set(total) | served_azs)]


def publish(counts: list[AzCount], served_azs: set[str]) -> int | None:
    for c in counts:
        for name, value in (
            ("FreePoolEnis", c.free),
            ("InUsePoolEnis", c.in_use),
            ("TotalPoolEnis", c.total),
        ):
            with single_metric(name=name, unit=MetricUnit.Count, value=value) as metric:
                metric.add_dimension(name="AvailabilityZone", value=c.az)
    served = [c.free for c in counts if c.az in served_azs]
    lowest = min(served) if served else None
    if lowest is not None:
        metrics.add_metric(name="LowestFreePoolEnis", unit=MetricUnit.Count, value=lowest)
    return lowest


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    served = named_aws_errors(group_azs)(client("autoscaling"), GROUPS)
    counts = count_pool(client("ec2"), SETTINGS, served)
    lowest = publish(counts, served)
    logger.info("pool counted", extra={"azs": [c.to_dict() for c in counts], "lowest": lowest})
    return {"azs": [c.to_dict() for c in counts], "lowestFree": lowest}
