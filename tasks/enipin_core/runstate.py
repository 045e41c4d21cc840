"""The run state each workflow carries from Task to Task, declared once: every key, in camelCase,
what it holds and which state writes it. ``tests/unit/test_run_state.py`` holds every ``$.``
path of ``state_machines/`` to these declarations.

Every Task gets the whole state and returns it with its own keys added (``{**state, ...}``);
the dataclasses that travel in it (``Settings``, ``Eni``, ``Instance``) go in and out through
``state_dict`` and ``field_values`` below, so their Python fields stay snake_case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

# -- the keys of both workflows ------------------------------------------------------------

# What a run starts from, until ValidateEvent replaces it with the run state: EventBridge's
# event (``detail`` in AWS's own names, besides its envelope: source, detail-type, ...), or the
# reconciler's repair request (``repair``, below).
INPUT: Mapping[str, str] = {
    "detail": "the lifecycle action, EVENT_DETAIL (EventBridge); read again if ValidateEvent fails",
    "time": "when Auto Scaling emitted the event: the action's clock (EventBridge)",
    "replay": "the execution this one replays, {of, requestedAt} (enipin executions replay)",
}

COMMON: Mapping[str, str] = {
    "repair": "the reconciler's request (input), then true for a repair run (ValidateEvent)",
    "action": "PIN, ENTER_WARM_POOL, RELEASE, KEEP_FOR_WARM_POOL or IGNORE (ValidateEvent)",
    "reason": "why the run acts or ignores the event (ValidateEvent)",
    "instanceId": "the instance the action is about (ValidateEvent, ReadActionFromEvent)",
    "lifecycle": "the action to complete, LIFECYCLE; absent for a repair without one "
    "(ValidateEvent, ReadActionFromEvent; DescribeInstance drops a replay's finished one)",
    "settings": "the pool, device index and wait bounds this run applies, SETTINGS (ValidateEvent)",
    "replayOf": "the execution this run replays (ValidateEvent)",
    "heartbeat": "when the action was last extended and whether a heartbeat is due, HEARTBEAT "
    "(ValidateEvent, every polling Task, RecordHeartbeat)",
    "heartbeats": "how many heartbeats this run recorded (RecordHeartbeat)",
    "racesLost": "candidates taken by other launches first; 0 until AttachEni (ValidateEvent)",
    "lifecycleResult": "CONTINUE, ABANDON or null: the result this run completed the action with "
    "(ValidateEvent: null; CompleteLaunch, AbandonLaunch, CompleteTermination)",
    "lifecycleOutcome": "COMPLETED or ALREADY_FINISHED (the same Tasks)",
    "error": "what sent the run to its cleanup path, ERROR (every Catch but ReleaseEni's)",
}

LAUNCH: Mapping[str, str] = {
    **INPUT,
    **COMMON,
    "nothingToDo": "why a replay or repair has nothing to pin (DescribeInstance)",
    "instanceRunning": "EC2 shows the instance running (DescribeInstance)",
    "instanceWait": "the wait for it to run, WAIT (DescribeInstance)",
    "instance": "its AZ, VPC, state and group, INSTANCE (DescribeInstance)",
    "eni": "the pool ENI it gets, ENI (DescribeInstance, AttachEni, CheckAttachment)",
    "attachedHere": "this run attached that ENI, so ReleaseEni takes it back (DescribeInstance, "
    "AttachEni)",
    "candidates": "free pool ENIs to try, in this instance's order, [ENI] (DescribeInstance, "
    "FindFreeEni; AttachEni empties it)",
    "attachIn": "seconds until the attach's turn at EC2's mutating bucket, for "
    "WaitForAttachTurn (DescribeInstance)",
    "poolWait": "the wait for a free ENI, WAIT (FindFreeEni)",
    "attachWait": "the wait for the attachment, WAIT (CheckAttachment)",
    "agentStartsIn": "seconds until the SSM Agent is typically online, for WaitForSsmAgentToStart "
    "(AttachEni)",
    "agentOnline": "the SSM agent is online (CheckSsmAgent)",
    "agentWait": "the wait for the agent, WAIT (CheckSsmAgent)",
    "agentLost": "SendCommand refused the instance, ERROR (SendVerification's and RemediateNic's "
    "Catch; CheckSsmAgent drops it)",
    "heartbeatDue": "a heartbeat fell due before the verification was sent, ERROR "
    "(SendVerification's Catch)",
    "verification": "the guest check, VERIFICATION (SendVerification, GetVerificationResult)",
    "released": "ReleaseEni detached the ENI (ReleaseEni)",
    "releaseError": "ReleaseEni's own failure, ERROR, keeping the error that sent the run there "
    "(ReleaseEni's Catch)",
    "stormGuard": "the group's given-up launches in the window and the guard's trip, STORM_GUARD; "
    "null when this run's ABANDON was not counted (GuardLaunchStorm)",
    "guardError": "GuardLaunchStorm's own failure, ERROR (its Catch)",
}

TERMINATE: Mapping[str, str] = {
    **INPUT,
    **COMMON,
    "enis": "the pool ENIs on the instance, [ENI] (FindPoolEnis)",
    "force": "detach with Force (FindPoolEnis: false; CheckDetached)",
    "detachRequested": "the ENIs a detach was asked for, ids (DetachEnis, ForceDetachEnis)",
    "released": "none of them is on the instance any more (CheckDetached)",
    "stillAttached": "the ones still on it, ids (CheckDetached)",
    "forceNow": "the grace period is over: force the detach now (CheckDetached)",
    "detachWait": "the wait for the detach, WAIT (CheckDetached)",
}

# The executions' outputs: the final Pass states, LaunchPinned and EnisReleased.
LAUNCH_OUTPUT = frozenset(
    {
        "instanceId",
        "availabilityZone",
        "eniId",
        "macAddress",
        "privateIp",
        "nicName",
        "lifecycleResult",
        "attempts",
    }
)
TERMINATE_OUTPUT = frozenset({"instanceId", "releasedEnis", "lifecycleResult"})

# -- the keys of the dicts inside it -------------------------------------------------------

SETTINGS = frozenset(  # enipin_core.settings.Settings
    {
        "poolTagKey",
        "poolTagValue",
        "deviceIndex",
        "pollSeconds",
        "instanceWaitSeconds",
        "poolWaitSeconds",
        "attachWaitSeconds",
        "agentWaitSeconds",
        "verifyWaitSeconds",
        "heartbeatTimeout",
        "maxAttachCandidates",
        "verifyDocument",
        "launchFailureResult",
        "detachGraceSeconds",
        "detachWaitSeconds",
        "warmPoolKeepsEni",
        "agentStartSeconds",
        "attachBurst",
        "attachesPerSecond",
    }
)
ENI = frozenset(  # enipin_core.pool.Eni
    {
        "id",
        "mac",
        "privateIp",
        "az",
        "subnetId",
        "status",
        "attachmentId",
        "attachmentStatus",
        "instanceId",
        "deviceIndex",
    }
)
INSTANCE = frozenset(
    {"id", "az", "vpcId", "state", "groupName", "launchedAt"}
)  # enipin_core.pool.Instance
LIFECYCLE = frozenset({"instanceId", "groupName", "hookName", "transition", "token"})
WAIT = frozenset({"started", "polls"})  # enipin_core.waiting.WaitProgress
HEARTBEAT = frozenset({"at", "due"})  # enipin_core.waiting.Heartbeat
VERIFICATION = frozenset(  # SendVerification, then GetVerificationResult
    {
        "commandId",
        "remediate",
        "rounds",
        "lookIn",
        "status",
        "verdict",
        "report",
        "needsRemediation",
        "wait",
    }
)
# The guest's report, as the verification document prints it (infra/template.yaml).
GUEST_REPORT = frozenset(
    {"mac", "found", "name", "altnames", "up", "ipv4", "remediated", "verdict"}
)
STORM_GUARD = frozenset({"groupName", "failures", "tripped", "trippedNow"})  # GuardState
ERROR = frozenset({"Error", "Cause"})  # a Catch's ResultPath: Step Functions' own names
# The lifecycle event's detail: AWS's own names (schemas/lifecycle-event.schema.json).
EVENT_DETAIL = frozenset(
    {
        "EC2InstanceId",
        "AutoScalingGroupName",
        "LifecycleHookName",
        "LifecycleActionToken",
        "LifecycleTransition",
        "NotificationMetadata",
        "Origin",
        "Destination",
    }
)
OUTPUT_ATTEMPTS = frozenset({"racesLost", "verificationRounds"})

# Where each dict sits, by its path in the state ("a.b"; a list's path names its items).
NESTED: Mapping[str, frozenset[str]] = {
    "detail": EVENT_DETAIL,
    "settings": SETTINGS,
    "lifecycle": LIFECYCLE,
    "heartbeat": HEARTBEAT,
    "instance": INSTANCE,
    "eni": ENI,
    "candidates": ENI,
    "enis": ENI,
    "instanceWait": WAIT,
    "poolWait": WAIT,
    "attachWait": WAIT,
    "agentWait": WAIT,
    "detachWait": WAIT,
    "verification": VERIFICATION,
    "verification.wait": WAIT,
    "verification.report": GUEST_REPORT,
    "error": ERROR,
    "agentLost": ERROR,
    "heartbeatDue": ERROR,
    "releaseError": ERROR,
    "guardError": ERROR,
    "stormGuard": STORM_GUARD,
}
# Dicts whose keys are not ours to name: AWS's event, Step Functions' errors.
FOREIGN_NAMES = frozenset(
    {"detail", "error", "agentLost", "heartbeatDue", "releaseError", "guardError"}
)

# -- dataclasses in and out of the state ---------------------------------------------------

_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def camel(name: str) -> str:
    """``private_ip`` -> ``privateIp``."""
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def snake(name: str) -> str:
    """``privateIp`` -> ``private_ip``; a snake_case name is left as it is."""
    return _WORD.sub("_", name).lower()


def state_dict(value: Any) -> dict[str, Any]:
    """A dataclass as the run state carries it: its fields under camelCase keys."""
    return {camel(k): v for k, v in asdict(value).items()}


def field_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """A dict of the run state as a dataclass's keyword arguments. A run redriven under an
    older release may still carry its snake_case keys: those read the same."""
    return {snake(k): v for k, v in data.items()}
