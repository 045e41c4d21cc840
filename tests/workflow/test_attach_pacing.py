"""Simultaneous launches pace their attaches to EC2's mutating-request bucket (50 tokens,
refilled at 5 a second, per account and Region, shared with every other caller): each waits
for its turn by rank rather than being refused and retrying at random."""

from __future__ import annotations

from collections.abc import Callable

from conftest import assert_no_eni_doubled, assert_pinned, in_service, path_of

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]


def test_a_burst_past_the_mutating_bucket_attaches_at_its_refill_rate_none_refused(
    sandbox: Factory,
) -> None:
    # GIVEN an account whose other tooling holds 90% of EC2's buckets (5 mutating tokens left,
    # refilled at 0.5 a second), and a deployment told a little less, as Deploy advises (EC2's
    # LaunchTime is to the second, so launches of one burst may place it a second apart)
    sb = sandbox(
        azs=1,
        pool_per_az=10,
        max_size=10,
        buckets=True,
        neighbour=0.9,
        fast=False,  # on the fast clock the simulation's own lateness spaces the attaches
        parameters={"AttachBurst": 4, "AttachesPerSecond": 0.4},
    )
    # WHEN the group launches ten instances at once
    sb.scale_out(10)
    sb.settle()
    # THEN every one is pinned, no ENI twice
    launched = in_service(sb)
    assert len(launched) == 10
    for instance_id in launched:
        assert_pinned(sb, instance_id)
    assert_no_eni_doubled(sb)
    # AND no attach was refused: the burst went first, the rest waited their turns
    attaches = [c for c in sb.ledger.calls if c.operation == "AttachNetworkInterface"]
    assert [c.outcome for c in attaches] == ["ok"] * 10
    paced = [e for e in sb.executions() if "WaitForAttachTurn" in path_of(sb, e["executionArn"])]
    assert len(paced) == 6
    assert attaches[-1].at - attaches[0].at >= (10 - 5) / 0.5  # no faster than the refill
    assert {e["status"] for e in sb.executions()} == {"SUCCEEDED"}
