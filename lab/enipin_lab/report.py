"""What EC2, Auto Scaling and Step Functions say happened to a group's launches."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from enipin_core.pool import Eni, pool_enis


@dataclass(frozen=True)
class PinReport:
    instances: list[dict[str, Any]]
    summary: dict[str, Any]
    # Sandbox only: which guest ran the verification script ("netns": real Linux interfaces,
    # "model": the guest model); empty for a real deployment.
    guest_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        shown = {"instances": self.instances, "summary": self.summary}
        return shown | ({"guest_mode": self.guest_mode} if self.guest_mode else {})


def group_report(
    ec2: Any,
    autoscaling: Any,
    sfn: Any,
    group_name: str,
    state_machine_arn: str,
    tag_key: str,
    tag_value: str,
) -> PinReport:
    """One row per instance the group launched, and counts read back from AWS state."""
    enis = pool_enis(ec2, tag_key, tag_value)
    by_instance: dict[str, list[Eni]] = {}
    for eni in enis:
        if eni.instance_id:
            by_instance.setdefault(eni.instance_id, []).append(eni)
    outcomes = _execution_outcomes(sfn, state_machine_arn)
    pages = autoscaling.get_paginator("describe_auto_scaling_instances").paginate()
    in_group = {
        i["InstanceId"]: i
        for page in pages
        for i in page["AutoScalingInstances"]
        if i["AutoScalingGroupName"] == group_name
    }
    rows = []
    for instance in _group_instances(ec2, group_name):
        iid = instance["InstanceId"]
        pinned = by_instance.get(iid, [])
        nic = outcomes.get(iid, {})
        rows.append(
            {
                "instance": iid,
                "az": instance["Placement"]["AvailabilityZone"],
                "state": instance["State"]["Name"],
                "lifecycle_state": in_group.get(iid, {}).get("LifecycleState", "-"),
                "eni": pinned[0].id if pinned else None,
                "mac": pinned[0].mac if pinned else None,
                "nic": nic.get("nicName"),
                "result": nic.get("result", "-"),
            }
        )
    statuses = Counter(e["status"] for e in _executions(sfn, state_machine_arn))
    summary = {
        "launched": len(rows),
        "pinned": sum(1 for r in rows if r["eni"] and r["lifecycle_state"] == "InService"),
        "abandoned": sum(1 for r in rows if r["result"] == "ABANDON"),
        "double_attached": _double_attached(enis, by_instance),
        "executions": dict(statuses),
    }
    return PinReport(rows, summary)


def _double_attached(enis: list[Eni], by_instance: dict[str, list[Eni]]) -> int:
    """ENIs on more than one instance, plus instances with more than one pool ENI."""
    seen: Counter[str] = Counter()
    for eni in enis:
        if eni.instance_id:
            seen[eni.id] += 1
    multi_eni = sum(1 for count in seen.values() if count > 1)
    return multi_eni + sum(1 for pinned in by_instance.values() if len(pinned) > 1)


def _group_instances(ec2: Any, group_name: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:aws:autoscaling:groupName", "Values": [group_name]}]
    )
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def _executions(sfn: Any, arn: str) -> list[dict[str, Any]]:
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=arn)
    return [e for page in pages for e in page["executions"]]


def _execution_outcomes(sfn: Any, arn: str) -> dict[str, dict[str, Any]]:
    """Instance id -> what its latest launch execution concluded."""
    outcomes: dict[str, dict[str, Any]] = {}
    for execution in sorted(_executions(sfn, arn), key=lambda e: e["startDate"]):
        desc = sfn.describe_execution(executionArn=execution["executionArn"])
        instance_id = _instance_of(desc.get("input", "{}"))
        if not instance_id:
            continue
        output = json.loads(desc.get("output") or "{}")
        result = output.get("lifecycleResult")
        if desc["status"] == "FAILED":
            result = "ABANDON"
        outcomes[instance_id] = {
            "status": desc["status"],
            "result": result or desc["status"],
            "nicName": output.get("nicName"),
        }
    return outcomes


def _instance_of(raw_input: str) -> str | None:
    data = json.loads(raw_input)
    detail = data.get("detail") if isinstance(data, dict) else None
    return detail.get("EC2InstanceId") if isinstance(detail, dict) else None
