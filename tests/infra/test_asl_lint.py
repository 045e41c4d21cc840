"""The statelint gate: every state machine passes it, and `make lint` fails on one whose Next
points nowhere (a typo in a state name that the sandbox would only meet on that path)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
MACHINES = sorted((ROOT / "state_machines").glob("*.asl.json"))
STATELINT = Path(sys.executable).parent / "statelint"


def statelint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STATELINT), "--ignore=URI", str(path)], capture_output=True, text=True, check=False
    )


def with_dangling_next(definition: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The definition with its first Next redirected to a state that does not exist."""
    broken = json.loads(json.dumps(definition))
    name = next(n for n, s in broken["States"].items() if "Next" in s)
    broken["States"][name]["Next"] = "NoSuchState"
    return broken, name


def test_there_are_state_machines_to_lint() -> None:
    assert {p.name for p in MACHINES} >= {"launch.asl.json", "terminate.asl.json"}


@pytest.mark.parametrize("machine", MACHINES, ids=lambda p: p.name)
def test_every_state_machine_passes_statelint(machine: Path) -> None:
    result = statelint(machine)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("machine", MACHINES, ids=lambda p: p.name)
def test_a_dangling_next_fails_statelint(machine: Path, tmp_path: Path) -> None:
    broken, state = with_dangling_next(json.loads(machine.read_text()))
    target = tmp_path / machine.name
    target.write_text(json.dumps(broken, indent=2))
    result = statelint(target)
    assert result.returncode != 0
    assert (
        f'No state found named "NoSuchState", referenced at State Machine.States.{state}.Next'
        in (result.stdout + result.stderr)
    )


def make_lint_statelint_step(directory: Path) -> str:
    """The Makefile's statelint loop, pointed at ``directory`` instead of state_machines/."""
    recipe = (ROOT / "Makefile").read_text()
    (line,) = [ln.strip() for ln in recipe.splitlines() if "statelint" in ln and "for f in" in ln]
    assert "state_machines/*.asl.json" in line, "make lint must lint every state machine"
    return (
        line.replace("$(BIN)", str(STATELINT.parent))
        .replace("state_machines/", f"{directory}/")
        .replace("$$", "$")
    )


def test_make_lint_fails_when_any_state_machine_has_a_dangling_next(tmp_path: Path) -> None:
    for machine in MACHINES:
        shutil.copy(machine, tmp_path / machine.name)
    step = make_lint_statelint_step(tmp_path)
    assert subprocess.run(["bash", "-c", step], check=False).returncode == 0
    # WHEN one of them (not the first linted) gets a dangling Next
    last = tmp_path / MACHINES[-1].name
    broken, _ = with_dangling_next(json.loads(last.read_text()))
    last.write_text(json.dumps(broken))
    # THEN the step fails, and so `make lint` and `make test`
    result = subprocess.run(["bash", "-c", step], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert re.search(r"No state found named \"NoSuchState\"", result.stdout + result.stderr)
