"""``enipin doctor``: a deployment and its groups, checked against everything a launch needs.

Each check answers PASS, WARN or FAIL with what it saw and, short of PASS, the fix. The rules
come from AWS's documentation (linked in ``docs/aws-contract.md``), not from our own template:
an operator may have changed a hook, a rule or a launch template by hand since the deploy.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from enipin.deployment import Deployment
from enipin.executions import FINAL_FAILURES, list_executions
from enipin.pool import Group, check_capacity, find_group, read_pool
from enipin_core.names import LAUNCHING, TERMINATING
from enipin_core.stormguard import LAUNCH_PROCESS, TRIPPED_KEY

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
LAUNCH_HOOK, TERMINATE_HOOK = "enipin-launch", "enipin-terminate"  # what the rule matches
OUTPUTS = (
    "ManagedGroupNames",
    "PoolTagKey",
    "PoolTagValue",
    "LaunchStateMachineArn",
    "TerminateStateMachineArn",
    "LifecycleActionRuleName",
    "LostEventsQueueUrl",
)
# What the SSM Agent needs to register and to take Run Command's commands: the core of
# AWS's AmazonSSMManagedInstanceCore policy.
AGENT_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:OpenControlChannel",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
)
SSM_CORE_POLICY = "AmazonSSMManagedInstanceCore"
RECENT = timedelta(hours=24)
FAILING_SHARE = 0.5  # of at least FAILING_FLOOR recent launches: a loop, not a blip
FAILING_FLOOR = 4


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str  # the stack or a group
    verdict: str
    saw: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def examine(dep: Deployment, groups: Sequence[str] = (), spare: int = 1) -> list[Finding]:
    """Every check, for the stack and each group (the stack's, unless ``groups`` names some)."""
    findings = [check_stack(dep)]
    if findings[0].verdict == FAIL:
        return findings
    findings += check_rule(dep)
    names = list(groups) or dep.group_names
    for name in names:
        findings += check_group(dep, name, spare)
    findings.append(check_executions(dep))
    return findings


# -- the stack and its rule ---------------------------------------------------------------------


def check_stack(dep: Deployment) -> Finding:
    missing = [k for k in OUTPUTS if k not in dep.outputs]
    if missing:
        return Finding(
            "stack",
            dep.stack,
            FAIL,
            f"outputs missing: {', '.join(missing)}",
            "deploy this version of enipin (sam deploy) or pass --stack NAME of an enipin stack",
        )
    groups = ", ".join(dep.group_names) or "no group"
    return Finding("stack", dep.stack, PASS, f"outputs complete; serves {groups}")


def check_rule(dep: Deployment) -> list[Finding]:
    name = dep.output("LifecycleActionRuleName")
    rule = dep.client("events").describe_rule(Name=name)
    if rule.get("State") != "ENABLED":
        found = [
            Finding(
                "rule",
                name,
                FAIL,
                f"rule is {rule.get('State')}: no lifecycle event starts a workflow",
                f"aws events enable-rule --name {name}",
            )
        ]
    else:
        found = [Finding("rule", name, PASS, "enabled")]
    return [*found, _lost_events(dep)]


def _lost_events(dep: Deployment) -> Finding:
    url = dep.output("LostEventsQueueUrl")
    attrs = dep.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    waiting = int(attrs.get("ApproximateNumberOfMessages", 0))
    if not waiting:
        return Finding("lost events", url.rsplit("/", 1)[-1], PASS, "dead-letter queue empty")
    return Finding(
        "lost events",
        url.rsplit("/", 1)[-1],
        WARN,
        f"{waiting} lifecycle event(s) never started a workflow",
        "enipin reconcile (resumes waiting actions); then read and purge the queue",
    )


# -- each group ---------------------------------------------------------------------------------


def check_group(dep: Deployment, name: str, spare: int) -> list[Finding]:
    autoscaling = dep.client("autoscaling")
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not found["AutoScalingGroups"]:
        return [Finding("group", name, FAIL, "no such Auto Scaling group", _serve_fix(dep))]
    raw = found["AutoScalingGroups"][0]
    findings = [] if name in dep.group_names else [_not_served(dep, name)]
    hooks = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]
    params = _parameters(dep)  # one DescribeStacks for every check of the group
    findings += check_hooks(dep, name, hooks, params)
    findings += check_pool(dep, name, raw, spare, params)
    findings.append(check_instance_profile(dep, name, raw))
    findings.append(check_agents(dep, name, raw))
    findings.append(check_launches_suspended(dep, name, raw))
    return findings


