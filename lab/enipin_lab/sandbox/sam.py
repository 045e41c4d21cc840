"""The SAM transform, offline: the plain CloudFormation that ``sam deploy`` makes of a template,
for the checks that must see what AWS will create (the roles SAM generates for the state
machines, the per-group resources of ``Fn::ForEach``, the rules and permissions of events).

``Fn::ForEach`` is expanded first with the given parameters, as ``AWS::LanguageExtensions`` does
on AWS before the SAM transform runs; local ``CodeUri``/``ContentUri``/``DefinitionUri`` paths
become S3 locations, as ``sam package`` leaves them. ``resolve`` then evaluates every intrinsic
function the way the sandbox's deploy does::

    python -m enipin_lab.sandbox.sam infra/template.yaml GroupName=web-a,web-b > sam-template.json

Needs aws-sam-translator (a dev dependency; cfn-lint needs it too).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

from samtranslator.translator.transform import transform as sam_transform

from enipin_lab.sandbox.base import REGION
from enipin_lab.sandbox.deploy import Stack, bind
from enipin_lab.sandbox.template import TemplateError, expand_for_each, load, parameter_values

_ARTIFACTS = "s3://enipin-sam-offline/"


class _NoManagedPolicyLookups:
    """SAM asks IAM for the ARNs of managed policies named in ``Policies``; enipin names none."""

    def load(self) -> dict[str, str]:
        return {}


def transform(template: Path | dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template ``sam deploy`` would submit, with ``Fn::ForEach`` expanded.
    ``template`` is a path or an already loaded template (which is not changed)."""
    template = load(template) if isinstance(template, Path) else copy.deepcopy(template)
    values = parameter_values(template, parameters)
    expanded = expand_for_each(template, values)
    transforms = expanded.get("Transform", [])
    transforms = [transforms] if isinstance(transforms, str) else list(transforms)
    rest = [t for t in transforms if t != "AWS::LanguageExtensions"]
    if rest != ["AWS::Serverless-2016-10-31"]:
        raise TemplateError(f"expected the SAM transform, found {transforms}")
    expanded["Transform"] = rest[0]
    _package(expanded)
    flat = {k: ",".join(v) if isinstance(v, list) else v for k, v in values.items()}
    # SAM reads the partition from the default Region of a boto3 session
    with patch.dict(os.environ, {"AWS_DEFAULT_REGION": REGION}):
        result: dict[str, Any] = sam_transform(
            expanded, flat, _NoManagedPolicyLookups(), passthrough_metadata=True
        )
    return result


def _package(template: dict[str, Any]) -> None:
    """Local code, layer and definition paths -> S3 locations, as ``sam package`` uploads them."""
    function_globals = template.get("Globals", {}).get("Function", {})
    if isinstance(function_globals.get("CodeUri"), str):
        function_globals["CodeUri"] = _ARTIFACTS + "code.zip"
    for logical, res in template["Resources"].items():
        props = res.get("Properties", {})
        if isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = f"{_ARTIFACTS}{logical}.zip"
        if isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = f"{_ARTIFACTS}{logical}.zip"
        if isinstance(props.get("DefinitionUri"), str):
            props["DefinitionUri"] = f"{_ARTIFACTS}{logical}.asl.json"


def resolve(
    cfn: dict[str, Any], parameters: dict[str, Any], stack_name: str = "enipin"
) -> tuple[dict[str, Any], Stack]:
    """Every resource of a transformed template with its intrinsic functions evaluated, as the
    sandbox's deploy evaluates them (moto's account, us-east-1), and the stack that names
    them; a resource whose Condition is false is left out, as CloudFormation leaves it out."""
    values = parameter_values(cfn, parameters)
    stack, resolver = bind(cfn, values, stack_name, Path("."))
    resources: dict[str, Any] = cfn["Resources"]
    wanted = {
        k: v
        for k, v in resources.items()
        if "Condition" not in v or resolver.condition(v["Condition"])
    }
    resolved: dict[str, Any] = resolver.resolve(wanted)
    return resolved, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("parameters", nargs="*", help="Name=value (lists comma-separated)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    params = dict(p.split("=", 1) for p in args.parameters)
    text = json.dumps(transform(args.template, params), indent=1, sort_keys=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
