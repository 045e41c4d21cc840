"""Lambda functions run in-process, the way the AWS Python runtime runs them.

moto's Lambda needs Docker. Here a function's ``Handler`` string is imported from its code
directory (as the runtime imports from /var/task) and called with a Lambda context; an
exception becomes the runtime's error document, so the state machine sees the exception's
class name as the error. Log lines go to the function's log, not the terminal.

On AWS an execution environment serves one invocation at a time, and concurrent invocations run
in environments of their own that share no memory. Here they are threads of one process, so
what a handler keeps between its calls must be kept per thread where Powertools keeps it in a
shared object: the metrics an invocation adds are the ones its own flush publishes.

A function's clock is AWS's: on AWS, Step Functions' timestamps, EC2's ``LaunchTime`` and the
function's own ``datetime.now()`` read one wall clock. The sandbox's clock may run slower or
faster than this machine's, so the functions' modules read the sandbox's (``_on_aws_time``).
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import io
import json
import os
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from unittest.mock import patch

from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch as emf
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from moto.awslambda.models import LambdaFunction

from enipin_lab.sandbox.base import REGION
from enipin_lab.sandbox.clock import Clock
from enipin_lab.sandbox.ledger import Ledger, calls_made_by

_RUNTIME_ENV = {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}


@dataclass(frozen=True)
class FunctionCode:
    code_dir: Path
    handler: str
    environment: dict[str, str]
    memory_mb: int
    timeout_s: int


class _Context:
    """The attributes of the runtime's LambdaContext that handlers and Powertools read."""

    def __init__(self, fn: LambdaFunction, code: FunctionCode) -> None:
        self.function_name = fn.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = fn.function_arn
        self.memory_limit_in_mb = code.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{fn.function_name}"
        self.log_stream_name = self.aws_request_id
        self._deadline = time.monotonic() + code.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


# The function a thread is running and the logs it writes to. Module-wide, not per sandbox:
# a handler module's log handler keeps the stdout it first saw, which may be an earlier
# sandbox's, and what it prints must still land in the running sandbox's logs.
_ROUTE = threading.local()


class _RoutedStdout(io.TextIOBase):
    """stdout that sends what a function's thread prints to that function's log."""

    def __init__(self, terminal: TextIO) -> None:
        self._terminal = terminal

    def write(self, text: str) -> int:
        name = getattr(_ROUTE, "function", None)
        if name is None:
            return self._terminal.write(text)
        _ROUTE.logs[name].append(text)
        return len(text)

    def flush(self) -> None:
        self._terminal.flush()


