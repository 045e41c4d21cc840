"""The playground's levers and fixes, pulled in process: each lever is chaos's fault of that
name, and each fix leaves the group pinned again the way its text says."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from conftest import assert_no_eni_doubled, assert_pinned, in_service

from enipin_lab.playground import LEVERS, LeverError, Playground
from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]


@pytest.fixture
def playground(sandbox: Factory) -> Iterator[Playground]:
    sb = sandbox(azs=1, pool_per_az=4, max_size=3)
    sb.scale_to(1)
    sb.settle()
    ground = Playground(sb)  # not served: the levers alone
    yield ground
    ground.stop()


def statuses(sb: Sandbox) -> list[str]:
    return sorted(e["status"] for e in sb.executions())


def test_every_lever_is_a_chaos_fault_of_the_same_name() -> None:
    from enipin_lab.chaos import FAULTS

    assert set(LEVERS) <= set(FAULTS)


def test_an_agent_fixed_while_its_launch_waits_is_pinned_not_given_up(
    playground: Playground,
) -> None:
    sb = playground.sb
    pulled = playground.pull("absent_agent", {})
    (instance,) = pulled["launched"]
    sb.clock.sleep(120)  # the workflow waits for the agent (AgentWaitSeconds is 600)
    assert playground.fix("absent_agent", {})["healed"] == [instance]
    sb.settle()
    assert_pinned(sb, instance)
    assert instance in in_service(sb)
    assert statuses(sb) == ["SUCCEEDED", "SUCCEEDED"]


def test_an_eni_detached_by_hand_is_pinned_again_by_the_fix_a_reconciler_round(
    playground: Playground,
) -> None:
    sb = playground.sb
    (instance,) = in_service(sb)
    assert playground.pull("eni_detached_by_hand", {"force": True})["done"]
    sb.settle()
    assert playground.faults.members()[instance] == "InService"
    assert not [e for e in playground.faults.pool() if e.get("Attachment")]
    fixed = playground.fix("eni_detached_by_hand", {})
    assert fixed["reconciler"]["repairs"], fixed
    sb.settle()
    assert_pinned(sb, instance)
    assert_no_eni_doubled(sb)


def test_a_dropped_launch_event_is_started_by_the_fix_a_reconciler_round(
    playground: Playground,
) -> None:
    sb = playground.sb
    (instance,) = playground.pull("drop_event", {})["launched"]
    sb.clock.sleep(60)
    assert playground.faults.members()[instance] == "Pending:Wait"  # no workflow runs for it
    assert len(sb.executions()) == 1
    playground.fix("drop_event", {})
    sb.settle()
    assert_pinned(sb, instance)
    assert statuses(sb) == ["SUCCEEDED", "SUCCEEDED"]


def test_a_throttled_api_answers_again_once_fixed_and_a_lever_with_nothing_to_fix_says_so(
    playground: Playground,
) -> None:
    sb = playground.sb
    playground.fix("throttle_burst", {})  # nothing throttled yet: a no-op
    sb.ledger.throttle("ec2", "AttachNetworkInterface", times=1000)
    playground.fix("throttle_burst", {})
    (instance,) = playground.pull("scale_out", {"count": 1})["launched"]
    sb.settle()
    assert_pinned(sb, instance)
    assert not [c for c in sb.ledger.calls if c.outcome == "RequestLimitExceeded"]
    with pytest.raises(LeverError, match="scale_out leaves nothing broken"):
        playground.fix("scale_out", {})
    with pytest.raises(LeverError, match="no lever 'reboot'"):
        playground.pull("reboot", {})
