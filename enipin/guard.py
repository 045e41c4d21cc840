"""The storm guard as an operator sees it: which groups it holds, and releasing one.

The guard's state is the group's own tags and suspended processes (``enipin_core.stormguard``),
so this reads and clears exactly what the workflow wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from enipin.deployment import Deployment
from enipin.errors import OperatorError
from enipin_core.stormguard import LAUNCH_PROCESS, read, release

WINDOW_SHOWN = 24 * 60  # minutes of given-up launches `guard status` counts


def status(deployment: Deployment, group: str | None = None) -> list[dict[str, Any]]:
    """Each managed group (or ``group``): tripped or not, why, failures counted, Launch state."""
    autoscaling = deployment.client("autoscaling")
    groups = _groups(deployment, group)
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=groups)
    suspended = {
        g["AutoScalingGroupName"]: any(
            p["ProcessName"] == LAUNCH_PROCESS for p in g.get("SuspendedProcesses", [])
        )
        for g in found["AutoScalingGroups"]
    }
    now = datetime.now(UTC)
    rows = []
    for name in groups:
        state = read(autoscaling, name, now, WINDOW_SHOWN)
        rows.append(
            {
                "groupName": name,
                "guard": "TRIPPED" if state.tripped else "armed",
                "launchSuspended": suspended.get(name, False),
                "failuresCounted": len(state.failures),
                "why": state.tripped or "",
            }
        )
    return rows


def release_group(deployment: Deployment, group: str) -> dict[str, Any]:
    """Resume the group's launches and clear the guard's count."""
    (name,) = _groups(deployment, group)
    state = release(deployment.client("autoscaling"), name)
    return {"groupName": name, "wasTripped": state.tripped or "", "launchSuspended": False}


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
