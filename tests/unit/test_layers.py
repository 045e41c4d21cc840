"""Three roles, three homes, no circles: the CLI (``enipin``) imports the core and never the
lab; the core (``enipin_core``) imports neither; what the CLI imports of the core needs nothing
the CLI does not install (boto3, click)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOMES = {
    "enipin": ROOT / "enipin",
    "enipin_core": ROOT / "tasks" / "enipin_core",
    "enipin_lab": ROOT / "lab" / "enipin_lab",
}
MAY_IMPORT = {
    "enipin": {"enipin", "enipin_core"},
    "enipin_core": {"enipin_core"},
    "enipin_lab": {"enipin_lab", "enipin", "enipin_core"},
}


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in the module the import is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(HOMES)


@pytest.mark.parametrize("home", sorted(HOMES))
def test_each_home_imports_only_the_homes_below_it(home: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported(path) - MAY_IMPORT[home])
        for path in HOMES[home].rglob("*.py")
        if imported(path) - MAY_IMPORT[home]
    }
    assert wrong == {}


def test_the_cli_loads_no_lab_and_nothing_the_functions_alone_need() -> None:
    # the lab's commands come through entry points when the lab is installed: load none here
    script = (
        "import sys, importlib.metadata as md;"
        "md.entry_points = lambda **kw: [];"
        "import enipin.cli;"
        "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not loaded & {"enipin_lab", "moto", "aws_lambda_powertools", "jsonschema", "yaml"}
    assert {"enipin", "enipin_core", "boto3", "click"} <= loaded
