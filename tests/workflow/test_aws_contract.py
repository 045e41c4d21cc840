"""The workflows against what AWS documents and the happy path never shows: eventual
consistency, instance start-up, late events, refusals, broken connections, wall-clock hooks and
Step Functions' history limit (docs/aws-contract.md lists each with AWS's page).

Each test asserts where the ENI ended, how Auto Scaling ended the action and which path the
execution took."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from conftest import (
    assert_no_eni_doubled,
    assert_pinned,
    describe,
    executions_for,
    finish,
    history_errors,
    in_service,
    load_event,
    path_of,
    pool_enis_on,
    rival_instance,
    start,
    wait_until,
)

from enipin_core.settings import Settings
from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def only_run(sb: Sandbox, instance_id: str) -> dict[str, Any]:
    (run,) = executions_for(sb, instance_id)
    return run


def pinned_by_one_run(sb: Sandbox) -> tuple[str, dict[str, Any]]:
    """The one instance in service, pinned, and the run that pinned it, SUCCEEDED."""
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    run = only_run(sb, instance_id)
    assert run["status"] == "SUCCEEDED"
    return instance_id, run


def ended_by_completion(sb: Sandbox) -> list[tuple[str, str | None]]:
    return [(e["how"], e["result"]) for e in sb.autoscaling.ended_actions()]


def test_a_launch_waits_while_ec2_shows_the_instance_pending_then_pins(sandbox: Factory) -> None:
    # GIVEN instances that take 60 s to leave pending (the hook fires as they launch)
    sb = sandbox(azs=1, pool_per_az=1, boot_delay=60)
    sb.scale_out(1)
    sb.settle()
    # THEN nothing was attached to the pending instance: the run waited for it, then pinned
    _, run = pinned_by_one_run(sb)
    path = path_of(sb, run["executionArn"])
    assert path.count("WaitForInstance") >= 5
    assert path.index("AttachEni") > max(i for i, s in enumerate(path) if s == "WaitForInstance")
    assert sb.ledger.by_operation(outcome="IncorrectInstanceState") == {}
    assert ended_by_completion(sb) == [("CompleteLifecycleAction", "CONTINUE")]


def test_a_launch_that_ec2_does_not_show_yet_waits_and_pins(sandbox: Factory) -> None:
    # GIVEN an EC2 API that lags launches by 30 s (eventual consistency)
    sb = sandbox(azs=1, pool_per_az=1, visibility_delay=30, boot_delay=0)
    sb.scale_out(1)
    sb.settle()
    _, run = pinned_by_one_run(sb)
    assert "WaitForInstance" in path_of(sb, run["executionArn"])
    assert sb.ledger.by_operation(outcome="InvalidInstanceID.NotFound")["ec2.DescribeInstances"] > 0


def test_an_instance_ec2_never_shows_fails_named_after_the_window(sandbox: Factory) -> None:
    # GIVEN an event for an instance id that does not exist (bad input, replayed by hand)
    sb = sandbox(azs=1, pool_per_az=1)
    event = load_event("launch-lifecycle-action", AutoScalingGroupName=sb.group_name)
    run = finish(sb, start(sb, event))
    # THEN it ends named, after a bounded wait, with the (unknown) action given up
    assert (run["status"], run["error"]) == ("FAILED", "InstanceNotFound")
    path = path_of(sb, run["executionArn"])
    assert path[-3:] == ["AbandonLaunch", "GuardLaunchStorm", "LaunchFailed"]
    assert 1 <= path.count("WaitForInstance") <= 13  # 60 s of 5 s polls at most
    assert sb.ledger.by_operation(outcome="ok").get("ec2.AttachNetworkInterface", 0) == 0


def test_a_describe_that_lags_the_attach_does_not_stop_the_pin(sandbox: Factory) -> None:
    # GIVEN DescribeNetworkInterfaces showing an ENI free for 20 s after its attach
    sb = sandbox(azs=1, pool_per_az=1, describe_lag=20)
    sb.scale_out(1)
    sb.settle()
    instance_id, run = pinned_by_one_run(sb)
    eni = assert_pinned(sb, instance_id)
    assert json.loads(run["output"])["eniId"] == eni["NetworkInterfaceId"]
    # THEN no describe read the attachment back (the guest's check found the MAC): the lag
    # had nothing to mislead
    assert "CheckAttachment" not in path_of(sb, run["executionArn"])


def test_a_late_launch_event_is_pinned_and_a_scheduled_round_leaves_it_alone(
    sandbox: Factory,
) -> None:
    # GIVEN a launch event EventBridge delivers 60 s late
    sb = sandbox(azs=1, pool_per_az=2)
    sb.autoscaling.delay_next(1, LAUNCHING, delay=60)
    sb.scale_out(1)
    wait_until(lambda: bool(sb.autoscaling.pending_actions()), sb)
    instance_id = sb.autoscaling.pending_actions()[0]["instance_id"]
    sb.clock.sleep(30)
    # WHEN a scheduled reconciler round runs meanwhile (its event carries EventBridge's time)
    scheduled = {
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": sb.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "detail": {},
    }
    response = sb.client("lambda").invoke(
        FunctionName="enipin-ReconcilerFunction", Payload=json.dumps(scheduled).encode()
    )
    round_ = json.loads(response["Payload"].read())
    # THEN it resumes nothing (the launch is younger than the margin) and the late event pins it
    assert round_["repairs"] == [] and instance_id in round_["busy"]
    sb.settle()
    assert in_service(sb) == [instance_id]
    assert_pinned(sb, instance_id)
    runs = [e for e in sb.executions() if e["name"].startswith(instance_id)]
    assert [e["status"] for e in runs] == ["SUCCEEDED"]
    assert "repair" not in runs[0]["name"]


def test_a_late_event_after_a_resume_leaves_one_eni_and_one_completion(sandbox: Factory) -> None:
    # GIVEN a launch event so late that an operator's round resumed the action first
    sb = sandbox(azs=1, pool_per_az=2)
    sb.autoscaling.delay_next(1, LAUNCHING, delay=150)
    sb.scale_out(1)
    wait_until(lambda: bool(sb.autoscaling.pending_actions()), sb)
    instance_id = sb.autoscaling.pending_actions()[0]["instance_id"]
    response = sb.client("lambda").invoke(FunctionName="enipin-ReconcilerFunction", Payload=b"{}")
    repairs = json.loads(response["Payload"].read())["repairs"]
    assert [(r["kind"], r["instanceId"]) for r in repairs] == [("RESUME", instance_id)]
    # WHEN the event finally arrives and starts a second run for the same action
    wait_until(lambda: len([e for e in sb.executions() if "repair" not in e["name"]]) == 1, sb)
    sb.settle()
    # THEN the instance serves with one pool ENI, the action was completed once, no run failed
    assert in_service(sb) == [instance_id]
    assert_pinned(sb, instance_id)
    assert_no_eni_doubled(sb)
    assert ended_by_completion(sb) == [("CompleteLifecycleAction", "CONTINUE")]
    assert {e["status"] for e in sb.executions()} == {"SUCCEEDED"}


def test_heartbeats_count_from_the_event_not_from_the_run(sandbox: Factory) -> None:
    """The event arrives 200 s into a 300 s hook and the agent needs 400 s. Counting from its own
    start, the run would owe its first heartbeat at 350 s, after the hook gave up; counting from
    the event's time, it heartbeats at once, and no gap between the hook's start, its heartbeats
    and its completion reaches the heartbeat timeout."""
    sb = sandbox(azs=1, pool_per_az=1, agent_delay=400)
    sb.autoscaling.delay_next(1, LAUNCHING, delay=200)
    hook_start = sb.clock.monotonic()
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    assert ended_by_completion(sb) == [("CompleteLifecycleAction", "CONTINUE")]
    marks = [hook_start] + [
        call.at
        for call in sb.ledger.calls
        if call.service == "auto-scaling"
        and call.outcome == "ok"
        and call.operation in ("RecordLifecycleActionHeartbeat", "CompleteLifecycleAction")
    ]
    assert len(marks) >= 4  # the start, two heartbeats at least over 600 s, the completion
    assert max(later - earlier for earlier, later in itertools.pairwise(marks)) < 300


def test_send_command_refusing_a_just_online_agent_is_asked_again_within_seconds(
    sandbox: Factory,
) -> None:
    # GIVEN SSM refusing the instance twice (InvalidInstanceId) right after its agent is Online
    sb = sandbox(azs=1, pool_per_az=1)
    sb.ledger.fault("ssm", "SendCommand", "client_error", code="InvalidInstanceId", times=2)
    sb.scale_out(1)
    sb.settle()
    # THEN the send was retried where it stood (1 s, then 2 s later), not after a poll and a
    # look at the agent, and the launch was pinned
    _, run = pinned_by_one_run(sb)
    path = path_of(sb, run["executionArn"])
    assert path.count("SendVerification") == 1
    assert "WaitForSsmAgent" not in path
    assert history_errors(sb, run["executionArn"]).count("SsmAgentNotReady") == 2


def test_an_agent_refused_past_the_quick_retries_goes_back_to_the_agent_wait(
    sandbox: Factory,
) -> None:
    # GIVEN SSM refusing the instance four times, past the three quick retries
    sb = sandbox(azs=1, pool_per_az=1)
    sb.ledger.fault("ssm", "SendCommand", "client_error", code="InvalidInstanceId", times=4)
    sb.scale_out(1)
    sb.settle()
    # THEN the launch waited for the agent (a poll, DescribeInstanceInformation) and was pinned
    _, run = pinned_by_one_run(sb)
    path = path_of(sb, run["executionArn"])
    assert path.count("SendVerification") == 2
    assert path[path.index("SendVerification") + 1] == "WaitForSsmAgent"


def test_a_connection_broken_past_the_sdks_retries_is_retried_by_the_state_machine(
    sandbox: Factory,
) -> None:
    # GIVEN EC2 read timeouts on the first 4 DescribeNetworkInterfaces (the SDK tries 3 times)
    sb = sandbox(azs=1, pool_per_az=1, boot_delay=0, visibility_delay=0)
    sb.ledger.fault("ec2", "DescribeNetworkInterfaces", "read_timeout", times=4)
    sb.scale_out(1)
    sb.settle()
    _, run = pinned_by_one_run(sb)
    assert "AwsTransientError" in history_errors(sb, run["executionArn"])


def test_wait_bounds_past_the_history_limit_are_rejected_and_the_action_given_up(
    sandbox: Factory,
) -> None:
    # GIVEN a deployment polling every second for a day (86,400 polls: past 25,000 events)
    sb = sandbox(
        azs=1,
        pool_per_az=1,
        parameters={"PollSeconds": 1, "AgentWaitSeconds": 86400, "HookHeartbeatTimeout": 7200},
    )
    sb.scale_out(1)
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    (run,) = [describe(sb, e["executionArn"]) for e in sb.executions()]
    # THEN validation names it, and the action is given up at once, nothing attached
    assert run["error"] == "SettingsOutOfBounds"
    assert "history events" in run["cause"]
    assert path_of(sb, run["executionArn"]) == [
        "ValidateEvent",
        "HasActionInEvent?",
        "ReadActionFromEvent",
        "ReleaseEni",
        "AbandonLaunch",
        "GuardLaunchStorm",
        "LaunchFailed",
    ]
    instance_id = json.loads(run["input"])["detail"]["EC2InstanceId"]
    assert pool_enis_on(sb, instance_id) == []
    wait_until(lambda: bool(sb.autoscaling.ended_actions()), sb)
    assert ended_by_completion(sb)[0] == ("CompleteLifecycleAction", "ABANDON")


def test_the_history_bound_holds_for_a_real_run(sandbox: Factory) -> None:
    """The estimate ValidateEvent checks against the 25,000-event limit covers what a run
    really writes: a launch that waits 200 s for its agent, at 5 s polls."""
    sb = sandbox(azs=1, pool_per_az=1, agent_delay=200)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    run = only_run(sb, instance_id)
    events = sb.client("stepfunctions").get_execution_history(
        executionArn=run["executionArn"], maxResults=1000
    )["events"]
    waited = (run["stopDate"] - run["startDate"]).total_seconds()
    settings = Settings.from_dict(_settings_of(sb, run))
    assert settings.history_events(int(waited)) >= len(events)


def _settings_of(sb: Sandbox, run: dict[str, Any]) -> dict[str, Any]:
    events = sb.client("stepfunctions").get_execution_history(
        executionArn=run["executionArn"], maxResults=10
    )["events"]
    validated = next(e for e in events if "taskSucceededEventDetails" in e)
    payload = json.loads(validated["taskSucceededEventDetails"]["output"])["Payload"]
    return dict(payload["settings"])


def test_a_reconciler_round_over_250_instances_keeps_each_filter_within_200_values(
    sandbox: Factory,
) -> None:
    # GIVEN a group of 250 in-service instances without pool ENIs (hooks declared elsewhere)
    sb = sandbox(
        azs=2,
        pool_per_az=0,
        max_size=250,
        guest_mode="model",
        parameters={"CreateLifecycleHooks": "false"},
    )
    sb.scale_to(250)
    wait_until(lambda: len(in_service(sb)) == 250, sb)
    # WHEN a round plans its repairs
    response = sb.client("lambda").invoke(
        FunctionName="enipin-ReconcilerFunction", Payload=b'{"dryRun": true}'
    )
    assert "FunctionError" not in response, response["Payload"].read()
    repairs = json.loads(response["Payload"].read())["repairs"]
    # THEN it saw every instance, asking EC2 about at most 200 of them per call
    assert sorted(r["instanceId"] for r in repairs) == sorted(in_service(sb))
    described = [
        c.params
        for c in sb.ledger.calls
        if c.caller == "enipin-ReconcilerFunction" and c.operation == "DescribeInstances"
    ]
    asked = [[v[0] for k, v in p.items() if k.startswith("Filter.1.Value.")] for p in described]
    assert max(len(values) for values in asked) <= 200  # pages of one chunk repeat its filter
    assert {v for values in asked for v in values} == set(in_service(sb))


def test_an_agent_ssm_does_not_know_yet_reads_as_not_online_not_as_a_failure(
    sandbox: Factory,
) -> None:
    # GIVEN an agent that comes online 20 s after AgentStartSeconds, and
    # DescribeInstanceInformation refusing the instance id twice (not registered yet)
    sb = sandbox(azs=1, pool_per_az=1, agent_delay=40)
    sb.ledger.fault(
        "ssm", "DescribeInstanceInformation", "client_error", code="InvalidInstanceId", times=2
    )
    sb.scale_out(1)
    sb.settle()
    # THEN the command sent when agents typically start is refused (and asked again three times
    # within 7 s), the agent is polled (its refusals read as not online), and the instance is
    # pinned
    _, run = pinned_by_one_run(sb)
    assert history_errors(sb, run["executionArn"]) == ["SsmAgentNotReady"] * 4
    assert sb.ledger.by_operation(outcome="InvalidInstanceId") == {
        "ssm.SendCommand": 4,
        "ssm.DescribeInstanceInformation": 2,
    }


def test_a_rival_attach_a_describe_still_hides_is_a_lost_race_not_a_device_index(
    sandbox: Factory,
) -> None:
    """Found by the 200-instance bench: a describe that lags a rival's attach showed the ENI
    free, and the refusal was read as "device index in use"; the launch was abandoned."""
    sb = sandbox(azs=1, pool_per_az=3, describe_lag=60)
    ec2 = sb.client("ec2")
    rival = rival_instance(sb)

    def rival_takes_it(params: dict[str, list[str]]) -> None:
        ec2.attach_network_interface(
            NetworkInterfaceId=params["NetworkInterfaceId"][0], InstanceId=rival, DeviceIndex=1
        )

    sb.ledger.before("ec2", "AttachNetworkInterface", rival_takes_it)
    sb.scale_out(1)
    sb.settle()
    sb.clock.sleep(60)  # the pin takes under a minute: let the describes this test reads catch up
    _, run = pinned_by_one_run(sb)
    assert json.loads(run["output"])["attempts"]["racesLost"] == 1
    assert "DeviceIndexInUse" not in history_errors(sb, run["executionArn"])


def test_a_device_index_held_by_another_interface_fails_named_after_its_retries(
    sandbox: Factory,
) -> None:
    # GIVEN an interface that is not the pool's at the device index, attached as the run attaches
    sb = sandbox(azs=1, pool_per_az=2)
    ec2 = sb.client("ec2")
    subnet = sb.world.subnets["us-east-1a"]
    foreign = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
    taken: list[str] = []

    def someone_else_uses_the_index(params: dict[str, list[str]]) -> None:
        taken.append(params["InstanceId"][0])
        ec2.attach_network_interface(
            NetworkInterfaceId=foreign["NetworkInterfaceId"],
            InstanceId=params["InstanceId"][0],
            DeviceIndex=1,
        )

    sb.ledger.before("ec2", "AttachNetworkInterface", someone_else_uses_the_index)
    sb.scale_out(1)
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    (run,) = [describe(sb, e["executionArn"]) for e in sb.executions()]
    # THEN it is named, retried (a concurrent run's pool ENI could have been lagging), and no
    # pool ENI was left on the instance
    assert run["error"] == "DeviceIndexInUse"
    assert history_errors(sb, run["executionArn"]).count("DeviceIndexInUse") == 3
    assert path_of(sb, run["executionArn"])[-4:] == [
        "ReleaseEni",
        "AbandonLaunch",
        "GuardLaunchStorm",
        "LaunchFailed",
    ]
    assert pool_enis_on(sb, taken[0]) == []
