"""moto's ASL interpreter on the sandbox clock: Wait states and Retry back-offs take scaled time;
and so do botocore's own retry back-offs, which the functions' SDK clients sleep through. Step
Functions' own timestamps (``$$.State.EnteredTime``, history events, execution start and stop
dates) read the sandbox clock too: they are AWS time, as the waits are.

The states, their order and the execution history stay as AWS writes them; only the real
seconds spent waiting shrink (to nothing with the fast clock).
"""

from __future__ import annotations

import datetime as dt
import threading
from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any, ClassVar
from unittest.mock import patch

import botocore.endpoint
from antlr4 import ParserRuleContext
from moto.stepfunctions.parser import models as parser_models
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
from moto.stepfunctions.parser.asl.component.state import state as state_module
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
    WaitFunction,
)
from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
from moto.stepfunctions.parser.backend import execution as execution_module

from enipin_lab.sandbox.clock import Clock


class AslClock:
    """Route the interpreter's two sleeps (Wait, Retry) through the sandbox clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def install(self, stack: ExitStack) -> None:
        clock = self.clock

        def wait_interval(self: WaitFunction, env: Any, wait_seconds: int) -> None:
            # Interruptible like the original: stopping an execution ends its Wait at once.
            if wait_seconds > 0:
                env.program_state_event.wait(clock.real_seconds(wait_seconds))

        stack.enter_context(patch.object(WaitFunction, "_wait_interval", wait_interval))
        stack.enter_context(patch.object(retrier_decl, "time", SimpleNamespace(sleep=clock.sleep)))
        # An SDK retry waits its back-off in AWS time too: 2 real seconds of it are 2 seconds
        # against a hook's heartbeat timeout, not 100 (the fast clock's 1/50).
        stack.enter_context(
            patch.object(botocore.endpoint, "time", SimpleNamespace(sleep=clock.sleep))
        )
        self._install_timestamps(stack)

    def _install_timestamps(self, stack: ExitStack) -> None:
        """Step Functions stamps states, history events and executions with AWS time."""
        clock = self.clock

        aws_datetime = SimpleNamespace(
            datetime=clock.datetime_class(),
            timezone=dt.timezone,
            timedelta=dt.timedelta,
            UTC=dt.UTC,
        )
        for module in (state_module, parser_models, execution_module):
            stack.enter_context(patch.object(module, "datetime", aws_datetime))
        stack.enter_context(
            patch.object(EventManager, "_get_current_timestamp", staticmethod(lambda: clock.now()))
        )


class AslParseCache:
    """Parse each definition once, not once per execution; and keep the engine's Lambda client.

    moto lexes and parses the definition with ANTLR at every StartExecution: about 1.8 CPU
    seconds for enipin's launch machine, which is most of what a busy sandbox spends (a 200-
    instance scale-out is CPU-bound on it). The parse tree is kept per definition and only
    read afterwards; each execution still gets its own evaluation components from it, as
    before, so no state is shared between executions (nor between sandboxes).
    """

    # Kept for the process, not per sandbox: every sandbox deploys the same definitions, and a
    # test run opens hundreds (a parse is a second or two of each one's start).
    _trees: ClassVar[dict[str, ParserRuleContext]] = {}
    _trees_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def install(self, stack: ExitStack) -> None:
        original = AmazonStateLanguageParser.parse
        cache = self

        def parse(definition: str) -> tuple[EvalComponent, ParserRuleContext]:
            with cache._trees_lock:
                tree = cache._trees.get(definition)
            if tree is None:  # first time, or a syntax error (raised again, never kept)
                program, tree = original(definition)
                with cache._trees_lock:
                    cache._trees[definition] = tree
                return program, tree
            return Preprocessor().visit(tree), tree

        stack.enter_context(patch.object(AmazonStateLanguageParser, "parse", staticmethod(parse)))
        # The engine also builds a boto3 client for every Lambda task it runs (~30 ms each);
        # one per Region and service does the same calls.
        make_client = lambda_eval_utils.boto_client_for
        clients: dict[tuple[str, str], Any] = {}

        def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
            with cache._lock:
                if (region, service) not in clients:
                    clients[(region, service)] = make_client(region, service, state_credentials)
                return clients[(region, service)]

        stack.enter_context(patch.object(lambda_eval_utils, "boto_client_for", boto_client_for))
