"""Print the template's parameters with what each allows, before `sam deploy --guided` asks for
them (its prompts show only the name and the default)::

    python infra/show_parameters.py infra/template.yaml
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from enipin_lab.sandbox.template import load


def describe(name: str, spec: dict[str, object]) -> str:
    allowed = []
    values = spec.get("AllowedValues")
    if isinstance(values, list):
        allowed.append("one of " + ", ".join(str(v) for v in values))
    if "MinValue" in spec or "MaxValue" in spec:
        allowed.append(f"{spec.get('MinValue', '')}..{spec.get('MaxValue', '')}")
    if "AllowedPattern" in spec:
        allowed.append(f"matching {spec['AllowedPattern']}")
    default = f" [default: {spec['Default']}]" if "Default" in spec else " (required)"
    text = " ".join(str(spec.get("Description", "")).split())
    head = f"{name}{default}" + (f"  - {'; '.join(allowed)}" if allowed else "")
    return head + "\n" + textwrap.indent(textwrap.fill(text, 96), "    ")


def main(argv: list[str]) -> int:
    template = load(Path(argv[1] if len(argv) > 1 else "infra/template.yaml"))
    for name, spec in template["Parameters"].items():
        print(describe(name, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
