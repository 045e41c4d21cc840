"""The heartbeat is owed across every wait of a run, not per wait: waits that each stay under
half the hook's timeout can add up to more than all of it."""

from __future__ import annotations

from typing import Any

from enipin_core.waiting import Heartbeat, WaitProgress, after_poll

TIMEOUT, POLL = 300, 5


def poll(state: dict[str, Any], key: str, times: int) -> dict[str, Any]:
    for _ in range(times):
        wait = WaitProgress.from_dict(state.get(key))
        wait, beat = after_poll(state, wait, POLL, TIMEOUT)
        state = {**state, key: wait.to_dict(), "heartbeat": beat}
    return state


def test_three_waits_under_half_the_timeout_each_still_make_a_heartbeat_due() -> None:
    state = poll({}, "poolWait", 20)  # 100 s
    assert not Heartbeat.of(state).due
    state = poll(state, "attachWait", 6)  # 130 s
    assert not Heartbeat.of(state).due
    state = poll(state, "agentWait", 4)  # 150 s: half the timeout, counted over all three
    assert Heartbeat.of(state).due
    assert WaitProgress.from_dict(state["agentWait"]).waited_seconds == 20


def test_a_due_heartbeat_stays_due_until_a_heartbeat_resets_it() -> None:
    state = poll({}, "agentWait", 30)
    state = poll(state, "verification", 1)  # the next wait inherits what is owed
    assert Heartbeat.of(state) == Heartbeat(since_seconds=155, due=True)
    reset = {**state, "heartbeat": Heartbeat().to_dict()}  # as RecordHeartbeat returns it
    assert not Heartbeat.of(poll(reset, "verification", 1)).due


def test_waits_of_an_older_release_are_read_without_their_heartbeat_fields() -> None:
    old = {"polls": 3, "waited_seconds": 15, "since_heartbeat": 15, "heartbeat_due": False}
    assert WaitProgress.from_dict(old) == WaitProgress(polls=3, waited_seconds=15)
