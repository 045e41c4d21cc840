"""Asking the guest OS, over SSM Run Command, whether the ENI's NIC is up with its address."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from enipin_core.aws import error_code, error_message
from enipin_core.errors import SsmAgentNotReady

VERIFIED = "VERIFIED"
# Verdicts one remediation (link up, DHCP) or a second look may fix.
FIXABLE = frozenset({"DOWN", "NO_ADDRESS", "NOT_FOUND"})
_FINAL_STATUSES = frozenset({"Success", "Failed", "Cancelled", "TimedOut"})
# The document step's own timeoutSeconds (infra/template.yaml): the script's worst case is 40 s.
SCRIPT_SECONDS = 60
# SendCommand's TimeoutSeconds (how long SSM waits for the agent to start it) may not be less.
_MIN_DELIVERY_SECONDS = 30
# The first look at a command's result: SSM hands it to an online agent in about a second and
# the check runs in one or two. Later looks come every PollSeconds.
FIRST_LOOK_SECONDS = 3


def delivery_seconds(verify_wait_seconds: int) -> int:
    """Of one verification's bound, what the agent gets to start the command: the rest is the
    script's own timeout, so that SSM has given up on the command by the time the run does."""
    return max(_MIN_DELIVERY_SECONDS, verify_wait_seconds - SCRIPT_SECONDS)


def agent_online(ssm: Any, instance_id: str) -> bool:
    try:
        resp = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
        )
    except ClientError as exc:
        if error_code(exc) == "InvalidInstanceId":  # not a managed node (yet): not online
            return False
        raise
    return any(
        info.get("InstanceId") == instance_id and info.get("PingStatus") == "Online"
        for info in resp.get("InstanceInformationList", [])
    )


def send_check(
    ssm: Any,
    instance_id: str,
    document: str,
    mac: str,
    expected_ip: str,
    remediate: bool,
    timeout_seconds: int,
) -> str:
    """Run the stack's verification document (typed, pattern-checked parameters) on one host;
    the agent must start it within ``timeout_seconds``."""
    try:
        resp = ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName=document,
            Parameters={
                "MacAddress": [mac],
                "ExpectedIp": [expected_ip],
                "Remediate": ["true" if remediate else "false"],
            },
            Comment=f"enipin verify {mac}"[:100],
            TimeoutSeconds=timeout_seconds,
        )
    except ClientError as exc:
        if error_code(exc) == "InvalidInstanceId":
            # SSM may refuse an instance for a moment after its agent reported Online (or
            # for good once it shuts down): back to the agent wait, which bounds both.
            raise SsmAgentNotReady(f"{instance_id}: {error_message(exc)}") from None
        raise
    return str(resp["Command"]["CommandId"])


@dataclass(frozen=True)
class CheckResult:
    """PENDING while SSM has no final status; otherwise the guest's report."""

    status: str
    report: dict[str, Any] | None
    detail: str

    @property
    def pending(self) -> bool:
        return self.status == "PENDING"


def read_check(ssm: Any, command_id: str, instance_id: str) -> CheckResult:
    try:
        inv = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except ClientError as exc:
        # Right after SendCommand the invocation may not exist yet: that is "pending".
        if error_code(exc) == "InvocationDoesNotExist":
            return CheckResult("PENDING", None, "invocation not registered yet")
        raise
    status = inv.get("Status", "")
    if status not in _FINAL_STATUSES:
        return CheckResult("PENDING", None, status)
    report = _parse_report(inv.get("StandardOutputContent", ""))
    detail = f"{status} (exit {inv.get('ResponseCode')})"
    if report is None:
        stderr = inv.get("StandardErrorContent", "").strip()
        detail = f"{detail}: no report from the guest {stderr[:300]}".strip()
    return CheckResult(status, report, detail)


def _parse_report(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "verdict" in data:
            return data
    return None
