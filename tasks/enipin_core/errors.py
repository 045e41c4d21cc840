"""Errors the state machines react to. The ASL matches on the class name, so each name here
is an ``ErrorEquals`` string somewhere in ``state_machines/`` (a test checks both ways)."""

from __future__ import annotations


class EnipinError(Exception):
    """Base of every error a workflow catches or retries by name."""


class InvalidLifecycleEvent(EnipinError):
    """The input is not a well-formed Auto Scaling lifecycle event; nothing was touched."""


class SettingsOutOfBounds(EnipinError):
    """The deployment's wait bounds (with the hook's NotificationMetadata) cannot hold on AWS:
    past Step Functions' history limit or the hook's global timeout. Fix the parameters."""


class InstanceNotFound(EnipinError):
    """The event names an instance EC2 does not know (or it is already gone)."""


class InstanceNotRunning(EnipinError):
    """The instance did not reach ``running`` (or EC2 did not show it) within the wait."""


class NoFreeEni(EnipinError):
    """No pool ENI became free in the instance's AZ within the configured wait."""


class DeviceIndexInUse(EnipinError):
    """The instance already has a non-pool interface at the configured device index."""


class AttachmentNotReady(EnipinError):
    """The ENI did not reach ``attached`` on the instance within the configured checks."""


class SsmAgentNotOnline(EnipinError):
    """The instance's SSM agent did not come online within the configured wait."""


class SsmAgentNotReady(EnipinError):
    """SendCommand refused the instance (``InvalidInstanceId``) although its agent had reported
    Online: SSM has not caught up yet. The workflow goes back to the agent wait."""


class HeartbeatDue(EnipinError):
    """A heartbeat fell due before the verification was sent (a slow attach: throttling, lost
    races, a starved account). The workflow takes it, then polls the agent and sends."""


class VerificationTimedOut(EnipinError):
    """The verification command did not finish within the configured checks."""


class NicNotVerified(EnipinError):
    """The guest OS does not show the ENI's MAC up with its private IP, even after remediation."""


class InstanceTerminating(EnipinError):
    """The instance left the launch for termination before it could be put in service."""


class LaunchActionEnded(EnipinError):
    """The run's own launch action ended before its attach (a scale-in took the instance, or
    another run completed it): nothing was attached."""


class EniAttachedSinceLook(EnipinError):
    """A pool ENI landed on the terminating instance after the run looked for them (a launch
    run's attach that was in flight): the run looks again instead of letting it go with it."""


class EniStuckDetaching(EnipinError):
    """A pool ENI did not come off the terminating instance, even with a forced detach."""


class AwsThrottled(EnipinError):
    """AWS throttled the call beyond the SDK's own retries; the state machine backs off."""


class AwsTransientError(EnipinError):
    """A transient AWS server error beyond the SDK's own retries; the state machine retries."""


ALL_ERRORS: tuple[type[EnipinError], ...] = (
    InvalidLifecycleEvent,
    SettingsOutOfBounds,
    InstanceNotFound,
    InstanceNotRunning,
    NoFreeEni,
    DeviceIndexInUse,
    AttachmentNotReady,
    SsmAgentNotOnline,
    SsmAgentNotReady,
    HeartbeatDue,
    VerificationTimedOut,
    NicNotVerified,
    InstanceTerminating,
    LaunchActionEnded,
    EniAttachedSinceLook,
    EniStuckDetaching,
    AwsThrottled,
    AwsTransientError,
)
