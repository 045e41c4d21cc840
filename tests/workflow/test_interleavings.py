"""Interleavings random chaos seldom draws, each set up on purpose: a terminate event lost while
the launch run still waits, warm-pool waits whose hook cannot be read off the instance, and a
reconciler round with a repair AWS refuses. Each asserts what enipin promises: no lifecycle action
ends by timeout, no pool ENI is left for EC2 to free from a terminated instance, and the rest of
a round goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from conftest import (
    at_the_pool_look,
    attach_the_pool_eni_by_hand,
    group_instances,
    in_service,
    launch_waiting_for_its_agent,
    path_of,
    pool_enis_on,
    rival_instance,
    wait_until,
)
from test_reconcile import reconcile
from test_warm_pool import warm_instances

from enipin_lab.sandbox import Sandbox

Factory = Callable[..., Sandbox]
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
# How a launch run ends that gave an ENI back before giving its action up
RELEASED_THEN_ABANDONED = ["ReleaseEni", "AbandonLaunch", "GuardLaunchStorm", "LaunchFailed"]


def endings(sb: Sandbox, instance_id: str) -> list[tuple[str, str, str]]:
    """How each of the instance's lifecycle actions ended: (transition, how, result)."""
    return [
        (a["transition"].split("_")[-1], a["how"], a["result"])
        for a in sb.autoscaling.ended_actions()
        if a["instance_id"] == instance_id
    ]


def timed_out(sb: Sandbox) -> list[dict[str, Any]]:
    """Lifecycle actions ended by their heartbeat or global timeout, not by enipin."""
    return [
        a
        for a in sb.autoscaling.ended_actions()
        if a["how"] in ("HeartbeatTimeout", "GlobalTimeout")
    ]


def left_for_ec2(sb: Sandbox) -> list[dict[str, Any]]:
    """Pool ENIs EC2 had to free from an instance its group terminated."""
    return list(sb.ec2.left_on_termination)


def state_of(sb: Sandbox, instance_id: str) -> str | None:
    found = sb.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance_id])
    return (
        found["AutoScalingInstances"][0]["LifecycleState"]
        if found["AutoScalingInstances"]
        else None
    )


def test_a_terminate_event_lost_while_the_launch_run_waits_is_resumed_by_the_reconciler(
    sandbox: Factory,
) -> None:
    # GIVEN a launch whose run attached its ENI and now waits for a slow SSM agent
    sb = sandbox(azs=1, pool_per_az=2, agent_delay=400)
    instance_id = launch_waiting_for_its_agent(sb)
    # WHEN the group terminates it and the terminate event is lost
    sb.autoscaling.drop_next(1, TERMINATING)
    sb.client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
    )
    wait_until(lambda: state_of(sb, instance_id) == "Terminating:Wait", sb)
    assert sb.executions("TerminateStateMachine") == []
    # THEN a round resumes the terminate action, though the launch run still runs
    round_ = reconcile(sb)
    assert [(r["kind"], r["instanceId"]) for r in round_["repairs"]] == [("RESUME", instance_id)]
    assert "-terminate-repair-" in round_["repairs"][0]["outcome"]
    sb.settle()
    # and its workflow released the ENI before the instance went: nothing timed out
    assert ("TERMINATING", "CompleteLifecycleAction", "CONTINUE") in endings(sb, instance_id)
    assert not timed_out(sb), endings(sb, instance_id)
    assert left_for_ec2(sb) == []


def _warm_group(sandbox: Factory, policy: str) -> Sandbox:
    sb = sandbox(azs=1, pool_per_az=4, max_size=2, parameters={"WarmPoolEni": policy})
    _put_warm_pool_reused_on_scale_in(sb)
    return sb


def _one_out_of_the_warm_pool(sandbox: Factory, policy: str) -> tuple[Sandbox, str]:
    """A warm group settled, then one instance taken out of its pool into service."""
    sb = _warm_group(sandbox, policy)
    sb.settle()
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    return sb, instance_id


def _put_warm_pool_reused_on_scale_in(sb: Sandbox) -> None:
    """A stopped warm pool, no minimum, that takes scaled-in instances back."""
    sb.client("autoscaling").put_warm_pool(
        AutoScalingGroupName=sb.group_name,
        MinSize=0,
        PoolState="Stopped",
        InstanceReusePolicy={"ReuseOnScaleIn": True},
    )


