"""The playground from outside: ``enipin-lab up`` in its own process, the README's walk-through
run line by line in one bash (the real AWS CLI and ``enipin`` over HTTP on the loopback), what
EC2 and Auto Scaling then say, and a stop that leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
MARK = "@@@ walk-through step"


def walk_through() -> list[str]:
    """The fenced block under the README's walk-through marker, one command a line."""
    block = README.read_text().split("<!-- walk-through -->", 1)[1]
    body = block.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in body.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def playground(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not (VENV_BIN / "aws").exists() or not (VENV_BIN / "enipin-lab").exists():
        pytest.fail(f"{VENV_BIN} lacks aws or enipin-lab: make install (the lab's dev extra)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["ENIPIN_PLAYGROUND_FILE"] = str(tmp_path / "playground.json")
    port = free_port()
    log = (tmp_path / "up.log").open("w")
    # `make playground` as the README has it (-o: the install stamp counts as done, so make
    # never reinstalls the venv under a test), in a session of its own like a terminal's.
    process = subprocess.Popen(
        ["make", "-o", ".venv/.installed", "playground", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state = tmp_path / "playground.json"
    deadline = time.monotonic() + 180
    while not state.exists():
        assert process.poll() is None, (tmp_path / "up.log").read_text()
        assert time.monotonic() < deadline, "the playground did not come up in 3 minutes"
        time.sleep(0.2)
    pid = json.loads(state.read_text())["pid"]  # enipin-lab's own, under make
    try:
        yield {"env": env, "port": port, "process": process, "pid": pid, "log": tmp_path / "up.log"}
    finally:
        if process.poll() is None:
            ctrl_c(process)
        log.close()


def ctrl_c(process: subprocess.Popen[bytes]) -> None:
    """What Ctrl-C in the playground's terminal does: SIGINT to its whole foreground group."""
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=120)


def run_walk_through(env: dict[str, str]) -> list[tuple[str, str]]:
    """Each README line in one bash, as a person types them; (command, its output) per line.
    A line that fails stops the walk."""
    lines = walk_through()
    script = "\n".join(
        f"{line}\nrc=$?; echo '{MARK} {i}' rc=$rc; [ $rc -eq 0 ] || exit $rc"
        for i, line in enumerate(lines)
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    parts = re.split(rf"{MARK} (\d+) rc=(\d+)\n", done.stdout)
    outputs = parts[0::3]
    codes = [int(c) for c in parts[2::3]]
    assert done.returncode == 0 and codes == [0] * len(lines), (
        f"walk-through stopped at line {len(codes)}: "
        f"{lines[len(codes) - 1] if codes else lines[0]}\n{done.stdout[-3000:]}\n{done.stderr}"
    )
    return list(zip(lines, outputs, strict=False))


def processes_naming(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (what ``pgrep -f`` finds)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        if text in args:
            found.append(args)
    return found


def namespaces_now() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def aws_over_http(port: int, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="playground",
        aws_secret_access_key="playground",
    )


def test_the_readmes_walk_through_runs_against_a_playground_that_stops_clean(
    playground: dict[str, Any],
) -> None:
    steps = run_walk_through(playground["env"])
    out = {i: output for i, (_, output) in enumerate(steps)}
    instance = r"i-[0-9a-f]{17}"

    # a scale-out to three, each pinned (launched 2 by the playground, 1 by the AWS CLI)
    assert len(re.findall(rf"{instance} .* InService +CONTINUE", out[2])) == 3, out[2]
    # the broken image: a launch FAILED in CheckSsmAgent, SsmAgentNotOnline, action given up
    broken = re.search(rf"launched ({instance})", out[3])
    assert broken, out[3]
    assert f"failed: {broken.group(1)}-launch-" in out[4], out[4]
    assert re.search(
        rf"{broken.group(1)}-launch-\S+ .* FAILED +CheckSsmAgent +SsmAgentNotOnline", out[5]
    ), out[5]
    assert re.search(r"cause +SsmAgentNotOnline: SSM agent on i-\S+ not online after", out[7])
    assert "launch action: not pending" in out[7], out[7]
    # the fix, and the replay's decisions: every failed run skipped, its instance gone
    assert "launches_keep_failing fixed" in out[8], out[8]
    decisions = re.findall(rf"({instance})-launch-\S+ +(\w+) +(.*?) +-\n", out[9])
    assert decisions and {d[1] for d in decisions} == {"skip"}, out[9]
    assert broken.group(1) in {d[0] for d in decisions}
    # the group whole again, each in service with one pool ENI, the MACs EC2 lists
    group = aws_over_http(playground["port"], "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["enipin-demo"]
    )["AutoScalingGroups"][0]
    members = {i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"}
    # the three, and the one the lever launched from the broken image, replaced after the fix
    assert len(members) == 4 and len(group["Instances"]) == 4, group["Instances"]
    assert broken.group(1) not in members
    listed = dict(line.split("\t") for line in out[11].strip().splitlines())
    assert set(listed) == members, out[11]
    enis = aws_over_http(playground["port"], "ec2").describe_network_interfaces(
        Filters=[{"Name": "tag:Type", "Values": ["Dedicated-ENI"]}]
    )["NetworkInterfaces"]
    held = {e["Attachment"]["InstanceId"]: e["MacAddress"] for e in enis if e.get("Attachment")}
    assert held == listed

    # beside it: a fix for a lever that breaks nothing, a second playground, the exports
    env = playground["env"]
    lab = str(VENV_BIN / "enipin-lab")
    wrong = subprocess.run([lab, "fix", "scale_out"], env=env, capture_output=True, text=True)
    assert wrong.returncode == 1 and "scale_out leaves nothing broken" in wrong.stderr
    second = subprocess.run(
        [lab, "up", "--port", str(free_port())], env=env, capture_output=True, text=True
    )
    assert second.returncode == 1 and "a playground is already up" in second.stderr
    exports = subprocess.run([lab, "env"], env=env, capture_output=True, text=True).stdout
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{playground['port']}" in exports
    assert json.loads(Path(env["ENIPIN_PLAYGROUND_FILE"]).read_text())["pid"] == playground["pid"]

    # Ctrl-C: clean stop, no namespace, process or announcement left, the port closed
    prefix = f"enipin-{playground['pid']}-"
    if os.environ.get("ENIPIN_REQUIRE_NETNS") == "1":  # the guests ran on real interfaces
        assert prefix in namespaces_now()
    ctrl_c(playground["process"])
    log = playground["log"].read_text()
    assert "\nstopped\n" in log, log
    with pytest.raises(ProcessLookupError):
        os.kill(playground["pid"], 0)
    assert prefix not in namespaces_now()
    assert not processes_naming(prefix)
    assert not Path(playground["env"]["ENIPIN_PLAYGROUND_FILE"]).exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", playground["port"]), 2):
        pass


def test_a_port_already_taken_is_named_before_anything_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["ENIPIN_PLAYGROUND_FILE"] = str(tmp_path / "playground.json")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [str(VENV_BIN / "enipin-lab"), "up", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1
    assert f"port {port}: Address already in use; choose --port" in refused.stderr
    assert "enipin playground" not in refused.stdout  # refused before the sandbox opened
    assert not (tmp_path / "playground.json").exists()
