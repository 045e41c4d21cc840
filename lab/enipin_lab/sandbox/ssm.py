"""SSM Run Command as AWS runs it, put back into moto: agents that register after boot, each of
its own version, commands sent only where asked, invocations that appear late and finish with the
real output of the stack's ENI verification document run on the guest (its own script in the
instance's network namespace, or the guest model), its parameters delivered as that agent
version delivers them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from unittest import mock

from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ssm.exceptions import InvalidFilterKey, SSMException
from moto.ssm.models import Command, SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse

from enipin_lab.sandbox.clock import Clock
from enipin_lab.sandbox.guest import GuestFleet
from enipin_lab.sandbox.netns import document_script

# A Command document with these parameters is the stack's verification document, whatever its name.
VERIFICATION_PARAMETERS = frozenset({"MacAddress", "ExpectedIp", "Remediate"})
# interpolationType ENV_VAR sets SSM_<name> only on SSM Agent 3.3.2746.0 and later; older agents
# ignore it. https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-troubleshooting.html
ENV_VAR_SINCE = "3.3.2746.0"
# The agent a current AL2023 AMI ships: a recent 3.3 release (3.3.3572.0, December 2025, the one
# that also fixed ENV_VAR with Parameter Store values; the exact version varies by AMI release:
# `rpm -q amazon-ssm-agent`). The model takes it for the latest release too (IsLatestVersion).
DEFAULT_AGENT_VERSION = "3.3.3572.0"
LATEST_AGENT_VERSION = DEFAULT_AGENT_VERSION
_VERSION = re.compile(r"^\d+(\.\d+){3}$")
PAGE_SIZE = 50  # DescribeInstanceInformation and ListCommandInvocations maximum
SCRIPT_RUNNERS = 8  # agents running scripts at once, off the clock's one scheduler thread
PLATFORMS = {
    "al2": ("Amazon Linux", "2"),
    "al2023": ("Amazon Linux", "2023"),
    "ubuntu": ("Ubuntu", "22.04"),
}
# DescribeInstanceInformation filter key -> InstanceInformation field
FILTER_FIELDS = {
    "InstanceIds": "InstanceId",
    "PingStatus": "PingStatus",
    "PlatformTypes": "PlatformType",
    "ResourceType": "ResourceType",
    "AgentVersion": "AgentVersion",
}


class InvalidInstanceId(SSMException):
    code = "InvalidInstanceId"


class InvalidParameters(SSMException):
    code = "InvalidParameters"


class InvocationDoesNotExist(SSMException):
    code = "InvocationDoesNotExist"


class InvalidNextToken(SSMException):
    code = "InvalidNextToken"


@dataclass
class _Agent:
    boot: int
    last_ping: datetime


@dataclass(frozen=True)
class Delivery:
    """What an SSM agent hands the shell for a document's aws:runShellScript step: the script
    file's text, parameter references replaced, and the ``SSM_<name>`` variables it sets."""

    script: str | None
    env: dict[str, str]


@dataclass(frozen=True)
class _Outcome:
    status: str
    details: str
    code: int
    stdout: str
    stderr: str


@dataclass
class _Invocation:
    command_id: str
    instance_id: str
    document_name: str
    plugin_name: str
    comment: str
    parameters: dict[str, list[str]]
    document: dict[str, Any]  # the Command document's content (the default version)
    sent_at: float  # clock.monotonic() at SendCommand
    requested: datetime
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    outcome: _Outcome | None = None


@dataclass(frozen=True)
class _View:
    """An invocation as seen at one moment."""

    command_id: str
    instance_id: str
    comment: str
    document_name: str
    plugin_name: str
    requested: datetime
    started: datetime
    ended: datetime | None
    elapsed: float
    status: str
    details: str
    code: int
    stdout: str
    stderr: str


