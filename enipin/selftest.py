"""``enipin selftest``: prove a deployment in its own account, on a throwaway group.

It makes the stack's selftest group (``SelftestGroupName``) with two of the smallest instances
and a pool of two ENIs, scales it out and checks every pin (the workflow's verification, and
its own SSM run of the stack's document in the guest), forces one launch to fail and watches
the cleanup, scales in and checks the release, then tears everything down, also on Ctrl-C or
failure, and says what it cost at list prices.

Everything it makes carries the tag ``enipin:selftest`` = the stack's name, so a run killed
before its teardown leaves only tagged things, which the next run (or ``--cleanup``) removes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from enipin.deployment import Deployment
from enipin.errors import OperatorError
from enipin.executions import Execution, history, list_executions
from enipin.pool import Subnet, create_pool_eni, find_subnet
from enipin_core.pool import Eni, pool_enis_on
from enipin_core.stormguard import FAILED_PREFIX, TRIPPED_KEY

TAG = "enipin:selftest"  # value: the stack's name
ENIS = 2
STOCK_IMAGE = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEFAULT_TYPE = "t3.micro"
# On-demand Linux list prices, USD per hour, us-east-1 (aws.amazon.com/ec2/pricing/on-demand,
# read 2026-11); billed per second with a 60 s minimum per instance.
HOURLY = {"t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3a.micro": 0.0094}
TRANSITION_PRICE = 0.025 / 1000  # Step Functions Standard, per state transition
# A launch that fails the same way everywhere: the hook's metadata (which the workflow
# validates like any other) points it at a pool no ENI belongs to, with no wait for one.
EMPTY_POOL = "enipin-selftest-no-such-pool"
FAILING_METADATA = {"poolTagValue": EMPTY_POOL, "poolWaitSeconds": 0}


class SelftestFailed(OperatorError):
    """A check failed: the deployment does not do what it should here."""

    exit_code = 1


@dataclass(frozen=True)
class Plan:
    subnet: str
    launch_template: str | None = None  # the user's; else one made from the stock image
    image_id: str | None = None
    instance_type: str = DEFAULT_TYPE
    instance_profile: str | None = None
    timeout: float = 1200.0  # seconds each phase may take


@dataclass
class Made:
    """What a run made, as found by its tag."""

    group: str | None = None
    instances: list[str] = field(default_factory=list)
    enis: list[str] = field(default_factory=list)
    launch_templates: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.group or self.instances or self.enis or self.launch_templates)

    def describe(self) -> str:
        parts = [f"group {self.group}"] if self.group else []
        parts += [f"{len(self.instances)} instance(s)"] if self.instances else []
        parts += [f"ENIs {', '.join(self.enis)}"] if self.enis else []
        parts += [f"launch template {n}" for n in self.launch_templates]
        return "; ".join(parts) or "nothing"


Say = Callable[[str], None]


def selftest_group(dep: Deployment) -> str:
    if "SelftestGroupName" not in dep.outputs:
        raise OperatorError(
            f"stack {dep.stack} has no selftest group: deploy it with "
            "SelftestGroupName=enipin-selftest (a group the selftest creates and deletes)"
        )
    return dep.outputs["SelftestGroupName"]


# -- leftovers -------------------------------------------------------------------------------


def find_made(dep: Deployment) -> Made:
    """Everything carrying this stack's selftest tag (instances not yet terminated)."""
    ec2, autoscaling = dep.client("ec2"), dep.client("autoscaling")
    made = Made()
    group = selftest_group(dep)
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    for raw in found["AutoScalingGroups"]:
        if any(t["Key"] == TAG and t["Value"] == dep.stack for t in raw.get("Tags", [])):
            made.group = raw["AutoScalingGroupName"]
        else:
            raise OperatorError(f"group {group} exists and is not the selftest's: rename one")
    live = ["pending", "running", "stopping", "stopped", "shutting-down"]
    made.instances = [i["InstanceId"] for i in _tagged_instances(ec2, dep.stack, live)]
    made.enis = [e.id for e in _tagged_enis(ec2, dep.stack)]
    templates = ec2.describe_launch_templates(Filters=_mine(dep.stack))["LaunchTemplates"]
    made.launch_templates = [t["LaunchTemplateName"] for t in templates]
    return made


