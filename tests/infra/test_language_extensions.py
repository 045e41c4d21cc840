"""The sandbox deploys what AWS::LanguageExtensions allows (Fn::ForEach, Fn::ToJsonString) and
checks parameters as CloudFormation does, so the real template, with several groups, deploys
and runs in it: a second group's launch is pinned like the first's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import finish, pool_enis_on, wait_until

from enipin_lab.sandbox import TEMPLATE, Sandbox
from enipin_lab.sandbox.template import TemplateError, expand_for_each

Factory = Callable[..., Sandbox]
SECOND = "enipin-second"


# ---- Fn::ForEach, as AWS::LanguageExtensions expands it -------------------------------------


def test_for_each_copies_the_fragment_per_item_with_the_identifier_replaced() -> None:
    template = {
        "Resources": {
            "Kept": {"Type": "AWS::SNS::Topic"},
            "Fn::ForEach::Hooks": [
                "Group",
                {"Ref": "Groups"},
                {
                    "Hook&{Group}": {
                        "Type": "AWS::AutoScaling::LifecycleHook",
                        "Properties": {
                            "AutoScalingGroupName": {"Ref": "Group"},
                            "Note": {"Fn::Sub": "hook of ${Group} (&{Group}) in ${AWS::Region}"},
                            "Names": [{"Ref": "Group"}, "Group", "${Group}"],
                        },
                    }
                },
            ],
        },
        "Outputs": {"Fn::ForEach::Out": ["G", ["a"], {"Out${G}": {"Value": {"Ref": "G"}}}]},
    }
    expanded = expand_for_each(template, {"Groups": ["web-a", "web.b"]})
    assert list(expanded["Resources"]) == ["Kept", "Hookweba", "Hookwebb"]
    props = expanded["Resources"]["Hookwebb"]["Properties"]
    assert props == {
        "AutoScalingGroupName": "web.b",
        "Note": {"Fn::Sub": "hook of web.b (webb) in ${AWS::Region}"},
        "Names": ["web.b", "Group", "${Group}"],  # plain strings stay as written
    }
    assert expanded["Outputs"] == {"Outa": {"Value": "a"}}
    assert "Fn::ForEach::Hooks" in template["Resources"]  # the input is left alone


def test_for_each_loops_nest() -> None:
    template = {
        "Resources": {
            "Fn::ForEach::Outer": [
                "A",
                ["x", "y"],
                {"Fn::ForEach::Inner": ["B", ["1", "2"], {"R${A}${B}": {"Type": "T"}}]},
            ]
        }
    }
    assert list(expand_for_each(template, {})["Resources"]) == ["Rx1", "Rx2", "Ry1", "Ry2"]


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"Fn::ForEach::L": ["G", ["a-b", "ab"], {"R&{G}": {}}]}, "Rab is produced twice"),
        ({"R": {}, "Fn::ForEach::L": ["G", [""], {"R${G}": {}}]}, "R is produced twice"),
        ({"Fn::ForEach::L": ["G", {"Ref": "Topic"}, {"R${G}": {}}]}, "only parameters"),
        ({"Fn::ForEach::L": ["G", "a,b", {"R${G}": {}}]}, "list of strings"),
        ({"Fn::ForEach::L": ["G", ["a"]]}, "identifier, collection, fragment"),
    ],
)
def test_for_each_refuses_what_cloudformation_refuses(
    resources: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        expand_for_each({"Resources": resources}, {})


# ---- parameters are checked before anything is created --------------------------------------


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"GroupName": "enipin-demo,not a name"}, "GroupName='not a name' does not match"),
        ({"HookHeartbeatTimeout": 10}, "HookHeartbeatTimeout=10 outside MinValue/MaxValue"),
        ({"PoolTagKey": "aws:reserved"}, "PoolTagKey='aws:reserved' does not match"),
        ({"AlarmEmail": "not-an-address"}, "AlarmEmail='not-an-address' does not match"),
        ({"LogRetentionDays": 42}, "LogRetentionDays='42' not in AllowedValues"),
    ],
)
def test_a_parameter_cloudformation_would_reject_fails_the_deploy(
    parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateError, match=message), Sandbox(azs=1, deploy=False) as sb:
        sb.deploy(TEMPLATE, parameters)


# ---- the real template, two groups ----------------------------------------------------------


def add_group(sb: Sandbox, name: str) -> None:
    """A second group in the same subnets and from the same launch template as the world's."""
    sb.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"{sb.group_name}-lt"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(sb.world.subnets.values()),
    )


