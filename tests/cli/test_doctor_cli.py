"""``enipin doctor`` through click, in the sandbox: a healthy deployment passes every check, and
each misconfiguration seeded the way an operator would make it FAILs (or WARNs) its own check
with a fix. One sandbox serves the module: each test seeds its fault, reads, and undoes it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import in_service

from enipin.cli import main
from enipin_core.stormguard import release, trip
from enipin_lab.sandbox import Sandbox

REGION = "us-east-1"


def doctor(*args: str) -> Result:
    return CliRunner().invoke(main, ["--region", REGION, *args, "doctor", "--json"])


def findings(*args: str) -> list[dict[str, str]]:
    result = doctor(*args)
    assert result.exit_code in (0, 1), result.output
    found: list[dict[str, str]] = json.loads(result.stdout)
    return found


def verdicts(found: list[dict[str, str]]) -> dict[str, str]:
    return {f"{f['check']}:{f['subject']}": f["verdict"] for f in found}


def finding(found: list[dict[str, str]], check: str) -> dict[str, str]:
    (one,) = [f for f in found if f["check"] == check]
    return one


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    # a pool of 7 per AZ: the group's balanced maximum (12 over 2 AZs) plus one spare
    with Sandbox(azs=2, pool_per_az=7) as opened:
        opened.scale_out(2)
        opened.settle()
        yield opened


def test_a_healthy_deployment_passes_every_check(sb: Sandbox) -> None:
    result = doctor()
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert {f["verdict"] for f in found} == {"PASS"}, found
    # every check answered, for the stack and for its group
    assert {f["check"] for f in found} == {
        "stack",
        "rule",
        "lost events",
        "hook enipin-launch",
        "hook enipin-terminate",
        "hook pools",
        "pool",
        "refresh",
        "instance profile",
        "agents",
        "launches",
        "executions",
    }
    assert "2 online" in finding(found, "agents")["saw"]
    assert "0 FAIL, 0 WARN" in result.stderr


def test_an_unknown_stack_fails_the_stack_check_with_the_fix() -> None:
    result = CliRunner().invoke(main, ["--region", REGION, "--stack", "nope", "doctor", "--json"])
    assert result.exit_code == 1, result.output
    (only,) = json.loads(result.stdout)
    assert (only["check"], only["verdict"]) == ("stack", "FAIL")
    assert "--stack NAME" in only["fix"]


def seeded(seed: Callable[[], Any], undo: Callable[[], Any], *args: str) -> list[dict[str, str]]:
    seed()
    try:
        return findings(*args)
    finally:
        undo()


def test_a_disabled_rule_fails_with_the_command_that_enables_it(sb: Sandbox) -> None:
    events = sb.client("events")
    rule = sb.stack.outputs["LifecycleActionRuleName"]
    found = seeded(lambda: events.disable_rule(Name=rule), lambda: events.enable_rule(Name=rule))
    assert finding(found, "rule")["verdict"] == "FAIL"
    assert finding(found, "rule")["fix"] == f"aws events enable-rule --name {rule}"


def test_lost_events_waiting_in_the_dead_letter_queue_warn(sb: Sandbox) -> None:
    sqs = sb.client("sqs")
    url = sb.stack.outputs["LostEventsQueueUrl"]
    found = seeded(
        lambda: sqs.send_message(QueueUrl=url, MessageBody="{}"),
        lambda: sqs.purge_queue(QueueUrl=url),
    )
    assert finding(found, "lost events")["verdict"] == "WARN"
    assert "enipin reconcile" in finding(found, "lost events")["fix"]


def _hook(sb: Sandbox, name: str) -> dict[str, Any]:
    (hook,) = sb.client("autoscaling").describe_lifecycle_hooks(
        AutoScalingGroupName=sb.group_name, LifecycleHookNames=[name]
    )["LifecycleHooks"]
    return dict(hook)


def _put(sb: Sandbox, hook: dict[str, Any]) -> None:
    keys = ("LifecycleHookName", "LifecycleTransition", "HeartbeatTimeout", "DefaultResult")
    extra = (
        {"NotificationMetadata": hook["NotificationMetadata"]}
        if hook.get("NotificationMetadata")
        else {}
    )
    sb.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName=sb.group_name, **{k: hook[k] for k in keys}, **extra
    )


def test_a_missing_launch_hook_fails(sb: Sandbox) -> None:
    hook = _hook(sb, "enipin-launch")
    found = seeded(
        lambda: sb.client("autoscaling").delete_lifecycle_hook(
            AutoScalingGroupName=sb.group_name, LifecycleHookName="enipin-launch"
        ),
        lambda: _put(sb, hook),
    )
    launch = finding(found, "hook enipin-launch")
    assert launch["verdict"] == "FAIL"
    assert "LifecycleHookSpecificationList" in launch["fix"]


def test_a_heartbeat_the_reconciler_cannot_beat_warns(sb: Sandbox) -> None:
    # the reconciler runs every 2 minutes: a 200 s hook times out before a repair
    hook = _hook(sb, "enipin-launch")
    found = seeded(lambda: _put(sb, hook | {"HeartbeatTimeout": 200}), lambda: _put(sb, hook))
    launch = finding(found, "hook enipin-launch")
    assert launch["verdict"] == "WARN"
    assert "HookHeartbeatTimeout" in launch["fix"]


def test_hooks_naming_different_pools_fail(sb: Sandbox) -> None:
    hook = _hook(sb, "enipin-terminate")
    other = json.dumps({"poolTagValue": "Another-Pool"})
    found = seeded(lambda: _put(sb, hook | {"NotificationMetadata": other}), lambda: _put(sb, hook))
    pools = finding(found, "hook pools")
    assert pools["verdict"] == "FAIL"
    assert "Type=Another-Pool" in pools["saw"]


def test_a_pool_short_of_the_groups_maximum_fails_with_how_many_to_create(sb: Sandbox) -> None:
    autoscaling = sb.client("autoscaling")
    found = seeded(
        lambda: autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=sb.group_name, MaxSize=16
        ),
        lambda: autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=sb.group_name, MaxSize=12
        ),
    )
    pool = finding(found, "pool")
    # ceil(16 / 2) + 1 spare = 9 per AZ against 7
    assert pool["verdict"] == "FAIL"
    assert "2 in us-east-1a" in pool["fix"] and "2 in us-east-1b" in pool["fix"]


def test_a_launch_template_without_an_instance_profile_fails(sb: Sandbox) -> None:
    ec2 = sb.client("ec2")
    template = f"{sb.group_name}-lt"
    data = ec2.describe_launch_template_versions(
        LaunchTemplateName=template, Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    bare = {k: v for k, v in data.items() if k == "ImageId" or k == "InstanceType"}

    def strip() -> None:
        version = ec2.create_launch_template_version(
            LaunchTemplateName=template, LaunchTemplateData=bare
        )["LaunchTemplateVersion"]["VersionNumber"]
        ec2.modify_launch_template(LaunchTemplateName=template, DefaultVersion=str(version))

    found = seeded(
        strip, lambda: ec2.modify_launch_template(LaunchTemplateName=template, DefaultVersion="1")
    )
    profile = finding(found, "instance profile")
    assert profile["verdict"] == "FAIL"
    assert "AmazonSSMManagedInstanceCore" in profile["fix"]


def test_a_profile_whose_role_lacks_the_agents_actions_fails_naming_them(sb: Sandbox) -> None:
    iam = sb.client("iam")
    role = f"{sb.group_name}-instance"
    (attached,) = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    found = seeded(
        lambda: iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"]),
        lambda: iam.attach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"]),
    )
    profile = finding(found, "instance profile")
    assert profile["verdict"] == "FAIL"
    assert "ssm:UpdateInstanceInformation" in profile["saw"]


def test_an_agent_gone_silent_warns(sb: Sandbox) -> None:
    instance_id = in_service(sb)[0]
    found = seeded(
        lambda: sb.guests.set_faults(instance_id, ["agent_absent"]),
        lambda: sb.guests.set_faults(instance_id, []),
    )
    agents = finding(found, "agents")
    assert agents["verdict"] == "WARN"
    assert instance_id in agents["saw"]
    assert "ssmmessages" in agents["fix"]


def test_launches_the_storm_guard_suspended_fail_with_its_reason_and_the_release(
    sb: Sandbox,
) -> None:
    autoscaling = sb.client("autoscaling")
    found = seeded(
        lambda: trip(autoscaling, sb.group_name, "5 launches given up in 60 min"),
        lambda: release(autoscaling, sb.group_name),
    )
    launches = finding(found, "launches")
    assert launches["verdict"] == "FAIL"
    assert "5 launches given up in 60 min" in launches["saw"]
    assert f"enipin guard release --asg {sb.group_name}" in launches["fix"]
