"""Pool metrics per AZ (free, in use, total) and the lowest free count over the AZs the
managed groups use: what the low-pool alarm watches, since one AZ running dry blocks that AZ's
launches while the others look healthy."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from enipin_core.pool import AzCount, Eni
from enipin_core.telemetry import metrics


def group_azs(autoscaling: Any, groups: frozenset[str]) -> set[str]:
    if not groups:
        return set()
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        AutoScalingGroupNames=sorted(groups)
    )
    return {
        az for page in pages for g in page["AutoScalingGroups"] for az in g["AvailabilityZones"]
    }


def count_pool(pool: list[Eni], served_azs: set[str]) -> list[AzCount]:
    """Every AZ that has pool ENIs or serves a managed group; an AZ with none counts 0."""
    total = Counter(e.az for e in pool)
    free = Counter(e.az for e in pool if e.status == "available")
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
