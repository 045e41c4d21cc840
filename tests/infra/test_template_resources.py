"""infra/template.yaml through the SAM transform, offline, for two groups: what CloudFormation
would create besides IAM. Hooks on every named group, a rule scoped to them and to enipin's
hooks, functions and state machines with logs and traces, the alarms and the dashboard, the
outputs the CLI reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from enipin_lab.sandbox.deploy import Stack
from enipin_lab.sandbox.sam import resolve, transform

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
GROUPS = ["web-a", "web-b"]
PARAMETERS = {"GroupName": ",".join(GROUPS), "AlarmEmail": "ops@example.com"}
TASKS_SOURCE = "".join(p.read_text() for p in (ROOT / "tasks").rglob("*.py"))


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return transform(TEMPLATE, PARAMETERS)


@pytest.fixture(scope="module")
def deployed(cfn: dict[str, Any]) -> tuple[dict[str, Any], Stack]:
    return resolve(cfn, PARAMETERS)


def of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in resources.items() if v["Type"] == kind}


def test_the_sam_transform_succeeds_offline_and_leaves_no_sam_resource(cfn: dict[str, Any]) -> None:
    kinds = {r["Type"] for r in cfn["Resources"].values()}
    assert not {k for k in kinds if k.startswith("AWS::Serverless::")}
    assert {
        "AWS::Lambda::Function",
        "AWS::StepFunctions::StateMachine",
        "AWS::AutoScaling::LifecycleHook",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::SNS::Topic",
    } <= kinds
    assert "Fn::ForEach::ManagedGroups" not in cfn["Resources"]


def test_every_named_group_gets_a_launch_hook_that_abandons_and_a_terminate_hook(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    hooks = of_type(deployed[0], "AWS::AutoScaling::LifecycleHook")
    assert {(h["AutoScalingGroupName"], h["LifecycleHookName"]) for h in hooks.values()} == {
        (g, name) for g in GROUPS for name in ("enipin-launch", "enipin-terminate")
    }
    for hook in hooks.values():
        launch = hook["LifecycleHookName"] == "enipin-launch"
        assert hook["LifecycleTransition"] == (
            "autoscaling:EC2_INSTANCE_LAUNCHING"
            if launch
            else "autoscaling:EC2_INSTANCE_TERMINATING"
        )
        assert hook["DefaultResult"] == ("ABANDON" if launch else "CONTINUE")
        assert hook["HeartbeatTimeout"] == "300"


def test_hooks_declared_with_the_group_need_none_from_the_stack() -> None:
    parameters = {**PARAMETERS, "CreateLifecycleHooks": "false"}
    resources, _ = resolve(transform(TEMPLATE, parameters), parameters)
    assert not of_type(resources, "AWS::AutoScaling::LifecycleHook")
    # the groups' lifecycle actions are still completed: the per-group policies stay
    assert len(of_type(resources, "AWS::IAM::Policy")) == 3 * len(GROUPS)


def test_the_rule_takes_only_enipins_hooks_to_the_dispatcher_which_knows_the_groups(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    resources, stack = deployed
    rule = resources["LifecycleActionRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.autoscaling"],
        "detail-type": [
            "EC2 Instance-launch Lifecycle Action",
            "EC2 Instance-terminate Lifecycle Action",
        ],
        # no group names: a pattern listing them passes EventBridge's 2,048 characters at
        # about 20 groups; the dispatcher ignores every group outside MANAGED_GROUPS
        "detail": {"LifecycleHookName": ["enipin-launch", "enipin-terminate"]},
    }
    dispatcher = resources["DispatchEventFunction"]["Properties"]
    assert dispatcher["Environment"]["Variables"]["MANAGED_GROUPS"] == ",".join(GROUPS)
    (target,) = rule["Targets"]
    assert target["Arn"] == stack.arns["DispatchEventFunction"]
    assert target["DeadLetterConfig"]["Arn"] == stack.arns["LostEventsQueue"]
    permission = resources["DispatchEventPermission"]["Properties"]
    assert permission["SourceArn"] == stack.arns["LifecycleActionRule"]


def test_functions_run_python_3_12_on_arm64_traced_logging_to_the_stacks_group(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    resources, stack = deployed
    functions = of_type(resources, "AWS::Lambda::Function")
    assert len(functions) == 20
    for name, fn in functions.items():
        assert (fn["Runtime"], fn["Architectures"]) == ("python3.12", ["arm64"]), name
        assert fn["TracingConfig"] == {"Mode": "Active"}, name
        assert fn["LoggingConfig"] == {"LogGroup": stack.physical["FunctionLogGroup"]}, name
        assert fn["Environment"]["Variables"]["MANAGED_GROUPS"] == "web-a,web-b", name
        module = fn["Handler"].rsplit(".", 1)[0]
        assert (ROOT / "tasks" / f"{module}.py").is_file(), fn["Handler"]


def test_state_machines_are_standard_log_executions_and_trace(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    resources, stack = deployed
    machines = of_type(resources, "AWS::StepFunctions::StateMachine")
    assert set(machines) == {"LaunchStateMachine", "TerminateStateMachine"}
    for machine in machines.values():
        assert machine["StateMachineType"] == "STANDARD"
        assert machine["TracingConfiguration"] == {"Enabled": True}
        logging = machine["LoggingConfiguration"]
        assert logging["Level"] == "ERROR" and logging["IncludeExecutionData"] is True
        assert logging["Destinations"] == [
            {"CloudWatchLogsLogGroup": {"LogGroupArn": stack.arns["StateMachineLogGroup"]}}
        ]


def alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return of_type(resources, "AWS::CloudWatch::Alarm")


def test_every_alarm_notifies_the_topic_that_mails_the_operator(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    resources, stack = deployed
    topic = stack.arns["AlarmTopic"]
    for name, alarm in alarms(resources).items():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic], name
        assert alarm["AlarmDescription"], name
    (subscription,) = of_type(resources, "AWS::SNS::Subscription").values()
    assert subscription == {"TopicArn": topic, "Protocol": "email", "Endpoint": "ops@example.com"}


def test_no_subscription_without_an_alarm_email() -> None:
    parameters = {"GroupName": "web-a"}
    resources, _ = resolve(transform(TEMPLATE, parameters), parameters)
    assert not of_type(resources, "AWS::SNS::Subscription")


@pytest.mark.parametrize(
    ("alarm", "namespace", "metric", "dimensions", "statistic", "comparison"),
    [
        ("LaunchExecutionsFailedAlarm", "AWS/States", "ExecutionsFailed",
         {"StateMachineArn": "launch"}, "Sum", "GreaterThanOrEqualToThreshold"),
        ("TerminateExecutionsFailedAlarm", "AWS/States", "ExecutionsFailed",
         {"StateMachineArn": "terminate"}, "Sum", "GreaterThanOrEqualToThreshold"),
        ("NoFreeEniAlarm", "enipin", "NoFreeEni", {"service": "enipin"}, "Sum",
         "GreaterThanOrEqualToThreshold"),
        ("LowFreePoolEnisAlarm", "enipin", "LowestFreePoolEnis", {"service": "enipin"},
         "Minimum", "LessThanThreshold"),
    ],
)  # fmt: skip
def test_the_alarms_the_issue_asks_for_watch_the_right_metric(
    deployed: tuple[dict[str, Any], Stack],
    alarm: str,
    namespace: str,
    metric: str,
    dimensions: dict[str, str],
    statistic: str,
    comparison: str,
) -> None:
    resources, stack = deployed
    machines = {
        "launch": stack.arns["LaunchStateMachine"],
        "terminate": stack.arns["TerminateStateMachine"],
    }
    found = alarms(resources)[alarm]
    assert (found["Namespace"], found["MetricName"]) == (namespace, metric)
    assert {d["Name"]: d["Value"] for d in found["Dimensions"]} == {
        k: machines.get(v, v) for k, v in dimensions.items()
    }
    assert (found["Statistic"], found["ComparisonOperator"]) == (statistic, comparison)


def test_the_low_pool_threshold_is_the_parameter() -> None:
    parameters = {"GroupName": "web-a", "FreeEniAlarmThreshold": "3"}
    resources, _ = resolve(transform(TEMPLATE, parameters), parameters)
    assert alarms(resources)["LowFreePoolEnisAlarm"]["Threshold"] == "3"


def dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    (board,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body: dict[str, Any] = json.loads(board["DashboardBody"])
    return body


def test_the_dashboard_shows_executions_pins_races_and_free_enis_per_az(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    body = dashboard(deployed[0])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles == [
        "Launch executions by result",
        "Terminate executions by result",
        "Pins",
        "Races lost and events",
        "Free pool ENIs per Availability Zone",
        "Alarms",
    ]
    text = json.dumps(body)
    for metric in ("ExecutionsSucceeded", "ExecutionsFailed", "LaunchPinned", "RacesLost"):
        assert f'"{metric}"' in text
    assert 'MetricName=\\"FreePoolEnis\\"' in text  # one line per AZ, whatever the AZs are
    assert set(body["widgets"][-1]["properties"]["alarms"]) == {
        deployed[1].arns[name] for name in alarms(deployed[0])
    }


def test_every_enipin_metric_watched_is_one_a_task_emits(
    deployed: tuple[dict[str, Any], Stack],
) -> None:
    resources, _ = deployed
    watched = {a["MetricName"] for a in alarms(resources).values() if a["Namespace"] == "enipin"}
    for widget in dashboard(resources)["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if row[0] == "enipin":
                watched.add(row[1])
    watched |= set(re.findall(r'MetricName=\\?"(\w+)', json.dumps(dashboard(resources))))
    emitted = set(re.findall(r'"(\w+)"', TASKS_SOURCE))
    assert watched - emitted == set()
    assert {
        "NoFreeEni",
        "LowestFreePoolEnis",
        "FreePoolEnis",
        "LaunchPinned",
        "RacesLost",
    } <= watched


def test_the_outputs_the_cli_reads_are_there(deployed: tuple[dict[str, Any], Stack]) -> None:
    cfn = transform(TEMPLATE, PARAMETERS)
    outputs = cfn["Outputs"]
    for key in ("ManagedGroupNames", "PoolTagKey", "PoolTagValue", "LaunchStateMachineArn",
                "TerminateStateMachineArn"):  # fmt: skip
        assert key in outputs, key
    assert outputs["ManagedGroupNames"]["Value"] == {"Fn::Join": [",", {"Ref": "GroupName"}]}