class LambdaRuntime:
    """Patches moto's Lambda invoke to run the deployed handlers in this process."""

    def __init__(self, ledger: Ledger, clock: Clock | None = None) -> None:
        self.ledger = ledger
        self.clock = clock
        self.functions: dict[str, FunctionCode] = {}
        self.logs: dict[str, list[str]] = defaultdict(list)
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._lock = threading.Lock()
        self._stdout: _RoutedStdout | None = None
        self._env: dict[str, str] = {}
        self._loaded_dirs: set[str] = set()

    def register(self, function_name: str, code: FunctionCode) -> None:
        # The runtime's own variables come first, as on AWS (the Region, for the SDK).
        self._check_environment(function_name, {**_RUNTIME_ENV, **code.environment})
        self.functions[function_name] = code
        self._handler(function_name)  # fail at deploy, like a broken Handler fails on AWS

    def install(self, stack: ExitStack) -> None:
        runtime = self

        def invoke(fn: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            return runtime.invoke(fn, event)

        stack.enter_context(patch.object(LambdaFunction, "_invoke_lambda", invoke))
        stack.enter_context(patch.dict(os.environ))
        stack.enter_context(patch.object(sys, "path", list(sys.path)))
        stack.callback(self._unload)
        self._stdout = _RoutedStdout(sys.stdout)
        stack.enter_context(patch.object(sys, "stdout", self._stdout))
        stack.enter_context(patch.object(warnings, "showwarning", self._show_warning))
        # The EMF blobs a flush prints go to the function's log too, whatever sys.stdout is now
        # (an operator command run through CliRunner swaps it while a function may be flushing).
        stack.enter_context(patch.object(emf, "print", self._print, create=True))
        for name in _EMF_INVOCATION_STATE:
            stack.enter_context(
                patch.object(AmazonCloudWatchEMFProvider, name, _per_environment(name), create=True)
            )

    def _show_warning(
        self, message: Any, category: Any, filename: str, lineno: int, *_: Any
    ) -> None:
        """Warnings from a function's thread belong in its log, like everything it prints."""
        # to the routed stdout itself: a CliRunner may have swapped sys.stdout meanwhile
        print(
            warnings.formatwarning(message, category, filename, lineno), end="", file=self._stdout
        )

    def _print(self, *values: Any, **kwargs: Any) -> None:
        print(*values, **(kwargs | {"file": self._stdout}))

    def invoke(self, fn: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        """Run the handler; return (payload, errored, log tail) as moto expects."""
        code = self.functions[fn.function_name]
        handler = self._handler(fn.function_name)
        self.ledger.record_invocation(fn.function_name)
        _ROUTE.function, _ROUTE.logs = fn.function_name, self.logs
        try:
            with calls_made_by(fn.function_name):
                result = handler(event if event is not None else {}, _Context(fn, code))
            return json.dumps(result), False, ""
        except Exception as exc:  # the runtime reports any exception as the function's error
            return json.dumps(_error_document(exc)), True, ""
        finally:
            _ROUTE.function = None

    def _handler(self, function_name: str) -> Callable[[Any, Any], Any]:
        with self._lock:
            if function_name not in self._handlers:
                code = self.functions[function_name]
                module_name, _, attr = code.handler.rpartition(".")
                if str(code.code_dir) not in self._loaded_dirs:
                    # a fresh process per deploy: nothing imported earlier from this code
                    # (with another environment) may be reused
                    self._forget(str(code.code_dir))
                    self._loaded_dirs.add(str(code.code_dir))
                    sys.path.insert(0, str(code.code_dir))
                module = importlib.import_module(module_name)
                self._on_aws_time(str(code.code_dir))
                if not (module_name and hasattr(module, attr)):
                    raise ImportError(
                        f"Runtime.HandlerNotFound: {code.handler} is undefined or not exported"
                    )
                self._handlers[function_name] = getattr(module, attr)
            return self._handlers[function_name]

    def _on_aws_time(self, code_dir: str) -> None:
        """Every module of the function's code that reads the wall clock (``from datetime
        import datetime``) reads the sandbox's. Fidelity: one wall clock for every AWS service
        and the functions, whatever the sandbox's pace (on the slow clock this machine's runs
        ahead of AWS time, and a function would think every launch long past)."""
        if self.clock is None:
            return
        aws_datetime = self.clock.datetime_class()
        for module in _modules_under(code_dir):
            if getattr(module, "datetime", None) is dt.datetime:
                module.datetime = aws_datetime

    def _check_environment(self, function_name: str, env: dict[str, str]) -> None:
        """All functions share this process's environment: a conflict would be a lie."""
        for key, value in env.items():
            if self._env.setdefault(key, value) != value:
                raise ValueError(
                    f"{function_name}: {key}={value!r} conflicts with another function's "
                    f"{self._env[key]!r}; the sandbox runs every function in one process"
                )
            os.environ[key] = value

    def _unload(self) -> None:
        """Forget the imported handlers: the next sandbox deploys (and imports) afresh."""
        for code_dir in {str(code.code_dir) for code in self.functions.values()}:
            self._forget(code_dir)
        self._handlers.clear()

    @staticmethod
    def _forget(code_dir: str) -> None:
        for name in [m.__name__ for m in _modules_under(code_dir)]:
            del sys.modules[name]


def _modules_under(code_dir: str) -> list[Any]:
    return [
        module
        for module in list(sys.modules.values())
        if (getattr(module, "__file__", None) or "").startswith(code_dir + os.sep)
    ]


# What Powertools' EMF provider gathers during one invocation and clears when it flushes. One
# provider serves every invocation of a module (``Metrics`` shares its store by design), which on
# AWS is one environment's, one invocation at a time.
_EMF_INVOCATION_STATE = (
    "metric_set",
    "dimension_set",
    "metadata_set",
    "dimension_sets",
    "timestamp",
)


def _per_environment(name: str) -> property:
    """The attribute ``name`` of a provider, kept per thread (per execution environment): each
    starts from what the module's import set, as a new environment runs the import itself."""
    key = f"_sandbox_{name}"

    def environment(provider: Any) -> threading.local:
        return provider.__dict__.setdefault("_sandbox_environments", threading.local())

    def get(provider: Any) -> Any:
        local = environment(provider)
        if not hasattr(local, key):
            setattr(local, key, copy.copy(provider.__dict__.get(key)))
        return getattr(local, key)

    def set_(provider: Any, value: Any) -> None:
        # the first value, set by the import, is where every new environment starts
        provider.__dict__.setdefault(key, copy.copy(value))
        setattr(environment(provider), key, value)

    return property(get, set_)


def _error_document(exc: BaseException) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": str(uuid.uuid4()),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }
