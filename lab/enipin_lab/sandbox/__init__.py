"""An in-process local AWS, on moto, that deploys ``infra/template.yaml`` and behaves like AWS
where enipin depends on it. While a ``Sandbox`` is open every boto3 client in the process talks
to it::

    with Sandbox(azs=3, pool_per_az=5, fast=True) as sb:
        sb.scale_out(6)
        sb.settle()
        boto3.client("ec2").describe_network_interfaces(...)
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any
from unittest.mock import patch

import boto3
import botocore.loaders
import botocore.session
from moto import mock_aws

from enipin_lab.sandbox.autoscaling import AutoScalingFidelity
from enipin_lab.sandbox.base import REGION
from enipin_lab.sandbox.buckets import RequestBuckets, unmetered
from enipin_lab.sandbox.clock import FAST_SCALE, Clock
from enipin_lab.sandbox.deploy import Deployer, Stack
from enipin_lab.sandbox.ec2 import Ec2Fidelity
from enipin_lab.sandbox.ec2_consistency import Ec2Consistency
from enipin_lab.sandbox.engine import AslClock, AslParseCache
from enipin_lab.sandbox.eventbridge import EventBridgeTargets
from enipin_lab.sandbox.guest import GuestFleet
from enipin_lab.sandbox.lambdas import LambdaRuntime
from enipin_lab.sandbox.ledger import Ledger
from enipin_lab.sandbox.ssm import SsmFidelity
from enipin_lab.sandbox.stepfunctions import StepFunctionsFidelity
from enipin_lab.sandbox.template import load as load_template
from enipin_lab.sandbox.world import World, WorldSpec

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = PROJECT_ROOT / "infra" / "template.yaml"
STACK_NAME = "enipin"


__all__ = ["Sandbox", "SettleTimeout"]


class SettleTimeout(TimeoutError):
    """The sandbox did not come to rest in time: an execution or lifecycle action still runs."""


class Sandbox:
    """Local AWS with the enipin stack deployed into a world of one group and its ENI pool."""

    def __init__(
        self,
        *,
        azs: int = 2,
        pool_per_az: int = 4,
        fast: bool = True,
        time_scale: float | None = None,
        flavour: str = "al2023",
        max_size: int | None = None,
        template: Path = TEMPLATE,
        parameters: dict[str, Any] | None = None,
        deploy: bool = True,
        agent_delay: float = 20.0,
        release_delay: float = 20.0,
        attach_delay: float = 2.0,
        describe_lag: float = 1.0,
        boot_delay: float = 5.0,
        visibility_delay: float = 1.0,
        list_lag: float = 1.0,
        guest_mode: str = "auto",
        buckets: bool = False,
        neighbour: float = 0.0,
    ) -> None:
        self.spec = WorldSpec(azs=azs, pool_per_az=pool_per_az, max_size=max_size or azs * 6)
        # Real seconds per AWS second: the fast clock, real time, or what ``time_scale`` says
        # (above 1: slower than real, so a big simulation keeps up with its own clock).
        self.clock = Clock(time_scale or (FAST_SCALE if fast else 1.0))
        self.ledger = Ledger(clock=self.clock.monotonic)
        # EC2's and Step Functions' request buckets, once the world and stack are built.
        self.buckets = RequestBuckets(self.clock.monotonic, neighbour) if buckets else None
        self.ledger.limiter = self.buckets
        self.lambdas = LambdaRuntime(self.ledger, self.clock)
        self.events = EventBridgeTargets()
        self.ec2 = Ec2Fidelity(
            self.clock,
            release_delay=release_delay,
            attach_delay=attach_delay,
            describe_lag=describe_lag,
        )
        self.ec2_consistency = Ec2Consistency(
            self.clock, boot_delay=boot_delay, visibility_delay=visibility_delay
        )
        self.autoscaling = AutoScalingFidelity(self.clock)
        self.stepfunctions = StepFunctionsFidelity(self.clock, list_lag=list_lag)
        # auto: the SSM document's own script on real Linux interfaces where the machine allows
        # it (root, iproute2), else the guest model; sb.guests.mode says which.
        self.guests = GuestFleet(self.clock, flavour=flavour, mode=guest_mode)  # type: ignore[arg-type]
        self.ssm = SsmFidelity(self.clock, self.guests, agent_delay=agent_delay)
        self.template = template
        self.parameters = parameters or {}
        self._deploy = deploy
        self.world = World(self.spec)
        self.stack: Stack | None = None
        self._exit = ExitStack()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        try:
            self._open()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()

    def _open(self) -> None:
        stack = self._exit
        stack.callback(self.clock.close)
        _quiet_engine_logs(stack)
        # moto's ~2,600 default AMIs cost time on every start; the world registers its own.
        stack.enter_context(patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}))
        stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
        # Every boto3 session builds its own loader and re-reads botocore's service models, a
        # tenth of a second or more per client: one loader per process does the same reads once.
        stack.enter_context(patch.object(botocore.session, "create_loader", _shared_loader))
        for adaptation in (
            self.ledger,
            self.lambdas,
            AslClock(self.clock),
            AslParseCache(),
            self.stepfunctions,
            self.events,
            self.ec2,
            self.ec2_consistency,
            self.autoscaling,
            self.ssm,
        ):
            adaptation.install(stack)
        stack.callback(self._stop_executions)  # first thing on close, while moto still runs
        self.world.build()
        if self._deploy:
            self.stack = self.deploy(self.template, self.parameters)
        if self.buckets is not None:
            self.buckets.start()

    def deploy(self, template: Path, parameters: dict[str, Any] | None = None) -> Stack:
        # The template's own defaults (HookHeartbeatTimeout 300 among them): a scenario that
        # needs another value sets it, and says why.
        world = {"GroupName": self.spec.group_name}
        declared = load_template(template).get("Parameters", {})
        params = {k: v for k, v in world.items() if k in declared} | (parameters or {})
        stack = Deployer(self.lambdas).deploy(template, STACK_NAME, params)
        # What a deploy builds lives as long as the sandbox. A full garbage collection walks it
        # all (~0.7 s here, 35 AWS seconds on the fast clock: more than some hook timeouts), so
        # keep collections off it while the scenario runs; closing the sandbox lets them back.
        gc.freeze()
        self._exit.callback(gc.unfreeze)
        return stack

    def run_schedules(self) -> None:
        """From now on fire the stack's scheduled rules (the reconciler's, the pool metrics')
        as EventBridge would: off by default, so that a scenario decides when they run."""
        assert self.stack is not None, "nothing deployed"
        for rule, expression in self.stack.schedules.items():
            self.events.schedule(self.clock, rule, expression, self.stack.schedule_targets[rule])

    # -- driving the group -------------------------------------------------------------------

    @property
    def group_name(self) -> str:
        return self.spec.group_name

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def desired(self) -> int:
        group = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.group_name]
        )["AutoScalingGroups"][0]
        return int(group["DesiredCapacity"])

    def scale_to(self, capacity: int) -> None:
        self.client("autoscaling").set_desired_capacity(
            AutoScalingGroupName=self.group_name, DesiredCapacity=capacity, HonorCooldown=False
        )

    def scale_out(self, n: int) -> None:
        self.scale_to(self.desired() + n)

    def scale_in(self, n: int) -> None:
        self.scale_to(max(self.desired() - n, 0))

    # -- observing -----------------------------------------------------------------------------

    def state_machine_arn(self, logical_id: str = "LaunchStateMachine") -> str:
        assert self.stack is not None, "nothing deployed"
        return self.stack.arn(logical_id)

    def executions(self, logical_id: str = "LaunchStateMachine") -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.state_machine_arn(logical_id)
        )
        return [e for page in pages for e in page["executions"]]

    def running_executions(self) -> int:
        if self.stack is None:
            return 0
        machines = [k for k, v in self.stack.types.items() if v.endswith("StateMachine")]
        return sum(1 for m in machines for e in self.executions(m) if e["status"] == "RUNNING")

    def busy(self) -> bool:
        with unmetered():  # the harness looking: no token from the account's buckets
            return bool(
                self.running_executions() or not self.autoscaling.settled() or self.events.busy()
            )

    def settle(self, timeout: float = 3600.0, quiet: float = 30.0) -> None:
        """Return once no execution runs and no lifecycle action is pending, for ``quiet``
        AWS seconds in a row; ``timeout`` is in AWS seconds too."""
        deadline = self.clock.monotonic() + timeout
        calm_since: float | None = None
        while self.clock.monotonic() < deadline:
            if self.busy():
                calm_since = None
            elif calm_since is None:
                calm_since = self.clock.monotonic()
            elif self.clock.monotonic() - calm_since >= quiet:
                return
            time.sleep(0.02)
        raise SettleTimeout(f"still busy after {timeout:.0f} AWS seconds")

    def _stop_executions(self) -> None:
        """Closing the sandbox ends what still runs, as deleting a stack would."""
        if self.stack is None:
            return
        sfn = self.client("stepfunctions")
        for logical, kind in self.stack.types.items():
            if kind.endswith("StateMachine"):
                for execution in self.executions(logical):
                    if execution["status"] == "RUNNING":
                        _stop(sfn, execution["executionArn"])
        time.sleep(0.05)


def _stop(sfn: Any, execution_arn: str, attempts: int = 50) -> None:
    """moto cannot stop an execution whose worker has not set up yet: give it a moment."""
    for _ in range(attempts - 1):
        try:
            sfn.stop_execution(executionArn=execution_arn)
            return
        except AttributeError:
            time.sleep(0.02)
    sfn.stop_execution(executionArn=execution_arn)


def _quiet_engine_logs(stack: ExitStack) -> None:
    """moto's interpreter logs every failed state at ERROR; the history already says it."""
    for name in ("moto.stepfunctions.parser", "moto"):
        log = logging.getLogger(name)
        previous = log.level
        log.setLevel(logging.CRITICAL)
        stack.callback(log.setLevel, previous)


@functools.lru_cache(maxsize=4)
def _shared_loader(search_paths_string: str | None = None) -> botocore.loaders.Loader:
    """botocore's ``create_loader``, one per search path for the process: its models are only
    read, so sessions may share them."""
    return botocore.loaders.create_loader(search_paths_string)
