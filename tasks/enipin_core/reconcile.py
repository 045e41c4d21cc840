"""The reconciler's plan: compare each managed group with the pool and list the repairs that
make it converge to "every InService instance has exactly one pool ENI, and no pool ENI sits on
an instance outside the groups". Pure: it decides from a snapshot; the handler acts.

An instance with a workflow running for it is left alone this round: the workflow is already
changing it, and a repair now would race it. A waiting lifecycle action is judged by the runs of
its own transition: a terminate action is resumed even while a launch run still waits for the
same instance (its terminate event was lost), since that launch run never completes it. A
launch younger than ``RESUME_AFTER`` is left alone too: its event may still be on its way
(EventBridge delivers late at times, and ListExecutions is eventually consistent, so "no run
listed" does not yet mean "no run coming").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from enipin_core.lifecycle import WAITS, transitions_holding
from enipin_core.names import LAUNCHING
from enipin_core.pool import Eni

PIN = "PIN"  # start the launch workflow for an in-service instance (no action to complete)
RESUME = "RESUME"  # a lifecycle action waits with no workflow: start the workflow for it
RELEASE = "RELEASE"  # detach a pool ENI that sits where it must not

GONE = frozenset({"stopping", "stopped", "shutting-down", "terminated"})
# How old a waiting launch must be before a round resumes it as lost. With the default
# schedule (2 minutes) a lost launch is resumed, and heartbeated, at most 210 s into a 300 s hook.
RESUME_AFTER = 90


@dataclass(frozen=True)
class Member:
    """An instance the group counts, with its Auto Scaling lifecycle state."""

    instance_id: str
    group: str
    lifecycle_state: str


@dataclass(frozen=True)
class Snapshot:
    members: list[Member]
    pool: list[Eni]
    ec2_states: dict[str, str]  # instance id -> EC2 state, for instances pool ENIs sit on
    busy: set[tuple[str, str]]  # (instance id, transition) of every running execution
    device_index: int
    hooks: dict[str, str] = field(default_factory=dict)  # transition -> our hook's name
    # group -> its launch hook's deviceIndex override; (group, transition) -> hook metadata
    device_indexes: dict[str, int] = field(default_factory=dict)
    hook_metadata: dict[tuple[str, str], str] = field(default_factory=dict)
    warm_pool_keeps_eni: bool = False
    launched: dict[str, datetime] = field(default_factory=dict)  # instance id -> LaunchTime
    now: datetime | None = None  # the round's time; None: every waiting action is old enough


@dataclass(frozen=True)
class Repair:
    kind: str
    instance_id: str
    reason: str
    group: str | None = None
    transition: str | None = None  # a RESUME's: decided when carried out, if several may hold
    hook_name: str | None = None
    # A RESUME: the transitions whose hook may hold the instance; the one that accepts a
    # heartbeat does (enipin_core.lifecycle.holding_hook).
    candidates: tuple[str, ...] | None = None
    destination: str | None = None
    eni_id: str | None = None
    attachment_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """camelCase, like every other payload the workflows and the CLI exchange."""
        return {_camel(k): v for k, v in asdict(self).items() if v is not None}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def plan(snap: Snapshot) -> tuple[list[Repair], list[str]]:
    """The repairs, and the instances skipped this round because a workflow runs for them."""
    by_instance: dict[str, list[Eni]] = {}
    for eni in snap.pool:
        if eni.instance_id:
            by_instance.setdefault(eni.instance_id, []).append(eni)
    members = {m.instance_id: m for m in snap.members}
    repairs: list[Repair] = []
    touched = set(members) | set(by_instance)
    young = {m.instance_id for m in snap.members if _launch_may_be_on_its_way(m, snap)}
    any_run = {instance_id for instance_id, _ in snap.busy}
    left = set(young)
    for member in snap.members:
        if member.instance_id in young:
            continue
        if _left_to_a_run(member, snap):
            left.add(member.instance_id)
            continue
        repairs += _member_repairs(member, by_instance.get(member.instance_id, []), snap)
    for instance_id, enis in sorted(by_instance.items()):
        if instance_id in any_run:
            left.add(instance_id)
        elif instance_id not in members:
            state = snap.ec2_states.get(instance_id, "unknown")
            repairs += [
                _release(e, f"on {instance_id} ({state}), outside the groups") for e in enis
            ]
    return repairs, sorted(touched & left)


def _left_to_a_run(member: Member, snap: Snapshot) -> bool:
    """A waiting action is left to a run of its own transition; anything else to any run."""
    waits = [t for t in transitions_holding(member.lifecycle_state) if t in snap.hooks]
    if waits:
        return any((member.instance_id, t) in snap.busy for t in waits)
    return any(instance_id == member.instance_id for instance_id, _ in snap.busy)


def _launch_may_be_on_its_way(member: Member, snap: Snapshot) -> bool:
    """A launch hold younger than RESUME_AFTER: its own run may not be listed yet. (EC2 sets
    LaunchTime again at every start, so a warm instance's age counts from leaving the pool.)
    A terminate hold has no such clock here; its workflow is idempotent, so a second run for
    it finds nothing left to do."""
    launched = snap.launched.get(member.instance_id)
    if snap.now is None or launched is None or not member.lifecycle_state.endswith("Pending:Wait"):
        return False
    return (snap.now - launched).total_seconds() < RESUME_AFTER


def _member_repairs(member: Member, enis: list[Eni], snap: Snapshot) -> list[Repair]:
    where = member.lifecycle_state
    if where.startswith("Warmed:") and where not in WAITS:
        # Stopped (or running) in the warm pool: an ENI there is kept only by choice.
        if snap.warm_pool_keeps_eni:
            return []
        return [_release(e, f"{member.instance_id} is {where} (WarmPoolEni=RELEASE)") for e in enis]
    if where in WAITS:
        # Which of our hooks holds it is Auto Scaling's to say, when the repair is carried out:
        # Warmed:Pending:Wait holds instances entering the pool new (launch hooks) and coming
        # back from service (terminate hooks), ENI or no ENI.
        waits = tuple(t for t in WAITS[where] if t in snap.hooks)
        if not waits:
            return []  # not our hook holding it
        single = waits[0] if len(waits) == 1 else None
        return [
            Repair(
                RESUME,
                member.instance_id,
                f"{where} with no workflow running (its event was lost?)",
                group=member.group,
                transition=single,
                hook_name=snap.hooks[single] if single else None,
                destination="WarmPool" if where == "Warmed:Pending:Wait" else None,
                candidates=waits,
            )
        ]
    if where != "InService":
        return []
    state = snap.ec2_states.get(member.instance_id, "running")
    if state in GONE:
        return [_release(e, f"on {member.instance_id}, which is {state}") for e in enis]
    if not enis:
        return [
            Repair(
                PIN,
                member.instance_id,
                "InService without a pool ENI",
                group=member.group,
                transition=LAUNCHING,
            )
        ]
    index = snap.device_indexes.get(member.group, snap.device_index)
    keep = min(enis, key=lambda e: (e.device_index != index, e.id))
    return [_release(e, f"{member.instance_id} also carries {keep.id}") for e in enis if e != keep]


def _release(eni: Eni, reason: str) -> Repair:
    assert eni.instance_id is not None
    return Repair(RELEASE, eni.instance_id, reason, eni_id=eni.id, attachment_id=eni.attachment_id)
