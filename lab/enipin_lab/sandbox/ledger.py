"""Every AWS call made in the sandbox, who made it, with what and how it ended; and faults on
demand: throttling, server errors and broken connections.

All of it sits on moto's botocore stubber, the one door every boto3 client in the process goes
through, so the code under test needs nothing: a throttled call gets AWS's own error response, a
broken connection botocore's own exception, and botocore's retries run exactly as they would
against AWS.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

from enipin_lab.sandbox.buckets import RequestBuckets

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
# What each protocol answers for an internal fault on AWS's side (HTTP 500).
_SERVER_ERRORS: dict[str, tuple[int, str, str]] = {
    "ec2": (
        500,
        "text/xml",
        "<Response><Errors><Error><Code>InternalError</Code>"
        "<Message>An internal error has occurred</Message></Error></Errors>"
        "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>",
    ),
    "auto-scaling": (
        500,
        "text/xml",
        "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>"
        "<Message>An internal error occurred</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>",
    ),
    "lambda": (
        500,
        "application/json",
        '{"__type": "ServiceException", "message": "An internal error occurred"}',
    ),
}
_JSON_SERVER_ERROR = (
    500,
    "application/x-amz-json-1.1",
    '{"__type": "InternalServerError", "message": "An internal error occurred"}',
)
# Faults a rule can inject: an error response, or a connection that breaks before one comes.
FAULT_KINDS = (
    "throttle",
    "server_error",
    "client_error",  # a 400 with the ``code`` given
    "connect_timeout",
    "read_timeout",
    "no_connection",
)
_XML_CODE = re.compile(rb"<Code>([^<]+)</Code>")
_JSON_CODE = re.compile(rb'"__type"\s*:\s*"(?:[^"#]*#)?([^"]+)"')


@contextmanager
def calls_made_by(name: str | None) -> Iterator[None]:
    """Attribute the AWS calls of this thread to ``name`` (a Lambda function; None: the sandbox,
    operators) meanwhile."""
    previous = getattr(_caller, "name", None)
    _caller.name = name
    try:
        yield
    finally:
        _caller.name = previous


Params = dict[str, Any]


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    outcome: str  # "ok", the AWS error code, or the connection error's class name
    caller: str | None  # the Lambda function; None: the engine, the sandbox's actors, operators
    # The request as sent: query parameters (lists of values) or the JSON body; a REST call's
    # path under "__path__".
    params: Params = field(default_factory=dict, compare=False)
    at: float = field(default=0.0, compare=False)  # the sandbox clock's AWS seconds


@dataclass
class _Rule:
    service: str
    operation: str
    kind: str
    remaining: int | None
    rate: float
    rng: random.Random
    where: Callable[[Params], bool] | None = None
    code: str = ""

    def fires(self, service: str, operation: str, params: Params) -> bool:
        if (self.service, self.operation) != (service, operation):
            return False
        if self.where is not None and not self.where(params):
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True
        return self.rng.random() < self.rate


@dataclass
class Ledger:
    """AWS API calls, Lambda invocations and fault rules of one sandbox."""

    clock: Callable[[], float] | None = None  # AWS seconds now, for each call's ``at``
    calls: list[Call] = field(default_factory=list)
    invocations: Counter[str] = field(default_factory=Counter)
    _rules: list[_Rule] = field(default_factory=list)
    _actors: dict[tuple[str, str], list[Callable[[dict[str, list[str]]], None]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # The account's request-rate buckets, asked after the rules.
    limiter: RequestBuckets | None = None

    def throttle(
        self,
        service: str,
        operation: str,
        *,
        times: int | None = None,
        rate: float = 0.0,
        seed: int = 0,
        where: Callable[[Params], bool] | None = None,
    ) -> None:
        """Answer ``service.operation`` with AWS's throttling error ``times`` times, or at
        ``rate``. ``service`` is botocore's event name for it: ec2, auto-scaling, ssm, sfn."""
        self.fault(service, operation, "throttle", times=times, rate=rate, seed=seed, where=where)

    def fault(
        self,
        service: str,
        operation: str,
        kind: str,
        *,
        times: int | None = None,
        rate: float = 0.0,
        seed: int = 0,
        where: Callable[[Params], bool] | None = None,
        code: str = "",
    ) -> None:
        """Fail ``service.operation`` ``times`` times, or at ``rate``, the way ``kind`` says
        (``FAULT_KINDS``): AWS's throttling or internal-error response, an error response with
        ``code`` (``client_error``), or a connection that times out or cannot be made
        (botocore's own exceptions). ``where`` picks the calls by their parameters."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS}")
        if (kind == "client_error") != bool(code):
            raise ValueError("a client_error needs its code, and only a client_error takes one")
        rule = _Rule(service, operation, kind, times, rate, random.Random(seed), where, code)
        with self._lock:
            self._rules.append(rule)

    def clear(self, service: str, operation: str) -> None:
        """Drop every fault rule of ``service.operation``: the API answers normally again."""
        with self._lock:
            kept = [r for r in self._rules if (r.service, r.operation) != (service, operation)]
            self._rules = kept

    def before(
        self, service: str, operation: str, actor: Callable[[dict[str, list[str]]], None]
    ) -> None:
        """Let another actor act on the sandbox just before the next such call is served (once),
        e.g. a concurrent launch taking the ENI this one is about to attach. ``actor`` gets
        the call's query parameters."""
        with self._lock:
            self._actors.setdefault((service, operation), []).append(actor)

    def record_invocation(self, function_name: str) -> None:
        with self._lock:
            self.invocations[function_name] += 1

    def operations(self) -> set[str]:
        """Every ``service.Operation`` called in the sandbox, by anyone."""
        with self._lock:
            return {f"{c.service}.{c.operation}" for c in self.calls}

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
            params = _params_of(request)
            ledger._run_actor(service, operation, request)
            try:
                response = ledger._faulted(service, operation, params, request)
            except Exception as exc:  # a broken connection: botocore retries it, as on AWS
                ledger._record(service, operation, params, None, type(exc).__name__)
                raise
            if response is None:
                response = original(self, event_name, request, **kwargs)
            ledger._record(service, operation, params, response)
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

    def _faulted(
        self, service: str, operation: str, params: Params, request: Any
    ) -> AWSResponse | None:
        with self._lock:
            rule = next((r for r in self._rules if r.fires(service, operation, params)), None)
        if rule is not None:
            fired = rule.kind
        elif self.limiter is not None and self.limiter.refuses(service, operation, params):
            fired = "throttle"
        else:
            return None
        if fired == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if fired == "read_timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if fired == "no_connection":
            raise EndpointConnectionError(endpoint_url=request.url)
        if fired == "throttle":
            status, content_type, body = _THROTTLE_RESPONSES.get(service, _JSON_THROTTLE)
        elif fired == "client_error" and rule is not None:
            status, content_type, body = _client_error(service, rule.code)
        else:
            status, content_type, body = _SERVER_ERRORS.get(service, _JSON_SERVER_ERROR)
        headers = {"Content-Type": content_type, "x-amzn-RequestId": "0" * 8}
        return AWSResponse(request.url, status, headers, MockRawResponse(body.encode()))

    def _record(
        self,
        service: str,
        operation: str,
        params: Params,
        response: AWSResponse | None,
        failure: str | None = None,
    ) -> None:
        outcome = failure or "ok"
        if response is not None and response.status_code >= 400:
            match = _XML_CODE.search(response.content) or _JSON_CODE.search(response.content)
            outcome = match.group(1).decode() if match else str(response.status_code)
        at = self.clock() if self.clock is not None else 0.0
        call = Call(service, operation, outcome, getattr(_caller, "name", None), params, at)
        with self._lock:
            self.calls.append(call)


def _client_error(service: str, code: str) -> tuple[int, str, str]:
    """A 400 with ``code``, in the service's protocol."""
    message = f"{code} (injected by the sandbox)"
    if service == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            "</Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
        )
        return 400, "text/xml", body
    if service == "auto-scaling":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}"
            "</Message></Error><RequestId>0</RequestId></ErrorResponse>"
        )
        return 400, "text/xml", body
    return 400, "application/x-amz-json-1.1", json.dumps({"__type": code, "message": message})


def _params_of(request: Any) -> Params:
    """The request's parameters: a query body as lists of values, a JSON body as it is."""
    body = request.body or b""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    params: Params = {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        params = loaded if isinstance(loaded, dict) else {}
    elif text:
        params = dict(parse_qs(text))
    path = urlsplit(str(request.url)).path
    if path not in ("", "/"):
        params = {**params, "__path__": unquote(path)}
    return params