class SsmFidelity:
    """SSM agents, SendCommand targeting and validation, and invocation timing (an Adaptation)."""

    def __init__(
        self,
        clock: Clock,
        guests: GuestFleet,
        *,
        agent_delay: float = 20.0,
        invocation_lag: float = 1.0,
        run_time: float = 2.0,
        agent_version: str = DEFAULT_AGENT_VERSION,
    ) -> None:
        self._clock = clock
        self._guests = guests
        self._default_version = _checked_version(agent_version)
        self._versions: dict[str, str] = {}  # instance id -> its agent's version, once known
        self.agent_delay = agent_delay
        self.invocation_lag = invocation_lag
        self.run_time = run_time
        self._lock = threading.Lock()
        self._agents: dict[str, _Agent] = {}
        self._invocations: dict[str, dict[str, _Invocation]] = {}  # command id -> instance id ->
        self._runners: ThreadPoolExecutor | None = None
        guests.on_boot(self._on_boot)

    def install(self, stack: ExitStack) -> None:
        self._guests.install(stack)
        # A script in a namespace takes real milliseconds: run it on a worker, never on the
        # clock's thread, whose other timers would fire late. Closed before the guests are.
        self._runners = ThreadPoolExecutor(SCRIPT_RUNNERS, thread_name_prefix="ssm-agent")
        stack.callback(self._runners.shutdown, wait=True, cancel_futures=True)
        fidelity = self
        send = SimpleSystemManagerBackend.send_command
        get = SimpleSystemManagerBackend.get_command_invocation
        response_object = Command.response_object

        def send_command(backend: SimpleSystemManagerBackend, **kwargs: Any) -> Command:
            return fidelity._send_command(backend, send, kwargs)

        def get_command_invocation(
            backend: SimpleSystemManagerBackend,
            command_id: str,
            instance_id: str,
            plugin_name: str | None,
        ) -> dict[str, Any]:
            found = fidelity._get_invocation(command_id, instance_id, plugin_name)
            if found is None:  # not a modelled command: moto's answer
                found = get(backend, command_id, instance_id, plugin_name)
            return found

        def targets(command: Command) -> list[str]:
            return fidelity._resolve_targets(command)

        def command_object(command: Command) -> dict[str, Any]:
            return fidelity._command_status(command, response_object(command))

        def describe_instance_information(response: SimpleSystemManagerResponse) -> ActionResult:
            return ActionResult(fidelity._describe_instance_information(response))

        def list_command_invocations(response: SimpleSystemManagerResponse) -> ActionResult:
            return ActionResult(fidelity._list_command_invocations(response))

        backend_patches: dict[str, Callable[..., Any]] = {
            "send_command": send_command,
            "get_command_invocation": get_command_invocation,
        }
        for name, fn in backend_patches.items():
            stack.enter_context(mock.patch.object(SimpleSystemManagerBackend, name, fn))
        stack.enter_context(mock.patch.object(Command, "_get_instance_ids_from_targets", targets))
        stack.enter_context(mock.patch.object(Command, "response_object", command_object))
        # Actions moto lacks: its dispatcher calls any function found on the response class.
        for name, fn in (
            ("describe_instance_information", describe_instance_information),
            ("list_command_invocations", list_command_invocations),
        ):
            stack.enter_context(
                mock.patch.object(SimpleSystemManagerResponse, name, fn, create=True)
            )

    # -- agents --------------------------------------------------------------------------------

    def set_default_agent_version(self, version: str) -> None:
        """The SSM Agent version of instances launched from now on (their AMI's agent);
        instances launched before, or given their own version, keep theirs."""
        with self._lock:
            self._default_version = _checked_version(version)

    def set_agent_version(self, instance_id: str, version: str) -> None:
        """This instance's agent is ``version`` from now on (as after AWS-UpdateSSMAgent), or
        will be when it registers."""
        version = _checked_version(version)
        with self._lock:
            self._versions[instance_id] = version

    def agent_version(self, instance_id: str) -> str:
        """The version this instance's agent has, or will have when it registers."""
        with self._lock:
            return self._versions.get(instance_id, self._default_version)

    def ping_status(self, instance_id: str) -> str | None:
        """``Online``/``ConnectionLost`` once the agent has registered, else None."""
        with self._lock:
            agent = self._agents.get(instance_id)
        if agent is None:
            return None
        online = (
            agent.boot == self._guests.boot_number(instance_id)
            and self._guests.is_running(instance_id)
            and not self._guests.has_fault(instance_id, "agent_absent")
        )
        if not online:
            return "ConnectionLost"
        with self._lock:
            agent.last_ping = self._clock.now()
        return "Online"

    def restart_agent(self, instance_id: str) -> None:
        """What an operator does after fixing a broken agent: it registers again, as at boot."""
        self._on_boot(instance_id, self._guests.boot_number(instance_id))

    def _on_boot(self, instance_id: str, boot: int) -> None:
        with self._lock:  # the AMI's agent, from the first boot on
            self._versions.setdefault(instance_id, self._default_version)
        self._clock.call_later(self.agent_delay, partial(self._register, instance_id, boot))

    def _register(self, instance_id: str, boot: int) -> None:
        still_up = self._guests.boot_number(instance_id) == boot and self._guests.is_running(
            instance_id
        )
        if still_up and not self._guests.has_fault(instance_id, "agent_absent"):
            with self._lock:
                self._agents[instance_id] = _Agent(boot, self._clock.now())

    def _online(self, instance_id: str) -> bool:
        return self.ping_status(instance_id) == "Online"

    def _describe_instance_information(
        self, response: SimpleSystemManagerResponse
    ) -> dict[str, Any]:
        conditions = _filter_conditions(
            response._get_param("InstanceInformationFilterList") or [],
            response._get_param("Filters") or [],
        )
        here = (response.current_account, response.region)
        with self._lock:
            ids = (
                sorted(self._agents)
                if here == (self._guests.account_id, self._guests.region)
                else []
            )
        asked = [set(values) for field, values in conditions if field == "InstanceId"]
        ids = [i for i in ids if all(i in values for values in asked)]  # before the look-ups
        infos = [info for info in map(self._information, ids) if info is not None]
        infos = [i for i in infos if all(i[f] in values for f, values in conditions)]
        page, token = _page(infos, response)
        return {"InstanceInformationList": page, **({"NextToken": token} if token else {})}

    def _information(self, instance_id: str) -> dict[str, Any] | None:
        status = self.ping_status(instance_id)
        instance = self._guests.instance(instance_id)
        if status is None or instance is None:
            return None
        with self._lock:
            last_ping = self._agents[instance_id].last_ping
        agent_version = self.agent_version(instance_id)
        name, version = PLATFORMS[self._guests.guest(instance_id).flavour]
        return {
            "InstanceId": instance_id,
            "PingStatus": status,
            "LastPingDateTime": last_ping,
            "AgentVersion": agent_version,
            "IsLatestVersion": _at_least(agent_version, LATEST_AGENT_VERSION),
            "PlatformType": "Linux",
            "PlatformName": name,
            "PlatformVersion": version,
            "ResourceType": "EC2Instance",
            "IPAddress": instance.private_ip,
            "ComputerName": instance.private_dns_name,
            "SourceId": instance_id,
            "SourceType": "AWS::EC2::Instance",
        }

    # -- SendCommand ---------------------------------------------------------------------------

    def _send_command(
        self,
        backend: SimpleSystemManagerBackend,
        send: Callable[..., Command],
        kwargs: dict[str, Any],
    ) -> Command:
        document = _stored_command_document(backend, kwargs.get("document_name"))
        parameters: dict[str, list[str]] = kwargs.get("parameters") or {}
        if document is not None:
            parameters = _validated_parameters(document, parameters)
        offline = [i for i in kwargs.get("instance_ids") or [] if not self._online(i)]
        if offline:
            raise InvalidInstanceId(
                f"Instances [[{', '.join(offline)}]] not in a valid state "
                f"for account {backend.account_id}"
            )
        command = send(backend, **kwargs)
        if document is not None and _is_verification(document):
            self._track(command, _plugin_name(document), parameters, document)
        return command

    def _resolve_targets(self, command: Command) -> list[str]:
        """moto resolves an empty target list to every instance in the Region: AWS to none."""
        ids: list[str] = []
        filters: dict[str, list[str]] = {}
        for target in command.targets:
            if target["Key"] == "InstanceIds":
                ids.extend(target["Values"])
            else:
                filters[target["Key"]] = target["Values"]
        if filters:
            ec2 = ec2_backends[command.account_id][command.backend_region]
            for reservation in ec2.all_reservations(filters=filters):
                ids.extend(instance.id for instance in reservation.instances)
        # Targets resolve to managed nodes only; instances without an online agent drop out.
        return [i for i in ids if self._online(i)]

    def _track(
        self,
        command: Command,
        plugin: str,
        parameters: dict[str, list[str]],
        document: dict[str, Any],
    ) -> None:
        sent_at, requested = self._clock.monotonic(), self._clock.now()
        invocations = {
            instance_id: _Invocation(
                command_id=command.command_id,
                instance_id=instance_id,
                document_name=str(command.document_name),
                plugin_name=plugin,
                comment=command.comment,
                parameters=parameters,
                document=document,
                sent_at=sent_at,
                requested=requested,
            )
            for instance_id in command.instance_ids
        }
        with self._lock:
            self._invocations[command.command_id] = invocations
        for invocation in invocations.values():  # the script runs then, polled or not
            self._clock.call_later(
                self.invocation_lag + self.run_time, partial(self._complete, invocation)
            )

    # -- invocations ---------------------------------------------------------------------------

    def _tracked(self, command_id: str) -> dict[str, _Invocation] | None:
        with self._lock:
            return self._invocations.get(command_id)

    def _view(self, invocation: _Invocation) -> _View | None:
        """None while AWS has not created the invocation yet (``InvocationDoesNotExist``)."""
        elapsed = self._clock.monotonic() - invocation.sent_at - self.invocation_lag
        if elapsed < 0:
            return None
        started = invocation.requested + timedelta(seconds=self.invocation_lag)
        running = _View(
            command_id=invocation.command_id,
            instance_id=invocation.instance_id,
            comment=invocation.comment,
            document_name=invocation.document_name,
            plugin_name=invocation.plugin_name,
            requested=invocation.requested,
            started=started,
            ended=None,
            elapsed=elapsed,
            status="InProgress",
            details="InProgress",
            code=-1,
            stdout="",
            stderr="",
        )
        if elapsed < self.run_time:
            return running
        outcome = self._finish(invocation)
        return replace(
            running,
            ended=started + timedelta(seconds=self.run_time),
            elapsed=self.run_time,
            status=outcome.status,
            details=outcome.details,
            code=outcome.code,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
        )

    def _complete(self, invocation: _Invocation) -> None:
        """The clock's timer: hand the run to an agent worker (after close: nothing to do)."""
        assert self._runners is not None, "tracked only once installed"
        with suppress(RuntimeError):  # shut down: the sandbox is closing
            self._runners.submit(self._finish, invocation)

    def _finish(self, invocation: _Invocation) -> _Outcome:
        with invocation.lock:  # exactly one run, whether the timer or a reader gets here first
            if invocation.outcome is None:
                invocation.outcome = self._run(invocation)
            return invocation.outcome

    def _run(self, invocation: _Invocation) -> _Outcome:
        if not self._online(invocation.instance_id):
            return _Outcome("Failed", "Undeliverable", -1, "", "")
        params = invocation.parameters
        delivery = agent_delivery(
            invocation.document, params, self.agent_version(invocation.instance_id)
        )
        code, stdout, stderr = self._guests.run_verification(
            invocation.instance_id,
            params["MacAddress"][0],
            params["ExpectedIp"][0],
            params["Remediate"][0],
            script=delivery.script,
            env=delivery.env,
        )
        if code == 0:
            return _Outcome("Success", "Success", 0, stdout, stderr)
        return _Outcome("Failed", "Failed", code, stdout, stderr)

    def _get_invocation(
        self, command_id: str, instance_id: str, plugin_name: str | None
    ) -> dict[str, Any] | None:
        """GetCommandInvocation for a tracked command; None leaves other commands to moto."""
        invocations = self._tracked(command_id)
        if invocations is None:
            return None
        invocation = invocations.get(instance_id)
        view = self._view(invocation) if invocation else None
        if view is None or plugin_name not in (None, view.plugin_name):
            raise InvocationDoesNotExist("")
        return _invocation_document(view)

    def _command_views(self, command: Command) -> list[_View]:
        invocations = self._tracked(command.command_id)
        if invocations is None:
            return [_moto_view(command, raw) for raw in command.invocations]
        return [v for v in map(self._view, invocations.values()) if v is not None]

    def _list_command_invocations(self, response: SimpleSystemManagerResponse) -> dict[str, Any]:
        backend = response.ssm_backend
        command_id = response._get_param("CommandId")
        instance_id = response._get_param("InstanceId")
        details = bool(response._get_param("Details", False))
        commands = (
            [backend.get_command_by_id(command_id)]
            if command_id
            else list(backend.list_commands(None, None))
        )
        rows = [
            _list_row(view, details)
            for command in commands
            for view in self._command_views(command)
            if instance_id in (None, view.instance_id)
        ]
        page, token = _page(rows, response)
        return {"CommandInvocations": page, **({"NextToken": token} if token else {})}

    def _command_status(self, command: Command, shown: dict[str, Any]) -> dict[str, Any]:
        """ListCommands/SendCommand: a tracked command's status follows its invocations."""
        invocations = self._tracked(command.command_id)
        if invocations is None:
            return shown
        views = [self._view(invocation) for invocation in invocations.values()]
        done = [v for v in views if v is not None and v.status != "InProgress"]
        failed = [v for v in done if v.status != "Success"]
        if all(v is None for v in views):
            status = "Pending"
        elif len(done) < len(views):
            status = "InProgress"
        else:
            status = "Failed" if failed else "Success"
        return {
            **shown,
            "Status": status,
            "StatusDetails": status,
            "TargetCount": len(views),
            "CompletedCount": len(done),
            "ErrorCount": len(failed),
        }


