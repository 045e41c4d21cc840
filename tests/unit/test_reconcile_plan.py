"""The reconciler's plan from a snapshot: one test per drift, and the rule that an instance with
a running workflow is left to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from enipin_core.names import LAUNCHING, TERMINATING
from enipin_core.pool import Eni
from enipin_core.reconcile import PIN, RELEASE, RESUME, RESUME_AFTER, Member, Snapshot, plan

HOOKS = {LAUNCHING: "enipin-launch", TERMINATING: "enipin-terminate"}


def eni(n: int, on: str | None = None, index: int = 1) -> Eni:
    return Eni(
        id=f"eni-{n}",
        mac=f"02:00:00:00:00:0{n}",
        private_ip=f"10.0.0.{n}",
        az="us-east-1a",
        subnet_id="subnet-1",
        status="in-use" if on else "available",
        attachment_id=f"eni-attach-{n}" if on else None,
        attachment_status="attached" if on else None,
        instance_id=on,
        device_index=index if on else None,
    )


def snap(members: list[tuple[str, str]], pool: list[Eni], **extra: Any) -> Snapshot:
    values: dict[str, Any] = {
        "members": [Member(i, "g", state) for i, state in members],
        "pool": pool,
        "ec2_states": {},
        "busy": set(),
        "device_index": 1,
        "hooks": HOOKS,
    } | extra
    return Snapshot(**values)


def kinds(snapshot: Snapshot) -> list[tuple[str, str, str | None]]:
    repairs, _ = plan(snapshot)
    return [(r.kind, r.instance_id, r.eni_id) for r in repairs]


def test_a_converged_group_needs_nothing() -> None:
    assert kinds(snap([("i-1", "InService")], [eni(1, on="i-1"), eni(2)])) == []


def test_an_in_service_instance_without_a_pool_eni_is_pinned() -> None:
    repairs, _ = plan(snap([("i-1", "InService")], [eni(1)]))
    assert [(r.kind, r.instance_id, r.transition, r.hook_name) for r in repairs] == [
        (PIN, "i-1", LAUNCHING, None)
    ]


def test_an_instance_with_two_pool_enis_keeps_the_one_at_the_device_index() -> None:
    pool = [eni(1, on="i-1", index=2), eni(2, on="i-1", index=1)]
    assert kinds(snap([("i-1", "InService")], pool)) == [(RELEASE, "i-1", "eni-1")]


def test_an_eni_on_an_instance_outside_the_groups_is_released() -> None:
    pool = [eni(1, on="i-9")]
    assert kinds(snap([], pool, ec2_states={"i-9": "running"})) == [(RELEASE, "i-9", "eni-1")]


def test_an_eni_on_a_stopped_member_is_released_and_not_re_pinned_this_round() -> None:
    pool = [eni(1, on="i-1")]
    assert kinds(snap([("i-1", "InService")], pool, ec2_states={"i-1": "stopped"})) == [
        (RELEASE, "i-1", "eni-1")
    ]


def test_a_waiting_action_with_no_workflow_is_resumed_with_our_hook() -> None:
    repairs, _ = plan(snap([("i-1", "Pending:Wait"), ("i-2", "Terminating:Wait")], []))
    assert [(r.kind, r.instance_id, r.transition, r.hook_name) for r in repairs] == [
        (RESUME, "i-1", LAUNCHING, "enipin-launch"),
        (RESUME, "i-2", TERMINATING, "enipin-terminate"),
    ]


def test_an_instance_with_a_running_workflow_is_left_to_it() -> None:
    snapshot = snap(
        [("i-1", "InService"), ("i-2", "Pending:Wait")],
        [eni(1, on="i-9")],
        busy={("i-1", LAUNCHING), ("i-2", LAUNCHING), ("i-9", TERMINATING)},
        ec2_states={"i-9": "terminated"},
    )
    repairs, busy = plan(snapshot)
    assert repairs == []
    assert busy == ["i-1", "i-2", "i-9"]


def test_a_terminate_action_is_resumed_while_a_launch_run_still_waits_for_the_instance() -> None:
    # its terminate event was lost while the launch run waited (a slow agent): that run never
    # completes the terminate action, so a launch run does not make the instance busy for it
    snapshot = snap([("i-1", "Terminating:Wait")], [], busy={("i-1", LAUNCHING)})
    repairs, busy = plan(snapshot)
    assert [(r.kind, r.instance_id, r.transition) for r in repairs] == [
        (RESUME, "i-1", TERMINATING)
    ]
    assert busy == []
    # a terminate run of its own is left to finish
    snapshot = snap([("i-1", "Terminating:Wait")], [], busy={("i-1", TERMINATING)})
    assert plan(snapshot) == ([], ["i-1"])


def test_instances_in_other_lifecycle_states_are_not_touched() -> None:
    members = [("i-1", "Pending"), ("i-2", "Standby"), ("i-3", "Terminating:Proceed")]
    pool = [eni(1, on="i-2")]
    assert kinds(snap(members, pool)) == []


def test_a_warm_instance_keeps_its_eni_only_when_the_policy_says_keep() -> None:
    members = [("i-1", "Warmed:Stopped")]
    pool = [eni(1, on="i-1")]
    assert kinds(snap(members, pool, warm_pool_keeps_eni=True)) == []
    assert kinds(snap(members, pool, warm_pool_keeps_eni=False)) == [(RELEASE, "i-1", "eni-1")]


def test_a_warm_pool_wait_is_resumed_on_whichever_hook_auto_scaling_says_holds_it() -> None:
    # Warmed:Pending:Wait holds instances entering the pool (launch hooks) and coming back to it
    # (terminate hooks), with an ENI or without (KEEP, RELEASE, a run stopped half way): the
    # plan names both, and the repair asks Auto Scaling which one accepts a heartbeat
    for pool in ([], [eni(1, on="i-1")]):
        repairs, _ = plan(snap([("i-1", "Warmed:Pending:Wait")], pool))
        assert [(r.kind, r.transition, r.candidates, r.destination) for r in repairs] == [
            (RESUME, None, (LAUNCHING, TERMINATING), "WarmPool")
        ]
    # a warm instance being terminated waits on the terminate hooks alone
    repairs, _ = plan(snap([("i-1", "Warmed:Terminating:Wait")], [eni(1, on="i-1")]))
    assert [(r.kind, r.transition, r.destination) for r in repairs] == [(RESUME, TERMINATING, None)]


NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def launched(seconds_ago: float) -> dict[str, datetime]:
    return {"i-1": NOW - timedelta(seconds=seconds_ago)}


def test_a_scheduled_round_leaves_a_launch_younger_than_the_margin_to_its_event() -> None:
    young = snap([("i-1", "Pending:Wait")], [eni(1)], launched=launched(RESUME_AFTER - 1), now=NOW)
    repairs, skipped = plan(young)
    assert repairs == [] and skipped == ["i-1"]


def test_a_scheduled_round_resumes_a_launch_older_than_the_margin() -> None:
    old = snap([("i-1", "Pending:Wait")], [eni(1)], launched=launched(RESUME_AFTER), now=NOW)
    assert kinds(old) == [(RESUME, "i-1", None)]


def test_a_round_asked_for_by_hand_resumes_every_waiting_action() -> None:
    by_hand = snap([("i-1", "Pending:Wait")], [eni(1)], launched=launched(1), now=None)
    assert kinds(by_hand) == [(RESUME, "i-1", None)]


def test_the_margin_holds_only_launches_a_terminate_hold_is_resumed_at_once() -> None:
    leaving = snap([("i-1", "Terminating:Wait")], [], launched=launched(1), now=NOW)
    assert kinds(leaving) == [(RESUME, "i-1", None)]