def test_keep_a_lost_event_into_the_warm_pool_is_resumed_and_pinned_there(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP and the warm pool's first launch event lost
    sb = _warm_group(sandbox, "KEEP")
    sb.autoscaling.drop_next(1, LAUNCHING)
    # the other instance's event arrives: it is pinned and stopped; the lost one waits
    wait_until(
        lambda: sorted(warm_instances(sb).values()) == ["Warmed:Pending:Wait", "Warmed:Stopped"],
        sb,
    )
    (waiting,) = [i for i, s in warm_instances(sb).items() if s == "Warmed:Pending:Wait"]
    # WHEN a round runs (by hand: every waiting action, whatever its age)
    round_ = reconcile(sb)
    (repair,) = [r for r in round_["repairs"] if r["instanceId"] == waiting]
    # THEN it is resumed on the hook Auto Scaling says holds it, the launch hook
    assert repair["kind"] == "RESUME" and "-launch-repair-" in repair["outcome"]
    sb.settle()
    assert warm_instances(sb)[waiting] == "Warmed:Stopped"
    assert len(pool_enis_on(sb, waiting)) == 1  # pinned on its way in, kept while stopped
    assert endings(sb, waiting) == [("LAUNCHING", "CompleteLifecycleAction", "CONTINUE")]


def test_release_a_return_to_the_warm_pool_whose_run_failed_after_its_detach_is_completed(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=RELEASE, an instance in service, pinned
    sb, instance_id = _one_out_of_the_warm_pool(sandbox, "RELEASE")
    assert len(pool_enis_on(sb, instance_id)) == 1
    # WHEN it goes back to the pool and the return's run fails once its ENI is off (Auto
    # Scaling refuses the completion: the run ends FAILED, the action still waits)
    refusing = [True]
    sb.ledger.fault(
        "auto-scaling",
        "CompleteLifecycleAction",
        "client_error",
        code="AccessDenied",
        times=10_000,
        where=lambda _: refusing[0],
    )
    sb.scale_in(1)
    wait_until(lambda: bool(sb.executions("TerminateStateMachine")), sb)
    wait_until(
        lambda: all(e["status"] != "RUNNING" for e in sb.executions("TerminateStateMachine")), sb
    )
    assert pool_enis_on(sb, instance_id) == []
    assert warm_instances(sb).get(instance_id) == "Warmed:Pending:Wait", endings(sb, instance_id)
    # THEN, once Auto Scaling takes completions again, a round resumes the terminate hook's
    # action (no ENI on it: yet not the launch hook's)
    refusing[0] = False
    round_ = reconcile(sb)
    (repair,) = [r for r in round_["repairs"] if r["instanceId"] == instance_id]
    assert "-terminate-repair-" in repair["outcome"]
    sb.settle()
    assert warm_instances(sb)[instance_id] == "Warmed:Stopped"
    assert endings(sb, instance_id)[-1] == ("TERMINATING", "CompleteLifecycleAction", "CONTINUE")
    assert not timed_out(sb), endings(sb, instance_id)


def test_keep_an_eni_kept_through_the_warm_pool_is_given_back_when_its_launch_out_is_abandoned(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP: warm instances pinned on their way in, stopped with their ENIs,
    # and an OS whose NIC never comes up once they start (chaos seed 16 drew this)
    sb = _warm_group(sandbox, "KEEP")
    sb.settle()
    kept = {i: pool_enis_on(sb, i) for i in warm_instances(sb)}
    assert sorted(len(enis) for enis in kept.values()) == [1, 1]
    for instance_id in kept:
        sb.guests.set_faults(instance_id, {"nic_absent"})
    # WHEN the group takes one out of the pool and its verification fails
    sb.scale_out(1)
    wait_until(lambda: any(a["result"] == "ABANDON" for a in sb.autoscaling.ended_actions()), sb)
    sb.settle()
    # THEN the run gave the kept ENI back before its ABANDON let the instance go: EC2 freed none
    abandoned = {
        a["instance_id"] for a in sb.autoscaling.ended_actions() if a["result"] == "ABANDON"
    }
    assert abandoned and abandoned <= set(kept)
    for instance_id in abandoned:
        (launch_out,) = [
            e
            for e in sb.executions()
            if e["name"].startswith(instance_id) and e["status"] == "FAILED"
        ]
        assert path_of(sb, launch_out["executionArn"])[-4:] == RELEASED_THEN_ABANDONED
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def test_keep_an_eni_kept_through_the_warm_pool_is_given_back_when_validation_itself_failed(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP: warm instances pinned on their way in, stopped with their ENIs
    sb = _warm_group(sandbox, "KEEP")
    sb.settle()
    kept = {i: pool_enis_on(sb, i) for i in warm_instances(sb)}
    assert sorted(len(enis) for enis in kept.values()) == [1, 1]
    # WHEN one leaves the pool during a Lambda outage that outlasts ValidateEvent's Retry, so
    # the run gives the action up without having looked at the instance (chaos seed 168)
    validating = [True]
    sb.ledger.throttle(
        "lambda",
        "Invoke",
        times=10_000,
        where=lambda params: validating[0] and "ValidateEvent" in str(params),
    )
    sb.scale_out(1)
    wait_until(lambda: any(e["status"] == "FAILED" for e in sb.executions()), sb)
    validating[0] = False
    sb.settle()
    # THEN the ENI it kept came off before its ABANDON let it go: EC2 freed none
    (failed,) = [e for e in sb.executions() if e["status"] == "FAILED"]
    assert path_of(sb, failed["executionArn"])[-5:] == [
        "ReadActionFromEvent",
        *RELEASED_THEN_ABANDONED,
    ]
    assert failed["name"].split("-launch-")[0] in kept
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def test_a_run_giving_up_an_action_another_run_completed_leaves_the_in_service_eni_alone(
    sandbox: Factory,
) -> None:
    # GIVEN an instance pinned and in service, and a second run of its launch action (a late
    # event after a repair) that failed and is about to give the action up with ABANDON
    import release_eni  # the Task module, from tasks/ as the runtime imports it

    sb = sandbox(azs=1, pool_per_az=2)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    (eni,) = pool_enis_on(sb, instance_id)
    state = {
        "instanceId": instance_id,
        "lifecycle": {
            "transition": LAUNCHING,
            "groupName": sb.group_name,
            "hookName": "enipin-launch",
            "instanceId": instance_id,
            "token": "4a6a7a3c-0000-4000-8000-000000000001",  # the finished action's
        },
        "eni": {
            "id": eni["NetworkInterfaceId"],
            "attachmentId": eni["Attachment"]["AttachmentId"],
        },
        "attachedHere": False,
    }
    # WHEN its ReleaseEni runs, THEN the ENI stays: the action it would give up is finished
    released = release_eni.release(sb.client("ec2"), sb.client("autoscaling"), state)
    assert released["released"] is False
    assert [e["NetworkInterfaceId"] for e in pool_enis_on(sb, instance_id)] == [
        eni["NetworkInterfaceId"]
    ]


def test_a_repair_aws_refuses_is_reported_and_the_rest_of_the_round_goes_on(
    sandbox: Factory,
) -> None:
    # GIVEN a pool ENI on someone's own server (IAM denies enipin the detach there) and an
    # in-service instance whose ENI was detached by hand
    sb = sandbox(azs=1, pool_per_az=3)
    sb.scale_out(1)
    sb.settle()
    (instance_id,) = in_service(sb)
    (eni,) = pool_enis_on(sb, instance_id)
    ec2 = sb.client("ec2")
    ec2.detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"])
    wait_until(lambda: pool_enis_on(sb, instance_id) == [], sb)
    stranger = rival_instance(sb)
    free = [
        e
        for e in ec2.describe_network_interfaces(
            Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
        )["NetworkInterfaces"]
        if e["Status"] == "available" and e["NetworkInterfaceId"] != eni["NetworkInterfaceId"]
    ]
    attachment = ec2.attach_network_interface(
        NetworkInterfaceId=free[0]["NetworkInterfaceId"], InstanceId=stranger, DeviceIndex=1
    )["AttachmentId"]
    wait_until(lambda: bool(pool_enis_on(sb, stranger)), sb)
    sb.ledger.fault(
        "ec2",
        "DetachNetworkInterface",
        "client_error",
        code="UnauthorizedOperation",
        times=10_000,
        where=lambda params: attachment in str(params),
    )
    # WHEN a round runs (by hand: a failed repair makes `enipin reconcile` exit 1)
    published = len(sb.ledger.calls)
    round_ = reconcile(sb, exit_code=1)
    # THEN the refused detach is reported, and the pin after it still started
    outcomes = {(r["kind"], r["instanceId"]): r["outcome"] for r in round_["repairs"]}
    assert outcomes[("RELEASE", stranger)].startswith("failed: UnauthorizedOperation")
    assert outcomes[("PIN", instance_id)].startswith("started ")
    assert round_["failed"] == 1
    # and the round still read the groups' AZs for the pool metrics, after the repairs
    after = [c.operation for c in sb.ledger.calls[published:]]
    assert after.index("DescribeAutoScalingGroups", after.index("StartExecution")) > 0
    sb.settle()
    assert len(pool_enis_on(sb, instance_id)) == 1


def test_a_lost_launch_is_repaired_at_the_hooks_device_index_and_its_late_event_keeps_that_eni(
    sandbox: Factory,
) -> None:
    # GIVEN the group's launch hook asks for device index 2 in its NotificationMetadata
    sb = sandbox(azs=1, pool_per_az=3)
    autoscaling = sb.client("autoscaling")
    autoscaling.put_lifecycle_hook(
        AutoScalingGroupName=sb.group_name,
        LifecycleHookName="enipin-launch",
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=300,
        DefaultResult="ABANDON",
        NotificationMetadata='{"deviceIndex": 2}',
    )
    # WHEN a launch's event comes late, after a round resumed its action as lost
    sb.autoscaling.delay_next(1, LAUNCHING, delay=240)
    sb.scale_out(1)
    wait_until(lambda: len(group_instances(sb)) == 1, sb)
    (instance_id,) = group_instances(sb)
    wait_until(lambda: state_of(sb, instance_id) == "Pending:Wait", sb)
    round_ = reconcile(sb)
    assert [(r["kind"], r["instanceId"]) for r in round_["repairs"]] == [("RESUME", instance_id)]
    sb.settle()
    # THEN the repair pinned at the hook's index, and the late event's run kept that ENI
    assert len(sb.executions()) == 2
    (eni,) = pool_enis_on(sb, instance_id)
    assert eni["Attachment"]["DeviceIndex"] == 2
    assert state_of(sb, instance_id) == "InService"
    assert not timed_out(sb)
    # and the next round finds nothing to change
    assert reconcile(sb)["repairs"] == []


def test_hooks_that_name_different_pools_are_reported_by_every_round(sandbox: Factory) -> None:
    # GIVEN a launch hook that lends from another pool than the terminate hook looks in: every
    # ENI would stay on its terminated instance
    sb = sandbox(azs=1, pool_per_az=2)
    sb.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName=sb.group_name,
        LifecycleHookName="enipin-launch",
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=300,
        DefaultResult="ABANDON",
        NotificationMetadata='{"poolTagValue": "Licensed-ENI"}',
    )
    # WHEN a round runs, THEN it names the group and both pools, and exits 1 by hand
    round_ = reconcile(sb, exit_code=1)
    (problem,) = round_["problems"]
    assert problem.startswith(f"{sb.group_name}: the launch hook's poolTagValue is Licensed-ENI")
    assert "the terminate hook's the stack's" in problem


def test_an_attach_landing_after_the_terminate_run_looked_is_released_before_ec2_must(
    sandbox: Factory,
) -> None:
    # GIVEN a launch about to attach its ENI
    sb = sandbox(azs=1, pool_per_az=2)
    asg = sb.client("autoscaling")
    victim: list[str] = []

    def terminate_first(params: Any) -> None:
        # WHEN, just before EC2 serves the attach, the group terminates the instance: its
        # terminate run starts and looks while the attach lands (a describe lags it)
        (instance_id,) = group_instances(sb)
        victim.append(instance_id)
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
        )
        wait_until(lambda: bool(sb.executions("TerminateStateMachine")), sb)

    sb.ledger.before("ec2", "AttachNetworkInterface", terminate_first)
    sb.scale_out(1)
    sb.settle()
    # THEN the ENI the attach put on the dying instance came off before EC2 had to free it
    assert victim
    (launch,) = sb.executions()
    assert path_of(sb, launch["executionArn"])[-4:] == RELEASED_THEN_ABANDONED
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def terminate_path(sb: Sandbox) -> list[str]:
    runs = sb.executions("TerminateStateMachine")
    return path_of(sb, runs[0]["executionArn"]) if runs else []


def launch_path(sb: Sandbox) -> list[str]:
    runs = sb.executions("LaunchStateMachine")
    return path_of(sb, runs[0]["executionArn"]) if runs else []


def terminate_the_only_instance(sb: Sandbox) -> str:
    (instance_id,) = group_instances(sb)
    sb.client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
    )
    return instance_id


def test_an_attach_landing_after_the_terminate_runs_look_is_found_by_its_second_look(
    sandbox: Factory,
) -> None:
    # GIVEN a launch run that asked Auto Scaling about its instance, then starved before its
    # attach (chaos seed 36: about 100 AWS seconds between the two under load)
    sb = sandbox(azs=1, pool_per_az=2)
    victim: list[str] = []

    def terminate_and_look_first(params: Any) -> None:
        # WHEN the group terminates the instance and its terminate run looks (no ENI yet)
        sb.ledger.before("ec2", "DescribeNetworkInterfaces", hold_the_next_look)
        victim.append(terminate_the_only_instance(sb))
        wait_until(lambda: "HasPoolEnis?" in terminate_path(sb), sb)
        # ... the launch run's own look after its attach waits for the terminate run's next one
        sb.ledger.before("auto-scaling", "DescribeAutoScalingInstances", after_second_look)

    def hold_the_next_look(params: Any) -> None:
        # ... and the attach lands, and shows in a describe (which lags it), before that look
        sb.ledger.before("ec2", "DescribeNetworkInterfaces", once_attached)

    def once_attached(params: Any) -> None:
        wait_until(lambda: bool(pool_enis_on(sb, victim[0])), sb)

    def after_second_look(params: Any) -> None:
        wait_until(lambda: terminate_path(sb).count("FindPoolEnis") == 2, sb)

    sb.ledger.before("ec2", "AttachNetworkInterface", terminate_and_look_first)
    sb.scale_out(1)
    sb.settle()
    # THEN the terminate run's look before CONTINUE found the ENI and released it
    assert victim
    second_look = terminate_path(sb)[terminate_path(sb).index("CompleteTermination") :]
    assert second_look[:4] == ["CompleteTermination", "FindPoolEnis", "HasPoolEnis?", "DetachEnis"]
    assert endings(sb, victim[0])[-1] == ("TERMINATING", "CompleteLifecycleAction", "CONTINUE")
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def test_an_attach_landing_after_the_terminate_runs_last_look_is_taken_off_by_the_launch_run(
    sandbox: Factory,
) -> None:
    # GIVEN a launch run whose attach is held up, as above
    sb = sandbox(azs=1, pool_per_az=2)
    victim: list[str] = []
    looked_last = threading.Event()

    def terminate_and_look_twice_first(params: Any) -> None:
        # WHEN the instance is terminated and its terminate run looks, twice, before the attach
        # lands, and only then lets the termination go on
        victim.append(terminate_the_only_instance(sb))
        wait_until(looked_last.is_set, sb)

    def continue_once_attach_eni_ended(params: Any) -> None:
        looked_last.set()
        wait_until(lambda: bool({"IsEniAttached?", "ReleaseEni"} & set(launch_path(sb))), sb)

    sb.ledger.before("ec2", "AttachNetworkInterface", terminate_and_look_twice_first)
    sb.ledger.before("auto-scaling", "CompleteLifecycleAction", continue_once_attach_eni_ended)
    sb.scale_out(1)
    sb.settle()
    # THEN AttachEni, asking Auto Scaling after its attach, took the ENI off at once
    assert victim
    assert launch_path(sb)[-5:] == ["AttachEni", *RELEASED_THEN_ABANDONED]
    assert endings(sb, victim[0])[-1] == ("TERMINATING", "CompleteLifecycleAction", "CONTINUE")
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def test_keep_an_attach_landing_as_the_instance_goes_back_to_the_pool_stays_there(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP, a direct launch whose attach is held up, and an agent that will
    # never answer on it (chaos seed 319)
    sb = sandbox(
        azs=1,
        pool_per_az=2,
        max_size=1,
        parameters={"WarmPoolEni": "KEEP", "AgentWaitSeconds": 120},
    )
    returned: list[str] = []

    def back_to_the_pool_first(params: Any) -> None:
        # WHEN a scale-in sends the instance back to a warm pool (its launch action ends)
        # and the attach lands while the terminate hook holds it there
        (instance_id,) = group_instances(sb)
        returned.append(instance_id)
        sb.guests.set_faults(instance_id, {"agent_absent"})
        _put_warm_pool_reused_on_scale_in(sb)
        sb.ledger.before("auto-scaling", "CompleteLifecycleAction", once_attached)
        sb.scale_in(1)
        wait_until(lambda: warm_instances(sb).get(instance_id) == "Warmed:Pending:Wait", sb)

    def once_attached(params: Any) -> None:
        wait_until(lambda: sb.ledger.by_operation(outcome="ok")["ec2.AttachNetworkInterface"], sb)

    sb.ledger.before("ec2", "AttachNetworkInterface", back_to_the_pool_first)
    sb.scale_out(1)
    sb.settle()
    # THEN the warm instance keeps the ENI the policy says it keeps, though the launch run
    # that attached it failed afterwards (its agent never came)
    (instance_id,) = returned
    (launch,) = sb.executions()
    assert launch["status"] == "FAILED"
    assert warm_instances(sb)[instance_id] == "Warmed:Stopped"
    assert len(pool_enis_on(sb, instance_id)) == 1
    assert not timed_out(sb)


def test_keep_a_kept_eni_stays_when_a_scale_in_sends_its_failing_launch_back_to_the_pool(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP: warm instances pinned on their way in, and agents that never
    # answer once they start (chaos seed 368)
    sb = sandbox(
        azs=1,
        pool_per_az=4,
        max_size=2,
        parameters={"WarmPoolEni": "KEEP", "AgentWaitSeconds": 120},
    )
    sb.client("autoscaling").put_warm_pool(
        AutoScalingGroupName=sb.group_name,
        MinSize=0,
        PoolState="Stopped",
        InstanceReusePolicy={"ReuseOnScaleIn": True},
    )
    sb.settle()
    for instance_id in warm_instances(sb):
        sb.guests.set_faults(instance_id, {"agent_absent"})
    # WHEN one leaves the pool, and while its launch run waits for the agent, a scale-in sends
    # it back, and that terminate event is lost: it waits in Warmed:Pending:Wait
    sb.scale_out(1)
    wait_until(lambda: len(leaving_the_pool(sb)) == 1, sb)
    (instance_id,) = leaving_the_pool(sb)
    wait_until(lambda: "CheckSsmAgent" in launch_path_of(sb, instance_id), sb)
    sb.autoscaling.drop_next(1, TERMINATING)
    sb.scale_in(1)
    wait_until(lambda: warm_instances(sb).get(instance_id) == "Warmed:Pending:Wait", sb)
    wait_until(lambda: "LaunchFailed" in launch_path_of(sb, instance_id), sb)
    # THEN the failing launch run left the kept ENI alone: the action in that state is the
    # terminate hook's, not its own; the round resumes that one, into the pool, ENI kept
    assert len(pool_enis_on(sb, instance_id)) == 1
    reconcile(sb)
    sb.settle()
    assert warm_instances(sb)[instance_id] == "Warmed:Stopped"
    assert len(pool_enis_on(sb, instance_id)) == 1
    assert endings(sb, instance_id)[-1] == ("TERMINATING", "CompleteLifecycleAction", "CONTINUE")
    assert left_for_ec2(sb) == []


def test_keep_an_instance_whose_eni_was_deleted_by_hand_goes_back_to_the_pool_and_out_pinned(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP, an instance out of the warm pool in service with its kept ENI
    sb, instance_id = _one_out_of_the_warm_pool(sandbox, "KEEP")
    (eni,) = pool_enis_on(sb, instance_id)
    # WHEN an operator deletes that ENI by hand, and a scale-in sends the instance back to the
    # pool before any reconciler round repairs it (chaos seed 350)
    ec2 = sb.client("ec2")
    ec2.detach_network_interface(AttachmentId=eni["Attachment"]["AttachmentId"], Force=True)
    eni_id = eni["NetworkInterfaceId"]

    def detached() -> bool:
        found = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        return bool(found["NetworkInterfaces"][0]["Status"] == "available")

    wait_until(detached, sb)
    ec2.delete_network_interface(NetworkInterfaceId=eni_id)
    sb.scale_in(1)
    sb.settle()
    # THEN it rests in the pool with no ENI to keep (its MAC is gone with the ENI), its return
    # completed; and once the group takes every warm instance out, each serves with one
    assert warm_instances(sb)[instance_id] == "Warmed:Stopped"
    assert pool_enis_on(sb, instance_id) == []
    assert endings(sb, instance_id)[-1] == ("TERMINATING", "CompleteLifecycleAction", "CONTINUE")
    sb.scale_out(2)
    sb.settle()
    assert instance_id in in_service(sb) and len(in_service(sb)) == 2
    for serving in in_service(sb):
        assert len(pool_enis_on(sb, serving)) == 1
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def leaving_the_pool(sb: Sandbox) -> list[str]:
    return [i for i, a in group_instances(sb).items() if a["LifecycleState"] == "Pending:Wait"]


def launch_path_of(sb: Sandbox, instance_id: str) -> list[str]:
    """The path of the instance's latest launch run."""
    runs = [e for e in sb.executions() if e["name"].startswith(instance_id)]
    runs.sort(key=lambda e: e["startDate"])
    return path_of(sb, runs[-1]["executionArn"]) if runs else []


def test_a_run_that_only_progresses_slowly_still_heartbeats_its_action(
    sandbox: Factory,
) -> None:
    # GIVEN a 300 s hook, an attach and an agent that are ready at the first look, and two
    # calls that each take 200 s to answer (a starved or throttled account): no wait ever finds
    # its thing missing, so no wait's own heartbeat branch is taken (chaos seeds 3 and 195)
    sb = sandbox(azs=1, pool_per_az=1, attach_delay=0.0, agent_delay=0.0)
    for service, operation in (("ec2", "AttachNetworkInterface"), ("ssm", "SendCommand")):
        sb.ledger.before(service, operation, lambda params: sb.clock.sleep(200))
    sb.scale_out(1)
    sb.settle()
    # THEN the run heartbeat on the way, and its action ended by its CONTINUE, not a timeout
    (instance_id,) = in_service(sb)
    assert not timed_out(sb), endings(sb, instance_id)
    assert endings(sb, instance_id) == [("LAUNCHING", "CompleteLifecycleAction", "CONTINUE")]
    (launch,) = sb.executions()
    assert "HeartbeatWhileAgentStarts" in path_of(sb, launch["executionArn"])


def test_an_eni_put_on_the_instance_as_its_run_looks_is_adopted_not_fought_for(
    sandbox: Factory,
) -> None:
    # GIVEN a launch whose AZ has one free ENI, and a duplicate of its run (a second delivery
    # of its event) that attaches that ENI to the instance just before this run's look at the
    # pool, which still shows it free (a describe lags an attach by a second)
    sb = sandbox(azs=1, pool_per_az=1)
    attached: list[str] = []

    def duplicate_attaches() -> None:
        attached.append(attach_the_pool_eni_by_hand(sb))

    at_the_pool_look(sb, duplicate_attaches)
    sb.scale_out(1)
    sb.settle()
    # THEN the run's attach is refused (in use), the instance shows that ENI as its own, and
    # the run verifies and CONTINUEs with it, instead of waiting for a free ENI that never
    # comes and giving the launch up
    assert attached
    (instance_id,) = in_service(sb)
    assert [e["NetworkInterfaceId"] for e in pool_enis_on(sb, instance_id)] == attached
    (launch,) = sb.executions()
    assert launch["status"] == "SUCCEEDED"
    assert "FindFreeEni" not in path_of(sb, launch["executionArn"])
    assert endings(sb, instance_id) == [("LAUNCHING", "CompleteLifecycleAction", "CONTINUE")]
    assert not timed_out(sb)


def test_a_launch_whose_action_a_scale_in_ended_attaches_nothing(sandbox: Factory) -> None:
    # GIVEN a launch run looking for a free ENI (chaos seeds 36, 80, 295, 306, 366, 368, 381:
    # its attach then landed between the terminate run's last look and its CONTINUE)
    sb = sandbox(azs=1, pool_per_az=2)
    scaled_in: list[str] = []

    def scale_in() -> None:
        # WHEN a scale-in takes the instance: its launch action ends, the terminate hook holds it
        (instance_id,) = group_instances(sb)
        scaled_in.append(instance_id)
        sb.scale_in(1)
        wait_until(lambda: state_of(sb, instance_id) in ("Terminating:Wait", None), sb)

    at_the_pool_look(sb, scale_in)
    sb.scale_out(1)
    sb.settle()
    # THEN the launch run asked after its own action before attaching, and attached nothing
    assert scaled_in
    assert sb.ledger.by_operation()["ec2.AttachNetworkInterface"] == 0
    (launch,) = sb.executions()
    assert launch["status"] == "SUCCEEDED"
    assert path_of(sb, launch["executionArn"])[-2:] == ["AttachEni", "ActionEndedWithoutThisRun"]
    assert left_for_ec2(sb) == []
    assert not timed_out(sb)


def test_keep_a_launch_scaled_back_into_the_pool_before_its_pin_is_pinned_on_its_way_out(
    sandbox: Factory,
) -> None:
    # GIVEN WarmPoolEni=KEEP with reuse on scale-in, and a direct launch looking for a free ENI
    # (chaos seed 319 of session 9's batch)
    sb = sandbox(azs=1, pool_per_az=2, max_size=1, parameters={"WarmPoolEni": "KEEP"})
    returned: list[str] = []

    def back_to_the_pool() -> None:
        # WHEN a scale-in sends it into the warm pool before anything was attached
        (instance_id,) = group_instances(sb)
        returned.append(instance_id)
        _put_warm_pool_reused_on_scale_in(sb)
        sb.scale_in(1)
        wait_until(lambda: warm_instances(sb).get(instance_id) == "Warmed:Pending:Wait", sb)

    at_the_pool_look(sb, back_to_the_pool)
    sb.scale_out(1)
    sb.settle()
    # THEN it rests there with nothing to keep (it never had an ENI), its launch run attached
    # nothing and its return completed; no action timed out
    (instance_id,) = returned
    assert warm_instances(sb)[instance_id] == "Warmed:Stopped"
    assert pool_enis_on(sb, instance_id) == []
    assert sb.ledger.by_operation()["ec2.AttachNetworkInterface"] == 0
    assert endings(sb, instance_id)[-1] == ("TERMINATING", "CompleteLifecycleAction", "CONTINUE")
    # AND when the group takes it out again, its launch out of the pool pins it
    sb.scale_out(1)
    sb.settle()
    assert in_service(sb) == [instance_id]
    assert len(pool_enis_on(sb, instance_id)) == 1
    assert endings(sb, instance_id)[-1] == ("LAUNCHING", "CompleteLifecycleAction", "CONTINUE")
    assert not timed_out(sb) and left_for_ec2(sb) == []


def test_retry_back_off_in_two_throttling_episodes_counts_toward_the_heartbeat(
    sandbox: Factory,
) -> None:
    # GIVEN a 300 s hook and an agent that needs 420 s, and twice during that wait SSM
    # throttles the agent check long enough for the state machine's Retry to back off
    sb = sandbox(azs=1, pool_per_az=1, agent_delay=420)
    sb.scale_out(1)
    wait_until(lambda: len(sb.executions()) == 1, sb)
    for _ in range(2):
        sb.ledger.throttle("ssm", "DescribeInstanceInformation", times=12)
        sb.clock.sleep(150)
    sb.settle()
    # THEN the Retry's waits were counted as time passing: the heartbeats kept the action
    (instance_id,) = in_service(sb)
    assert len(pool_enis_on(sb, instance_id)) == 1
    assert not timed_out(sb), endings(sb, instance_id)
    assert endings(sb, instance_id) == [("LAUNCHING", "CompleteLifecycleAction", "CONTINUE")]
    throttled = sb.ledger.by_operation(outcome="ThrottlingException")
    assert throttled["ssm.DescribeInstanceInformation"] >= 6