# -- documents ---------------------------------------------------------------------------------


def _stored_command_document(
    backend: SimpleSystemManagerBackend, name: str | None
) -> dict[str, Any] | None:
    """The default version's content of a Command document stored in moto, if there is one."""
    if not name:
        return None
    documents = backend._documents.get(name.rsplit("document/", 1)[-1])
    if documents is None:
        return None  # AWS-owned documents (AWS-RunShellScript...) are not stored in moto
    document = documents.get_default_version()
    if document.document_type != "Command" or not isinstance(document.content_json, dict):
        return None
    return document.content_json


def _validated_parameters(
    document: dict[str, Any], given: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Check values as SSM does before delivery; return them with the document's defaults."""
    declared: dict[str, dict[str, Any]] = document.get("parameters") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidParameters(f'Parameter "{unknown[0]}" is not defined in the document.')
    effective: dict[str, list[str]] = {}
    for name, spec in declared.items():
        if name in given:
            effective[name] = [str(value) for value in given[name]]
            _check_values(name, spec, effective[name])
        elif "default" in spec:
            default = spec["default"]
            effective[name] = (
                [str(v) for v in default] if isinstance(default, list) else [str(default)]
            )
        else:
            raise InvalidParameters(f'Parameter "{name}" is required but was not provided.')
    return effective


def _check_values(name: str, spec: dict[str, Any], values: list[str]) -> None:
    if spec.get("type", "String") == "String" and len(values) != 1:
        raise InvalidParameters(f'Parameter "{name}" of type String takes exactly one value.')
    allowed = spec.get("allowedValues")
    pattern = spec.get("allowedPattern")
    for value in values:
        if allowed is not None and value not in [str(a) for a in allowed]:
            raise InvalidParameters(
                f'Parameter "{name}" has value "{value}" not in {{{", ".join(map(str, allowed))}}}.'
            )
        if pattern is not None and not re.search(pattern, value):
            raise InvalidParameters(
                f'Parameter "{name}" has value "{value}" not matching "{pattern}".'
            )


def agent_delivery(
    document: Mapping[str, Any], parameters: Mapping[str, list[str]], version: str
) -> Delivery:
    """What an SSM agent of ``version`` gives the shell for the document's first
    aws:runShellScript step, its (validated, defaulted) ``parameters`` given.

    Every agent replaces each ``{{ name }}`` (spaces allowed) in the command text with the
    value (amazon-ssm-agent agent/parameters ReplaceParameter, ``{{\\s*name\\s*}}``). An agent
    3.3.2746.0 or later also sets ``SSM_<name>`` for each parameter declared with
    ``interpolationType: ENV_VAR``; an older one ignores interpolationType and sets nothing.
    ENV_VAR adds the variable and does not stop the text replacement: AWS's own ENV_VAR example
    ("Data elements and parameters", sysman-doc-syntax.html) runs ``echo {{Message}}`` and still
    declares an allowedPattern, noting that allowedPattern is only unneeded in documents that
    use no ``{{ }}``. The fallback AWS documents for old agents (parameter-troubleshooting.html)
    works under either reading: on a new agent its ``{{ }}`` sits in a branch not taken.
    """
    declared: Mapping[str, Any] = document.get("parameters") or {}
    values = {name: _as_text(parameters[name]) for name in declared if name in parameters}
    script = _script_of(document)
    if script is not None:
        for name, value in values.items():
            script = _replace_references(script, name, value)
    env: dict[str, str] = {}
    if _at_least(version, ENV_VAR_SINCE):
        env = {
            f"SSM_{name}": value
            for name, value in values.items()
            if (declared[name] or {}).get("interpolationType") == "ENV_VAR"
        }
    return Delivery(script, env)


def _replace_references(text: str, name: str, value: str) -> str:
    """``{{ name }}`` -> value, the value taken literally."""
    pattern = re.compile(r"\{\{\s*" + re.escape(name) + r"\s*\}\}")
    return pattern.sub(lambda _: value, text)


def _as_text(values: list[str]) -> str:
    """A parameter's value as the agent writes it into text: a string as is, a list as JSON."""
    return values[0] if len(values) == 1 else json.dumps(values)


def _at_least(version: str, minimum: str) -> bool:
    return _version_key(version) >= _version_key(minimum)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _checked_version(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise ValueError(f"SSM Agent version {version!r} is not of the form 3.3.2746.0")
    return version


def _is_verification(document: dict[str, Any]) -> bool:
    return set(document.get("parameters") or {}) >= VERIFICATION_PARAMETERS


def _script_of(document: Mapping[str, Any]) -> str | None:
    try:
        return document_script(document)
    except ValueError:
        return None


def _plugin_name(document: dict[str, Any]) -> str:
    steps = document.get("mainSteps") or []
    if steps and isinstance(steps[0], dict) and steps[0].get("name"):
        return str(steps[0]["name"])
    runtime = document.get("runtimeConfig") or {}
    return str(next(iter(runtime), "aws:runShellScript"))


# -- response shapes ---------------------------------------------------------------------------


def _aws_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _invocation_document(view: _View) -> dict[str, Any]:
    return {
        "CommandId": view.command_id,
        "InstanceId": view.instance_id,
        "Comment": view.comment,
        "DocumentName": view.document_name,
        "DocumentVersion": "$DEFAULT",
        "PluginName": view.plugin_name,
        "ResponseCode": view.code,
        "ExecutionStartDateTime": _aws_time(view.started),
        "ExecutionElapsedTime": f"PT{view.elapsed:.3f}S",
        "ExecutionEndDateTime": _aws_time(view.ended),
        "Status": view.status,
        "StatusDetails": view.details,
        "StandardOutputContent": view.stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": view.stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
    }


def _list_row(view: _View, details: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "CommandId": view.command_id,
        "InstanceId": view.instance_id,
        "InstanceName": "",
        "Comment": view.comment,
        "DocumentName": view.document_name,
        "DocumentVersion": "$DEFAULT",
        "RequestedDateTime": view.requested,
        "Status": view.status,
        "StatusDetails": view.details,
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
    }
    if details:
        plugin: dict[str, Any] = {
            "Name": view.plugin_name,
            "Status": view.status,
            "StatusDetails": view.details,
            "ResponseCode": view.code,
            "ResponseStartDateTime": view.started,
            "Output": view.stdout,
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
        }
        if view.ended is not None:
            plugin["ResponseFinishDateTime"] = view.ended
        row["CommandPlugins"] = [plugin]
    return row


def _moto_view(command: Command, raw: dict[str, Any]) -> _View:
    """moto's own (instant) invocation of a command the model does not run."""
    return _View(
        command_id=command.command_id,
        instance_id=raw["InstanceId"],
        comment=raw["Comment"],
        document_name=str(raw["DocumentName"]),
        plugin_name=raw["PluginName"],
        requested=command.requested_date_time,
        started=datetime.fromisoformat(raw["ExecutionStartDateTime"]),
        ended=datetime.fromisoformat(raw["ExecutionEndDateTime"]),
        elapsed=0.0,
        status=raw["Status"],
        details=raw["StatusDetails"],
        code=raw["ResponseCode"],
        stdout=raw["StandardOutputContent"],
        stderr=raw["StandardErrorContent"],
    )


def _filter_conditions(
    filter_list: list[dict[str, Any]], filters: list[dict[str, Any]]
) -> list[tuple[str, list[str]]]:
    """Both filter spellings of DescribeInstanceInformation as (field, accepted values)."""
    pairs = [(f["key"], f.get("valueSet") or []) for f in filter_list]
    pairs += [(f["Key"], f.get("Values") or []) for f in filters]
    conditions = []
    for key, values in pairs:
        if key not in FILTER_FIELDS:
            raise InvalidFilterKey(f"The filter key {key} is not supported by the sandbox.")
        conditions.append((FILTER_FIELDS[key], [str(v) for v in values]))
    return conditions


def _page(
    rows: list[dict[str, Any]], response: SimpleSystemManagerResponse
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``rows`` for the request's MaxResults/NextToken (an opaque offset)."""
    size = min(int(response._get_param("MaxResults") or PAGE_SIZE), PAGE_SIZE)
    token = response._get_param("NextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise InvalidNextToken("The specified token isn't valid.") from None
    end = start + size
    return rows[start:end], (str(end) if end < len(rows) else None)
