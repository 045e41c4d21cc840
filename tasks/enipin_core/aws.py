"""boto3 clients with the SDK's standard retries, and AWS errors turned into named errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from enipin_core.errors import AwsThrottled, AwsTransientError

# Standard mode retries throttling, 5xx and broken connections with exponential back-off and
# full jitter; what is left after it surfaces as AwsThrottled / AwsTransientError for the state
# machine's Retry. The timeouts keep every attempt, and so the SDK's retries, inside the
# functions' 30 s (botocore's own read timeout is 60 s): 3 x (2 + 6) s, plus back-off under 3 s.
FUNCTION_TIMEOUT = 30  # Globals.Function.Timeout in infra/template.yaml
SDK_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=6
)

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
    {
        "InternalError",
        "InternalFailure",
        "ServerInternal",  # EC2
        "ServiceUnavailable",
        "Unavailable",
        "InternalServerError",
        "ResourceContention",  # Auto Scaling: a concurrent update to the same group
    }
)
FILTER_VALUES_LIMIT = 200  # values one EC2 filter takes (FilterLimitExceeded beyond)

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def client(service: str) -> Any:
    """One client per service per process, as a Lambda keeps it across invocations."""
    return boto3.client(service, config=SDK_CONFIG)


def chunked(values: Iterable[str], size: int = FILTER_VALUES_LIMIT) -> Iterator[list[str]]:
    """``values`` sorted, in lists of at most ``size``: one EC2 filter's worth each."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


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
        except (ConnectionError, HTTPClientError) as exc:  # no answer at all, after retries
            raise AwsTransientError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper
