"""What every command shares: the deployment the global options name, and common options."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click

from enipin.deployment import Deployment, connect


@dataclass
class Target:
    """What the global options name; connected on first use, so ``--help`` needs no AWS."""

    profile: str | None
    region: str | None
    stack: str
    _deployment: Deployment | None = None

    def deployment(self) -> Deployment:
        if self._deployment is None:
            self._deployment = connect(self.profile, self.region, self.stack)
        return self._deployment


def current() -> Deployment:
    """The deployment the running ``enipin`` command's global options name."""
    return click.get_current_context().find_object(Target).deployment()  # type: ignore[union-attr]


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(_ctx: Any, _param: Any, value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if not match:
        raise click.BadParameter("use a number and a unit: 90s, 30m, 24h, 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


since_option = click.option(
    "--since", callback=parse_since, help="Only runs started this long ago or later (24h, 7d)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
