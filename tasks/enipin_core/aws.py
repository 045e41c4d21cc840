"""boto3 clients with the SDK's standard retries, and AWS errors turned into named errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from enipin_core.errors import AwsThrottled, AwsTransientError

# Standard mode retries throttling and 5xx with exponential back-off and full jitter; what is
# left after it surfaces as AwsThrottled / AwsTransientError for the state machine's Retry.
SDK_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5)

THROTTLING_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
    }
)
TRANSIENT_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "InternalServerError"}
)

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def client(service: str) -> Any:
    """One client per service per process, as a Lambda keeps it across invocations."""
    return boto3.client(service, config=SDK_CONFIG)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def named_aws_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Let throttling and server faults reach the ASL under names it retries."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if code in THROTTLING_CODES:
                raise AwsThrottled(f"{code}: {error_message(exc)}") from exc
            if code in TRANSIENT_CODES:
                raise AwsTransientError(f"{code}: {error_message(exc)}") from exc
            raise

    return wrapper
