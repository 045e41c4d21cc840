"""The launch workflow, run for real: launch.asl.json and tasks/ in the sandbox, started by the
group's lifecycle events. Each test asserts where the ENIs ended up, what Auto Scaling decided
and which states the execution went through."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import (
    assert_no_eni_doubled,
    assert_pinned,
    describe,
    executions_for,
    finish,
    group_instances,
    history_errors,
    in_service,
    instance_state,
    load_event,
    path_of,
    pool_enis_on,
    rival_instance,
    start,
    wait_until,
)

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]


def only_execution(sb: Sandbox, instance_id: str) -> dict[str, Any]:
    runs = executions_for(sb, instance_id)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize(("flavour", "nic"), [("al2", "eth1"), ("al2023", "ens6")])
def test_launch_pins_a_verified_eni_and_continues(sandbox: Factory, flavour: str, nic: str) -> None:
    # GIVEN a group over two AZs with a pool in each
    sb = sandbox(azs=2, pool_per_az=2, flavour=flavour)
    # WHEN it launches one instance
    sb.scale_out(1)
    sb.settle()
    # THEN the instance is in service with one pool ENI from its own AZ, seen in the guest OS
    (instance_id,) = in_service(sb)
    eni = assert_pinned(sb, instance_id)
    run = only_execution(sb, instance_id)
    assert run["status"] == "SUCCEEDED"
    output = json.loads(run["output"])
    assert output == {
        "instanceId": instance_id,
        "availabilityZone": eni["AvailabilityZone"],
        "eniId": eni["NetworkInterfaceId"],
        "macAddress": eni["MacAddress"],
        "privateIp": eni["PrivateIpAddress"],
        "nicName": nic,
        "lifecycleResult": "CONTINUE",
        "attempts": {"racesLost": 0, "verificationRounds": 1},
    }
    path = path_of(sb, run["executionArn"])
    # EC2 shows a new instance pending (or not at all) for a few seconds: the first look waits
    # a poll, and nothing is attached before the instance runs
    assert path[:4] == [
        "ValidateEvent",
        "IsLaunchToPin?",
        "WaitForInstanceToStart",
        "DescribeInstance",
    ]
    attach = path.index("AttachEni")
    assert set(path[3:attach]) <= {"WaitForInstance", "DescribeInstance", "IsInstanceRunning?"}
    # the look at the instance ranked the candidates; the agent's start is waited for once, and
    # the attachment is read back in the guest, not by a describe
    assert path[attach:] == [
        "AttachEni",
        "IsEniAttached?",
        "WaitForSsmAgentToStart",
        "SendVerification",
        "WaitForVerification",
        "GetVerificationResult",
        "IsNicVerified?",
        "CompleteLaunch",
        "LaunchPinned",
    ]


# What one launch costs in AWS calls, each read once: the dispatcher's start; one look at the
# instance, one at the AZ's pool (the ENI it already holds, or the free ones) and one at the
# group's launching instances (to rank the free ones by); the
# heartbeat that says its action still waits, the attach, and Auto Scaling's word that the
# instance is not leaving; the command and its result; the CONTINUE. No describe reads the
# attachment back: the guest's check does.
ONE_LAUNCH = Counter(
    {
        ("sfn", "StartExecution"): 1,
        ("ec2", "DescribeInstances"): 1,
        ("ec2", "DescribeNetworkInterfaces"): 1,
        ("auto-scaling", "DescribeAutoScalingGroups"): 1,
        ("auto-scaling", "RecordLifecycleActionHeartbeat"): 1,
        ("ec2", "AttachNetworkInterface"): 1,
        ("auto-scaling", "DescribeAutoScalingInstances"): 1,
        ("ssm", "SendCommand"): 1,
        ("ssm", "GetCommandInvocation"): 1,
        ("auto-scaling", "CompleteLifecycleAction"): 1,
    }
)
SCHEDULED = ("Reconcile", "PoolMetrics")  # functions on schedules, not the launch's


def test_a_launch_spends_ten_aws_calls_one_of_each(sandbox: Factory) -> None:
    # GIVEN a group over one AZ, the launch hooks' schedules quiet
    sb = sandbox(azs=1, pool_per_az=2)
    # WHEN it launches one instance
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    # THEN the launch's functions made ten calls, one of each
    calls = Counter(
        (c.service, c.operation)
        for c in sb.ledger.calls
        if c.caller is not None and not any(name in c.caller for name in SCHEDULED)
    )
    assert calls == ONE_LAUNCH


def test_thirty_simultaneous_launches_over_three_azs_pin_thirty_enis(sandbox: Factory) -> None:
    # Thirty runs share one Python process here, and the fast clock turns each CPU second of
    # it into 50 AWS seconds: give the hooks room no Lambda-backed deployment would need.
    sb = sandbox(azs=3, pool_per_az=10, max_size=30, parameters={"HookHeartbeatTimeout": 1800})
    sb.scale_out(30)
    sb.settle()
    serving = in_service(sb)
    assert len(serving) == 30
    for instance_id in serving:
        assert_pinned(sb, instance_id)
    assert_no_eni_doubled(sb)
    statuses = Counter(e["status"] for e in sb.executions())
    assert statuses == {"SUCCEEDED": 30}
    # matched by rank from one look at the group and one at the pool, no launch tried an ENI
    # another had taken: thirty attaches, each granted
    attaches = sb.ledger.by_operation()["ec2.AttachNetworkInterface"]
    assert attaches == sb.ledger.by_operation(outcome="ok")["ec2.AttachNetworkInterface"] == 30


def test_exhausted_pool_waits_then_abandons_without_touching_an_eni(sandbox: Factory) -> None:
    # GIVEN one free ENI in us-east-1b and two launches there
    sb = sandbox(
        azs=2, pool_per_az=2, parameters={"PoolWaitSeconds": 400, "HookHeartbeatTimeout": 300}
    )
    ec2 = sb.client("ec2")
    ec2.delete_network_interface(NetworkInterfaceId=sb.world.pool["us-east-1b"][0])
    sb.scale_out(4)
    # WHEN the pool stays empty past the wait
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    failed = [describe(sb, e["executionArn"]) for e in sb.executions() if e["status"] == "FAILED"]
    # THEN that launch waited (heartbeating), found nothing, and was abandoned with no ENI
    run = failed[0]
    assert run["error"] == "NoFreeEni"
    path = path_of(sb, run["executionArn"])
    assert "WaitForReleasedEni" in path
    assert "HeartbeatWhilePoolIsEmpty" in path
    assert path[-3:] == ["AbandonLaunch", "GuardLaunchStorm", "LaunchFailed"]
    abandoned = json.loads(run["input"])["detail"]["EC2InstanceId"]
    assert pool_enis_on(sb, abandoned) == []
    wait_until(lambda: instance_state(sb, abandoned) == "terminated", sb)
    # and the other AZ's launches were pinned meanwhile
    in_a = [i for i, d in group_instances(sb).items() if d["AvailabilityZone"] == "us-east-1a"]
    for instance_id in in_a:
        wait_until(lambda i=instance_id: i in in_service(sb), sb)
        assert_pinned(sb, instance_id)
    assert_no_eni_doubled(sb)
    # only the three pinned launches ever held an ENI (a lost race attaches nothing)
    assert sb.ledger.by_operation(outcome="ok")["ec2.AttachNetworkInterface"] == 3


def test_an_eni_released_during_the_wait_gets_used(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=0, parameters={"PoolWaitSeconds": 900})
    sb.scale_out(1)
    wait_until(lambda: bool(sb.executions()), sb)
    arn = sb.executions()[0]["executionArn"]
    wait_until(lambda: "WaitForReleasedEni" in path_of(sb, arn), sb)
    # an operator (or a terminating instance) puts an ENI back into the pool
    (added,) = sb.world.add_pool_enis(sb.world.subnets["us-east-1a"], 1)
    run = finish(sb, arn)
    assert run["status"] == "SUCCEEDED"
    assert json.loads(run["output"])["eniId"] == added


def test_lost_race_moves_to_another_eni(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=3)
    ec2 = sb.client("ec2")
    rival = rival_instance(sb)

    def rival_takes_it(params: dict[str, list[str]]) -> None:
        # another launch attaches the very ENI this one is about to attach
        ec2.attach_network_interface(
            NetworkInterfaceId=params["NetworkInterfaceId"][0], InstanceId=rival, DeviceIndex=1
        )

    sb.ledger.before("ec2", "AttachNetworkInterface", rival_takes_it)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    eni = assert_pinned(sb, instance_id)
    (taken,) = pool_enis_on(sb, rival)
    assert taken["NetworkInterfaceId"] != eni["NetworkInterfaceId"]
    run = only_execution(sb, instance_id)
    assert json.loads(run["output"])["attempts"]["racesLost"] == 1
    assert sb.ledger.by_operation(outcome="InvalidNetworkInterface.InUse") == {
        "ec2.AttachNetworkInterface": 1
    }


def test_a_candidate_deleted_by_hand_just_before_its_attach_is_passed_over(
    sandbox: Factory,
) -> None:
    sb = sandbox(azs=1, pool_per_az=2)
    ec2 = sb.client("ec2")
    deleted: list[str] = []

    def operator_deletes_it(params: dict[str, list[str]]) -> None:
        deleted.append(params["NetworkInterfaceId"][0])
        ec2.delete_network_interface(NetworkInterfaceId=deleted[0])

    sb.ledger.before("ec2", "AttachNetworkInterface", operator_deletes_it)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    eni = assert_pinned(sb, instance_id)
    assert eni["NetworkInterfaceId"] != deleted[0]
    run = only_execution(sb, instance_id)
    assert json.loads(run["output"])["attempts"]["racesLost"] == 1
    assert sb.ledger.by_operation(outcome="InvalidNetworkInterfaceID.NotFound") == {
        "ec2.AttachNetworkInterface": 1
    }


def test_an_instance_terminated_through_ec2_just_before_its_attach_fails_named(
    sandbox: Factory,
) -> None:
    """EC2 refuses the attach (IncorrectInstanceState): the run names why and touches no ENI."""
    sb = sandbox(azs=1, pool_per_az=2)
    ec2 = sb.client("ec2")

    def terminated_by_hand(params: dict[str, list[str]]) -> None:
        ec2.terminate_instances(InstanceIds=[params["InstanceId"][0]])

    sb.ledger.before("ec2", "AttachNetworkInterface", terminated_by_hand)
    sb.scale_out(1)
    instance_id, run = abandoned_run(sb)
    assert run["error"] == "InstanceTerminating"
    assert path_of(sb, run["executionArn"])[-5:] == [
        "AttachEni",
        "ReleaseEni",
        "AbandonLaunch",
        "GuardLaunchStorm",
        "LaunchFailed",
    ]
    assert pool_enis_on(sb, instance_id) == []
    assert_no_eni_doubled(sb)


def test_throttling_bursts_are_absorbed(sandbox: Factory) -> None:
    sb = sandbox(azs=2, pool_per_az=3)
    sb.ledger.throttle("ec2", "DescribeNetworkInterfaces", times=12)
    sb.ledger.throttle("ec2", "AttachNetworkInterface", times=5)
    sb.ledger.throttle("auto-scaling", "CompleteLifecycleAction", times=5)
    sb.scale_out(4)
    sb.settle()
    assert len(in_service(sb)) == 4
    for instance_id in in_service(sb):
        assert_pinned(sb, instance_id)
    throttled = sb.ledger.by_operation(outcome="RequestLimitExceeded")
    assert throttled["ec2.DescribeNetworkInterfaces"] == 12
    assert throttled["ec2.AttachNetworkInterface"] == 5
    assert sb.ledger.by_operation(outcome="Throttling")["auto-scaling.CompleteLifecycleAction"] == 5


def test_a_burst_beyond_the_sdk_retries_is_retried_by_the_state_machine(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=2)
    sb.ledger.throttle("ec2", "AttachNetworkInterface", times=6)  # the SDK gives up after 4
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    run = only_execution(sb, instance_id)
    assert "AwsThrottled" in history_errors(sb, run["executionArn"])
    assert run["status"] == "SUCCEEDED"


def test_an_attach_throttled_past_five_attempts_is_ridden_out_with_the_hook_kept(
    sandbox: Factory,
) -> None:
    # GIVEN an account whose attach bucket stays empty for 20 calls: more than five Task
    # attempts with the SDK's retries in each (a burst of launches, a busy neighbour)
    sb = sandbox(azs=1, pool_per_az=2)
    sb.ledger.throttle("ec2", "AttachNetworkInterface", times=20)
    sb.scale_out(1)
    sb.settle()
    # THEN the state machine kept retrying the attach and the launch pinned
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    run = only_execution(sb, instance_id)
    assert run["status"] == "SUCCEEDED"
    assert history_errors(sb, run["executionArn"]).count("AwsThrottled") >= 5
    # AND each attempt extended the hook first: the action ended by the run, not by a timeout
    (action,) = [a for a in sb.autoscaling.ended_actions() if a["instance_id"] == instance_id]
    assert (action["how"], action["result"]) == ("CompleteLifecycleAction", "CONTINUE")
    heartbeats = sb.ledger.by_operation()["auto-scaling.RecordLifecycleActionHeartbeat"]
    assert heartbeats >= 6


def test_a_lambda_outage_at_validate_event_gives_the_action_up_instead_of_leaving_it(
    sandbox: Factory,
) -> None:
    """Seven throttled invocations: ValidateEvent's Retry is spent, the run reads the action
    from the event and completes it, so the hook's timeout never has to."""
    sb = sandbox(azs=1, pool_per_az=1)
    sb.ledger.throttle("lambda", "Invoke", times=7)
    sb.scale_out(1)
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    (run,) = (describe(sb, e["executionArn"]) for e in sb.executions())
    assert run["error"] == "Lambda.TooManyRequestsException"
    assert path_of(sb, run["executionArn"]) == [
        "ValidateEvent",
        "HasActionInEvent?",
        "ReadActionFromEvent",
        "ReleaseEni",
        "AbandonLaunch",
        "GuardLaunchStorm",
        "LaunchFailed",
    ]
    (ended, *_) = sb.autoscaling.ended_actions()
    assert (ended["how"], ended["result"]) == ("CompleteLifecycleAction", "ABANDON")
    sb.settle()  # the replacement is pinned
    (replacement,) = in_service(sb)
    assert_pinned(sb, replacement)


