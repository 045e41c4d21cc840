"""``enipin-lab``: the playground (``up``) and what a second shell does with it (``env``,
``levers``, ``lever``, ``fix``, ``wait``)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType
from typing import Any

import click

from enipin.cli.console import table
from enipin.deployment import Deployment, connect
from enipin_lab.playground import LEVERS, STATE_FILE, Announcement
from enipin_lab.report import PinReport, group_report
from enipin_lab.sandbox.netns import alive

DEFAULT_PORT = 5599
COLUMNS = ("instance", "az", "eni", "mac", "lifecycle_state", "result")


@click.group()
def main() -> None:
    """enipin's lab: a local playground of the stack, and levers to break it with."""


# -- up ------------------------------------------------------------------------------------------


@main.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port on 127.0.0.1.")
@click.option("--azs", default=2, show_default=True, help="Availability Zones of the group.")
@click.option("--pool-per-az", default=4, show_default=True, help="Pool ENIs per AZ.")
@click.option("--instances", default=2, show_default=True, help="Instances the group starts with.")
@click.option(
    "--real-time", is_flag=True, help="AWS time at its own pace (default: 50 AWS seconds a second)."
)
def up(port: int, azs: int, pool_per_az: int, instances: int, real_time: bool) -> None:
    """Start the playground: the stack deployed in the sandbox, a group running, and local AWS
    served on the loopback until Ctrl-C."""
    running = Announcement.read()
    if running and alive(running.pid):
        raise click.ClickException(
            f"a playground is already up at {running.endpoint} (pid {running.pid})"
        )
    _port_free(port)  # before the sandbox's few seconds of set-up, not after
    # Everything in this process talks to the sandbox in memory, never to an endpoint.
    for name in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL") or k == "AWS_PROFILE"]:
        del os.environ[name]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    clock = "AWS time at its own pace" if real_time else "fast clock: 50 AWS seconds a second"
    click.echo(f"enipin playground: local AWS on 127.0.0.1:{port} (moto server mode), {clock}")
    opened = ExitStack()
    try:
        with _sigterm_as_interrupt():
            _serve(opened, port, azs, pool_per_az, instances, real_time)
    except KeyboardInterrupt:
        click.echo("\nstopping: executions end, namespaces and processes go")
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        running = Announcement.read()
        if running and running.pid == os.getpid():
            STATE_FILE.unlink(missing_ok=True)
        opened.close()
    click.echo("stopped")


def _serve(
    opened: ExitStack, port: int, azs: int, pool_per_az: int, instances: int, real_time: bool
) -> None:
    """Open the sandbox, deploy, scale, serve; block until interrupted."""
    from enipin_lab.playground import Playground
    from enipin_lab.sandbox import Sandbox

    sb = Sandbox(azs=azs, pool_per_az=pool_per_az, fast=not real_time, deploy=False, buckets=True)
    with _step(1, f"a VPC over {azs} AZs, {pool_per_az} pool ENIs each, group {sb.group_name}"):
        opened.enter_context(sb)
    with _step(2, "deploying infra/template.yaml as stack enipin, its schedules running"):
        sb.stack = sb.deploy(sb.template)
        sb.run_schedules()
    with _step(3, f"scaling {sb.group_name} to {instances}, waiting for the pins"):
        sb.scale_to(instances)
        sb.settle(quiet=5.0)
    try:
        playground = Playground(sb, port=port)
    except OSError as exc:
        raise click.ClickException(f"port {port}: {exc.strerror}; choose --port") from None
    playground.start()
    opened.callback(playground.stop)
    announcement = Announcement(playground.endpoint, os.getpid(), sb.group_name)
    announcement.write()
    _welcome(announcement)
    threading.Event().wait()


def _port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.ClickException(f"port {port}: {exc.strerror}; choose --port") from None


