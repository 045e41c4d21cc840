"""EventBridge rule targets that moto does not deliver to: Step Functions and Lambda; and
scheduled rules, which moto stores but never fires.

moto matches rules with its real event-pattern matcher but only delivers to logs, SQS and
buses. AWS delivers to a state machine with StartExecution (no execution name: EventBridge
cannot give one) and to a function with an asynchronous invoke; both are modelled here. A
``rate(...)`` schedule invokes its function asynchronously with a "Scheduled Event" once per
period, the first one period after the rule is created (opt-in: ``schedule``).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

from moto.awslambda.exceptions import UnknownFunctionException
from moto.awslambda.utils import get_backend as lambda_backend
from moto.events.models import Rule
from moto.stepfunctions.responses import get_backend as sfn_backend
from moto.utilities.arns import parse_arn

from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.clock import Clock

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class EventBridgeTargets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def install(self, stack: ExitStack) -> None:
        original = Rule.send_to_targets
        targets = self

        def send_to_targets(rule: Rule, event: Any, transform_input: bool = True) -> None:
            if not rule.event_pattern.matches_event(event):
                return
            others = [t for t in rule.targets if not targets._deliver(t, event)]
            if others:
                saved = rule.targets
                rule.targets = others
                try:
                    original(rule, event, transform_input)
                finally:
                    rule.targets = saved

        stack.enter_context(patch.object(Rule, "send_to_targets", send_to_targets))
        self._closed = False
        stack.callback(self.close)

    def schedule(self, clock: Clock, rule_name: str, expression: str, function_arn: str) -> None:
        """Fire ``rate(...)`` ``expression`` at ``function_arn`` on ``clock`` from now on."""
        period = rate_seconds(expression)
        rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule_name}"

        def fire() -> None:
            if self._closed:
                return
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT_ID,
                "time": _aws_time(clock.now()),
                "region": REGION,
                "resources": [rule_arn],
                "detail": {},
            }
            self._deliver({"Arn": function_arn}, event)
            clock.call_later(period, fire)

        clock.call_later(period, fire)

    def close(self) -> None:
        self._closed = True

    def busy(self) -> bool:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return bool(self._threads)

    def _deliver(self, target: dict[str, Any], event: dict[str, Any]) -> bool:
        arn = parse_arn(target["Arn"])
        if arn.service not in ("states", "lambda"):
            return False
        # moto keeps its own bookkeeping key on the event; AWS never delivers it. moto keeps the
        # time as epoch seconds too, where AWS delivers "2026-11-30T04:31:58Z".
        event = {k: v for k, v in event.items() if k != "ingestion-time"}
        if isinstance(event.get("time"), int | float):
            event["time"] = _aws_time(datetime.fromtimestamp(float(event["time"]), UTC))
        if arn.service == "states":
            sfn_backend(arn.account, arn.region).start_execution(
                target["Arn"], name=str(uuid.uuid4()), execution_input=json.dumps(event)
            )
        else:
            thread = threading.Thread(
                target=self._invoke, args=(arn.account, arn.region, target["Arn"], event)
            )
            with self._lock:
                self._threads.append(thread)
            thread.start()
        return True

    @staticmethod
    def _invoke(account: str, region: str, function_arn: str, event: dict[str, Any]) -> None:
        try:
            lambda_backend(account, region).invoke(
                function_name=function_arn,
                qualifier=None,
                body=json.dumps(event),
                headers={"x-amz-invocation-type": "Event"},
                response_headers={},
            )
        except UnknownFunctionException:
            # The target went with its stack (a schedule firing as the sandbox closes): on AWS
            # the delivery fails and EventBridge drops it after its retries, nothing to raise.
            return


def rate_seconds(expression: str) -> float:
    """The period of an EventBridge ``rate(value unit)`` expression, in seconds."""
    match = _RATE.match(expression.strip())
    if match is None:
        raise ValueError(f"only rate(...) schedules are modelled, not {expression!r}")
    value, unit = int(match.group(1)), match.group(2)
    if value < 1 or (value == 1) != (not unit.endswith("s")):
        raise ValueError(f"{expression!r}: EventBridge wants rate(1 minute) or rate(5 minutes)")
    return float(value * _UNIT_SECONDS[unit.rstrip("s")])


def _aws_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
