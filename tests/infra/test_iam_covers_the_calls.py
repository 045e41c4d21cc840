"""The roles grant what the handlers really call, and nothing they never call.

The sandbox does not enforce IAM, so a permission missing from the template would only show on
AWS (AccessDenied in the middle of a launch). Here the handlers run through the launch path,
its failure path (release, abandon, heartbeats) and the terminate path, the pool metrics run
once, and every AWS call the ledger saw a function make must be an action its role allows; and
every action a role allows must have been called, but for the few on paths not taken here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until
from iam_grants import grants

from enipin.sandbox import TEMPLATE, Sandbox
from enipin.sandbox.deploy import Stack
from enipin.sandbox.sam import resolve, transform

Factory = Callable[..., Sandbox]
# botocore's service names (the ledger's) -> IAM's
IAM_PREFIX = {"auto-scaling": "autoscaling", "sfn": "states"}
# Logging and tracing: every function's, by the runtime rather than by its code.
RUNTIME = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
           "xray:PutTelemetryRecords"}  # fmt: skip
# Granted for paths these scenarios do not take, and why.
NOT_TAKEN_HERE = {
    ("AttachEniRole", "ec2:DescribeNetworkInterfaces"):
        "only when EC2 refuses an attach: is the ENI taken (a lost race) or the device index?",
    ("CompleteLaunchRole", "autoscaling:DescribeAutoScalingInstances"):
        "only when the action was finished meanwhile: was the instance sent to termination?",
    ("DispatchEventRole", "sqs:SendMessage"):
        "Lambda's own dead-lettering of an event the dispatcher failed on three times",
    ("ReconcilerRole", "states:DescribeExecution"):
        "only for a running execution not named after its instance (one started by hand)",
}  # fmt: skip


def calls(sb: Sandbox) -> set[tuple[str, str]]:
    """(function name, IAM action) of every call a function made."""
    return {
        (c.caller, f"{IAM_PREFIX.get(c.service, c.service)}:{c.operation}")
        for c in sb.ledger.calls
        if c.caller is not None
    }


@pytest.fixture(scope="module")
def granted() -> Iterator[dict[str, set[str]]]:
    """Function logical id -> the actions its role allows, from the transformed template."""
    parameters = {"GroupName": "enipin-demo"}
    resources, stack = resolve(transform(TEMPLATE, parameters), parameters)
    yield actions_by_function(resources, stack)


def actions_by_function(resources: dict[str, Any], stack: Stack) -> dict[str, set[str]]:
    role_of = {
        name: next(k for k in resources if stack.arns[k] == fn["Properties"]["Role"])
        for name, fn in resources.items()
        if fn["Type"] == "AWS::Lambda::Function"
    }
    allowed: dict[str, set[str]] = {}
    for grant in grants(resources, stack)[0]:
        allowed.setdefault(grant.role, set()).update(grant.actions)
    return {fn: allowed.get(role, set()) for fn, role in role_of.items()}


@pytest.fixture(scope="module")
def observed() -> set[tuple[str, str]]:
    """The calls of a pinned launch, a metrics run and a termination, then of a launch whose
    SSM agent never comes (heartbeats while waiting, release, abandon with CONTINUE), then of
    an attach EC2 refuses because the instance is going (what state is it in?)."""
    seen: set[tuple[str, str]] = set()
    with Sandbox(azs=1, pool_per_az=2) as sb:
        sb.scale_out(1)
        sb.settle()
        response = sb.client("lambda").invoke(
            FunctionName="enipin-PublishPoolMetricsFunction", Payload=b"{}"
        )
        assert "FunctionError" not in response, response["Payload"].read()
        reconcile_after_drift(sb)
        sb.scale_in(1)
        sb.settle()
        seen |= calls(sb)
    failing = {
        "HookHeartbeatTimeout": 100,
        "AgentWaitSeconds": 60,
        "LaunchFailureResult": "CONTINUE",
    }
    with Sandbox(azs=1, pool_per_az=1, agent_delay=100_000, parameters=failing) as sb:
        sb.scale_out(1)
        sb.settle()
        seen |= calls(sb)
    with Sandbox(azs=1, pool_per_az=1) as sb:  # terminated by hand as its ENI was attached
        ec2 = sb.client("ec2")
        sb.ledger.before(
            "ec2",
            "AttachNetworkInterface",
            lambda params: ec2.terminate_instances(InstanceIds=params["InstanceId"]),
        )
        sb.scale_out(1)
        wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
        seen |= calls(sb)
    return {(name.removeprefix("enipin-"), action) for name, action in seen}


def reconcile_after_drift(sb: Sandbox) -> None:
    """The reconciler's three kinds of act: re-pin an ENI detached by hand (StartExecution),
    release the ENI of a stopped instance (DetachNetworkInterface), re-pin once it runs; and
    resume a launch whose event was lost (RecordLifecycleActionHeartbeat, StartExecution)."""
    ec2 = sb.client("ec2")
    (eni,) = ec2.describe_network_interfaces(
        Filters=[
            {"Name": "tag:Type", "Values": ["Dedicated-ENI"]},
            {"Name": "status", "Values": ["in-use"]},
        ]
    )["NetworkInterfaces"]
    ec2.detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"])
    instance = [eni["Attachment"]["InstanceId"]]
    for drift in (None, ec2.stop_instances, ec2.start_instances):  # re-pin, release, re-pin
        if drift:
            drift(InstanceIds=instance)
        sb.settle()
        run_reconciler(sb)
    sb.autoscaling.drop_next(1, "autoscaling:EC2_INSTANCE_LAUNCHING")  # then a lost event
    sb.scale_out(1)
    wait_until(lambda: bool(sb.autoscaling.pending_actions()), sb)
    run_reconciler(sb)


def run_reconciler(sb: Sandbox) -> None:
    response = sb.client("lambda").invoke(FunctionName="enipin-ReconcilerFunction", Payload=b"{}")
    assert "FunctionError" not in response, response["Payload"].read()
    sb.settle()


def test_every_call_a_function_makes_is_allowed_by_its_role(
    granted: dict[str, set[str]], observed: set[tuple[str, str]]
) -> None:
    denied = sorted((fn, a) for fn, a in observed if a not in granted[fn])
    assert denied == [], "AWS would answer AccessDenied to these (function, action)"


def test_every_function_ran_in_these_scenarios(
    granted: dict[str, set[str]], observed: set[tuple[str, str]]
) -> None:
    quiet = {"ValidateEventFunction"}  # calls no AWS API
    assert {fn for fn, _ in observed} | quiet == set(granted)


def test_every_action_a_role_allows_is_called(
    granted: dict[str, set[str]], observed: set[tuple[str, str]]
) -> None:
    unused = {
        (fn.removesuffix("Function") + "Role", action)
        for fn, actions in granted.items()
        for action in actions - RUNTIME
        if (fn, action) not in observed
    }
    assert unused == set(NOT_TAKEN_HERE), "granted but never called: drop them, or say why"
