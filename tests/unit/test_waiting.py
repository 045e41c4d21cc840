"""Waits and heartbeats on the wall clock: what the hook counts is real time since the action
was last extended (Lambda run time, Retry back-off and EventBridge's delivery included), not
the Wait states' seconds; and the heartbeat is owed across every wait of a run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from enipin_core.waiting import (
    Heartbeat,
    TaskInput,
    WaitProgress,
    after_poll,
    iso,
    until_heartbeat_due,
)

TIMEOUT = 300
T0 = datetime(2030, 1, 1, tzinfo=UTC)  # in the future: a function's own clock never wins here


def task(state: dict[str, Any], at: float, retries: int = 0) -> TaskInput:
    return TaskInput(state, T0 + timedelta(seconds=at), retries)


def poll(state: dict[str, Any], key: str, at: float) -> dict[str, Any]:
    wait, beat = after_poll(task(state, at), WaitProgress.from_dict(state.get(key)), TIMEOUT)
    return {**state, key: wait.to_dict(), "heartbeat": beat}


def test_a_heartbeat_is_due_half_the_timeout_after_the_event_whatever_the_polls_counted() -> None:
    state = {"heartbeat": Heartbeat.since(T0).to_dict()}  # the event's time
    state = poll(state, "agentWait", at=100)  # one poll, but 100 s of Lambda retries before it
    assert not Heartbeat.of(state).due
    state = poll(state, "agentWait", at=150)
    assert Heartbeat.of(state).due


def test_three_waits_under_half_the_timeout_each_still_make_a_heartbeat_due() -> None:
    state = {"heartbeat": Heartbeat.since(T0).to_dict()}
    state = poll(state, "poolWait", at=100)
    state = poll(state, "attachWait", at=130)
    assert not Heartbeat.of(state).due
    state = poll(state, "agentWait", at=155)  # 155 s in all: more than half the timeout
    assert Heartbeat.of(state).due
    assert WaitProgress.from_dict(state["agentWait"]).waited(T0 + timedelta(seconds=175)) == 20


def test_a_due_heartbeat_stays_due_until_a_heartbeat_moves_its_time() -> None:
    state = poll({"heartbeat": Heartbeat.since(T0).to_dict()}, "agentWait", at=200)
    state = poll(state, "verification", at=201)
    assert Heartbeat.of(state).due
    beaten = {**state, "heartbeat": Heartbeat.since(T0 + timedelta(seconds=202)).to_dict()}
    assert not Heartbeat.of(poll(beaten, "verification", at=210)).due


def test_an_action_of_unknown_age_is_heartbeated_at_the_first_look() -> None:
    assert Heartbeat.of(poll({}, "agentWait", at=1)).due


def test_a_wait_is_bounded_by_time_since_its_first_poll() -> None:
    state = poll({}, "agentWait", at=10)
    wait = WaitProgress.from_dict(state["agentWait"])
    assert wait.started == iso(T0 + timedelta(seconds=10)) and wait.polls == 1
    assert not wait.exhausted(60, T0 + timedelta(seconds=69))
    assert wait.exhausted(60, T0 + timedelta(seconds=70))
    assert not WaitProgress().exhausted(0, T0)  # a wait that has not started is never spent


def test_a_retried_attempt_reads_the_later_of_the_two_clocks() -> None:
    past = TaskInput({}, datetime(2000, 1, 1, tzinfo=UTC), retry_count=3)
    assert past.now > datetime(2020, 1, 1, tzinfo=UTC)  # the function's own clock
    future = task({}, at=0)
    assert future.now == T0  # Step Functions' entry into the state


def test_a_task_event_carries_the_state_and_step_functions_clock() -> None:
    event = {
        "state": {"instanceId": "i-1"},
        "task": {"EnteredTime": "2030-01-01T00:00:05.123Z", "Name": "X", "RetryCount": 2},
    }
    parsed = TaskInput.of(event)
    assert parsed.state == {"instanceId": "i-1"}
    assert parsed.entered == T0 + timedelta(seconds=5.123)
    assert parsed.retry_count == 2


def test_waits_of_an_older_release_are_read_as_not_started() -> None:
    old = {"polls": 3, "waited_seconds": 15}
    assert WaitProgress.from_dict(old) == WaitProgress(started=None, polls=3)
    assert Heartbeat.of({"heartbeat": {"since_seconds": 155, "due": True}}).due


def test_an_execution_redriven_under_an_older_definition_passes_its_state_alone() -> None:
    old = TaskInput.of({"instanceId": "i-1", "settings": {}})
    assert old.state == {"instanceId": "i-1", "settings": {}}
    assert abs((old.now - datetime.now(UTC)).total_seconds()) < 5


def test_a_wait_state_lasts_no_longer_than_until_the_next_heartbeat_is_due() -> None:
    # an attach's turn, found 149 s after the last heartbeat (an instance slow to run): the wait
    # before it may take 1 s more, so that the attach extends the action before it times out
    action = {"lifecycle": {"token": "t"}, "heartbeat": Heartbeat.since(T0).to_dict()}
    assert until_heartbeat_due(task(action, at=0), TIMEOUT) == 150
    assert until_heartbeat_due(task(action, at=149), TIMEOUT) == 1
    assert until_heartbeat_due(task(action, at=200), TIMEOUT) == 0
    due = action | {"heartbeat": {"at": iso(T0), "due": True}}
    assert until_heartbeat_due(task(due, at=10), TIMEOUT) == 0
    # a replay's pin has no action to keep: half the timeout, as any wait
    assert until_heartbeat_due(task({}, at=0), TIMEOUT) == 150
