"""The invariants a run checks. While a run goes on, after every step:

* ``eni_on_two_instances``: an ENI listed on two instances, or an instance with two pool ENIs;
* ``pool_eni_left_on_terminated_instance``: an instance terminated by its group still carried
  a pool ENI, which only EC2 then released (an instance terminated through EC2 by hand is
  exempt: no hook ran for it);
* ``lifecycle_action_timed_out``: an action ended by its heartbeat or global timeout instead
  of a CompleteLifecycleAction;
* ``pool_eni_at_wrong_device_index``: a pool ENI attached at another index than its group's
  hooks ask for (their ``deviceIndex``, else the stack's ``DeviceIndex``).

Once the run settles and the reconciler has had its round:

* ``in_service_without_one_pool_eni``: every InService instance of every group carries
  exactly one pool ENI;
* ``warm_instance_against_policy``: a warm instance at rest holds one pool ENI under
  ``WarmPoolEni=KEEP`` (or none, if it was never pinned or the run took its ENI by hand: its
  way out pins it), none under ``RELEASE``;
* ``lifecycle_action_pending``: no action still waits (nor did the sandbox fail to settle);
* ``failed_without_named_error``: every FAILED or TIMED_OUT execution ends in an error the
  state machines name (an enipin error or an AWS error a Retry or Catch names), not a crash.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from typing import Any

from enipin.deployment import aws_errors
from enipin.errors import OperatorError
from enipin.reconcile import needs_a_person, run_round
from enipin_lab.chaos.observer import _holder, _Observer
from enipin_lab.chaos.results import Violation

INVARIANTS = (
    "eni_on_two_instances",
    "pool_eni_left_on_terminated_instance",
    "lifecycle_action_timed_out",
    "pool_eni_at_wrong_device_index",
    "in_service_without_one_pool_eni",
    "warm_instance_against_policy",
    "lifecycle_action_pending",
    "failed_without_named_error",
    "run_crashed",  # the run itself raised: a call AWS refused, or a bug here
)
SETTLE_TIMEOUT = 2400.0
GENERIC_ERRORS = frozenset({"States.ALL", "States.TaskFailed", "States.Runtime"})
WARM_AT_REST = frozenset({"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"})


class _Invariants(_Observer):
    """Settles the run (with the reconciler's round) and checks what must hold."""

    # -- settling and checking ---------------------------------------------------------------

    def converge(self) -> None:
        """Quiet, then a reconciler round (as its schedule would run one), then quiet again;
        a storm guard the run tripped is released first, as the operator would once it ends."""
        if self.settle() and (released := self.release_storm_guard()):
            self.notes.append("at the end: " + released)
        for _ in range(2):
            if not self.settle():
                return
            self.notes.append("reconcile: " + self.reconcile())
        self.settle()
        refreshes = self.asg.describe_instance_refreshes(AutoScalingGroupName=self.sb.group_name)
        for refresh in refreshes["InstanceRefreshes"]:
            reason = f": {refresh['StatusReason']}" if refresh.get("StatusReason") else ""
            self.notes.append(f"instance refresh {refresh['Status']}{reason}")

    def reconcile(self) -> str:
        """A round of the deployed reconciler, as ``enipin reconcile`` runs one."""
        try:
            with aws_errors():
                result = run_round(self._deployment(), dry_run=False)
        except OperatorError as exc:
            return f"error: {exc}"
        return "needs a person" if needs_a_person(result) else "ok"

    def settle(self) -> bool:
        from enipin_lab.sandbox import SettleTimeout

        try:
            self.sb.settle(timeout=SETTLE_TIMEOUT, quiet=30.0)
        except SettleTimeout:
            pending = self.sb.autoscaling.pending_actions()
            self.flag(
                "lifecycle_action_pending",
                None,
                f"the sandbox did not settle in {SETTLE_TIMEOUT:.0f} s: "
                f"{len(pending)} actions pending, {self.sb.running_executions()} runs",
            )
            return False
        return True

    def check_always(self, step: int | None) -> None:
        pool = self.pool()  # one look serves every check of this moment
        self._check_enis_single(step, pool)
        self._check_released_before_termination(step)
        self._check_actions_completed(step)
        self._check_device_index(step, pool)

    def _check_device_index(self, step: int | None, pool: list[dict[str, Any]]) -> None:
        for eni in pool:
            index = (eni.get("Attachment") or {}).get("DeviceIndex")
            if index is not None and index != self.shape.device_index:
                self.flag(
                    "pool_eni_at_wrong_device_index",
                    step,
                    f"{eni['NetworkInterfaceId']} at {index} on {_holder(eni)}, "
                    f"the hooks ask for {self.shape.device_index}",
                )

    def _check_enis_single(self, step: int | None, pool: list[dict[str, Any]]) -> None:
        holders: dict[str, list[str]] = {}
        for instance in self.instances():
            for nic in instance.get("NetworkInterfaces", []):
                holders.setdefault(nic["NetworkInterfaceId"], []).append(instance["InstanceId"])
        for eni_id, instances in holders.items():
            if len(instances) > 1:
                self.flag("eni_on_two_instances", step, f"{eni_id} on {sorted(instances)}")
        on: Counter[str] = Counter(h for e in pool if (h := _holder(e)))
        for instance_id, count in on.items():
            if count > 1:
                self.flag("eni_on_two_instances", step, f"{instance_id} has {count} pool ENIs")

    def _check_released_before_termination(self, step: int | None) -> None:
        for left in self.sb.ec2.left_on_termination:
            if left["eni_id"] in self.pool_ids and left["instance_id"] not in self.by_hand:
                self.flag(
                    "pool_eni_left_on_terminated_instance",
                    step,
                    f"{left['eni_id']} on {left['instance_id']}",
                )

    def _check_actions_completed(self, step: int | None) -> None:
        for action in self.sb.autoscaling.ended_actions():
            if self.sb.autoscaling.timed_out(action):
                self.flag(
                    "lifecycle_action_timed_out",
                    step,
                    f"{action['transition'].split('_')[-1].lower()} of "
                    f"{action['instance_id']}: {action['how']}, {action['result']} applied",
                )

    def check_converged(self) -> None:
        states = self.members(self.groups())
        on: Counter[str] = Counter(h for e in self.pool() if (h := _holder(e)))
        for instance_id, state in sorted(states.items()):
            if state == "InService" and on[instance_id] != 1:
                self.flag(
                    "in_service_without_one_pool_eni",
                    None,
                    f"{instance_id} has {on[instance_id]}",
                )
        held = 1 if self.shape.warm_pool == "KEEP" else 0
        pinned_once = self._attached_to()
        for instance_id, state in sorted(self.warm().items()):
            # Nothing to keep for an instance never pinned (scaled back before its attach) or
            # whose ENI the run took by hand: its launch out of the pool pins it
            nothing_to_keep = instance_id in self.eni_by_hand or instance_id not in pinned_once
            allowed = {held, 0} if nothing_to_keep else {held}
            if state in WARM_AT_REST and on[instance_id] not in allowed:
                self.flag(
                    "warm_instance_against_policy",
                    None,
                    f"{instance_id} ({state}) has {on[instance_id]} under {self.shape.warm_pool}",
                )
        for action in self.sb.autoscaling.pending_actions():
            self.flag(
                "lifecycle_action_pending",
                None,
                f"{action['instance_id']} {action['transition']} since {action['started']:.0f} s",
            )
        named = self._named_errors()
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            for execution in self.sb.executions(machine):
                if execution["status"] not in ("FAILED", "TIMED_OUT"):
                    continue
                found = self.sfn.describe_execution(executionArn=execution["executionArn"])
                if found.get("error") not in named:
                    cause = str(found.get("cause") or "")[:300]
                    detail = f"{execution['name']}: {found.get('error')}: {cause}"
                    self.flag("failed_without_named_error", None, detail)

    def _attached_to(self) -> set[str]:
        """Instances some pool ENI was attached to, from the ledger's successful attaches."""
        return {
            instance_id
            for call in self.sb.ledger.calls
            if call.operation == "AttachNetworkInterface" and call.outcome == "ok"
            for instance_id in call.params.get("InstanceId", [])
        }

    def _named_errors(self) -> set[str]:
        """enipin's error catalogue, and every error a Retry or Catch of the deployed state
        machines names (AWS's own, such as Lambda.TooManyRequestsException)."""
        names = _catalogue()
        for machine in ("LaunchStateMachine", "TerminateStateMachine"):
            definition = json.loads(
                self.sfn.describe_state_machine(stateMachineArn=self.sb.state_machine_arn(machine))[
                    "definition"
                ]
            )
            for state in definition["States"].values():
                for rule in state.get("Retry", []) + state.get("Catch", []):
                    names.update(rule["ErrorEquals"])
        return names - GENERIC_ERRORS

    def flag(self, invariant: str, step: int | None, detail: str) -> None:
        if (invariant, detail) not in self.seen:
            self.seen.add((invariant, detail))
            self.violations.append(Violation(invariant, step, detail))


def _catalogue() -> set[str]:
    """The names in ``ALL_ERRORS`` of the functions' error module (it imports nothing)."""
    from enipin_lab.sandbox import PROJECT_ROOT

    path = PROJECT_ROOT / "tasks" / "enipin_core" / "errors.py"
    spec = importlib.util.spec_from_file_location("enipin_errors_catalogue", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {error.__name__ for error in module.ALL_ERRORS}