def hooks(sb: Sandbox, group: str) -> dict[str, tuple[str, str]]:
    found = sb.client("autoscaling").describe_lifecycle_hooks(AutoScalingGroupName=group)
    return {
        h["LifecycleHookName"]: (h["LifecycleTransition"], h["DefaultResult"])
        for h in found["LifecycleHooks"]
    }


def test_one_stack_serves_two_groups_and_pins_the_second_groups_launch(sandbox: Factory) -> None:
    # GIVEN a stack deployed for the world's group and a second one
    sb = sandbox(azs=2, pool_per_az=2, deploy=False)
    add_group(sb, SECOND)
    sb.stack = sb.deploy(TEMPLATE, {"GroupName": f"{sb.group_name},{SECOND}"})
    # THEN each group has both hooks, and everything that lists the groups lists both
    for group in (sb.group_name, SECOND):
        assert hooks(sb, group) == {
            "enipin-launch": ("autoscaling:EC2_INSTANCE_LAUNCHING", "ABANDON"),
            "enipin-terminate": ("autoscaling:EC2_INSTANCE_TERMINATING", "CONTINUE"),
        }
    both = f"{sb.group_name},{SECOND}"
    assert sb.stack.outputs["ManagedGroupNames"] == both
    env = sb.client("lambda").get_function_configuration(FunctionName="enipin-AttachEniFunction")
    assert env["Environment"]["Variables"]["MANAGED_GROUPS"] == both
    # the rule does not list the groups (its pattern would outgrow EventBridge's limit): the
    # dispatcher knows them from MANAGED_GROUPS
    rule = sb.client("events").describe_rule(Name="enipin-LifecycleActionRule")
    assert "AutoScalingGroupName" not in json.loads(rule["EventPattern"])["detail"]
    # WHEN the second group scales out
    sb.client("autoscaling").set_desired_capacity(AutoScalingGroupName=SECOND, DesiredCapacity=1)
    wait_until(lambda: bool(sb.executions()), sb)
    execution = finish(sb, sb.executions()[0]["executionArn"])
    # THEN its instance is pinned and in service
    assert execution["status"] == "SUCCEEDED", execution
    (instance,) = sb.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[SECOND]
    )["AutoScalingGroups"][0]["Instances"]
    assert instance["LifecycleState"] == "InService"
    assert len(pool_enis_on(sb, instance["InstanceId"])) == 1


def test_hooks_declared_with_the_group_are_not_added_again(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=0, parameters={"CreateLifecycleHooks": "false"})
    assert hooks(sb, sb.group_name) == {}
    assert sb.stack is not None
    specs = json.loads(sb.stack.outputs["LifecycleHookSpecificationList"])
    assert [(s["LifecycleHookName"], s["DefaultResult"]) for s in specs] == [
        ("enipin-launch", "ABANDON"),
        ("enipin-terminate", "CONTINUE"),
    ]


def test_references_to_what_the_sandbox_only_records_resolve_as_on_aws(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=0)
    assert sb.stack is not None
    stack, outputs = sb.stack, sb.stack.outputs
    assert outputs["LostEventsQueueUrl"] == (
        f"https://sqs.us-east-1.amazonaws.com/123456789012/{stack.physical['LostEventsQueue']}"
    )
    assert outputs["AlarmTopicArn"] == "arn:aws:sns:us-east-1:123456789012:enipin-AlarmTopic"
    # the log groups' names end in the stack id's last part (the sandbox's is 0): a new stack
    # of the same name never meets the groups an old one retained
    assert outputs["FunctionLogGroupName"] == "/enipin/enipin/functions-0"
    assert stack.get_att("StateMachineLogGroup", "Arn") == (
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/vendedlogs/states/enipin-0:*"
    )
    assert stack.get_att("LostEventsAlarm", "Arn").endswith(":alarm:enipin-lost-lifecycle-events")
    with pytest.raises(TemplateError, match="no such attribute"):
        stack.get_att("Dashboard", "Arn")
    assert stack.schedules == {
        "PublishPoolMetricsFunctionPoolMetrics": "rate(5 minutes)",
        "ReconcilerFunctionReconcile": "rate(2 minutes)",
    }


def test_a_depends_on_to_a_missing_resource_fails_the_deploy(tmp_path: Path) -> None:
    template = tmp_path / "infra" / "template.yaml"
    template.parent.mkdir()
    text = TEMPLATE.read_text().replace(
        "DependsOn: [LifecycleActionRule, DispatchEventPermission]",
        "DependsOn: [LifecycleActionRule, DispatchPermission]",
    )
    template.write_text(text)
    with (
        pytest.raises(TemplateError, match="DependsOn unknown resource DispatchPermission"),
        Sandbox(azs=1, pool_per_az=0, template=template),
    ):
        pytest.fail("deployed despite a dangling DependsOn")