def check_launches_suspended(dep: Deployment, name: str, raw: dict[str, Any]) -> Finding:
    """A suspended Launch process: the storm guard's trip (its tag says why), an operator's, or
    Auto Scaling's own administrative suspension after a day of failed launches."""
    suspended = [p for p in raw.get("SuspendedProcesses", []) if p["ProcessName"] == LAUNCH_PROCESS]
    if not suspended:
        return Finding("launches", name, PASS, "Launch process running")
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    why = tags.get(TRIPPED_KEY) or suspended[0].get("SuspensionReason") or "suspended by hand"
    return Finding(
        "launches",
        name,
        FAIL,
        f"Launch suspended: {why}",
        "fix what fails the launches (the checks above; enipin executions list --status "
        f"FAILED), then enipin guard release --asg {name}",
    )


def _serve_fix(dep: Deployment) -> str:
    return f"check the name, or redeploy {dep.stack} with it in GroupName"


def _not_served(dep: Deployment, name: str) -> Finding:
    return Finding(
        "group",
        name,
        FAIL,
        f"stack {dep.stack} does not serve it: launches go unpinned",
        _serve_fix(dep),
    )


def check_hooks(
    dep: Deployment, group: str, hooks: list[dict[str, Any]], params: dict[str, str]
) -> list[Finding]:
    by_name = {h["LifecycleHookName"]: h for h in hooks}
    every = _reconcile_seconds(params)
    findings = [
        _hook(dep, group, by_name.get(LAUNCH_HOOK), LAUNCH_HOOK, LAUNCHING, every),
        _hook(dep, group, by_name.get(TERMINATE_HOOK), TERMINATE_HOOK, TERMINATING, every),
    ]
    ours = [h for h in hooks if h["LifecycleHookName"] in (LAUNCH_HOOK, TERMINATE_HOOK)]
    return [*findings, _hook_pools(dep, group, ours)]


def _hook(
    dep: Deployment,
    group: str,
    hook: dict[str, Any] | None,
    name: str,
    transition: str,
    every: int | None,
) -> Finding:
    check = f"hook {name}"
    if hook is None:
        return Finding(
            check,
            group,
            FAIL,
            "missing: the rule matches hooks by this name",
            f"redeploy {dep.stack} with CreateLifecycleHooks=true, or put the hook from its "
            "LifecycleHookSpecificationList output",
        )
    if hook["LifecycleTransition"] != transition:
        return Finding(
            check,
            group,
            FAIL,
            f"its transition is {hook['LifecycleTransition']}",
            f"put the hook again with LifecycleTransition {transition}",
        )
    timeout = int(hook["HeartbeatTimeout"])
    saw = f"{transition.split(':')[-1]}, heartbeat {timeout} s, default {hook['DefaultResult']}"
    if every and every * 2 > timeout:
        return Finding(
            check,
            group,
            WARN,
            f"{saw}; the reconciler runs every {every} s, over half of it",
            "a waiting action whose workflow failed times out before a repair: raise "
            "HookHeartbeatTimeout or lower ReconcileSchedule",
        )
    if transition == LAUNCHING and hook["DefaultResult"] != "ABANDON":
        return Finding(
            check,
            group,
            WARN,
            f"{saw}: an instance nobody pinned goes into service unpinned",
            "put the hook again with DefaultResult ABANDON",
        )
    return Finding(check, group, PASS, saw)


def _reconcile_seconds(params: dict[str, str]) -> int | None:
    """ReconcileSchedule's rate in seconds, from the stack's parameters."""
    schedule = params.get("ReconcileSchedule", "")
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", schedule.strip())
    if not match:
        return None
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


def _parameters(dep: Deployment) -> dict[str, str]:
    stacks = dep.client("cloudformation").describe_stacks(StackName=dep.stack)["Stacks"]
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stacks[0].get("Parameters", [])}


def _hook_pools(dep: Deployment, group: str, hooks: list[dict[str, Any]]) -> Finding:
    """Each hook's NotificationMetadata may name a pool; both must name the stack's, or the
    terminate run looks in another pool than the launch lent from, and every ENI is left on
    terminated instances."""
    pools = {h["LifecycleHookName"]: _metadata_pool(h, dep.pool_tag) for h in hooks}
    if len(set(pools.values())) > 1:
        saw = "; ".join(f"{n} lends from {k}={v}" for n, (k, v) in sorted(pools.items()))
        return Finding(
            "hook pools",
            group,
            FAIL,
            saw,
            "give both hooks the same poolTagKey/poolTagValue in NotificationMetadata",
        )
    key, value = next(iter(pools.values()), dep.pool_tag)
    return Finding("hook pools", group, PASS, f"both hooks use {key}={value}")


def _metadata_pool(hook: dict[str, Any], default: tuple[str, str]) -> tuple[str, str]:
    try:
        meta = json.loads(hook.get("NotificationMetadata") or "{}")
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    return str(meta.get("poolTagKey", default[0])), str(meta.get("poolTagValue", default[1]))


# -- the pool, warm pool and rolling updates ----------------------------------------------------