def remove(dep: Deployment, made: Made, say: Say, timeout: float = 900.0) -> None:
    """Delete what the selftest made: the group (and its instances) first, then the ENIs once
    EC2 has let them go, then the launch templates."""
    ec2, autoscaling = dep.client("ec2"), dep.client("autoscaling")
    if made.group:
        say(f"deleting group {made.group} and its instances")
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=made.group, ForceDelete=True)
    if made.instances:
        ec2.terminate_instances(InstanceIds=made.instances)
    deadline = time.monotonic() + timeout
    for eni in made.enis:
        holder = _foreign_holder(ec2, dep.stack, eni)
        if holder:  # a production launch took it from the pool: it is that instance's now
            say(f"left {eni} on {holder} (not the selftest's); --cleanup deletes it once free")
            continue
        _delete_eni(ec2, eni, deadline)
    for name in made.launch_templates:
        ec2.delete_launch_template(LaunchTemplateName=name)
    if made:
        say(f"removed: {made.describe()}")


def _mine(stack: str) -> list[dict[str, Any]]:
    """The filter that finds what the selftest of ``stack`` made."""
    return [{"Name": f"tag:{TAG}", "Values": [stack]}]


def _tagged_instances(
    ec2: Any, stack: str, states: list[str] | None = None
) -> list[dict[str, Any]]:
    """The selftest's instances (in ``states``, else terminated ones too), every page."""
    filters = _mine(stack) + ([{"Name": "instance-state-name", "Values": states}] if states else [])
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


def _tagged_enis(ec2: Any, stack: str) -> list[Eni]:
    pages = ec2.get_paginator("describe_network_interfaces").paginate(Filters=_mine(stack))
    return [Eni.from_api(e) for p in pages for e in p["NetworkInterfaces"]]


def _is_ours(ec2: Any, stack: str, instance_id: str) -> bool:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    tags = {
        t["Key"]: t["Value"]
        for r in reservations
        for i in r["Instances"]
        for t in i.get("Tags", [])
    }
    return tags.get(TAG) == stack


