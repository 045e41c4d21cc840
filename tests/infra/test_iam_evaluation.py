"""The roles allow what the functions and state machines really do, the way AWS evaluates identity
policies, and nothing they never do.

The sandbox does not enforce IAM, so a permission missing from the template would only show on
AWS (AccessDenied in the middle of a launch). Here the handlers run through the launch path, its
failure path (release, abandon, heartbeats), the reconciler's repairs and the terminate path,
the pool metrics run once, and every AWS call a function made and every Lambda invoke a state
machine made is evaluated against the transformed template's policies (iam_eval): action,
each resource the action authorizes with its real ARN and the tags it carries, and every
condition. Every statement must be needed by some call but for the few on paths not taken here;
parliament finds nothing of MEDIUM severity or worse in any policy document but its known false
positives; and the mutation tests prove that loosening a policy goes unseen by allowed calls
while tightening one, or granting more, is caught.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import parliament
import pytest
from click.testing import CliRunner
from conftest import wait_until
from iam_eval import (
    Authorization,
    Decision,
    Inventory,
    Observation,
    Principal,
    Request,
    arn_match,
    condition_holds,
    evaluate,
    observe,
    recording_attachments,
    redundant,
    requests_from_calls,
    requests_from_tasks,
    unused,
)
from iam_grants import Grant, document_of, statements

from enipin.cli import main
from enipin_lab.sandbox import TEMPLATE, Sandbox
from enipin_lab.sandbox.base import ACCOUNT_ID, REGION
from enipin_lab.sandbox.deploy import Stack
from enipin_lab.sandbox.ledger import Call
from enipin_lab.sandbox.sam import resolve, transform

Resources = dict[str, Any]
AUTH = Authorization()
GROUP = "enipin-demo"
SELFTEST_GROUP = "enipin-selftest"
INSTANCES = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/*"
ENIS = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:network-interface/*"

# Functions that call no AWS API.
QUIET = {"ValidateEventFunction"}
# Statements granted for what no code here calls, or for paths these scenarios do not take: by
# (role, statement, Action entry), the first two as fnmatch patterns; a statement is named by its
# Sid, or "<policy>: Resource <ARNs>" without one (``label``).
NOT_NEEDED_HERE = {
    ("*", "WriteOnlyTheStacksFunctionLogs", "logs:CreateLogStream"):
        "the Lambda runtime writes each function's log with its role, not the function's code",
    ("*", "WriteOnlyTheStacksFunctionLogs", "logs:PutLogEvents"): "the Lambda runtime's too",
    ("*", "TracesHaveNoResourceScope", "xray:PutTraceSegments"):
        "the Lambda runtime's X-Ray daemon sends the function's trace segments",
    ("*", "TracesHaveNoResourceScope", "xray:PutTelemetryRecords"): "the X-Ray daemon's too",
    **{
        ("*", "AWSXrayWriteOnlyAccess: *", action): "Step Functions traces an execution with the "
        "state machine's role (SAM attaches this AWS-managed policy for Tracing)"
        for action in (
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "xray:GetSamplingRules",
            "xray:GetSamplingTargets",
            "xray:GetSamplingStatisticSummaries",
        )
    },
    **{
        ("*", "LogDeliveryHasNoResourceScope", action): "Step Functions sets up the execution "
        "log's vended delivery with the state machine's role"
        for action in (
            "logs:CreateLogDelivery",
            "logs:GetLogDelivery",
            "logs:UpdateLogDelivery",
            "logs:DeleteLogDelivery",
            "logs:ListLogDeliveries",
            "logs:PutResourcePolicy",
            "logs:DescribeResourcePolicies",
            "logs:DescribeLogGroups",
        )
    },
    ("AttachEniRole", "DescribeHasNoResourceScope", "ec2:DescribeNetworkInterfaces"):
        "only when EC2 refuses an attach: is the ENI taken (a lost race) or the device index?",
    ("CompleteLaunchRole", "DescribeHasNoResourceScope",
     "autoscaling:DescribeAutoScalingInstances"):
        "only when the action was finished meanwhile: was the instance sent to termination?",
    ("DispatchEventRole", "DeadLetterOnlyToTheStacksQueue", "sqs:SendMessage"):
        "Lambda's own dead-lettering of an event the dispatcher failed on three times",
    ("ReconcilerRole", "DescribeOnlyTheseWorkflowsExecutions", "states:DescribeExecution"):
        "only for a running execution not named after its instance (one started by hand)",
    ("TerminateStateMachineRole", "*:function:enipin-RecordHeartbeatFunction[*]",
     "lambda:InvokeFunction"):
        "the terminate workflow heartbeats only while a detach outlasts half the hook's timeout "
        "(HeartbeatWhileDetaching); the detaches here are quick",
    **{
        (role, "OnlyTheSelftestGroup", "autoscaling:RecordLifecycleActionHeartbeat"):
            "the selftest's runs are short and whole: no wait outlasts half the hook's timeout, "
            "no event is lost for the reconciler to resume, no ENI is kept to give back; the "
            "same grants on the real group are used above"
        for role in ("RecordHeartbeatRole", "ReconcilerRole", "ReleaseEniRole")
    },
}  # fmt: skip
# parliament's findings that are not problems: (policy document, issue, a part of the detail).
PARLIAMENT_FALSE_POSITIVES = {
    ("*/AssumeRolePolicyDocument", "MALFORMED", "neither Resource nor NotResource"):
        "a trust policy names a Principal and no Resource; parliament reads it as an identity "
        "policy",
    ("AttachPoolEnisPolicy", "RESOURCE_MISMATCH", "ec2:AttachNetworkInterface"):
        "the action authorizes an instance and an ENI; this statement allows the ENI, the "
        "role's inline one the instance, each with its own tag condition (the evaluation "
        "proves the pair allows every attach)",
    ("AttachEniRole/attach-eni", "RESOURCE_MISMATCH", "ec2:AttachNetworkInterface"):
        "the instance half of the pair above",
    ("DetachPoolEnisPolicy", "RESOURCE_MISMATCH", "ec2:DetachNetworkInterface"):
        "the same pair for detaching: this statement allows the ENI",
    ("*Role/*", "RESOURCE_MISMATCH", "ec2:DetachNetworkInterface"):
        "the instance half of the detach pair, in each role that detaches",
    ("SendVerificationRole/send-verification", "RESOURCE_MISMATCH", "ssm:SendCommand"):
        "SendCommand authorizes the document and each instance: one statement each, the "
        "instances' with the group's tag condition",
    ("ReconcilerRole/reconcile", "RESOURCE_MISMATCH", "states:ListExecutions"):
        "ListExecutions authorizes a state machine or a Map Run: the reconciler lists the "
        "executions of state machines only",
    ("ReconcilerRole/reconcile", "RESOURCE_MISMATCH", "states:DescribeExecution"):
        "DescribeExecution authorizes a standard or an express execution: both workflows are "
        "standard",
    ("*StateMachineRole/*", "PERMISSIONS_MANAGEMENT_ACTIONS", "logs:putresourcepolicy"):
        "Step Functions' execution logging needs it on \"*\" (AWS's documented policy): it "
        "lets the log group accept the vended delivery",
}  # fmt: skip
SEVERITIES = ["MUTE", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
NOT_WHAT = {"line", "column", "filepath"}  # of a finding's location


# ---- the template and the scenarios -------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> tuple[Resources, Stack]:
    """Every resource of the transformed template, resolved, and the stack's names and ARNs."""
    parameters = {"GroupName": GROUP, "SelftestGroupName": SELFTEST_GROUP}
    return resolve(transform(TEMPLATE, parameters), parameters)


