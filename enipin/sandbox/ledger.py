"""Every AWS call made in the sandbox, who made it and how it ended; and throttling on demand.

Both sit on moto's botocore stubber, the one door every boto3 client in the process goes through,
so the code under test needs nothing: a throttled call gets AWS's own error response and
botocore's retries run exactly as they would against AWS.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch
from urllib.parse import parse_qs

from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

_caller = threading.local()

# What each protocol answers when an account's request rate is exceeded.
_THROTTLE_RESPONSES: dict[str, tuple[int, str, str]] = {
    "ec2": (
        503,
        "text/xml",
        "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
        "<Message>Request limit exceeded.</Message></Error></Errors>"
        "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>",
    ),
    "auto-scaling": (
        400,
        "text/xml",
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
        "<Message>Rate exceeded</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>",
    ),
    "lambda": (
        429,
        "application/json",
        '{"__type": "TooManyRequestsException", "message": "Rate exceeded"}',
    ),
}
_JSON_THROTTLE = (
    400,
    "application/x-amz-json-1.1",
    '{"__type": "ThrottlingException", "message": "Rate exceeded"}',
)
_XML_CODE = re.compile(rb"<Code>([^<]+)</Code>")
_JSON_CODE = re.compile(rb'"__type"\s*:\s*"(?:[^"#]*#)?([^"]+)"')


@contextmanager
def calls_made_by(name: str | None) -> Iterator[None]:
    """Attribute the AWS calls of this thread to ``name`` (a Lambda function; None: the world,
    operators) meanwhile."""
    previous = getattr(_caller, "name", None)
    _caller.name = name
    try:
        yield
    finally:
        _caller.name = previous


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    outcome: str  # "ok" or the AWS error code
    caller: str | None  # the Lambda function, or None for the engine, the world and operators


@dataclass
class _Rule:
    service: str
    operation: str
    remaining: int | None
    rate: float
    rng: random.Random

    def fires(self, service: str, operation: str) -> bool:
        if (self.service, self.operation) != (service, operation):
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True
        return self.rng.random() < self.rate


@dataclass
class Ledger:
    """AWS API calls, Lambda invocations and throttling rules of one sandbox."""

    calls: list[Call] = field(default_factory=list)
    invocations: Counter[str] = field(default_factory=Counter)
    _rules: list[_Rule] = field(default_factory=list)
    _actors: dict[tuple[str, str], list[Callable[[dict[str, list[str]]], None]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def throttle(
        self,
        service: str,
        operation: str,
        *,
        times: int | None = None,
        rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Answer ``service.operation`` with AWS's throttling error ``times`` times, or at
        ``rate``. ``service`` is botocore's event name for it: ec2, auto-scaling, ssm, sfn."""
        rule = _Rule(service, operation, times, rate, random.Random(seed))
        with self._lock:
            self._rules.append(rule)

    def before(
        self, service: str, operation: str, actor: Callable[[dict[str, list[str]]], None]
    ) -> None:
        """Let another actor act on the world just before the next such call is served (once),
        e.g. a concurrent launch taking the ENI this one is about to attach. ``actor`` gets
        the call's query parameters."""
        with self._lock:
            self._actors.setdefault((service, operation), []).append(actor)

    def record_invocation(self, function_name: str) -> None:
        with self._lock:
            self.invocations[function_name] += 1

    def by_operation(
        self, *, callers_only: bool = True, outcome: str | None = None
    ) -> Counter[str]:
        """``service.Operation`` -> count, for the code under test unless asked otherwise."""
        with self._lock:
            calls = list(self.calls)
        return Counter(
            f"{c.service}.{c.operation}"
            for c in calls
            if (c.caller is not None or not callers_only)
            and (outcome is None or c.outcome == outcome)
        )

    def install(self, stack: ExitStack) -> None:
        original = BotocoreStubber.__call__
        ledger = self

        def stub(self: BotocoreStubber, event_name: str, request: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return None
            _, service, operation = event_name.split(".", 2)
            ledger._run_actor(service, operation, request)
            response = ledger._throttled(service, operation, request)
            if response is None:
                response = original(self, event_name, request, **kwargs)
            ledger._record(service, operation, response)
            return response

        stack.enter_context(patch.object(BotocoreStubber, "__call__", stub))

    def _run_actor(self, service: str, operation: str, request: Any) -> None:
        with self._lock:
            waiting = self._actors.get((service, operation))
            actor = waiting.pop(0) if waiting else None
        if actor is not None:
            body = request.body or b""
            with calls_made_by(None):  # the actor's own calls are not the caller's
                actor(parse_qs(body.decode() if isinstance(body, bytes) else body))

    def _throttled(self, service: str, operation: str, request: Any) -> AWSResponse | None:
        with self._lock:
            fired = any(rule.fires(service, operation) for rule in self._rules)
        if not fired:
            return None
        status, content_type, body = _THROTTLE_RESPONSES.get(service, _JSON_THROTTLE)
        headers = {"Content-Type": content_type, "x-amzn-RequestId": "0" * 8}
        return AWSResponse(request.url, status, headers, MockRawResponse(body.encode()))

    def _record(self, service: str, operation: str, response: AWSResponse | None) -> None:
        outcome = "ok"
        if response is not None and response.status_code >= 400:
            match = _XML_CODE.search(response.content) or _JSON_CODE.search(response.content)
            outcome = match.group(1).decode() if match else str(response.status_code)
        call = Call(service, operation, outcome, getattr(_caller, "name", None))
        with self._lock:
            self.calls.append(call)
