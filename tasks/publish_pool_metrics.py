"""PublishPoolMetrics (scheduled): free, in-use and total pool ENIs per AZ, and the lowest free
count over the AZs the managed groups use (``enipin_core.poolmetrics``)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from enipin_core.aws import client, named_aws_errors
from enipin_core.pool import pool_enis
from enipin_core.poolmetrics import count_pool, group_azs, publish
from enipin_core.settings import Settings, managed_groups
from enipin_core.telemetry import logger, metrics, tracer

SETTINGS = Settings.from_env()
GROUPS = managed_groups()


@named_aws_errors
def measure(ec2: Any, autoscaling: Any) -> dict[str, Any]:
    served = group_azs(autoscaling, GROUPS)
    counts = count_pool(pool_enis(ec2, SETTINGS.pool_tag_key, SETTINGS.pool_tag_value), served)
    lowest = publish(counts, served)
    logger.info("pool counted", extra={"azs": [c.to_dict() for c in counts], "lowest": lowest})
    return {"azs": [c.to_dict() for c in counts], "lowestFree": lowest}


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return measure(client("ec2"), client("autoscaling"))
