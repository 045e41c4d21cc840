"""Reconcile (scheduled, and ``enipin reconcile``): heal drift and missed events.

Reads each managed group, the pool and the running executions, plans the repairs
(``enipin_core.reconcile``) and, unless ``{"dryRun": true}``, carries them out: a missing pin or
a lost lifecycle event starts the workflow in repair mode, a misplaced ENI is detached.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from enipin_core.aws import chunked, client, error_code, named_aws_errors
from enipin_core.events import KINDS, LAUNCHING, TERMINATING
from enipin_core.lifecycle import COMPLETED, record_heartbeat
from enipin_core.pool import detach_if_still_on, pool_enis
from enipin_core.poolmetrics import count_pool, group_azs, publish
from enipin_core.reconcile import RELEASE, RESUME, Member, Repair, Snapshot, plan
from enipin_core.settings import Settings, managed_groups
from enipin_core.telemetry import count, logger, metrics, tracer
from enipin_core.waiting import parse_time

SETTINGS = Settings.from_env()
GROUPS = managed_groups()
_INSTANCE_IN_NAME = re.compile(r"^(i-[0-9a-f]{8,17})-")


def state_machines() -> dict[str, str]:
    return {t: os.environ[f"{KINDS[t].upper()}_STATE_MACHINE_ARN"] for t in KINDS}


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
    found = [
        Member(i["InstanceId"], g["AutoScalingGroupName"], i["LifecycleState"])
        for page in pages
        for g in page["AutoScalingGroups"]
        for i in g.get("Instances", [])
    ]
    for group in sorted(groups):
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


def busy_instances(sfn: Any, machines: dict[str, str]) -> set[str]:
    busy = set()
    for machine in machines.values():
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine, statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page["executions"]:
                busy.add(_instance_of(sfn, execution))
    return busy - {""}


def _instance_of(sfn: Any, execution: dict[str, Any]) -> str:
    match = _INSTANCE_IN_NAME.match(execution["name"])
    if match:
        return match.group(1)
    # a run started by hand under another name: its input says which instance
    data = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    detail = data.get("detail") or data.get("repair") or {}
    return str(detail.get("EC2InstanceId") or detail.get("instanceId") or "")


@named_aws_errors
def snapshot(
    ec2: Any, autoscaling: Any, sfn: Any, settings: Settings, now: datetime | None
) -> Snapshot:
    group_members = members(autoscaling, GROUPS)
    pool = pool_enis(ec2, settings.pool_tag_key, settings.pool_tag_value)
    holders = {e.instance_id for e in pool if e.instance_id}
    view = ec2_view(ec2, holders | {m.instance_id for m in group_members})
    return Snapshot(
        members=group_members,
        pool=pool,
        ec2_states={i: v["state"] for i, v in view.items()},
        busy=busy_instances(sfn, state_machines()),
        device_index=settings.device_index,
        hooks=hooks(),
        warm_pool_keeps_eni=settings.warm_pool_keeps_eni,
        launched={i: v["launched"] for i, v in view.items()},
        now=now,
    )


# -- carrying repairs out -----------------------------------------------------------------


@named_aws_errors
def carry_out(ec2: Any, autoscaling: Any, sfn: Any, repair: Repair, now: datetime) -> str:
    if repair.kind == RELEASE:
        assert repair.eni_id is not None
        done = detach_if_still_on(ec2, repair.eni_id, repair.instance_id, repair.attachment_id)
        return "detached" if done else "no longer there"
    assert repair.transition is not None and repair.group is not None
    request: dict[str, Any] = {
        "instanceId": repair.instance_id,
        "groupName": repair.group,
        "transition": repair.transition,
        "reason": repair.reason,
    }
    if repair.kind == RESUME and repair.hook_name:
        # The action has waited since its event was lost: give it a full heartbeat timeout
        # first, and tell the workflow when (its heartbeats count from then).
        action = {"groupName": repair.group, "hookName": repair.hook_name}
        if record_heartbeat(autoscaling, action | {"instanceId": repair.instance_id}) != COMPLETED:
            return "no longer waiting"
        request["heartbeatAt"] = now.isoformat()
    request |= {"hookName": repair.hook_name} if repair.hook_name else {}
    request |= {"destination": repair.destination} if repair.destination else {}
    # One name per instance, transition and round: a round retried by Lambda starts one run,
    # and a later round sees that run as running and leaves the instance to it.
    name = f"{repair.instance_id}-{KINDS[repair.transition]}-repair-{now:%Y%m%dT%H%M%S}"
    try:
        sfn.start_execution(
            stateMachineArn=state_machines()[repair.transition],
            name=name,
            input=json.dumps({"repair": request}),
        )
    except ClientError as exc:
        if error_code(exc) != "ExecutionAlreadyExists":
            raise
        return f"{name} already started"
    return f"started {name}"


def reconcile(
    ec2: Any, autoscaling: Any, sfn: Any, dry_run: bool, scheduled_at: datetime | None = None
) -> dict[str, Any]:
    """One round. ``scheduled_at``: EventBridge's time for a scheduled round, which then leaves
    launches younger than RESUME_AFTER to their own events; a round an operator asks for by
    hand resumes every waiting action it finds with no run."""
    now = max(scheduled_at, datetime.now(UTC)) if scheduled_at else datetime.now(UTC)
    snap = snapshot(ec2, autoscaling, sfn, SETTINGS, now if scheduled_at else None)
    repairs, busy = plan(snap)
    rows = []
    for repair in repairs:
        outcome = "planned" if dry_run else carry_out(ec2, autoscaling, sfn, repair, now)
        rows.append(repair.to_dict() | {"outcome": outcome})
        if not dry_run:
            count(f"Repair{repair.kind.title()}")
    # the pool as this round found it, for the dashboard and the low-pool alarm
    served = named_aws_errors(group_azs)(autoscaling, GROUPS)
    publish(count_pool(snap.pool, served), served)
    logger.info("reconciled", extra={"repairs": rows, "busy": busy, "dryRun": dry_run})
    return {"dryRun": dry_run, "repairs": rows, "busy": busy}


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