def test_slow_ssm_agent_is_waited_for_with_lifecycle_heartbeats(sandbox: Factory) -> None:
    # the hook would expire after 240 s without heartbeats; the agent needs 1000 s. (Margins
    # wide enough for the fast clock's scheduler lag on a loaded machine: ~40 AWS s.)
    sb = sandbox(
        azs=1,
        pool_per_az=1,
        agent_delay=1000,
        parameters={"HookHeartbeatTimeout": 240, "PollSeconds": 30, "AgentWaitSeconds": 1800},
    )
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    run = only_execution(sb, instance_id)
    assert run["status"] == "SUCCEEDED"
    path = path_of(sb, run["executionArn"])
    assert path.count("HeartbeatWhileAgentStarts") >= 3
    assert sb.ledger.by_operation(outcome="ok")["auto-scaling.RecordLifecycleActionHeartbeat"] >= 3


def abandoned_run(sb: Sandbox) -> tuple[str, dict[str, Any]]:
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    run = next(describe(sb, e["executionArn"]) for e in sb.executions() if e["status"] == "FAILED")
    return json.loads(run["input"])["detail"]["EC2InstanceId"], run


def assert_released_and_abandoned(sb: Sandbox, instance_id: str, run: dict[str, Any]) -> None:
    assert path_of(sb, run["executionArn"])[-4:] == [
        "ReleaseEni",
        "AbandonLaunch",
        "GuardLaunchStorm",
        "LaunchFailed",
    ]
    assert pool_enis_on(sb, instance_id) == []
    wait_until(lambda: instance_state(sb, instance_id) == "terminated", sb)


