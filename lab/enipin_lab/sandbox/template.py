"""Reading a SAM/CloudFormation template: its YAML tags, the ``AWS::LanguageExtensions`` it
uses (``Fn::ForEach``, ``Fn::ToJsonString``, ``Fn::Length``) and the intrinsic functions.

The sandbox deploys from ``infra/template.yaml`` itself, so a reference to a missing resource,
parameter or attribute fails here exactly as the deploy would.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

NO_VALUE = object()
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")
_FOR_EACH = re.compile(r"^Fn::ForEach::[A-Za-z0-9]+$")
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]+")


class TemplateError(ValueError):
    """The template is wrong in a way CloudFormation would reject."""


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_Loader.add_multi_constructor("!", _tag)


def load(path: Path) -> dict[str, Any]:
    """The template as data: a fresh copy each time, parsed once per version of the file (a
    test run deploys it hundreds of times, and YAML parsing is a second of each deploy)."""
    stat = path.stat()
    return copy.deepcopy(_parsed(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    with open(path) as handle:
        data = yaml.load(handle, Loader=_Loader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path}: not a CloudFormation template")
    return data


def parameter_values(template: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The value of every declared parameter (given, else its default), checked as
    CloudFormation checks them before it creates anything; a CommaDelimitedList is a list."""
    declared: dict[str, Any] = template.get("Parameters", {})
    unknown = set(given) - set(declared)
    if unknown:
        raise TemplateError(f"parameters not declared by the template: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            values[name] = str(given[name])
        elif "Default" in spec:
            values[name] = str(spec["Default"])
        else:
            raise TemplateError(f"parameter {name} has no value and no default")
        if spec.get("Type") == "CommaDelimitedList":
            values[name] = [v.strip() for v in values[name].split(",")]
        _check_parameter(name, spec, values[name])
    return values


def check_rules(template: dict[str, Any], values: dict[str, Any]) -> None:
    """The template's Rules, as CloudFormation checks them before it creates anything: every
    assertion of a rule whose RuleCondition holds (or that has none) must hold."""
    resolver = Resolver(values, {}, _no_resources, _no_attributes, {})
    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not resolver.resolve(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions", []):
            if not resolver.resolve(assertion["Assert"]):
                raise TemplateError(f"rule {name}: {assertion.get('AssertDescription', '')}")


def _check_parameter(name: str, spec: dict[str, Any], value: str | list[str]) -> None:
    """The constraints CloudFormation checks before it creates anything; a pattern applies to
    each item of a CommaDelimitedList."""
    items = value if isinstance(value, list) else [value]
    allowed = [str(v) for v in spec.get("AllowedValues", [])]
    for item in items:
        if allowed and item not in allowed:
            raise TemplateError(f"parameter {name}={item!r} not in AllowedValues")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
            raise TemplateError(f"parameter {name}={item!r} does not match AllowedPattern")
        if spec.get("Type") == "Number":
            number = float(item)
            if number < float(spec.get("MinValue", number)) or number > float(
                spec.get("MaxValue", number)
            ):
                raise TemplateError(f"parameter {name}={item} outside MinValue/MaxValue")


def expand_for_each(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """What ``AWS::LanguageExtensions`` does to ``Fn::ForEach`` before anything else runs: each
    loop becomes one copy of its fragment per item of its collection, with ``${Id}`` and
    ``&{Id}`` (the item without non-alphanumerics) replaced in keys and in ``Fn::Sub`` strings,
    and ``Ref: Id`` replaced by the item. Loops may nest. A key produced twice is an error, as a
    duplicated logical id is on AWS; so is a collection that is not a list of strings."""
    loops = _ForEach(parameters)
    return {
        k: loops.walk(v, {}) if k in ("Resources", "Outputs", "Conditions") else v
        for k, v in template.items()
    }


class _ForEach:
    def __init__(self, parameters: dict[str, Any]) -> None:
        # a collection may use parameters and pseudo-free functions, never a resource
        self._resolver = Resolver(parameters, {}, _no_resources, _no_attributes, {})

    def walk(self, node: Any, bound: dict[str, str]) -> Any:
        node = _substitute(node, bound)
        if isinstance(node, list):
            return [self.walk(item, bound) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if _FOR_EACH.match(key):
                for new_key, new_value in self._expand(key, value, bound).items():
                    if new_key in out or new_key in node:
                        raise TemplateError(f"{key}: {new_key} is produced twice")
                    out[new_key] = new_value
            else:
                out[_replace(key, bound)] = self.walk(value, bound)
        return out

    def _expand(self, loop: str, value: Any, bound: dict[str, str]) -> dict[str, Any]:
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)):
            raise TemplateError(f"{loop}: needs [identifier, collection, fragment]")
        ident, collection, fragment = value
        if not isinstance(fragment, dict):
            raise TemplateError(f"{loop}: the fragment must be a mapping")
        items = self._resolver.resolve(self.walk(collection, bound))
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise TemplateError(f"{loop}: the collection must be a list of strings, not {items!r}")
        out: dict[str, Any] = {}
        for item in items:
            for key, produced in self.walk(fragment, {**bound, ident: item}).items():
                if key in out:
                    raise TemplateError(f"{loop}: {key} is produced twice")
                out[key] = produced
        return out


def _replace(text: str, bound: dict[str, str]) -> str:
    for ident, item in bound.items():
        text = text.replace(f"${{{ident}}}", item).replace(
            f"&{{{ident}}}", _NOT_ALNUM.sub("", item)
        )
    return text


def _substitute(value: Any, bound: dict[str, str]) -> Any:
    """``Ref: Id`` and ``Fn::Sub`` strings at this node; ``walk`` recurses."""
    if not bound or not isinstance(value, dict) or len(value) != 1:
        return value
    ((key, arg),) = value.items()
    if key == "Ref" and isinstance(arg, str) and arg in bound:
        return bound[arg]
    if key == "Fn::Sub" and isinstance(arg, str):
        return {key: _replace(arg, bound)}
    if key == "Fn::Sub" and isinstance(arg, list) and arg and isinstance(arg[0], str):
        return {key: [_replace(arg[0], bound), *arg[1:]]}
    return value


def _no_resources(name: str) -> str:
    raise TemplateError(f"Fn::ForEach collection refers to {name}: only parameters resolve there")


def _no_attributes(name: str, attr: str) -> str:
    raise TemplateError(f"Fn::ForEach collection uses {name}.{attr}: only parameters resolve there")


class Resolver:
    """Evaluates intrinsic functions against parameters and deployed resources."""

    def __init__(
        self,
        parameters: dict[str, Any],
        pseudo: dict[str, str],
        ref: Callable[[str], str],
        get_att: Callable[[str, str], str],
        conditions: dict[str, Any],
    ) -> None:
        self.parameters = parameters
        self.pseudo = pseudo
        self._ref = ref
        self._get_att = get_att
        self._conditions_src = conditions
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            if name not in self._conditions_src:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(self._conditions_src[name]))
        return self._conditions[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = _FUNCTIONS.get(key)
            if handler is not None:
                return handler(self, arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._ref(name)

    def sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return str(self._get_att(logical, attr))
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return _SUB_VAR.sub(replace, text).replace("${!", "${")


def _join(r: Resolver, arg: Any) -> str:
    sep, items = arg
    return str(sep).join(str(i) for i in r.resolve(items))


def _split(r: Resolver, arg: Any) -> list[str]:
    sep, text = arg
    return str(r.resolve(text)).split(sep)


def _select(r: Resolver, arg: Any) -> Any:
    index, items = arg
    return r.resolve(items)[int(r.resolve(index))]


def _if(r: Resolver, arg: Any) -> Any:
    name, yes, no = arg
    return r.resolve(yes if r.condition(name) else no)


def _get_att(r: Resolver, arg: Any) -> Any:
    logical, attr = arg if isinstance(arg, list) else str(arg).split(".", 1)
    return r._get_att(logical, r.resolve(attr))


_FUNCTIONS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": lambda r, a: r.ref(a),
    "Fn::Sub": lambda r, a: r.sub(a),
    "Fn::GetAtt": _get_att,
    "Fn::Join": _join,
    "Fn::Split": _split,
    "Fn::Select": _select,
    "Fn::If": _if,
    "Fn::Equals": lambda r, a: r.resolve(a[0]) == r.resolve(a[1]),
    "Fn::Not": lambda r, a: not r.resolve(a[0]),
    "Fn::Contains": lambda r, a: r.resolve(a[1]) in r.resolve(a[0]),
    "Fn::And": lambda r, a: all(r.resolve(x) for x in a),
    "Fn::Or": lambda r, a: any(r.resolve(x) for x in a),
    "Fn::ToJsonString": lambda r, a: json.dumps(r.resolve(a)),
    "Fn::Length": lambda r, a: len(r.resolve(a)),
}
