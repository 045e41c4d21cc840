"""The faults: building a run's shape in the sandbox, then acting on it as operators and AWS
would, one method a fault (``_<fault>``, what ``act`` calls for a step)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from enipin import replay
from enipin_core.names import TRANSITIONS
from enipin_lab.chaos.observer import _code, _holder, _Observer
from enipin_lab.chaos.planning import (
    LAUNCH,
    MAX_DESIRED,
    SECOND_GROUP,
    SECOND_MAX,
    STACK_DEVICE_INDEX,
    TERMINATE,
    Step,
)

WARM_MAX_PREPARED = 4  # the warm pool's MaxGroupPreparedCapacity: group + warm instances
TARGET_WAIT = 240.0  # AWS seconds a mid-flight fault waits for its moment


class _Faults(_Observer):
    """Builds the run's shape and injects each step's fault."""

    # -- building ----------------------------------------------------------------------------

    def build(self) -> None:
        """The run's shape: a second group beside the sandbox's, the stack deployed for both,
        the warm pool, the hooks' metadata; then the second group's first instance."""
        sb = self.sb
        groups = [sb.group_name]
        if self.shape.second_group:
            self.asg.create_auto_scaling_group(
                AutoScalingGroupName=SECOND_GROUP,
                LaunchTemplate={"LaunchTemplateName": f"{sb.group_name}-lt"},
                MinSize=0,
                MaxSize=SECOND_MAX,
                DesiredCapacity=0,
                VPCZoneIdentifier=",".join(sb.world.subnets.values()),
            )
            groups.append(SECOND_GROUP)
        sb.stack = sb.deploy(sb.template, self.shape.parameters() | {"GroupName": ",".join(groups)})
        if self.shape.device_index != STACK_DEVICE_INDEX:
            for group in groups:
                self._hooks_ask(group, {"deviceIndex": self.shape.device_index})
        if self.shape.warm_pool:
            self._put_warm_pool(self.shape.warm_min)
        if self.shape.second_group:
            self.asg.set_desired_capacity(AutoScalingGroupName=SECOND_GROUP, DesiredCapacity=1)

    def _hooks_ask(self, group: str, metadata: dict[str, Any]) -> None:
        """An operator's override: the group's hooks carry ``metadata`` from now on."""
        found = self.asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
        for hook in found:
            self.asg.put_lifecycle_hook(
                AutoScalingGroupName=group,
                LifecycleHookName=hook["LifecycleHookName"],
                LifecycleTransition=hook["LifecycleTransition"],
                HeartbeatTimeout=hook["HeartbeatTimeout"],
                DefaultResult=hook["DefaultResult"],
                NotificationMetadata=json.dumps(metadata),
            )

    def _put_warm_pool(self, min_size: int) -> None:
        self.asg.put_warm_pool(
            AutoScalingGroupName=self.sb.group_name,
            MaxGroupPreparedCapacity=WARM_MAX_PREPARED,
            MinSize=min_size,
            PoolState=self.shape.warm_state,
            InstanceReusePolicy={"ReuseOnScaleIn": self.shape.reuse_on_scale_in},
        )

    # -- acting ------------------------------------------------------------------------------

    def act(self, step: Step) -> None:
        done = getattr(self, f"_{step.fault}")(step.params)
        if done is False:
            self.notes.append(f"step {step.index} {step.describe()}: no moment came")
        else:
            self.injected.append(step.fault)

    def _scale_out(self, params: dict[str, Any]) -> list[str]:
        before = set(self.members())
        count = min(int(params["count"]), MAX_DESIRED - self.sb.desired())
        if count > 0:
            self.sb.scale_to(self.sb.desired() + count)
        return sorted(set(self.members()) - before)

    def _scale_in(self, params: dict[str, Any]) -> bool:
        count = min(int(params["count"]), self.sb.desired())
        if count <= 0:
            return False
        self.sb.scale_to(self.sb.desired() - count)
        return True

    def _one_more(self) -> list[str]:
        return self._scale_out({"count": 1})

    def _duplicate_event(self, params: dict[str, Any]) -> bool:
        transition = params["transition"]
        self.sb.autoscaling.duplicate_next(1, TRANSITIONS[transition], delay=params["delay"])
        return self._scale_for(transition)

    def _drop_event(self, params: dict[str, Any]) -> bool:
        self.sb.autoscaling.drop_next(1, TRANSITIONS[params["transition"]])
        return self._scale_for(params["transition"])

    def _late_event(self, params: dict[str, Any]) -> bool:
        self.sb.autoscaling.delay_next(1, TRANSITIONS[params["transition"]], delay=params["delay"])
        return self._scale_for(params["transition"])

    def _slow_boot(self, params: dict[str, Any]) -> bool:
        # Taken at launch: only this instance stays pending that long.
        consistency = self.sb.ec2_consistency
        usual, consistency.boot_delay = consistency.boot_delay, float(params["boot_delay"])
        try:
            return bool(self._one_more())
        finally:
            consistency.boot_delay = usual

    def _stale_describe(self, params: dict[str, Any]) -> bool:
        # For a while, DescribeNetworkInterfaces shows each new attachment late.
        ec2 = self.sb.ec2
        usual, ec2.describe_lag = ec2.describe_lag, float(params["lag"])
        self.sb.clock.call_later(float(params["for"]), lambda: setattr(ec2, "describe_lag", usual))
        self._one_more()
        return True

    def _command_refused(self, params: dict[str, Any]) -> bool:
        # SSM refuses the next verifications as for an agent it does not know yet.
        self.sb.ledger.fault(
            "ssm", "SendCommand", "client_error", code="InvalidInstanceId", times=params["times"]
        )
        self._one_more()
        return True

    def _broken_connection(self, params: dict[str, Any]) -> bool:
        self.sb.ledger.fault(
            params["service"], params["operation"], params["kind"], times=params["times"]
        )
        self._one_more()
        return True

    def _terminate_lost_mid_launch(self, params: dict[str, Any]) -> bool:
        new = self._launch_with_slow_agent(float(params["agent_delay"]))
        if not new or not self.wait_for(lambda: self._run_for(new[0]), 120):
            return False
        self.sb.clock.sleep(float(params["after"]))
        self.sb.autoscaling.drop_next(1, TRANSITIONS[TERMINATE])
        try:
            self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=new[0], ShouldDecrementDesiredCapacity=bool(params["decrement"])
            )
        except ClientError as exc:  # it already left (abandoned meanwhile)
            self.notes.append(f"terminate {new[0]}: {_code(exc)}")
            return False
        return True

    def _instance_refresh(self, params: dict[str, Any]) -> bool:
        """Start a rolling update of the group with these preferences; it runs on, beside the
        later steps, and converging waits for its end (the final status goes in the notes)."""
        if not self.sb.desired():
            return False
        try:
            self.asg.start_instance_refresh(
                AutoScalingGroupName=self.sb.group_name, Preferences=dict(params)
            )
        except ClientError as exc:  # InstanceRefreshInProgress: an earlier one still runs
            self.notes.append(f"instance refresh: {_code(exc)}")
            return False
        return True

    def _warm_pool_resized(self, params: dict[str, Any]) -> bool:
        self._put_warm_pool(int(params["min_size"]))
        return True

    def _other_group_scales(self, params: dict[str, Any]) -> bool:
        self.asg.set_desired_capacity(
            AutoScalingGroupName=SECOND_GROUP, DesiredCapacity=int(params["desired"])
        )
        return True

    def _scale_for(self, transition: str) -> bool:
        if transition == LAUNCH:
            return bool(self._one_more())
        return self._scale_in({"count": 1})

    def _throttle_burst(self, params: dict[str, Any]) -> bool:
        self.sb.ledger.throttle(params["service"], params["operation"], times=params["times"])
        self._one_more()
        return True

    def _slow_agent(self, params: dict[str, Any]) -> bool:
        return bool(self._launch_with_slow_agent(float(params["agent_delay"])))

    def _launch_with_slow_agent(self, delay: float) -> list[str]:
        """One more instance whose SSM agent takes ``delay`` AWS seconds to come online. The
        delay is taken at boot: only this instance is slow (its replacement, if it is
        abandoned, boots like any other)."""
        usual, self.sb.ssm.agent_delay = self.sb.ssm.agent_delay, delay
        try:
            new = self._one_more()
            # the agent starts with the OS, once EC2 runs the instance
            self.wait(lambda: all(self.sb.guests.is_running(i) for i in new), 300)
            return new
        finally:
            self.sb.ssm.agent_delay = usual

    def _guest_fault(self, fault: str) -> bool:
        new = self._one_more()
        for instance_id in new:
            self.sb.guests.set_faults(instance_id, {fault})
        return bool(new)

    def _launches_keep_failing(self, params: dict[str, Any]) -> bool:
        """Every instance launched fails the same way for ``fixed_after`` AWS seconds (the
        group replaces each one it gives up); then the operator fixes the cause and, if the
        storm guard suspended the group's launches meanwhile, releases it."""
        try:
            new = self.break_launches(params)
            self.sb.clock.sleep(float(params["fixed_after"]))
        finally:
            released = self.fix_launches_keep_failing()
        self.notes.append("launches kept failing: " + (released or "storm guard not tripped"))
        return bool(new)

    def break_launches(self, params: dict[str, Any]) -> list[str]:
        """The cause, as a broken image would be: every instance launched from now has the
        ``failure``; then one more instance."""
        self.sb.guests.set_default_faults({params["failure"]})
        return self._one_more()

    def fix_launches_keep_failing(self) -> str:
        """The operator's fix: instances launched from now are healthy (those up keep their
        fault, as with a mended image), and the storm guard lets the group launch again."""
        self.sb.guests.set_default_faults(set())
        return self.release_storm_guard()

    def _absent_agent(self, params: dict[str, Any]) -> bool:
        return self._guest_fault("agent_absent")

    def _nic_never_up(self, params: dict[str, Any]) -> bool:
        return self._guest_fault("nic_absent")

    def _nic_down(self, params: dict[str, Any]) -> bool:
        return self._guest_fault(params["fault"])

    def _eni_detached_by_hand(self, params: dict[str, Any]) -> bool:
        target = self._eni_target(params["target"])
        if target is None:
            return False
        self._detach(target, force=bool(params["force"]))
        return True

    def _eni_deleted_by_hand(self, params: dict[str, Any]) -> bool:
        target = self._eni_target(params["target"])
        if target is None:
            return False
        self._detach(target, force=True)
        eni_id = target["NetworkInterfaceId"]
        if not self.wait(lambda: self.eni_status(eni_id) == "available", 60.0):
            self.notes.append(f"{eni_id} taken again before it could be deleted")
            return True
        try:
            self.ec2.delete_network_interface(NetworkInterfaceId=eni_id)
        except ClientError as exc:  # attached again in between: EC2 refuses, as it should
            self.notes.append(f"delete {eni_id}: {_code(exc)}")
        return True

    def _eni_target(self, target: str) -> dict[str, Any] | None:
        """A pool ENI on an instance still launching (attached, not yet verified), or on an
        InService one."""
        if target == "launching":
            new = set(self._one_more())

            def attached_to_new() -> dict[str, Any] | None:
                return next((e for e in self.pool() if _holder(e) in new), None)

            return self.wait_for(attached_to_new, TARGET_WAIT)

        def on_in_service() -> dict[str, Any] | None:
            states = self.members()
            return next(
                (e for e in self.pool() if states.get(_holder(e) or "") == "InService"), None
            )

        return self.wait_for(on_in_service, TARGET_WAIT)

    def _detach(self, eni: dict[str, Any], *, force: bool) -> None:
        if holder := _holder(eni):
            self.eni_by_hand.add(holder)
        try:
            self.ec2.detach_network_interface(
                AttachmentId=eni["Attachment"]["AttachmentId"], Force=force
            )
        except ClientError as exc:  # already detached by the workflow itself
            self.notes.append(f"detach {eni['NetworkInterfaceId']}: {_code(exc)}")

    def _terminated_mid_workflow(self, params: dict[str, Any]) -> bool:
        if params["during"] == TERMINATE:
            before = self.members()
            if not self._scale_in({"count": 1}):
                return False
            victim = self.wait_for(lambda: self._terminating(before), TARGET_WAIT)
        else:
            new = self._one_more()
            victim = new[0] if new and self.wait_for(lambda: self._run_for(new[0]), 60) else None
        if victim is None:
            return False
        self.sb.clock.sleep(float(params["after"]))
        if params["via"] == "ec2":
            self.by_hand.add(victim)
            self.ec2.terminate_instances(InstanceIds=[victim])
            return True
        try:
            self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=victim, ShouldDecrementDesiredCapacity=bool(params["decrement"])
            )
        except ClientError as exc:  # it already left (abandoned meanwhile)
            self.notes.append(f"terminate {victim}: {_code(exc)}")
        return True

    def _terminating(self, before: dict[str, str]) -> str | None:
        states = self.members()
        return next(
            (i for i in sorted(before) if states.get(i, "").startswith("Terminating")), None
        )

    def _execution_failed_replayed(self, params: dict[str, Any]) -> bool:
        if params["how"] == "lambda_outage":
            self.sb.ledger.throttle("lambda", "Invoke", times=int(params["throttles"]))
            self._one_more()
        else:
            new = self._one_more()
            run = self.wait_for(lambda: self._run_for(new[0]), 60) if new else None
            if run is None:
                return False
            self.sb.clock.sleep(float(params["after"]))
            try:
                self.sfn.stop_execution(executionArn=run, error="OperatorStopped", cause="chaos")
            except ClientError as exc:
                self.notes.append(f"stop {run}: {_code(exc)}")
        self.sb.clock.sleep(float(params["replay_after"]))
        self.notes.append("replay --failed: " + self.replay_failed())
        return True

    def _run_for(self, instance_id: str) -> str | None:
        """The ARN of a running launch execution for ``instance_id``."""
        for execution in self.sb.executions("LaunchStateMachine"):
            if execution["status"] == "RUNNING" and execution["name"].startswith(instance_id):
                return str(execution["executionArn"])
        return None

    def replay_failed(self) -> str:
        """What ``enipin executions replay --failed`` does, through the operations layer."""
        dep = self._deployment()
        decisions = replay.plan(dep, replay.failed_runs(dep, None))
        failures = sum(1 for d in decisions if replay.carry_out_one(dep, d)[1])
        return f"{failures} failed" if failures else "ok"
