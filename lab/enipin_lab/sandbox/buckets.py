"""The account's request-rate buckets: EC2's per API and Step Functions', as AWS documents them.

EC2 "uses the token bucket algorithm": each API has its own bucket per account and Region, every
request takes a token, the bucket refills at a set rate up to its size, and a request that finds
it empty gets ``RequestLimitExceeded``, "whether they originate from a third-party application,
a command line tool or the Amazon EC2 console" (EC2 request throttling). Step Functions publishes
bucket sizes and refill rates per API the same way (Step Functions quotas). Auto Scaling and
Systems Manager publish none for the APIs enipin calls, so their calls are not limited here.

Every call in the sandbox's process takes from the same buckets (the functions', its actors',
an operator's), as every caller in an account does. A *neighbour* (``neighbour=F``) stands for the
account's other tooling: it holds the fraction F of each bucket's size and of its refill.
The buckets start full when the sandbox's world and stack are built, so that setting up is not
throttled; everything after draws on them, but for the sandbox's own looks while it waits for
the sandbox to settle (``unmetered``): those are a test's eyes, not calls in the account.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

EC2_THROTTLING = "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"
SFN_QUOTAS = "https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html"


@dataclass(frozen=True)
class BucketSize:
    size: float  # tokens
    refill: float  # tokens a second
    kind: str  # which of the documented buckets


# EC2's request-token buckets by kind (EC2 request throttling, "Request token bucket sizes and
# refill rates"): non-mutating actions (Describe*, Get*), the same unfiltered and unpaginated,
# mutating actions, and the few with a bucket of their own enipin or its lab calls.
EC2_NON_MUTATING = BucketSize(100, 20, "non-mutating")
EC2_UNFILTERED = BucketSize(50, 10, "unfiltered and unpaginated non-mutating")
EC2_MUTATING = BucketSize(50, 5, "mutating")
EC2_OWN = {"CreateNetworkInterface": BucketSize(100, 5, "CreateNetworkInterface")}
# Step Functions, us-east-1 (Step Functions quotas, "Quotas related to API action throttling").
SFN = {
    "StartExecution": BucketSize(1300, 300, "StartExecution"),
    "RedriveExecution": BucketSize(1300, 300, "RedriveExecution"),
    "DescribeExecution": BucketSize(300, 15, "DescribeExecution"),
    "ListExecutions": BucketSize(200, 5, "ListExecutions"),
    "GetExecutionHistory": BucketSize(400, 20, "GetExecutionHistory"),
    "DescribeStateMachine": BucketSize(200, 20, "DescribeStateMachine"),
}
# A request that names what it reads (an id list, a filter) or pages through it is "filtered or
# paginated"; AWS's page does not say whether an id list counts (unverified): it does here.
_NARROWING = ("Filter.", "MaxResults", "NextToken", "InstanceId.", "NetworkInterfaceId.")


def bucket_of(
    service: str, operation: str, params: dict[str, Any]
) -> tuple[str, BucketSize] | None:
    """The bucket a request draws on, keyed per API; None for an API AWS publishes none for."""
    if service == "sfn":
        size = SFN.get(operation)
        return (f"sfn.{operation}", size) if size else None
    if service != "ec2":
        return None
    if operation in EC2_OWN:
        return f"ec2.{operation}", EC2_OWN[operation]
    if operation.startswith(("Describe", "Get")):
        if any(key.startswith(_NARROWING) for key in params):
            return f"ec2.{operation}", EC2_NON_MUTATING
        return f"ec2.{operation}:unfiltered", EC2_UNFILTERED
    return f"ec2.{operation}", EC2_MUTATING


_local = threading.local()


@contextmanager
def unmetered() -> Iterator[None]:
    """This thread's calls meanwhile take no token: the harness looking, not the account."""
    previous = getattr(_local, "unmetered", False)
    _local.unmetered = True
    try:
        yield
    finally:
        _local.unmetered = previous


@dataclass
class _Tokens:
    left: float
    at: float  # AWS seconds, when ``left`` was last brought up to date


class RequestBuckets:
    """Token buckets on the sandbox's clock; ``refuses`` takes a token or says the call is
    throttled. Off until ``start``."""

    def __init__(self, now: Callable[[], float], neighbour: float = 0.0) -> None:
        if not 0.0 <= neighbour < 1.0:
            raise ValueError(f"neighbour is a fraction of each bucket, 0 <= F < 1, not {neighbour}")
        self.now = now
        self.neighbour = neighbour
        self.started = False
        self._tokens: dict[str, _Tokens] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """From now on every call draws on its bucket; each starts full (less the neighbour's)."""
        with self._lock:
            self._tokens.clear()
            self.started = True

    def refuses(self, service: str, operation: str, params: dict[str, Any]) -> bool:
        metered = self.started and not getattr(_local, "unmetered", False)
        found = bucket_of(service, operation, params) if metered else None
        if found is None:
            return False
        key, bucket = found
        ours = 1.0 - self.neighbour
        size, refill = bucket.size * ours, bucket.refill * ours
        now = self.now()
        with self._lock:
            tokens = self._tokens.setdefault(key, _Tokens(size, now))
            tokens.left = min(size, tokens.left + (now - tokens.at) * refill)
            tokens.at = now
            if tokens.left < 1.0:
                return True
            tokens.left -= 1.0
            return False
