"""EventBridge rule targets that moto does not deliver to: Step Functions and Lambda.

moto matches rules with its real event-pattern matcher but only delivers to logs, SQS and
buses. AWS delivers to a state machine with StartExecution (no execution name: EventBridge
cannot give one) and to a function with an asynchronous invoke; both are modelled here.
"""

from __future__ import annotations

import json
import threading
import uuid
from contextlib import ExitStack
from typing import Any
from unittest.mock import patch

from moto.awslambda.utils import get_backend as lambda_backend
from moto.events.models import Rule
from moto.stepfunctions.responses import get_backend as sfn_backend
from moto.utilities.arns import parse_arn


class EventBridgeTargets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

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

    def busy(self) -> bool:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return bool(self._threads)

    def _deliver(self, target: dict[str, Any], event: dict[str, Any]) -> bool:
        arn = parse_arn(target["Arn"])
        if arn.service not in ("states", "lambda"):
            return False
        # moto keeps its own bookkeeping key on the event; AWS never delivers it
        event = {k: v for k, v in event.items() if k != "ingestion-time"}
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
        lambda_backend(account, region).invoke(
            function_name=function_arn,
            qualifier=None,
            body=json.dumps(event),
            headers={"x-amz-invocation-type": "Event"},
            response_headers={},
        )