@pytest.fixture(scope="module")
def observation() -> Observation:
    """The calls of a pinned launch, a metrics run, the reconciler's repairs and a termination,
    then of a launch whose SSM agent never comes (heartbeats while waiting, release, abandon
    with CONTINUE), then of an attach EC2 refuses because the instance is going (what state is
    it in?), then of a launch out of a KEEP warm pool abandoned with its kept ENI, which trips
    the storm guard; with the Task states the executions scheduled and what they acted on."""
    seen = Observation(Inventory(ACCOUNT_ID, REGION))
    with recording_attachments(seen.inventory), Sandbox(azs=1, pool_per_az=2) as sb:
        sb.scale_out(1)
        sb.settle()
        response = sb.client("lambda").invoke(
            FunctionName="enipin-PublishPoolMetricsFunction", Payload=b"{}"
        )
        assert "FunctionError" not in response, response["Payload"].read()
        reconcile_after_drift(sb)
        sb.scale_in(1)
        sb.settle()
        observe(sb, seen, AUTH)
    failing = {
        "HookHeartbeatTimeout": 100,
        "AgentWaitSeconds": 60,
        "LaunchFailureResult": "CONTINUE",
    }
    with (
        recording_attachments(seen.inventory),
        Sandbox(azs=1, pool_per_az=1, agent_delay=100_000, parameters=failing) as sb,
    ):
        sb.scale_out(1)
        sb.settle()
        # the operator replays it (the agent still absent): a pin with no action, given up
        # again, asks Auto Scaling where the instance is before it lets the ENI go
        replayed = CliRunner().invoke(
            main, ["--region", REGION, "executions", "replay", "--failed"]
        )
        assert replayed.exit_code == 0, replayed.output
        sb.settle()
        observe(sb, seen, AUTH)
    with recording_attachments(seen.inventory), Sandbox(azs=1, pool_per_az=1) as sb:
        ec2 = sb.client("ec2")  # the instance is terminated by hand as its ENI is attached
        sb.ledger.before(
            "ec2",
            "AttachNetworkInterface",
            lambda params: ec2.terminate_instances(InstanceIds=params["InstanceId"]),
        )
        sb.scale_out(1)
        wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
        sb.settle()
        observe(sb, seen, AUTH)
    # its ABANDON trips the guard; then a selftest, whose forced failure trips it on its group
    keep = {"WarmPoolEni": "KEEP", "StormGuardFailures": 1, "SelftestGroupName": SELFTEST_GROUP}
    with (
        recording_attachments(seen.inventory),
        Sandbox(azs=1, pool_per_az=2, max_size=1, parameters=keep) as sb,
    ):
        abandon_a_launch_out_of_the_warm_pool(sb)
        run_a_selftest(sb)
        observe(sb, seen, AUTH)
    return seen