@contextmanager
def _step(number: int, what: str) -> Iterator[None]:
    click.echo(f"  [{number}/3] {what} ...", nl=False)
    started = time.monotonic()
    yield
    click.echo(f" {time.monotonic() - started:.1f}s")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the playground as Ctrl-C does, through the same clean-up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _welcome(announcement: Announcement) -> None:
    # read in this process, from the sandbox itself (its endpoint variables were dropped)
    report = _report(connect(None, announcement.region, announcement.stack), announcement.group)
    click.echo(table(report.instances, COLUMNS))
    exports = " ".join(f"{k}={v}" for k, v in announcement.exports().items())
    click.echo(
        f"\nlistening on {announcement.endpoint}. In another shell:\n\n"
        f'  eval "$(.venv/bin/enipin-lab env)"\n\n'
        f"or export {exports}\nthen aws and enipin use it. Ctrl-C stops the playground."
    )


# -- a second shell ------------------------------------------------------------------------------


@main.command()
def env() -> None:
    """Print the exports that point the AWS CLI and SDKs at the playground (eval them)."""
    announcement = _announcement()
    for key, value in announcement.exports().items():
        click.echo(f"export {key}={shlex.quote(value)}")


@main.command()
def levers() -> None:
    """The levers, their parameters and what fixing each does."""
    rows = [
        {
            "lever": name,
            "params": " ".join(f"{k}={v}" for k, v in lever.defaults.items()) or "-",
            "does": lever.does,
            "fix": lever.fixes or "-",
        }
        for name, lever in LEVERS.items()
    ]
    click.echo(table(rows, ("lever", "params", "does", "fix")))


@main.command()
@click.argument("name", type=click.Choice(list(LEVERS)))
@click.argument("params", nargs=-1, metavar="[KEY=VALUE]...")
def lever(name: str, params: tuple[str, ...]) -> None:
    """Pull a lever: the chaos fault NAME, acted in the playground."""
    answer = _post("pull", {"lever": name, "params": _params(params)})
    launched = ", ".join(answer["launched"]) or "no instance"
    state = "done" if answer["done"] else "no moment came for it"
    click.echo(f"{name} {_shown(answer['params'])}: {state}; launched {launched}")


@main.command()
@click.argument("name", type=click.Choice(list(LEVERS)))
@click.argument("params", nargs=-1, metavar="[KEY=VALUE]...")
def fix(name: str, params: tuple[str, ...]) -> None:
    """Undo a lever: heal what it broke, or run a reconciler round as an operator would."""
    answer = _post("fix", {"lever": name, "params": _params(params)})
    click.echo(f"{name} fixed: {answer['fixed']}")
    if "healed" in answer:
        click.echo(f"  healed: {', '.join(answer['healed']) or 'nothing left to heal'}")
    if "reconciler" in answer:
        click.echo(f"  reconciler round: {json.dumps(answer['reconciler'], default=str)}")


@main.command()
@click.argument("until", type=click.Choice(["settled", "failed"]), default="settled")
@click.option("--timeout", default=3600.0, show_default=True, help="In AWS seconds.")
def wait(until: str, timeout: float) -> None:
    """Wait until nothing runs and no lifecycle action waits (settled), or until a launch has
    FAILED (failed); then show the group."""
    answer = _post("wait", {"until": until, "timeout": timeout})
    if until == "failed":
        click.echo(f"failed: {', '.join(answer['failed'])}")
    announcement = _announcement()
    os.environ.update(announcement.exports())  # over HTTP, as the shell that eval'd env would
    dep = connect(None, announcement.region, announcement.stack)
    click.echo(table(_report(dep, announcement.group).instances, COLUMNS))


def _announcement() -> Announcement:
    announcement = Announcement.read()
    if announcement is None or not alive(announcement.pid):
        raise click.ClickException("no playground is up: start one with make playground")
    return announcement


def _post(path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{_announcement().endpoint}/_enipin/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise click.ClickException(json.loads(exc.read()).get("error", str(exc))) from None


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="PARAMS")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _shown(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _report(dep: Deployment, group: str) -> PinReport:
    """The group as EC2, Auto Scaling and Step Functions tell it to any client of the stack."""
    return group_report(
        dep.client("ec2"),
        dep.client("autoscaling"),
        dep.client("stepfunctions"),
        group,
        dep.state_machines()["launch"],
        *dep.pool_tag,
    )