def check_pool(
    dep: Deployment, name: str, raw: dict[str, Any], spare: int, params: dict[str, str]
) -> list[Finding]:
    autoscaling, ec2 = dep.client("autoscaling"), dep.client("ec2")
    group = find_group(autoscaling, ec2, name)
    assert group is not None  # described a moment ago
    keep = params.get("WarmPoolEni", "RELEASE") == "KEEP"
    warm = _warm_max(autoscaling, raw) if keep else 0
    held = Group(name, group.max_size + warm, group.azs)  # KEEP: warm instances hold one too
    sharing = [
        g
        for other in dep.group_names
        if other != name
        if (g := find_group(autoscaling, ec2, other))
    ]
    enis = read_pool(ec2, dep.pool_tag).enis
    capacity = check_capacity(enis, held, spare, sharing)
    findings = [_capacity_finding(capacity, warm, spare)]
    findings.append(_refresh_finding(raw, group, enis))
    return findings


def _warm_max(autoscaling: Any, raw: dict[str, Any]) -> int:
    """The most instances a warm pool holds: max(MinSize, MaxGroupPreparedCapacity (else the
    group's MaxSize) minus the group's desired capacity), at desired 0."""
    config = autoscaling.describe_warm_pool(AutoScalingGroupName=raw["AutoScalingGroupName"]).get(
        "WarmPoolConfiguration"
    )
    if not config:
        return 0
    prepared = config.get("MaxGroupPreparedCapacity", -1)
    ceiling = raw["MaxSize"] if prepared in (None, -1) else prepared
    return max(int(config.get("MinSize", 0)), int(ceiling))


def _capacity_finding(capacity: Any, warm: int, spare: int) -> Finding:
    name = capacity.group.name
    rows = ", ".join(f"{a.az} {a.usable}/{a.need}" for a in capacity.azs)
    what = f"usable/needed per AZ: {rows}" + (f" (warm pool up to {warm}, KEEP)" if warm else "")
    if capacity.ok:
        return Finding("pool", name, PASS, what)
    short = ", ".join(f"{a.short} in {a.az}" for a in capacity.shortfalls)
    return Finding(
        "pool",
        name,
        FAIL,
        what,
        f"create {short}: enipin pool create --subnet SUBNET --count N (each AZ's subnet); "
        f"the need is the group's balanced maximum per AZ plus {spare} spare",
    )


def _refresh_finding(raw: dict[str, Any], group: Group, enis: Sequence[Any]) -> Finding:
    """With MaxHealthyPercentage above 100 an instance refresh (and any replacement) launches
    before it terminates: in service plus pending stays within that share of desired capacity
    (rounded down, at least one more), spread over the AZs, each new instance needing a free
    ENI while the old ones still hold theirs. A refresh started without preferences takes
    them from this policy (AWS's instance refresh defaults)."""
    policy = raw.get("InstanceMaintenancePolicy") or {}
    top = int(policy.get("MaxHealthyPercentage") or 100)
    name = group.name
    if top <= 100 or not group.azs:
        return Finding("refresh", name, PASS, f"terminate-first (MaxHealthyPercentage {top})")
    desired = int(raw["DesiredCapacity"])
    batch = max(math.floor(desired * top / 100) - desired, 1)
    per_az = math.ceil(batch / len(group.azs))
    free = Counter(e.az for e in enis if e.free)
    short = {az: per_az - free[az] for az in group.azs if free[az] < per_az}
    saw = f"launch-first batch of {batch} (MaxHealthyPercentage {top}): {per_az} per AZ"
    if not short:
        return Finding("refresh", name, PASS, saw)
    where = ", ".join(f"{n} in {az}" for az, n in sorted(short.items()))
    return Finding(
        "refresh",
        name,
        FAIL,
        f"{saw}; free ENIs too few: short {where}",
        "create that many more pool ENIs before a refresh, or lower MaxHealthyPercentage "
        "(100 terminates first)",
    )


# -- the instances: profile and agent -----------------------------------------------------------


def check_instance_profile(dep: Deployment, name: str, raw: dict[str, Any]) -> Finding:
    profile = _launch_profile(dep.client("ec2"), raw)
    if profile is None:
        return Finding(
            "instance profile",
            name,
            FAIL,
            "the launch template names no instance profile: the SSM Agent cannot register",
            f"add an instance profile whose role has {SSM_CORE_POLICY} to the launch template "
            "(or, if this account uses Default Host Management Configuration, ignore this)",
        )
    missing = _missing_agent_actions(dep.client("iam"), profile)
    if missing is None:
        return Finding("instance profile", name, FAIL, f"{profile} does not exist", "fix the name")
    if missing:
        return Finding(
            "instance profile",
            name,
            FAIL,
            f"{profile} does not allow {', '.join(missing)}",
            f"attach {SSM_CORE_POLICY} to its role",
        )
    return Finding("instance profile", name, PASS, f"{profile} lets the SSM Agent register")


