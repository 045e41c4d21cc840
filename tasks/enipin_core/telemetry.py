"""Powertools logger, metrics and tracer shared by every Task handler, and the decorator that
wires them: the instance id is the correlation id of every log line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()
tracer = Tracer()

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def task_handler(fn: Handler) -> Handler:
    """Log with the instance id, trace, and flush this invocation's metrics."""
    traced = tracer.capture_lambda_handler(fn, capture_response=False)
    logged = logger.inject_lambda_context(traced, correlation_id_path="instanceId")
    return metrics.log_metrics(logged)


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
