"""Rank-matched candidates: simultaneous launches in one AZ start at different free ENIs, and
looks taken before and after a rival's attach still agree."""

from __future__ import annotations

from dataclasses import replace

from enipin_core.pool import Eni, Instance, rank_candidates

AZ = "us-east-1a"


def instance(n: int, az: str = AZ, launched: str = "2026-12-01T02:00:00+00:00") -> Instance:
    return Instance(f"i-{n:017x}", az, "vpc-1", "running", "web", launched)


def eni(n: int, holder: Instance | None = None) -> Eni:
    base = Eni(
        f"eni-{n:017x}", f"02:00:00:00:00:{n:02x}", f"10.0.0.{n}", AZ, "subnet-1", "available"
    )
    if holder is None:
        return base
    return replace(base, status="in-use", instance_id=holder.id, attachment_id=f"eni-attach-{n}")


def first_choices(pool: list[Eni], peers: list[Instance]) -> dict[str, str]:
    by_id = {p.id: p for p in peers}
    return {p.id: rank_candidates(pool, by_id, p, 5)[0].id for p in peers}


def test_simultaneous_launches_in_one_az_each_start_at_a_different_free_eni() -> None:
    peers = [instance(n) for n in range(6)]
    pool = [eni(n) for n in range(8)]
    firsts = first_choices(pool, peers)
    assert len(set(firsts.values())) == 6


def test_an_attach_between_two_looks_leaves_the_other_launches_their_choices() -> None:
    peers = [instance(n) for n in range(4)]
    pool = [eni(n) for n in range(4)]
    before = first_choices(pool, peers)
    # instance 2 attaches its first choice; the others look again after it
    taken = before[peers[2].id]
    after_pool = [eni(n, peers[2]) if e.id == taken else e for n, e in enumerate(pool)]
    after = first_choices(after_pool, [p for p in peers if p is not peers[2]])
    assert after == {k: v for k, v in before.items() if k != peers[2].id}


def test_instances_of_other_azs_and_ones_already_pinned_take_no_rank() -> None:
    me = instance(5, launched="2026-12-01T02:00:09+00:00")
    pinned = instance(1)
    elsewhere = instance(2, az="us-east-1b")
    pool = [eni(0, pinned), eni(1), eni(2)]
    peers = {p.id: p for p in (me, pinned, elsewhere)}
    # alone in rank 0 of its AZ: the first free ENI by id
    assert [e.id for e in rank_candidates(pool, peers, me, 5)] == [eni(1).id, eni(2).id]


def test_more_waiting_launches_than_free_enis_wrap_round_and_keep_every_candidate() -> None:
    peers = [instance(n) for n in range(5)]
    pool = [eni(n) for n in range(2)]
    by_id = {p.id: p for p in peers}
    for p in peers:
        assert sorted(e.id for e in rank_candidates(pool, by_id, p, 5)) == [eni(0).id, eni(1).id]
    assert rank_candidates([eni(0, peers[0])], by_id, peers[1], 5) == []


def test_a_launch_the_group_look_missed_still_gets_candidates() -> None:
    me = instance(3)
    pool = [eni(n) for n in range(3)]
    assert [e.id for e in rank_candidates(pool, {}, me, 2)] == [eni(0).id, eni(1).id]
