"""``enipin selftest``: prove the deployment in this account on a throwaway group."""

from __future__ import annotations

import click

from enipin.cli.options import current
from enipin.deployment import with_aws_errors
from enipin.selftest import DEFAULT_TYPE, Plan, Selftest, SelftestFailed, find_made, remove


@click.command()
@click.option("--subnet", help="Subnet for the throwaway group and its two ENIs.")
@click.option("--launch-template", help="Launch template to use (default: the stock AL2023 AMI).")
@click.option("--image-id", help="AMI for the stock launch template (default: latest AL2023).")
@click.option("--instance-type", default=DEFAULT_TYPE, show_default=True)
@click.option("--instance-profile", help="Instance profile for the stock launch template.")
@click.option("--timeout", default=1200, show_default=True, help="Seconds each phase may take.")
@click.option("--cleanup", is_flag=True, help="Only remove what an earlier run left behind.")
@with_aws_errors
def selftest(
    subnet: str | None,
    launch_template: str | None,
    image_id: str | None,
    instance_type: str,
    instance_profile: str | None,
    timeout: int,
    cleanup: bool,
) -> None:
    """Make the stack's selftest group with two instances and two pool ENIs, check every pin
    in the guest, force a failure, scale in, check the release, and tear it all down (also on
    Ctrl-C or failure). Exit 1 when a check fails. Needs a stack deployed with
    SelftestGroupName."""
    dep = current()
    if cleanup:
        made = find_made(dep)
        remove(dep, made, click.echo)
        if not made:
            click.echo("nothing left by an earlier selftest")
        return
    if not subnet:
        raise click.UsageError("--subnet is required (or --cleanup)")
    plan = Plan(subnet, launch_template, image_id, instance_type, instance_profile, timeout)
    try:
        report = Selftest(dep, plan, click.echo).run()
    except KeyboardInterrupt:
        click.echo("enipin: interrupted; what the selftest made was removed", err=True)
        raise SystemExit(130) from None
    except SelftestFailed as exc:
        click.echo(f"enipin: selftest failed: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"cost: {report.cost}")
    passed = sum(c.ok for c in report.checks)
    click.echo(f"{passed} of {len(report.checks)} checks passed")
    if not report.ok:
        raise SystemExit(1)