def test_absent_ssm_agent_releases_the_eni_and_abandons(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, parameters={"AgentWaitSeconds": 60})
    sb.guests.set_default_faults(["agent_absent"])
    sb.scale_out(1)
    instance_id, run = abandoned_run(sb)
    assert run["error"] == "SsmAgentNotOnline"
    assert_released_and_abandoned(sb, instance_id, run)


def test_nic_left_down_is_remediated_then_verified(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    sb.guests.set_default_faults(["nic_down"])
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    run = only_execution(sb, instance_id)
    assert "RemediateNic" in path_of(sb, run["executionArn"])
    assert json.loads(run["output"])["attempts"]["verificationRounds"] == 2


def test_ubuntu_hotplugged_nic_without_address_is_remediated(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1, flavour="ubuntu")
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    run = only_execution(sb, instance_id)
    assert json.loads(run["output"])["nicName"] == "ens6"
    assert "RemediateNic" in path_of(sb, run["executionArn"])


def test_nic_never_appearing_releases_the_eni_and_abandons(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    sb.guests.set_default_faults(["nic_absent"])
    sb.scale_out(1)
    instance_id, run = abandoned_run(sb)
    assert run["error"] == "NicNotVerified"
    assert "NOT_FOUND" in run["cause"]
    assert_released_and_abandoned(sb, instance_id, run)


def test_duplicated_event_starts_one_named_execution(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=3)
    sb.autoscaling.duplicate_next(1)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    assert_pinned(sb, instance_id)
    assert sb.ledger.invocations["enipin-DispatchEventFunction"] == 2  # both copies arrived
    runs = executions_for(sb, instance_id)
    assert [r["status"] for r in runs] == ["SUCCEEDED"]
    assert runs[0]["name"].startswith(f"{instance_id}-launch-")
    ok = sb.ledger.by_operation(outcome="ok")
    assert ok["ec2.AttachNetworkInterface"] == 1
    assert ok["auto-scaling.CompleteLifecycleAction"] == 1


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (load_event("test-notification"), "test notification"),
        (
            load_event("launch-lifecycle-action", AutoScalingGroupName="someone-elses-group"),
            "not managed here",
        ),
    ],
    ids=["test-notification", "foreign-group"],
)
def test_an_event_that_is_not_ours_is_a_no_op(
    sandbox: Factory, event: dict[str, Any], reason: str
) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    run = finish(sb, start(sb, event))
    assert run["status"] == "SUCCEEDED"
    assert json.loads(run["output"])["action"] == "IGNORE"
    assert reason in json.loads(run["output"])["reason"]
    assert path_of(sb, run["executionArn"]) == ["ValidateEvent", "IsLaunchToPin?", "EventIgnored"]
    assert sb.ledger.by_operation() == {}


