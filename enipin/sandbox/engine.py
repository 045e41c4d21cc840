"""moto's ASL interpreter on the sandbox clock: Wait states and Retry back-offs take scaled time.

The states, their order and the execution history stay as AWS writes them; only the real
seconds spent waiting shrink (to nothing with the fast clock).
"""

from __future__ import annotations

from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
    WaitFunction,
)

from enipin.sandbox.clock import Clock


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