def _launch_profile(ec2: Any, raw: dict[str, Any]) -> str | None:
    spec = raw.get("LaunchTemplate") or (raw.get("MixedInstancesPolicy") or {}).get(
        "LaunchTemplate", {}
    ).get("LaunchTemplateSpecification")
    if not spec:
        return None
    ident = (
        {"LaunchTemplateId": spec["LaunchTemplateId"]}
        if spec.get("LaunchTemplateId")
        else {"LaunchTemplateName": spec["LaunchTemplateName"]}
    )
    version = spec.get("Version") or "$Default"
    data = ec2.describe_launch_template_versions(**ident, Versions=[version])[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    profile = data.get("IamInstanceProfile") or {}
    name = profile.get("Name") or (profile.get("Arn") or "").rsplit("/", 1)[-1]
    return name or None


def _missing_agent_actions(iam: Any, profile: str) -> list[str] | None:
    try:
        roles = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    except ClientError:
        return None
    allowed: list[str] = []
    for role in roles:
        for attached in iam.list_attached_role_policies(RoleName=role["RoleName"])[
            "AttachedPolicies"
        ]:
            if attached["PolicyArn"].endswith(f":policy/{SSM_CORE_POLICY}"):
                return []
            allowed += _allowed(_managed_document(iam, attached["PolicyArn"]))
        for policy in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy)
            allowed += _allowed(_document(doc["PolicyDocument"]))
    return [
        a
        for a in AGENT_ACTIONS
        if not any(fnmatch.fnmatchcase(a.lower(), p.lower()) for p in allowed)
    ]


def _managed_document(iam: Any, arn: str) -> dict[str, Any]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return _document(
        iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    )


def _document(doc: Any) -> dict[str, Any]:
    """IAM answers a document URL-encoded (botocore decodes it into a dict mostly)."""
    if isinstance(doc, str):
        doc = json.loads(urllib.parse.unquote(doc))
    return dict(doc)


def _allowed(doc: dict[str, Any]) -> list[str]:
    """Action patterns the Allow statements grant (IAM compares them case-insensitively).
    Deny and NotAction are read as granting nothing: the check errs toward FAIL."""
    statements = doc.get("Statement", [])
    patterns: list[str] = []
    for s in statements if isinstance(statements, list) else [statements]:
        if s.get("Effect") != "Allow" or "Action" not in s:
            continue
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        patterns += [str(a) for a in actions]
    return patterns


def check_agents(dep: Deployment, name: str, raw: dict[str, Any]) -> Finding:
    ids = [i["InstanceId"] for i in raw.get("Instances", []) if i["LifecycleState"] == "InService"]
    if not ids:
        return Finding("agents", name, PASS, "no instance in service to ask")
    online: dict[str, str] = {}
    pages = (
        dep.client("ssm")
        .get_paginator("describe_instance_information")
        .paginate(Filters=[{"Key": "InstanceIds", "Values": ids[:50]}])
    )
    for page in pages:
        for info in page["InstanceInformationList"]:
            if info.get("PingStatus") == "Online":
                online[info["InstanceId"]] = info.get("AgentVersion", "?")
    silent = [i for i in ids[:50] if i not in online]
    versions = ", ".join(sorted(set(online.values()))) or "-"
    if silent:
        return Finding(
            "agents",
            name,
            WARN,
            f"{len(silent)} of {len(ids[:50])} in service not online in SSM: "
            + ", ".join(silent[:3]),
            "check their instance profile, and a route to the ssm, ssmmessages and ec2messages "
            "endpoints (NAT or VPC endpoints)",
        )
    return Finding("agents", name, PASS, f"{len(online)} online; agent {versions}")


# -- what the workflows did ---------------------------------------------------------------------


def check_executions(dep: Deployment) -> Finding:
    runs = [r for r in list_executions(dep, None, RECENT) if r.workflow == "launch"]
    done = [r for r in runs if r.status != "RUNNING"]
    failed = [r for r in done if r.status in FINAL_FAILURES]
    if not failed:
        return Finding(
            "executions", dep.stack, PASS, f"{len(done)} launch run(s) in 24 h, none failed"
        )
    top = Counter(r.error or r.status for r in failed).most_common(3)
    errors = ", ".join(f"{e} x{n}" for e, n in top)
    saw = f"{len(failed)} of {len(done)} launch runs failed in 24 h: {errors}"
    fix = "enipin executions list --status FAILED; executions show NAME gives the cause"
    if len(done) >= FAILING_FLOOR and len(failed) / len(done) >= FAILING_SHARE:
        return Finding("executions", dep.stack, FAIL, saw, fix)
    return Finding("executions", dep.stack, WARN, saw, fix)