def run_a_selftest(sb: Sandbox) -> None:
    """The stack's functions serving the selftest's own group: pins, a forced failure, the
    releases (the CLI's own calls are the operator's, outside the stack's IAM). Its teardown
    is left out, so that the group and ENIs the calls named are still there to be judged."""
    (subnet,) = sb.world.subnets.values()
    image = sb.client("ec2").describe_images(Owners=["self"])["Images"][0]["ImageId"]
    profile = f"{sb.group_name}-instance"
    args = ["--subnet", subnet, "--image-id", image, "--instance-profile", profile]
    with patch("enipin.selftest.remove"):
        result = CliRunner().invoke(
            main, ["--region", REGION, "selftest", *args, "--timeout", "120"]
        )
    assert result.exit_code == 0, result.output
    sb.settle()


def abandon_a_launch_out_of_the_warm_pool(sb: Sandbox) -> None:
    """KEEP: an instance pinned into the warm pool whose NIC never comes up once it leaves; the
    run asks Auto Scaling whether its action still waits and gives the kept ENI back."""
    autoscaling = sb.client("autoscaling")
    autoscaling.put_warm_pool(AutoScalingGroupName=sb.group_name, MinSize=1)
    sb.settle()
    for warm in autoscaling.describe_warm_pool(AutoScalingGroupName=sb.group_name)["Instances"]:
        sb.guests.set_faults(warm["InstanceId"], {"nic_absent"})
    sb.scale_out(1)
    wait_until(lambda: any(a["result"] == "ABANDON" for a in sb.autoscaling.ended_actions()), sb)
    sb.settle()


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


