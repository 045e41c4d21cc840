"""Reconcile (scheduled, and ``enipin reconcile``): heal drift and missed events.

Reads each managed group, the pool and the running executions, plans the repairs
(``enipin_core.reconcile``) and, unless ``{"dryRun": true}``, carries them out: a missing pin or
a lost lifecycle event starts the workflow in repair mode, a misplaced ENI is detached.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from enipin_core.aws import chunked, client, error_code, named_aws_errors
from enipin_core.errors import EnipinError, InvalidLifecycleEvent
from enipin_core.events import parse_metadata
from enipin_core.lifecycle import holding_hook
from enipin_core.names import (
    LAUNCHING,
    TERMINATING,
    instance_in_name,
    repair_name,
    state_machines_from_env,
)
from enipin_core.pool import detach_if_still_on, pool_enis
from enipin_core.poolmetrics import count_pool, group_azs, publish
from enipin_core.reconcile import RELEASE, RESUME, Member, Repair, Snapshot, plan
from enipin_core.settings import Settings, managed_groups
from enipin_core.telemetry import count, logger, metrics, tracer
from enipin_core.waiting import parse_time

SETTINGS = Settings.from_env()
GROUPS = managed_groups()


def hooks() -> dict[str, str]:
    return {
        LAUNCHING: os.environ.get("LAUNCH_HOOK_NAME", "enipin-launch"),
        TERMINATING: os.environ.get("TERMINATE_HOOK_NAME", "enipin-terminate"),
    }


# -- the snapshot --------------------------------------------------------------------------


def members(autoscaling: Any, groups: frozenset[str]) -> list[Member]:
    """The groups' instances, and their warm pools' (``Warmed:*`` states)."""
    if not groups:
        return []
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        AutoScalingGroupNames=sorted(groups)
    )
    described = [g for page in pages for g in page["AutoScalingGroups"]]
    found = [
        Member(i["InstanceId"], g["AutoScalingGroupName"], i["LifecycleState"])
        for g in described
        for i in g.get("Instances", [])
    ]
    # Only the groups that exist: a managed name may have no group (deleted, or the selftest's
    # between runs), and DescribeWarmPool refuses an unknown group.
    for group in sorted(g["AutoScalingGroupName"] for g in described):
        found += [
            Member(i["InstanceId"], group, i["LifecycleState"]) for i in _warm(autoscaling, group)
        ]
    return found


def _warm(autoscaling: Any, group: str) -> list[dict[str, Any]]:
    """The warm pool's instances, every page (DescribeWarmPool has no paginator)."""
    instances: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"AutoScalingGroupName": group}
    while True:
        page = autoscaling.describe_warm_pool(**kwargs)
        instances += page.get("Instances", [])
        if not page.get("NextToken"):
            return instances
        kwargs["NextToken"] = page["NextToken"]


def ec2_view(ec2: Any, instance_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Each instance's state and launch time. By filter, not by id: an id EC2 has forgotten
    must not fail the whole call; 200 ids a call, the most one filter takes."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in chunked(instance_ids):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": chunk}]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                for i in reservation["Instances"]:
                    found[i["InstanceId"]] = {
                        "state": i["State"]["Name"],
                        "launched": i["LaunchTime"],
                    }
    return found


def busy_instances(sfn: Any, machines: dict[str, str]) -> set[tuple[str, str]]:
    """(instance, transition) of every running execution: which workflow runs says which."""
    busy = set()
    for transition, machine in machines.items():
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine, statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page["executions"]:
                instance_id = _instance_of(sfn, execution)
                if instance_id:
                    busy.add((instance_id, transition))
    return busy


def _instance_of(sfn: Any, execution: dict[str, Any]) -> str:
    named = instance_in_name(execution["name"])
    if named:
        return named
    # a run started by hand under another name: its input says which instance
    data = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    detail = data.get("detail") or data.get("repair") or {}
    return str(detail.get("EC2InstanceId") or detail.get("instanceId") or "")


