"""The storm guard as an operator sees it: which groups it holds, and releasing one.

The guard's state is the group's own tags and suspended processes (``enipin_core.stormguard``),
so this reads and clears exactly what the workflow wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from enipin.deployment import Deployment
from enipin.errors import OperatorError
from enipin_core.stormguard import launch_suspended, release, state_of

WINDOW_SHOWN = 24 * 60  # minutes of given-up launches `guard status` counts


def status(deployment: Deployment, group: str | None = None) -> list[dict[str, Any]]:
    """Each managed group (or ``group``): tripped or not, why, failures counted, Launch state;
    all from one DescribeAutoScalingGroups, whose answer carries each group's tags."""
    groups = _groups(deployment, group)
    found = deployment.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=groups
    )["AutoScalingGroups"]
    now = datetime.now(UTC)
    rows = []
    for described in found:
        tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
        state = state_of(described["AutoScalingGroupName"], tags, now, WINDOW_SHOWN)
        rows.append(
            {
                "groupName": state.group,
                "guard": "TRIPPED" if state.tripped else "armed",
                "launchSuspended": launch_suspended(described),
                "failuresCounted": len(state.failures),
                "why": state.tripped or "",
            }
        )
    return rows


def release_group(deployment: Deployment, group: str) -> dict[str, Any]:
    """Resume the group's launches and clear the guard's count."""
    (name,) = _groups(deployment, group)
    state = release(deployment.client("autoscaling"), name)
    return {"groupName": name, "wasTripped": state.tripped or ""}


def _groups(deployment: Deployment, group: str | None) -> list[str]:
    managed = deployment.group_names
    if group is None:
        return managed
    if group not in managed:
        raise OperatorError(
            f"group {group!r} is not managed by stack {deployment.stack} "
            f"(its groups: {', '.join(managed)})"
        )
    return [group]
