"""The one home of enipin's names: transitions (Auto Scaling's and their short forms), and the
names of executions, repairs and replays, built and read back. Standard library only: the
operator CLI imports it too."""

from __future__ import annotations

import os
import re
from datetime import datetime

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
TEST_NOTIFICATION = "autoscaling:TEST_NOTIFICATION"

# Auto Scaling's transition -> the short name in execution names, outputs and the CLI.
KINDS = {LAUNCHING: "launch", TERMINATING: "terminate"}
TRANSITIONS = {kind: transition for transition, kind in KINDS.items()}

EXECUTION_NAME_LIMIT = 80  # Step Functions' limit
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_INSTANCE_IN_NAME = re.compile(r"^(i-[0-9a-f]{8,17})-")


def execution_name(instance_id: str, transition: str, token: str | None) -> str:
    """``<instance>-<launch|terminate>-<action token>``: deterministic, so a duplicated event
    meets its run, and the console lists an instance's runs under its id."""
    safe = _NAME_UNSAFE.sub("", token or "")
    return f"{instance_id}-{KINDS[transition]}-{safe}"[:EXECUTION_NAME_LIMIT]


def repair_name(instance_id: str, transition: str, at: datetime) -> str:
    """``<instance>-<launch|terminate>-repair-<round time>``: one per instance and round."""
    return f"{instance_id}-{KINDS[transition]}-repair-{at:%Y%m%dT%H%M%S}"


def replay_prefix(instance_id: str, transition: str, token: str) -> str:
    """``<instance>-<launch|terminate>-<token>-r``, followed by the attempt: one name per
    action and attempt, so concurrent replays of one action collide instead of both running."""
    return f"{instance_id}-{KINDS[transition]}-{token[:36]}-r"


def instance_in_name(name: str) -> str | None:
    """The instance id an execution name starts with (None for a run named by hand)."""
    match = _INSTANCE_IN_NAME.match(name)
    return match.group(1) if match else None


def state_machines_from_env() -> dict[str, str]:
    """Auto Scaling's transition -> the ARN of its workflow, from the functions' environment."""
    return {t: os.environ[f"{kind.upper()}_STATE_MACHINE_ARN"] for t, kind in KINDS.items()}