def hook_metadata(autoscaling: Any, groups: frozenset[str]) -> dict[tuple[str, str], str]:
    """(group, transition) -> the NotificationMetadata of our hook there: a repair carries it,
    so that it applies the same overrides (device index, pool, waits) as the hook's events."""
    names = hooks()
    found: dict[tuple[str, str], str] = {}
    for group in sorted(groups):
        answer = autoscaling.describe_lifecycle_hooks(
            AutoScalingGroupName=group, LifecycleHookNames=sorted(names.values())
        )
        for hook in answer.get("LifecycleHooks", []):
            transition = hook["LifecycleTransition"]
            if names.get(transition) == hook["LifecycleHookName"] and hook.get(
                "NotificationMetadata"
            ):
                found[group, transition] = hook["NotificationMetadata"]
    return found


def hook_mismatches(metadata: dict[tuple[str, str], str]) -> list[str]:
    """Groups whose terminate hook names another pool than their launch hook: the terminate
    workflow looks for the instance's ENI in the pool its own hook names, so every ENI the
    launch hook's pool lent would be left on terminated instances."""
    problems = []
    for group in sorted({g for g, _ in metadata}):
        launch, terminate = (
            _pool_override(metadata.get((group, t))) or "the stack's"
            for t in (LAUNCHING, TERMINATING)
        )
        if launch != terminate:
            problems.append(
                f"{group}: the launch hook's poolTagValue is {launch}, the terminate hook's"
                f" {terminate}: give both the same"
            )
    return problems


def _pool_override(raw: str | None) -> str | None:
    try:
        value = parse_metadata(raw).get("poolTagValue")
    except InvalidLifecycleEvent:
        return None
    return str(value) if value is not None else None


def _device_indexes(metadata: dict[tuple[str, str], str], default: int) -> dict[str, int]:
    """Each group's device index: its launch hook's override, else the stack's."""
    indexes = {}
    for (group, transition), raw in metadata.items():
        if transition != LAUNCHING:
            continue
        try:
            indexes[group] = int(parse_metadata(raw).get("deviceIndex", default))
        except InvalidLifecycleEvent as exc:  # its events are rejected the same way
            logger.warning("hook metadata ignored", extra={"group": group, "error": str(exc)})
    return indexes


@named_aws_errors
def snapshot(
    ec2: Any, autoscaling: Any, sfn: Any, settings: Settings, now: datetime | None
) -> Snapshot:
    group_members = members(autoscaling, GROUPS)
    pool = pool_enis(ec2, settings.pool_tag_key, settings.pool_tag_value)
    holders = {e.instance_id for e in pool if e.instance_id}
    view = ec2_view(ec2, holders | {m.instance_id for m in group_members})
    metadata = hook_metadata(autoscaling, GROUPS)
    return Snapshot(
        members=group_members,
        pool=pool,
        ec2_states={i: v["state"] for i, v in view.items()},
        busy=busy_instances(sfn, state_machines_from_env()),
        device_index=settings.device_index,
        device_indexes=_device_indexes(metadata, settings.device_index),
        hook_metadata=metadata,
        hooks=hooks(),
        warm_pool_keeps_eni=settings.warm_pool_keeps_eni,
        launched={i: v["launched"] for i, v in view.items()},
        now=now,
    )


# -- carrying repairs out -----------------------------------------------------------------