def _foreign_holder(ec2: Any, stack: str, eni: str) -> str | None:
    """The instance holding ``eni``, if it is not one of the selftest's."""
    try:
        (found,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    except ClientError:
        return None  # gone already
    holder = Eni.from_api(found).instance_id
    return holder if holder and not _is_ours(ec2, stack, holder) else None


def _delete_eni(ec2: Any, eni: str, deadline: float) -> None:
    """An ENI on a terminating instance is freed by EC2 in a while: wait for it, then delete."""
    for pause in _pauses(deadline):
        try:
            ec2.delete_network_interface(NetworkInterfaceId=eni)
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidNetworkInterfaceID.NotFound":
                return
            if code != "InvalidNetworkInterface.InUse":
                raise
        time.sleep(pause)
    raise OperatorError(f"{eni} still in use: delete it once its instance is gone ({TAG} tag)")


def _pauses(deadline: float) -> Iterator[float]:
    """Polls a second apart at first, then up to 10 s, until the deadline."""
    pause = 1.0
    while time.monotonic() < deadline:
        yield pause
        pause = min(pause * 1.5, 10.0)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    saw: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    cost: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class Selftest:
    """One run: ``run()`` makes, checks and tears down; ``say`` gets each step's progress."""

    def __init__(self, dep: Deployment, plan: Plan, say: Say) -> None:
        self.dep, self.plan, self.say = dep, plan, say
        self.group = selftest_group(dep)
        self.ec2 = dep.client("ec2")
        self.autoscaling = dep.client("autoscaling")
        self.started = datetime.now(UTC)
        self.report = Report()
        self._t0 = time.monotonic()

    def progress(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self._t0:5.0f} s] {text}")

    def run(self) -> Report:
        leftovers = find_made(self.dep)
        if leftovers:
            self.progress(f"an earlier run left: {leftovers.describe()}")
            remove(self.dep, leftovers, self.progress, self.plan.timeout)
        try:
            self._make()
            self._scale_out_and_check()
            self._force_a_failure()
            self._scale_in_and_check()
        finally:
            self.progress("tearing down")
            try:  # before the group's records go with it; never in the teardown's way
                self.report.cost = self._cost()
            except (ClientError, BotoCoreError) as exc:
                self.report.cost = f"unknown ({exc})"
            remove(self.dep, find_made(self.dep), self.progress, self.plan.timeout)
        return self.report

    # -- making ----------------------------------------------------------------------------

    def _make(self) -> None:
        subnet = find_subnet(self.ec2, self.plan.subnet)
        if subnet is None:
            raise OperatorError(f"subnet {self.plan.subnet} not found")
        self.enis = [self._pool_eni(subnet, i) for i in range(ENIS)]
        self.progress(f"pool of {ENIS} ENIs in {subnet.az}: {', '.join(self.enis)}")
        template = self._launch_template()
        # the output renders the stack's Number parameter as a string; the API wants an int
        hooks = [
            {**hook, "HeartbeatTimeout": int(hook["HeartbeatTimeout"])}
            for hook in json.loads(self.dep.output("LifecycleHookSpecificationList"))
        ]
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=self.group,
            LaunchTemplate=template,
            MinSize=0,
            MaxSize=ENIS + 1,
            DesiredCapacity=0,
            VPCZoneIdentifier=subnet.id,
            LifecycleHookSpecificationList=hooks,
            Tags=[{"Key": TAG, "Value": self.dep.stack, "PropagateAtLaunch": True}],
        )
        self.progress(f"group {self.group} created, with the stack's hooks")

    def _pool_eni(self, subnet: Subnet, index: int) -> str:
        eni = create_pool_eni(
            self.ec2,
            subnet,
            self.dep.pool_tag,
            f"enipin selftest {index + 1}",
            extra_tags={TAG: self.dep.stack},
        )
        return eni.eni

    def _launch_template(self) -> dict[str, str]:
        if self.plan.launch_template:
            return {"LaunchTemplateName": self.plan.launch_template, "Version": "$Default"}
        if not self.plan.instance_profile:
            raise OperatorError(
                "name --launch-template, or --instance-profile for the stock image (the SSM "
                "Agent needs AmazonSSMManagedInstanceCore)"
            )
        image = (
            self.plan.image_id
            or self.dep.client("ssm").get_parameter(Name=STOCK_IMAGE)["Parameter"]["Value"]
        )
        name = f"{self.group}-lt"
        tags = [{"Key": TAG, "Value": self.dep.stack}]
        self.ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData={
                "ImageId": image,
                "InstanceType": self.plan.instance_type,
                "IamInstanceProfile": {"Name": self.plan.instance_profile},
                "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
            },
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
        )
        self.progress(f"launch template {name}: {image}, {self.plan.instance_type}")
        return {"LaunchTemplateName": name, "Version": "$Latest"}

    # -- the phases ------------------------------------------------------------------------

    def _scale_out_and_check(self) -> None:
        self.progress(f"scaling out to {ENIS}")
        self._set_desired(ENIS)
        members = self._wait_for_members(ENIS)
        for instance_id in members:
            self._check_pinned(instance_id)

    def _force_a_failure(self) -> None:
        self.progress(f"forcing a launch to fail: its hook points at an empty pool ({EMPTY_POOL})")
        launch_hook = self._hooks()["autoscaling:EC2_INSTANCE_LAUNCHING"]
        self._put_hook(launch_hook, FAILING_METADATA)
        before = set(self._members())
        self._set_desired(ENIS + 1)
        failed = self._wait(lambda: self._failed_launch(before), "a launch to be given up")
        self._set_desired(ENIS)  # before the group replaces it, under the failing hook
        self._put_hook(launch_hook, None)
        members = self._wait_for_members(ENIS)
        instance = str(failed.instance)
        left = pool_enis_on(self.ec2, instance, *self.dep.pool_tag)
        # one tag per failure counted, or (at a threshold of 1) the trip that replaced them
        keys = {t["Key"] for t in self._group()["Tags"]}
        counted = FAILED_PREFIX + instance in keys or TRIPPED_KEY in keys
        self._record(
            "a failed launch is given up and cleaned up",
            failed.error == "NoFreeEni" and not left and instance not in members,
            f"{instance}: {failed.error} in {failed.failed_state}, ABANDON; "
            + (f"{left[0].id} still on it" if left else "no ENI left on it"),
        )
        self._record(
            "the storm guard counted it",
            counted,
            f"{FAILED_PREFIX}{instance} or {TRIPPED_KEY} on {self.group}" if counted else "no tag",
        )

    def _scale_in_and_check(self) -> None:
        members = self._members()
        self.progress("scaling in to 0")
        self._set_desired(0)
        self._wait(lambda: not self._members(), "the group to empty")
        self._wait(lambda: self._runs_done(members, "terminate"), "the releases to end")
        runs = self._runs(members, "terminate")
        self._wait(self._enis_let_go, "the ENIs to be free")
        statuses = Counter(r.status for r in runs)
        self._record(
            "released on scale-in",
            set(statuses) == {"SUCCEEDED"} and len(runs) >= len(members),
            f"release runs: {dict(statuses)}; the selftest's ENIs free",
        )

    def _enis_let_go(self) -> bool:
        """Each of the selftest's ENIs free, or taken meanwhile by a production launch (a pool
        ENI like any other)."""
        stack = self.dep.stack
        return all(
            e.status == "available"
            or (e.instance_id is not None and not _is_ours(self.ec2, stack, e.instance_id))
            for e in _tagged_enis(self.ec2, stack)
        )

    # -- checks ----------------------------------------------------------------------------

    def _check_pinned(self, instance_id: str) -> None:
        runs = self._runs([instance_id], "launch")
        succeeded = any(r.status == "SUCCEEDED" for r in runs)
        enis = pool_enis_on(self.ec2, instance_id, *self.dep.pool_tag)
        if not succeeded or len(enis) != 1:
            statuses = ", ".join(r.status for r in runs) or "none"
            self._record(f"{instance_id} pinned", False, f"runs: {statuses}; {len(enis)} ENIs")
            return
        eni = enis[0]
        verdict = self._verify_in_guest(instance_id, eni)
        self._record(
            f"{instance_id} pinned",
            verdict == "Success",
            f"{eni.id} {eni.mac} at index {eni.device_index}; the guest's own check: {verdict}",
        )

    def _verify_in_guest(self, instance_id: str, eni: Eni) -> str:
        """The stack's verification document, run again by the selftest itself."""
        ssm = self.dep.client("ssm")
        command = ssm.send_command(
            DocumentName=self.dep.output("VerifyNicDocumentName"),
            InstanceIds=[instance_id],
            Parameters={
                "MacAddress": [eni.mac],
                "ExpectedIp": [eni.private_ip],
                "Remediate": ["false"],
            },
            Comment="enipin selftest",
        )["Command"]["CommandId"]

        def result() -> str | None:
            try:
                got = ssm.get_command_invocation(CommandId=command, InstanceId=instance_id)
            except ClientError:  # InvocationDoesNotExist: not delivered yet
                return None
            done = got["Status"] not in ("Pending", "InProgress", "Delayed")
            return str(got["Status"]) if done else None

        return str(self._wait(result, f"the check on {instance_id}"))

    def _record(self, name: str, ok: bool, saw: str) -> None:
        self.report.checks.append(Check(name, ok, saw))
        self.progress(f"{'PASS' if ok else 'FAIL'} {name}: {saw}")

    # -- reading AWS -----------------------------------------------------------------

    def _set_desired(self, n: int) -> None:
        self.autoscaling.set_desired_capacity(
            AutoScalingGroupName=self.group, DesiredCapacity=n, HonorCooldown=False
        )

    def _group(self) -> dict[str, Any]:
        found = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])
        return dict(found["AutoScalingGroups"][0])

    def _members(self) -> list[str]:
        return [i["InstanceId"] for i in self._group()["Instances"]]

    def _wait_for_members(self, n: int) -> list[str]:
        """Until the group has ``n`` instances, all in service, and no launch run runs."""

        def ready() -> list[str] | None:
            states = {i["InstanceId"]: i["LifecycleState"] for i in self._group()["Instances"]}
            settled = len(states) == n and set(states.values()) == {"InService"}
            return sorted(states) if settled and self._runs_done(list(states), "launch") else None

        return list(self._wait(ready, f"{n} instances in service"))

    def _hooks(self) -> dict[str, dict[str, Any]]:
        found = self.autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=self.group)
        return {h["LifecycleTransition"]: h for h in found["LifecycleHooks"]}

    def _put_hook(self, hook: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        extra = {"NotificationMetadata": json.dumps(metadata)} if metadata else {}
        self.autoscaling.put_lifecycle_hook(
            AutoScalingGroupName=self.group,
            LifecycleHookName=hook["LifecycleHookName"],
            LifecycleTransition=hook["LifecycleTransition"],
            HeartbeatTimeout=hook["HeartbeatTimeout"],
            DefaultResult=hook["DefaultResult"],
            **extra,
        )

    def _runs(self, instances: list[str], workflow: str) -> list[Execution]:
        since = datetime.now(UTC) - self.started
        every = list_executions(self.dep, None, since)
        return [r for r in every if r.workflow == workflow and r.instance in instances]

    def _runs_done(self, instances: list[str], workflow: str) -> bool:
        runs = self._runs(instances, workflow)
        return {r.instance for r in runs} >= set(instances) and all(
            r.status != "RUNNING" for r in runs
        )

    def _failed_launch(self, before: set[str]) -> Execution | None:
        """A launch run given up for one of the selftest's instances launched since ``before``
        (other groups' failures meanwhile are not ours)."""
        since = datetime.now(UTC) - self.started
        failed = list_executions(self.dep, "FAILED", since)
        ours = {i["InstanceId"] for i in _tagged_instances(self.ec2, self.dep.stack)} - before
        new = (r for r in failed if r.workflow == "launch" and r.instance in ours)
        return next(new, None)

    def _wait(self, probe: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.plan.timeout
        for pause in _pauses(deadline):
            value = probe()
            if value:
                return value
            time.sleep(pause)
        raise SelftestFailed(f"gave up waiting {self.plan.timeout:.0f} s for {what}")

    # -- cost ------------------------------------------------------------------------------

    def _cost(self) -> str:
        """At list prices: instance time (launch to now, 60 s minimum each) and transitions."""
        instances = _tagged_instances(self.ec2, self.dep.stack)
        now = datetime.now(UTC)
        seconds = sum(max(60.0, (now - i["LaunchTime"]).total_seconds()) for i in instances)
        kind = instances[0]["InstanceType"] if instances else self.plan.instance_type
        hourly = HOURLY.get(kind)
        ec2_cost = f"${seconds / 3600 * hourly:.4f}" if hourly else f"unknown ({kind})"
        runs = list_executions(self.dep, None, now - self.started)
        mine = [r for r in runs if r.instance in {i["InstanceId"] for i in instances}]
        transitions = sum(_transitions(self.dep, r) for r in mine)
        return (
            f"EC2 {ec2_cost} ({len(instances)} instances, {seconds / 60:.1f} instance-minutes "
            f"of {kind}); Step Functions ${transitions * TRANSITION_PRICE:.4f} ({transitions} "
            f"transitions in {len(mine)} runs); ENIs, Lambda and Run Command: no charge at "
            "this size (list prices, us-east-1)"
        )


def _transitions(dep: Deployment, run: Execution) -> int:
    events = history(dep.client("stepfunctions"), run.arn)
    return sum(1 for e in events if e["type"].endswith("StateEntered"))