def principals(resources: Resources, stack: Stack) -> dict[str, Principal]:
    """Each function by the name its calls carry, each state machine by its logical id."""
    role_of = {stack.arns[k]: k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"}
    found = {}
    for name, res in resources.items():
        props = res["Properties"]
        if res["Type"] == "AWS::Lambda::Function":
            found[stack.physical[name]] = Principal(name, role_of[props["Role"]], props["Role"])
        elif res["Type"] == "AWS::StepFunctions::StateMachine":
            found[name] = Principal(name, role_of[props["RoleArn"]], props["RoleArn"])
    return found


@pytest.fixture(scope="module")
def requests(template: tuple[Resources, Stack], observation: Observation) -> list[Request]:
    who = principals(*template)
    inventory = observation.inventory
    return requests_from_calls(observation.calls, who, inventory, AUTH) + requests_from_tasks(
        observation.tasks, who, inventory, AUTH
    )


def decide(resources: Resources, stack: Stack, requests: list[Request]) -> list[Decision]:
    found, unknown = statements(resources, stack)
    assert unknown == [], "a managed policy whose content the evaluation cannot see"
    return evaluate(requests, found, AUTH)


@pytest.fixture(scope="module")
def decisions(template: tuple[Resources, Stack], requests: list[Request]) -> list[Decision]:
    return decide(*template, requests)


def denials(decisions: list[Decision]) -> list[str]:
    return sorted({d.describe() for d in decisions if not d.allowed})


def label(grant: Grant) -> str:
    """A statement's name in NOT_NEEDED_HERE: its Sid, or its policy and resources."""
    if "Sid" in grant.statement:
        return grant.sid
    return f"{grant.source}: Resource {' '.join(grant.resources)}"


def said_not_needed(grant: Grant, entry: str) -> str | None:
    for (role, name, action), reason in NOT_NEEDED_HERE.items():
        named = fnmatch.fnmatchcase(grant.role, role) and fnmatch.fnmatchcase(label(grant), name)
        if named and action == entry:
            return reason
    return None


def not_needed(decisions: list[Decision], resources: Resources, stack: Stack) -> set[str]:
    """Each grant no call used, but those said not needed here: "role statement entry"."""
    grants = statements(resources, stack)[0]
    return {
        f"{g.role} {label(g)} {entry}"
        for g, entry in unused(decisions, grants)
        if said_not_needed(g, entry) is None
    }


# ---- the checks ---------------------------------------------------------------------------


def test_every_call_is_allowed_the_way_aws_evaluates_it(decisions: list[Decision]) -> None:
    denied = denials(decisions)
    assert denied == [], "AWS would answer AccessDenied to:\n" + "\n".join(denied)


def test_every_function_and_state_machine_ran_in_these_scenarios(
    template: tuple[Resources, Stack], requests: list[Request]
) -> None:
    resources = template[0]
    actors = {
        k
        for k, v in resources.items()
        if v["Type"] in ("AWS::Lambda::Function", "AWS::StepFunctions::StateMachine")
    }
    assert {r.principal for r in requests} | QUIET == actors


def test_every_grant_is_needed_by_a_call(
    template: tuple[Resources, Stack], decisions: list[Decision]
) -> None:
    assert not_needed(decisions, *template) == set(), "granted, never used: drop, or say why"


def test_every_grant_said_not_needed_here_is_granted_and_unused(
    template: tuple[Resources, Stack], decisions: list[Decision]
) -> None:
    idle = unused(decisions, statements(*template)[0])
    stale = {
        (role, name, action)
        for role, name, action in NOT_NEEDED_HERE
        if not any(
            fnmatch.fnmatchcase(g.role, role)
            and fnmatch.fnmatchcase(label(g), name)
            and entry == action
            for g, entry in idle
        )
    }
    assert stale == set(), "said not needed here, but used now or no longer granted"


def test_no_statement_only_repeats_what_others_allow(
    template: tuple[Resources, Stack], decisions: list[Decision]
) -> None:
    repeated = [g.where() for g in redundant(decisions, statements(*template)[0])]
    assert repeated == [], "every call these allow is allowed by another statement too"


# ---- parliament ---------------------------------------------------------------------------


def policy_documents(resources: Resources) -> dict[str, dict[str, Any]]:
    """Every policy document of the template, by where it is: ``Role/AssumeRolePolicyDocument``,
    ``Role/<inline policy name>``, or the policy resource's logical id."""
    found = {}
    for name, res in resources.items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            found[f"{name}/AssumeRolePolicyDocument"] = props["AssumeRolePolicyDocument"]
            for policy in props.get("Policies", []):
                found[f"{name}/{policy['PolicyName']}"] = policy["PolicyDocument"]
        elif "PolicyDocument" in props:
            found[name] = props["PolicyDocument"]
    return {k: document_of(v) for k, v in found.items()}


def parliament_findings(resources: Resources) -> list[tuple[str, str, str, str]]:
    """(document, issue, severity, detail) of everything parliament reports, community
    auditors included."""
    community = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"
    parliament.override_config(community)
    found = []
    for name, document in policy_documents(resources).items():
        policy = parliament.analyze_policy_string(
            json.dumps(document), include_community_auditors=True
        )
        for finding in map(parliament.enhance_finding, policy.findings):
            where = {k: v for k, v in finding.location.items() if k not in NOT_WHAT}
            detail = json.dumps([finding.detail, where], default=str)
            found.append((name, finding.issue, finding.severity, detail))
    return found


def false_positive(document: str, issue: str, detail: str) -> str | None:
    for (where, known_issue, part), reason in PARLIAMENT_FALSE_POSITIVES.items():
        if fnmatch.fnmatchcase(document, where) and issue == known_issue and part in detail:
            return reason
    return None


def test_parliament_finds_no_problem_of_medium_severity_or_worse(
    template: tuple[Resources, Stack],
) -> None:
    findings = parliament_findings(template[0])
    serious = [
        f"{document}: {issue} ({severity}) {detail}"
        for document, issue, severity, detail in findings
        if SEVERITIES.index(severity) >= SEVERITIES.index("MEDIUM")
        and false_positive(document, issue, detail) is None
    ]
    assert serious == [], "parliament:\n" + "\n".join(serious)
    stale = [
        (where, issue, part)
        for where, issue, part in PARLIAMENT_FALSE_POSITIVES
        if not any(
            fnmatch.fnmatchcase(d, where) and i == issue and part in t for d, i, _, t in findings
        )
    ]
    assert stale == [], "false positives parliament no longer reports: drop them"


# ---- the check has teeth --------------------------------------------------------------------


def statement(resources: Resources, holder: str, sid: str) -> dict[str, Any]:
    """The statement ``sid`` of ``holder`` (a role's inline policies or a policy resource), its
    document made a dict in place so that it can be changed."""
    props = resources[holder]["Properties"]
    policies = props.get("Policies", []) if "Policies" in props else [props]
    for policy in policies:
        policy["PolicyDocument"] = document_of(policy["PolicyDocument"])
        for st in policy["PolicyDocument"]["Statement"]:
            if st.get("Sid") == sid:
                st_dict: dict[str, Any] = st
                return st_dict
    raise KeyError(f"{holder} has no statement {sid}")


def attach_condition_on(key: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        st = statement(resources, "AttachEniRole", "AttachOnlyToTheGroupsInstances")
        st["Condition"] = {"StringEquals": {key: [GROUP, SELFTEST_GROUP]}}

    return change


def without_invoke_of(function: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        props = resources["LaunchStateMachineRole"]["Properties"]
        props["Policies"] = [
            p for p in props["Policies"] if function not in json.dumps(p["PolicyDocument"])
        ]

    return change


def granting_more(resources: Resources) -> None:
    st = statement(resources, "AttachEniRole", "DescribeHasNoResourceScope")
    st["Action"] = [*st["Action"], "ec2:DescribeSubnets"]
    statement(resources, "ReconcilerRole", "DescribeHasNoResourceScope")  # a dict now
    policy = resources["ReconcilerRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"].append(
        {"Sid": "TagEnis", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": ENIS}
    )


def denying_pool_enis(resources: Resources) -> None:
    statement(resources, "AttachEniRole", "DescribeHasNoResourceScope")
    policy = resources["AttachEniRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"].append(
        {
            "Effect": "Deny",
            "Action": "ec2:Attach*",
            "Resource": "*",
            "Condition": {"StringEquals": {"ec2:ResourceTag/Type": "Dedicated-ENI"}},
        }
    )


def set_resource(holder: str, sid: str, resource: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        statement(resources, holder, sid)["Resource"] = resource

    return change


def set_condition(holder: str, sid: str, condition: dict[str, Any]) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        statement(resources, holder, sid)["Condition"] = condition

    return change


def drop_condition(resources: Resources) -> None:
    del statement(resources, "AttachEniRole", "AttachOnlyToTheGroupsInstances")["Condition"]


OTHER_GROUP = f"arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:autoScalingGroup:*:autoScalingGroupName/x"
ATTACH, DETACH = "ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"
HEARTBEAT = "autoscaling:RecordLifecycleActionHeartbeat"
# What a statement no call uses any more is reported as: "role statement action".
INSTANCE_ATTACH_IDLE = {f"AttachEniRole AttachOnlyToTheGroupsInstances {ATTACH}"}
POOL_ATTACH_IDLE = {f"AttachEniRole AttachOnlyPoolEnis {ATTACH}"}
DETACHERS = {"ReleaseEni", "DetachEnis", "Reconciler"}
# (change, the (principal, action, resource type) it gets denied, the grants it leaves unused)
MUTATIONS: dict[str, tuple[Callable[[Resources], None], set[tuple[str, str, str]], set[str]]] = {
    "loosened: attach to any instance, whatever its group": (drop_condition, set(), set()),
    "same condition on EC2's own tag key": (
        attach_condition_on("ec2:ResourceTag/aws:autoscaling:groupName"), set(), set()
    ),
    "SendCommand's instances by SSM's tag key": (
        set_condition("SendVerificationRole", "OnlyTheGroupsInstances",
                      {"StringLike": {"ssm:resourceTag/aws:autoscaling:groupName": "enipin-*"}}),
        set(), set(),
    ),
    "attach narrowed to ENIs: the instance is not allowed": (
        set_resource("AttachEniRole", "AttachOnlyToTheGroupsInstances", ENIS),
        {("AttachEniFunction", ATTACH, "instance")}, INSTANCE_ATTACH_IDLE,
    ),
    "attach on a tag key EC2 does not set": (
        attach_condition_on("autoscaling:ResourceTag/aws:autoscaling:groupName"),
        {("AttachEniFunction", ATTACH, "instance")}, INSTANCE_ATTACH_IDLE,
    ),
    "attach to another group's instances": (
        set_condition("AttachEniRole", "AttachOnlyToTheGroupsInstances",
                      {"StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": "other"}}),
        {("AttachEniFunction", ATTACH, "instance")}, INSTANCE_ATTACH_IDLE,
    ),
    "another pool tag value": (
        set_condition("AttachPoolEnisPolicy", "AttachOnlyPoolEnis",
                      {"StringEquals": {"aws:ResourceTag/Type": "Shared-ENI"}}),
        {("AttachEniFunction", ATTACH, "network-interface")}, POOL_ATTACH_IDLE,
    ),
    "detach only where the pool tag is absent": (
        set_condition("DetachPoolEnisPolicy", "DetachOnlyPoolEnis",
                      {"Null": {"aws:ResourceTag/Type": "true"}}),
        {(f"{fn}Function", DETACH, "network-interface") for fn in DETACHERS},
        {f"{fn}Role DetachOnlyPoolEnis {DETACH}" for fn in DETACHERS},
    ),
    "SendCommand to another group's instances": (
        set_condition("SendVerificationRole", "OnlyTheGroupsInstances",
                      {"StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": "x"}}),
        {("SendVerificationFunction", "ssm:SendCommand", "instance")},
        {"SendVerificationRole OnlyTheGroupsInstances ssm:SendCommand"},
    ),
    "heartbeats on another group": (
        set_resource(f"HeartbeatPolicy{GROUP.replace('-', '')}", "OnlyThisGroup", OTHER_GROUP),
        {(fn, HEARTBEAT, "autoScalingGroup")
         for fn in ("RecordHeartbeatFunction", "ReconcilerFunction", "AttachEniFunction",
                    "ReleaseEniFunction")},
        {f"{role} OnlyThisGroup {HEARTBEAT}"
         for role in ("RecordHeartbeatRole", "ReconcilerRole", "AttachEniRole", "ReleaseEniRole")},
    ),
    "an explicit Deny on pool ENIs": (
        denying_pool_enis, {("AttachEniFunction", ATTACH, "network-interface")}, POOL_ATTACH_IDLE,
    ),
    "the launch state machine may not invoke AttachEni": (
        without_invoke_of("AttachEniFunction"),
        {("LaunchStateMachine", "lambda:InvokeFunction", "function")}, set(),
    ),
    "granted more than is called": (
        granting_more, set(),
        {"AttachEniRole DescribeHasNoResourceScope ec2:DescribeSubnets",
         "ReconcilerRole TagEnis ec2:CreateTags"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_changed_policy_is_judged_by_the_calls(
    template: tuple[Resources, Stack], requests: list[Request], mutation: str
) -> None:
    change, denied, idle = MUTATIONS[mutation]
    # GIVEN a copy of the resolved template, changed
    resources, stack = template
    changed = copy.deepcopy(resources)
    change(changed)
    # WHEN the calls are evaluated against it
    decisions = decide(changed, stack, requests)
    # THEN exactly these are denied, and these grants are left unused
    assert {
        (d.request.principal, d.request.action, d.resource.type if d.resource else "?")
        for d in decisions
        if not d.allowed
    } == denied, "\n".join(denials(decisions))
    assert not_needed(decisions, changed, stack) == idle


# ---- the evaluator itself -------------------------------------------------------------------


TEAM, KEYS, SOURCE = "aws:ResourceTag/Team", "aws:TagKeys", "aws:SourceArn"
RULE = "arn:aws:events:us-east-1:1:rule/x"


def has(key: str, *values: str) -> dict[str, tuple[str, ...]]:
    """A request context holding ``key`` with ``values``."""
    return {key.lower(): values}


@pytest.mark.parametrize(
    ("operator", "key", "wanted", "context", "holds"),
    [
        ("StringEquals", TEAM, "a", has(TEAM, "a"), True),
        ("StringEquals", TEAM, ["b", "a"], has(TEAM, "a"), True),
        ("StringEquals", TEAM, "A", has(TEAM, "a"), False),
        ("StringEqualsIgnoreCase", TEAM, "A", has(TEAM, "a"), True),
        ("StringEquals", TEAM, "a", {}, False),
        ("StringNotEquals", TEAM, "a", {}, True),
        ("StringNotEquals", TEAM, ["a", "b"], has(TEAM, "b"), False),
        ("StringEqualsIfExists", TEAM, "a", {}, True),
        ("StringEqualsIfExists", TEAM, "a", has(TEAM, "b"), False),
        ("StringLike", TEAM, "web-*", has(TEAM, "web-a"), True),
        ("StringLike", TEAM, "web-?", has(TEAM, "web-ab"), False),
        ("ArnLike", SOURCE, "arn:aws:events:*:*:rule/x", has(SOURCE, RULE), True),
        ("ArnEquals", SOURCE, "arn:aws:events:*:2:rule/x", has(SOURCE, RULE), False),
        ("Bool", "aws:SecureTransport", True, has("aws:SecureTransport", "true"), True),
        ("Null", TEAM, "true", {}, True),
        ("Null", TEAM, "false", {}, False),
        ("NumericLessThan", "s3:max-keys", "10", has("s3:max-keys", "9"), True),
        ("DateGreaterThan", "aws:CurrentTime", "2020-01-01T00:00:00Z",
         has("aws:CurrentTime", "2021-01-01T00:00:00Z"), True),
        ("IpAddress", "aws:SourceIp", "10.0.0.0/8", has("aws:SourceIp", "10.1.2.3"), True),
        ("ForAnyValue:StringEquals", KEYS, ["a", "b"], has(KEYS, "c", "b"), True),
        ("ForAnyValue:StringEquals", KEYS, "a", {}, False),
        ("ForAllValues:StringEquals", KEYS, ["a", "b"], has(KEYS, "a", "c"), False),
        ("ForAllValues:StringEquals", KEYS, ["a", "b"], {}, True),
        ("StringEquals", TEAM, "${aws:PrincipalTag/Team}",
         {**has(TEAM, "me"), **has("aws:PrincipalTag/Team", "me")}, True),
    ],
)  # fmt: skip
def test_conditions_hold_as_iam_evaluates_them(
    operator: str, key: str, wanted: Any, context: dict[str, tuple[str, ...]], holds: bool
) -> None:
    assert condition_holds(operator, key, wanted, context) is holds


@pytest.mark.parametrize(
    ("pattern", "arn", "matches"),
    [
        ("*", "arn:aws:ec2:us-east-1:1:instance/i-1", True),
        ("arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:us-east-1:1:instance/i-1", True),
        ("arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:us-east-1:1:network-interface/eni-1", False),
        ("arn:aws:ec2:*", "arn:aws:ec2:us-east-1:1:instance/i-1", True),
        ("arn:aws:autoscaling:*:1:autoScalingGroup:*:autoScalingGroupName/web",
         "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:u-u:autoScalingGroupName/web", True),
        ("arn:aws:lambda:*:1:function:fn*", "arn:aws:lambda:us-east-1:1:function:fn:live", True),
        ("arn:aws:states:*:1:execution:m:*", "arn:aws:states:us-east-1:1:execution:m2:e", False),
        ("arn:aws:ec2:*:*:instance/*", "*", False),
    ],
)  # fmt: skip
def test_resources_match_as_iam_globs_arns(pattern: str, arn: str, matches: bool) -> None:
    assert arn_match(pattern, arn) is matches


def test_an_action_authorizing_two_resources_needs_both_allowed() -> None:
    # GIVEN an attach, which authorizes the instance and the ENI
    inventory = Inventory(ACCOUNT_ID, REGION)
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/i-1"
    eni = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:network-interface/eni-1"
    inventory.tags = {
        instance: {"aws:autoscaling:groupName": GROUP},
        eni: {"Type": "Dedicated-ENI"},
    }
    who = Principal("Fn", "Role", f"arn:aws:iam::{ACCOUNT_ID}:role/r")
    params = {"InstanceId": ["i-1"], "NetworkInterfaceId": ["eni-1"], "DeviceIndex": ["1"]}
    (request,) = requests_from_calls(
        [_call("ec2", "AttachNetworkInterface", params)], {"fn": who}, inventory, AUTH
    )
    assert [r.type for r in request.resources] == ["instance", "network-interface"]
    only_instances = Grant("Role", "p", {"Effect": "Allow", "Action": "ec2:Attach*",
                                          "Resource": INSTANCES})  # fmt: skip
    # WHEN only instances are allowed, THEN the ENI is denied; with ENIs too, nothing is
    verdicts = evaluate([request], [only_instances], AUTH)
    assert [d.allowed for d in verdicts] == [True, False]
    both = Grant("Role", "p", {**only_instances.statement, "Resource": [INSTANCES, ENIS]}, 1)
    assert all(d.allowed for d in evaluate([request], [both], AUTH))


def test_an_action_without_resource_types_takes_resource_star_only() -> None:
    inventory = Inventory(ACCOUNT_ID, REGION)
    who = Principal("Fn", "Role", f"arn:aws:iam::{ACCOUNT_ID}:role/r")
    (request,) = requests_from_calls(
        [_call("ec2", "DescribeInstances", {"InstanceId.1": ["i-1"]})], {"fn": who}, inventory, AUTH
    )
    scoped = Grant("Role", "p", {"Effect": "Allow", "Action": "ec2:Describe*",
                                 "Resource": INSTANCES})  # fmt: skip
    star = Grant("Role", "p", {**scoped.statement, "Resource": "*"}, 1)
    assert [d.allowed for d in evaluate([request], [scoped], AUTH)] == [False]
    assert [d.allowed for d in evaluate([request], [star], AUTH)] == [True]


def _call(service: str, operation: str, params: dict[str, Any]) -> Call:
    return Call(service, operation, "ok", "fn", params)


def test_a_call_whose_resources_cannot_be_told_counts_as_denied() -> None:
    inventory = Inventory(ACCOUNT_ID, REGION)
    who = Principal("Fn", "Role", f"arn:aws:iam::{ACCOUNT_ID}:role/r")
    calls = [
        _call("ec2", "DeleteVolume", {"VolumeId": ["vol-1"]}),  # no resolver for volumes
        _call("ec2", "DetachNetworkInterface", {"AttachmentId": ["eni-attach-1"]}),  # unseen
        _call("ec2", "DescribeEverything", {}),  # no such action
    ]
    everything = Grant("Role", "p", {"Effect": "Allow", "Action": "*", "Resource": "*"})
    verdicts = evaluate(
        requests_from_calls(calls, {"fn": who}, inventory, AUTH), [everything], AUTH
    )
    assert [(d.allowed, d.why) for d in verdicts] == [
        (False, "iam_eval.RESOLVERS cannot name its volume"),
        (False, "cannot tell its instance: 'eni-attach-1' unknown"),
        (False, "not an action of AWS's Service Authorization Reference"),
    ]


def test_a_statement_repeating_another_is_reported(
    template: tuple[Resources, Stack], requests: list[Request]
) -> None:
    # GIVEN the pool ENI statement copied into the attach role's own policy
    resources, stack = template
    changed = copy.deepcopy(resources)
    pool = statement(changed, "AttachPoolEnisPolicy", "AttachOnlyPoolEnis")
    statement(changed, "AttachEniRole", "DescribeHasNoResourceScope")  # a dict now
    policy = changed["AttachEniRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"].append({**pool, "Sid": "AttachOnlyPoolEnisAgain"})
    # WHEN the calls are evaluated, THEN both copies are reported: either alone would do
    repeated = redundant(decide(changed, stack, requests), statements(changed, stack)[0])
    assert {g.sid for g in repeated} == {"AttachOnlyPoolEnis", "AttachOnlyPoolEnisAgain"}