@named_aws_errors
def carry_out(
    ec2: Any,
    autoscaling: Any,
    sfn: Any,
    repair: Repair,
    now: datetime,
    metadata: dict[tuple[str, str], str],
) -> str:
    if repair.kind == RELEASE:
        assert repair.eni_id is not None
        done = detach_if_still_on(ec2, repair.eni_id, repair.instance_id, repair.attachment_id)
        return "detached" if done else "no longer there"
    assert repair.group is not None
    transition, hook_name = repair.transition, repair.hook_name
    heartbeat_at = None
    if repair.kind == RESUME:
        # The action has waited since its event was lost: give it a full heartbeat timeout
        # first, and tell the workflow when (its heartbeats count from then). The hook that
        # accepts the heartbeat is the one holding the instance, whatever its state suggests.
        candidates = repair.candidates or ((repair.transition,) if repair.transition else ())
        transition = holding_hook(
            autoscaling, repair.group, repair.instance_id, hooks(), candidates
        )
        if transition is None:
            return "no longer waiting"
        hook_name, heartbeat_at = hooks()[transition], now.isoformat()
    assert transition is not None
    request: dict[str, Any] = {
        "instanceId": repair.instance_id,
        "groupName": repair.group,
        "transition": transition,
        "reason": repair.reason,
    }
    request |= {"heartbeatAt": heartbeat_at} if heartbeat_at else {}
    # the hook's overrides, as its events carry them (a pin without an action: the launch hook's)
    if (repair.group, transition) in metadata:
        request["notificationMetadata"] = metadata[repair.group, transition]
    request |= {"hookName": hook_name} if hook_name else {}
    request |= {"destination": repair.destination} if repair.destination else {}
    # One name per instance, transition and round: a round retried by Lambda starts one run,
    # and a later round sees that run as running and leaves the instance to it.
    name = repair_name(repair.instance_id, transition, now)
    try:
        sfn.start_execution(
            stateMachineArn=state_machines_from_env()[transition],
            name=name,
            input=json.dumps({"repair": request}),
        )
    except ClientError as exc:
        if error_code(exc) != "ExecutionAlreadyExists":
            raise
        return f"{name} already started"
    return f"started {name}"


def _outcome(repair: Repair, carry: Callable[[Repair], str]) -> str:
    """Carry one repair out. Its failure is its own: reported in the round's output and the
    RepairFailed metric, while the other repairs and the metrics go on (a pool ENI on an
    instance outside the groups is denied its detach every round, until someone detaches it)."""
    try:
        outcome = carry(repair)
    except (ClientError, EnipinError) as exc:
        name = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        logger.warning("repair failed", extra={"repair": repair.to_dict(), "error": str(exc)})
        count("RepairFailed")
        return f"failed: {name}: {exc}"
    count(f"Repair{repair.kind.title()}")
    return outcome


def reconcile(
    ec2: Any, autoscaling: Any, sfn: Any, dry_run: bool, scheduled_at: datetime | None = None
) -> dict[str, Any]:
    """One round. ``scheduled_at``: EventBridge's time for a scheduled round, which then leaves
    launches younger than RESUME_AFTER to their own events; a round an operator asks for by
    hand resumes every waiting action it finds with no run."""
    now = max(scheduled_at, datetime.now(UTC)) if scheduled_at else datetime.now(UTC)
    snap = snapshot(ec2, autoscaling, sfn, SETTINGS, now if scheduled_at else None)
    repairs, busy = plan(snap)
    carry = partial(carry_out, ec2, autoscaling, sfn, now=now, metadata=snap.hook_metadata)
    rows = [
        repair.to_dict() | {"outcome": "planned" if dry_run else _outcome(repair, carry)}
        for repair in repairs
    ]
    # the pool as this round found it, for the dashboard and the low-pool alarm
    served = named_aws_errors(group_azs)(autoscaling, GROUPS)
    publish(count_pool(snap.pool, served), served)
    logger.info("reconciled", extra={"repairs": rows, "busy": busy, "dryRun": dry_run})
    failed = [row for row in rows if str(row["outcome"]).startswith("failed: ")]
    problems = hook_mismatches(snap.hook_metadata)
    for problem in problems:
        logger.warning("hook metadata disagrees", extra={"problem": problem})
        count("HookMetadataMismatch")
    return {
        "dryRun": dry_run,
        "repairs": rows,
        "busy": busy,
        "failed": len(failed),
        "problems": problems,
    }


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    event = event or {}
    dry_run = bool(event.get("dryRun"))
    scheduled_at = parse_time(event["time"]) if event.get("time") else None
    return reconcile(
        client("ec2"), client("autoscaling"), client("stepfunctions"), dry_run, scheduled_at
    )