def test_malformed_event_fails_with_a_named_error_and_touches_nothing(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    run = finish(sb, start(sb, load_event("malformed-lifecycle-action")))
    assert run["status"] == "FAILED"
    assert run["error"] == "InvalidLifecycleEvent"
    assert "EC2InstanceId" in run["cause"]
    assert path_of(sb, run["executionArn"]) == ["ValidateEvent", "EventRejected"]
    assert sb.ledger.by_operation() == {}


def test_unknown_instance_fails_with_instance_not_found(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=1)
    run = finish(sb, start(sb, load_event("launch-lifecycle-action")))
    assert run["status"] == "FAILED"
    assert run["error"] == "InstanceNotFound"
    assert sb.ledger.by_operation(outcome="ok")["ec2.AttachNetworkInterface"] == 0


def test_replay_of_a_finished_launch_ends_cleanly(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=2)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    first = only_execution(sb, instance_id)
    # WHEN an operator replays the very same input after the action completed
    replay = finish(sb, start(sb, json.loads(first["input"])))
    # THEN it reuses the ENI and treats "No active Lifecycle Action" as done
    assert replay["status"] == "SUCCEEDED"
    assert json.loads(replay["output"])["eniId"] == json.loads(first["output"])["eniId"]
    assert "FindFreeEni" not in path_of(sb, replay["executionArn"])
    assert len(pool_enis_on(sb, instance_id)) == 1
    assert group_instances(sb)[instance_id]["LifecycleState"] == "InService"


def test_a_replay_for_an_instance_that_left_the_group_does_nothing(sandbox: Factory) -> None:
    sb = sandbox(azs=1, pool_per_az=2, release_delay=0)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    first = only_execution(sb, instance_id)
    sb.scale_in(1)
    sb.settle()
    calls_before = sb.ledger.by_operation(outcome="ok")
    # WHEN the launch is replayed (input marked as a replay) after the instance was terminated
    event = json.loads(first["input"]) | {"replay": {"of": first["executionArn"]}}
    run = finish(sb, start(sb, event))
    # THEN the run ends cleanly without touching EC2 or the (long finished) action
    assert run["status"] == "SUCCEEDED"
    assert path_of(sb, run["executionArn"])[-2:] == ["IsInstanceRunning?", "ReplayNotNeeded"]
    calls = sb.ledger.by_operation(outcome="ok")
    for mutating in ("ec2.AttachNetworkInterface", "auto-scaling.CompleteLifecycleAction"):
        assert calls[mutating] == calls_before[mutating]
