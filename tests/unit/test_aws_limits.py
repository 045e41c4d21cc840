"""Limits AWS sets that the functions' own arithmetic must respect: filter values per call, the
SDK's timeouts inside a function's, and wait bounds inside the history and the hook's timeout."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import load_event

from enipin_core.aws import FILTER_VALUES_LIMIT, FUNCTION_TIMEOUT, SDK_CONFIG, chunked
from enipin_core.errors import SettingsOutOfBounds
from enipin_core.settings import HISTORY_BUDGET, HISTORY_LIMIT, Settings
from enipin_lab.sandbox import TEMPLATE
from enipin_lab.sandbox.template import load as load_template

DEFAULTS = Settings.from_env()


def test_filter_values_go_200_a_call_each_once() -> None:
    ids = [f"i-{n:017x}" for n in range(450)] + ["i-00000000000000000"]
    chunks = list(chunked(ids))
    assert [len(c) for c in chunks] == [200, 200, 50]
    assert sorted(v for c in chunks for v in c) == sorted(set(ids))
    assert FILTER_VALUES_LIMIT == 200
    assert list(chunked([])) == []


def test_every_sdk_attempt_and_its_retries_fit_inside_the_functions_timeout() -> None:
    retries = SDK_CONFIG.retries or {}
    attempts = int(retries["max_attempts"])
    per_attempt = float(SDK_CONFIG.connect_timeout) + float(SDK_CONFIG.read_timeout)
    back_off = sum(2**n for n in range(attempts - 1))  # standard mode: under 2^n s each
    assert attempts * per_attempt + back_off < FUNCTION_TIMEOUT
    template = load_template(TEMPLATE)
    assert template["Globals"]["Function"]["Timeout"] == FUNCTION_TIMEOUT


def test_the_templates_defaults_are_within_bounds() -> None:
    assert DEFAULTS.out_of_bounds() is None
    assert DEFAULTS.history_events(DEFAULTS.launch_wait_seconds()) < HISTORY_BUDGET < HISTORY_LIMIT


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"poll_seconds": 1, "agent_wait_seconds": 86400, "heartbeat_timeout": 7200}, "history"),
        ({"pool_wait_seconds": 3600, "heartbeat_timeout": 30}, "global timeout"),
        ({"detach_wait_seconds": 7200, "heartbeat_timeout": 30}, "termination"),
    ],
)
def test_bounds_past_the_history_or_the_hooks_global_timeout_are_named(
    change: dict[str, int], words: str
) -> None:
    problem = replace(DEFAULTS, **change).out_of_bounds()
    assert problem is not None and words in problem


def test_validation_rejects_metadata_overrides_past_the_bounds() -> None:
    import validate_event

    groups = frozenset({"enipin-demo"})
    settings = replace(DEFAULTS, heartbeat_timeout=30)  # global timeout 3,000 s
    metadata = json.dumps({"poolWaitSeconds": 3600})
    event = load_event("launch-lifecycle-action", NotificationMetadata=metadata)
    with pytest.raises(Exception, match="global timeout") as caught:
        validate_event.decide(event, settings, groups)
    # by name, as the state machine matches it (a sandbox's deploy may import the class anew)
    assert type(caught.value).__name__ == SettingsOutOfBounds.__name__


def test_enipin_reconcile_waits_out_the_reconcilers_timeout_and_never_retries_the_invoke() -> None:
    from enipin.reconcile import INVOKE_CONFIG, RECONCILER_TIMEOUT

    template = load_template(TEMPLATE)
    timeout = template["Resources"]["ReconcilerFunction"]["Properties"]["Timeout"]
    assert timeout == RECONCILER_TIMEOUT
    assert float(INVOKE_CONFIG.read_timeout) > RECONCILER_TIMEOUT
    assert (INVOKE_CONFIG.retries or {})["total_max_attempts"] == 1
