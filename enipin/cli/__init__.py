"""The ``enipin`` command: operator commands against a deployed stack.

The lab (``lab/``, installed beside the CLI for development) adds ``demo``, ``bench`` and
``chaos`` through the ``enipin.commands`` entry points; the CLI itself knows nothing of it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import click

from enipin.cli.console import OneLine
from enipin.cli.doctor import doctor
from enipin.cli.executions import executions
from enipin.cli.guard import guard
from enipin.cli.options import Target
from enipin.cli.pool import pool
from enipin.cli.reconcile import reconcile
from enipin.cli.selftest import selftest
from enipin.deployment import DEFAULT_STACK
from enipin.errors import OperatorError

PLUGINS = "enipin.commands"  # entry-point group of commands other packages add


class _Enipin(click.Group):
    """Maps the operations layer's ``OperatorError`` to one line and its exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OperatorError as exc:
            raise OneLine(str(exc)) from None


@click.group(cls=_Enipin)
@click.version_option(package_name="enipin")
@click.option("--profile", envvar="AWS_PROFILE", help="AWS profile (default credentials chain).")
@click.option("--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], help="AWS Region.")
@click.option(
    "--stack", default=DEFAULT_STACK, show_default=True, help="Name of the deployed enipin stack."
)
@click.pass_context
def main(ctx: click.Context, profile: str | None, region: str | None, stack: str) -> None:
    """Pin pooled ENIs to Auto Scaling instances, and inspect, replay and size what it does."""
    ctx.obj = Target(profile=profile, region=region, stack=stack)


main.add_command(doctor)
main.add_command(executions)
main.add_command(guard)
main.add_command(pool)
main.add_command(reconcile)
main.add_command(selftest)
for _plugin in entry_points(group=PLUGINS):
    main.add_command(_plugin.load(), _plugin.name)
