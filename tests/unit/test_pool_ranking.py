"""Rank-matched candidates: simultaneous launches in one AZ start at different free ENIs, and
looks taken before and after a rival's attach still agree."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from enipin_core.pool import Eni, attach_turn, rank_candidates

AZ = "us-east-1a"


def instance(n: int) -> str:
    return f"i-{n:017x}"


def eni(n: int, holder: str | None = None) -> Eni:
    base = Eni(
        f"eni-{n:017x}", f"02:00:00:00:00:{n:02x}", f"10.0.0.{n}", AZ, "subnet-1", "available"
    )
    if holder is None:
        return base
    return replace(base, status="in-use", instance_id=holder, attachment_id=f"eni-attach-{n}")


def first_choices(pool: list[Eni], launching: list[str]) -> dict[str, str]:
    return {i: rank_candidates(pool, launching, i, 5)[0].id for i in launching}


def test_simultaneous_launches_in_one_az_each_start_at_a_different_free_eni() -> None:
    launching = [instance(n) for n in range(6)]
    firsts = first_choices([eni(n) for n in range(8)], launching)
    assert len(set(firsts.values())) == 6


def test_an_attach_between_two_looks_leaves_the_other_launches_their_choices() -> None:
    launching = [instance(n) for n in range(4)]
    pool = [eni(n) for n in range(4)]
    before = first_choices(pool, launching)
    # instance 2 attaches its first choice; the others look again after it, and Auto Scaling
    # still counts it among the launching
    taken = before[instance(2)]
    after_pool = [eni(n, instance(2)) if e.id == taken else e for n, e in enumerate(pool)]
    after = {
        i: rank_candidates(after_pool, launching, i, 5)[0].id for i in launching if i != instance(2)
    }
    assert after == {k: v for k, v in before.items() if k != instance(2)}


def test_launches_already_holding_an_eni_take_no_rank() -> None:
    me, pinned = instance(5), instance(1)
    pool = [eni(0, pinned), eni(1), eni(2)]
    # alone in rank 0 of its AZ: the first free ENI by id
    assert [e.id for e in rank_candidates(pool, [pinned, me], me, 5)] == [eni(1).id, eni(2).id]


def test_more_waiting_launches_than_free_enis_wrap_round_and_keep_every_candidate() -> None:
    launching = [instance(n) for n in range(5)]
    pool = [eni(n) for n in range(2)]
    for i in launching:
        assert sorted(e.id for e in rank_candidates(pool, launching, i, 5)) == [
            eni(0).id,
            eni(1).id,
        ]
    assert rank_candidates([eni(0, launching[0])], launching, launching[1], 5) == []


def test_a_launch_the_group_look_missed_still_gets_candidates() -> None:
    pool = [eni(n) for n in range(3)]
    assert [e.id for e in rank_candidates(pool, [], instance(3), 2)] == [eni(0).id, eni(1).id]


# -- pacing attaches to EC2's mutating bucket ------------------------------------------------


def turns(count: int, azs: int) -> list[int]:
    launching = [instance(n) for n in range(count)]
    return [attach_turn(launching, i, azs, burst=50, per_second=5) for i in launching]


def test_the_buckets_burst_attaches_at_once_and_the_rest_one_refill_each() -> None:
    paced = turns(200, azs=1)
    assert paced[:50] == [0] * 50
    assert paced[50:55] == [1] * 5  # the 51st to 55th token come within the first second
    assert paced[55] == 2
    assert paced[-1] == 30  # 150 past the burst at 5 a second


@pytest.mark.parametrize("azs", [1, 2, 3, 4])
def test_launching_azs_together_never_ask_more_of_the_bucket_than_it_holds(azs: int) -> None:
    # each AZ paces its own ranks on an even share: by any second t, all AZs together have
    # sent no more attaches than the bucket's burst plus t seconds of refill
    paced = turns(150, azs)
    for second in range(60):
        sent = azs * sum(1 for turn in paced if turn <= second)
        assert sent <= 50 + 5 * second
    # and none is held back longer than its share needs: the last of 150 per AZ
    assert paced[-1] == math.ceil((150 - 50 / azs) * azs / 5)
