"""The playground: the sandbox kept up as a local AWS endpoint on the loopback, with levers.

moto's server mode answers real HTTP from the AWS CLI, ``enipin`` or any SDK pointed at it with
``AWS_ENDPOINT_URL``. It runs in the process that holds the sandbox, so every fidelity adaptation
(and every function, clock and guest) is the same one the tests and chaos use. Beside the AWS
APIs the server answers a few paths of its own under ``/_enipin/``: the levers (each one of
chaos's faults, by the fault's own name and parameters), their fixes, and a wait.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from enipin import reconcile
from enipin.deployment import connect
from enipin_lab.chaos.faults import _Faults
from enipin_lab.chaos.observer import REGION, STACK_NAME
from enipin_lab.sandbox import Sandbox
from enipin_lab.sandbox.buckets import unmetered

CONTROL = "/_enipin/"
# Where `up` says where it listens, for `env`, the levers and `wait` in other shells.
STATE_FILE = Path(
    os.environ.get("ENIPIN_PLAYGROUND_FILE")
    or Path(tempfile.gettempdir()) / f"enipin-playground-{os.getuid()}.json"
)
# moto takes any credentials: these stand in for a profile.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "playground", "AWS_SECRET_ACCESS_KEY": "playground"}


@dataclass(frozen=True)
class Lever:
    """One of chaos's faults, pulled by a person: its parameters' defaults, what it does, and
    how it is undone (``fix``: ``heal`` undoes it in the sandbox, ``reconcile`` runs a reconciler
    round as an operator would, ``None``: nothing stays broken)."""

    defaults: dict[str, Any]
    does: str
    fix: str | None = None
    fixes: str = ""
    # The fault's own method for pulling it; a fault chaos fixes itself after a while is
    # pulled by its first half, and the person fixes it.
    method: str = ""


LEVERS: dict[str, Lever] = {
    "scale_out": Lever({"count": 1}, "launch `count` more instances"),
    "scale_in": Lever({"count": 1}, "terminate `count` instances"),
    "drop_event": Lever(
        {"transition": "launch"},
        "EventBridge loses the next lifecycle event of `transition`, then one instance launches "
        "(or terminates)",
        "reconcile",
        "a reconciler round starts the workflow the lost event did not",
    ),
    "duplicate_event": Lever(
        {"transition": "launch", "delay": 5.0},
        "the next lifecycle event of `transition` arrives twice, `delay` seconds apart",
    ),
    "absent_agent": Lever(
        {},
        "one more instance, whose SSM Agent never starts",
        "heal",
        "the agent is repaired and restarted on every instance it was missing from",
    ),
    "launches_keep_failing": Lever(
        {"failure": "agent_absent"},
        "every instance launched from now fails the same way (`failure`: agent_absent or "
        "nic_absent), as with a broken image",
        "heal",
        "instances launched from now are healthy again (those already up keep the fault, as "
        "with a fixed image), and the storm guard is released if it tripped",
        method="break_launches",
    ),
    "nic_down": Lever(
        {"fault": "nic_down"},
        "one more instance whose second NIC stays DOWN (`fault`: nic_down, or no_address)",
        "heal",
        "the NIC comes up on every instance that had the fault",
    ),
    "nic_never_up": Lever(
        {},
        "one more instance whose OS never shows the second NIC",
        "heal",
        "the NIC shows up on every instance that had the fault",
    ),
    "eni_detached_by_hand": Lever(
        {"target": "in_service", "force": False},
        "someone detaches a pool ENI from an instance (`target`: in_service or launching)",
        "reconcile",
        "a reconciler round pins the instance again",
    ),
    "throttle_burst": Lever(
        {"service": "ec2", "operation": "AttachNetworkInterface", "times": 20},
        "the functions' next `times` calls of `service`.`operation` are throttled (botocore's "
        "names: ec2, auto-scaling, ssm, sfn, lambda), then one more instance launches",
        "heal",
        "the throttling of that operation stops",
    ),
}


class Playground:
    """A sandbox with its stack and group up, served over HTTP on the loopback."""

    def __init__(self, sb: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sb = sb
        self.faults = _Faults(sb)
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(host, port, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()  # one lever at a time, as one person pulls them

    @property
    def endpoint(self) -> str:
        return f"http://{self._server.host}:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that must have run
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    # -- what a person can do -----------------------------------------------------------------

    def pull(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        lever = _lever(name)
        merged = lever.defaults | params
        before = set(self.faults.members())
        with self._lock:
            done = getattr(self.faults, lever.method or f"_{name}")(merged)
        new = sorted(set(self.faults.members()) - before)
        return {"lever": name, "params": merged, "done": done is not False, "launched": new}

    def fix(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        lever = _lever(name)
        if lever.fix is None:
            raise LeverError(f"{name} leaves nothing broken: there is nothing to fix")
        with self._lock:
            if lever.fix == "reconcile":
                result = reconcile.run_round(connect(None, REGION, STACK_NAME), dry_run=False)
                return {"lever": name, "fixed": lever.fixes, "reconciler": result}
            healed = self._heal(name, lever.defaults | params)
        return {"lever": name, "fixed": lever.fixes, "healed": healed}

    def _heal(self, name: str, params: dict[str, Any]) -> list[str]:
        guests, ssm = self.sb.guests, self.sb.ssm
        if name == "launches_keep_failing":
            released = self.faults.fix_launches_keep_failing()
            return [released] if released else []
        if name == "throttle_burst":
            self.sb.ledger.clear(params["service"], params["operation"])
            return [f"{params['service']}.{params['operation']}"]
        fault = {"absent_agent": "agent_absent", "nic_never_up": "nic_absent"}.get(
            name, params.get("fault", "")
        )
        healed = guests.heal(fault)
        if fault == "agent_absent":
            for instance_id in healed:
                ssm.restart_agent(instance_id)
        return healed

    def wait(self, until: str, timeout: float) -> dict[str, Any]:
        """Until the sandbox is at rest (``settled``) or a launch has failed (``failed``); the
        timeout is in AWS seconds."""
        if until == "settled":
            self.sb.settle(timeout=timeout)
            return {"until": until}
        deadline = self.sb.clock.monotonic() + timeout
        while self.sb.clock.monotonic() < deadline:
            with unmetered():  # a person waiting, not a call in the account
                executions = self.sb.executions()
            failed = [e["name"] for e in executions if e["status"] == "FAILED"]
            if failed:
                return {"until": until, "failed": failed}
            time.sleep(0.1)
        raise TimeoutError(f"no launch failed within {timeout:.0f} AWS seconds")

    # -- the server ----------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not str(environ.get("PATH_INFO", "")).startswith(CONTROL):
            return self._moto(environ, start_response)
        return self._control(Request(environ))(environ, start_response)

    def _control(self, request: Request) -> Response:
        what = request.path.removeprefix(CONTROL)
        body = request.get_json(silent=True) or {}
        try:
            if what == "pull":
                answer: Any = self.pull(body["lever"], body.get("params", {}))
            elif what == "fix":
                answer = self.fix(body["lever"], body.get("params", {}))
            elif what == "wait":
                answer = self.wait(body.get("until", "settled"), float(body.get("timeout", 3600)))
            else:
                return _json({"error": f"no such playground path: {request.path}"}, 404)
        except (LeverError, KeyError, TypeError, ValueError, TimeoutError) as exc:
            return _json({"error": f"{type(exc).__name__}: {exc}"}, 400)
        return _json(answer, 200)


class LeverError(ValueError):
    """A lever the playground does not have, or a fix for one that leaves nothing broken."""


def _lever(name: str) -> Lever:
    if name not in LEVERS:
        raise LeverError(f"no lever {name!r}; the levers: {', '.join(LEVERS)}")
    return LEVERS[name]


def _json(answer: Any, status: int) -> Response:
    return Response(json.dumps(answer, default=str), status, mimetype="application/json")


@dataclass
class Announcement:
    """What ``up`` writes to STATE_FILE for the other shells."""

    endpoint: str
    pid: int
    group: str
    stack: str = STACK_NAME
    region: str = REGION

    def exports(self) -> dict[str, str]:
        """What a client needs: the endpoint, the stack's Region, stand-in credentials."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region} | CREDENTIALS

    def write(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def read(cls, path: Path = STATE_FILE) -> Announcement | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        try:
            return cls(**data)
        except TypeError:  # another version's file
            return None
