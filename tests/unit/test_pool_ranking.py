"""Rank-matched candidates: simultaneous launches in one AZ start at different free ENIs, and
looks taken before and after a rival's attach still agree."""

from __future__ import annotations

from dataclasses import replace

from enipin_core.pool import Eni, rank_candidates

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
