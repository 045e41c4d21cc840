"""``enipin pool``: create pool ENIs, show the pool per AZ, check it against a group's size."""

from __future__ import annotations

from collections.abc import Sequence

import click

from enipin.cli import console
from enipin.cli.console import fail
from enipin.cli.options import current, json_option
from enipin.deployment import Deployment, aws_errors, with_aws_errors
from enipin.errors import OperatorError
from enipin.pool import (
    CapacityCheck,
    PoolEni,
    Subnet,
    check_capacity,
    create_pool_eni,
    find_group,
    find_subnet,
    read_pool,
)

CREATED_COLUMNS = ("eni", "az", "subnet", "mac", "ip")
AZ_COLUMNS = ("az", "total", "free", "in_use")
ENI_COLUMNS = ("eni", "az", "subnet", "mac", "ip", "status", "instance", "group")
CHECK_COLUMNS = ("az", "need", "usable", "free", "short")


@click.group()
def pool() -> None:
    """Create, inspect and size the pool of ENIs."""


@pool.command()
@click.option("--subnet", "subnet_id", required=True, help="Subnet to create the ENIs in.")
@click.option("--count", type=click.IntRange(min=1), required=True, help="ENIs to create.")
@click.option("--description", default="enipin pool ENI", show_default=True)
@click.option(
    "--security-group",
    "security_groups",
    multiple=True,
    help="Security group ID, repeatable [default: the VPC's default group].",
)
@json_option
@with_aws_errors
def create(
    subnet_id: str, count: int, description: str, security_groups: tuple[str, ...], as_json: bool
) -> None:
    """Create pool ENIs in a subnet, tagged with the stack's pool tag as they are created."""
    deployment = current()
    ec2 = deployment.client("ec2")
    subnet = find_subnet(ec2, subnet_id)
    if subnet is None:
        fail(f"subnet {subnet_id} not found in {deployment.region}")
    created = _create(deployment, subnet, count, description, security_groups)
    if as_json:
        click.echo(console.to_json({"enis": [e.to_dict() for e in created]}))
    else:
        click.echo(console.table([e.to_dict() for e in created], CREATED_COLUMNS))


def _create(
    deployment: Deployment,
    subnet: Subnet,
    count: int,
    description: str,
    security_groups: Sequence[str],
) -> list[PoolEni]:
    created: list[PoolEni] = []
    label = f"creating {count} ENIs in {subnet.id}"
    try:
        with aws_errors(), console.progress(range(count), label, count) as steps:
            for _ in steps:
                eni = create_pool_eni(
                    deployment.client("ec2"),
                    subnet,
                    deployment.pool_tag,
                    description,
                    security_groups,
                )
                created.append(eni)
    except OperatorError as exc:
        if not created:
            raise
        # Say what exists now, so a re-run can be sized to the remainder.
        ids = ", ".join(e.eni for e in created)
        fail(f"created {len(created)} of {count} ENIs ({ids}), then {exc}")
    return created


@pool.command()
@json_option
@with_aws_errors
def status(as_json: bool) -> None:
    """Pool ENIs per AZ (total, free, in use), then each ENI with its instance and group."""
    deployment = current()
    found = read_pool(deployment.client("ec2"), deployment.pool_tag)
    if as_json:
        click.echo(console.to_json(found.to_dict()))
        return
    if not found.enis:
        key, value = deployment.pool_tag
        click.echo(f"no ENIs tagged {key}={value} in {deployment.region}")
        return
    click.echo(console.table([a.to_dict() for a in found.azs], AZ_COLUMNS))
    click.echo()
    click.echo(console.table([e.to_dict() for e in found.enis], ENI_COLUMNS))


@pool.command()
@click.option("--asg", "group_name", help="Auto Scaling group to size for [the stack's group].")
@click.option(
    "--spare",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="ENIs per AZ beyond the group's balanced maximum, for rolling replacement.",
)
@json_option
@click.pass_context
@with_aws_errors
def check(ctx: click.Context, group_name: str | None, spare: int, as_json: bool) -> None:
    """Check each AZ's pool against the group's maximum plus spares; exit 1 when short."""
    deployment = current()
    name = group_name or _stack_group(deployment)
    ec2 = deployment.client("ec2")
    group = find_group(deployment.client("autoscaling"), ec2, name)
    if group is None:
        fail(f"Auto Scaling group {name} not found")
    # the stack's groups share its pool: at their maximums they hold their ENIs at once
    sharing = [
        found
        for other in deployment.group_names
        if other != name and (found := find_group(deployment.client("autoscaling"), ec2, other))
    ]
    result = check_capacity(read_pool(ec2, deployment.pool_tag).enis, group, spare, sharing)
    for warning in _warnings(result, deployment):
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(console.to_json(result.to_dict()))
        if not result.ok:
            click.echo(_verdict(result), err=True)
    else:
        click.echo(console.table([a.to_dict() for a in result.azs], CHECK_COLUMNS))
        click.echo()
        click.echo(_formula(result))
        click.echo(_verdict(result))
    if not result.ok:
        ctx.exit(1)


def _stack_group(deployment: Deployment) -> str:
    groups = deployment.group_names
    if len(groups) != 1:
        fail(f"pass --asg NAME: stack {deployment.stack} serves {', '.join(groups) or 'none'}")
    return groups[0]


def _warnings(result: CapacityCheck, deployment: Deployment) -> list[str]:
    name = result.group.name
    found = [
        f"{_enis(n)} in {az}, where {name} launches no instances" for az, n in result.unused.items()
    ]
    if name not in deployment.group_names:
        found.append(f"stack {deployment.stack} does not serve {name}: its launches are not pinned")
    return found


def _formula(result: CapacityCheck) -> str:
    group = result.group
    formula = (
        f"need per AZ: ceil(max {group.max_size} / {len(group.azs)} AZs) + {result.spare} spare"
    )
    if not result.sharing:
        return f"{formula} = {group.per_az + result.spare}"
    others = ", ".join(f"{g.name} (ceil({g.max_size} / {len(g.azs)}))" for g in result.sharing)
    return f"{formula}, plus what the groups sharing the pool hold at their maximum: {others}"


def _verdict(result: CapacityCheck) -> str:
    if result.ok:
        return f"ok: every AZ of {result.group.name} has enough pool ENIs"
    return "short: " + ", ".join(
        f"{a.az} needs {_enis(a.short, 'more ')}" for a in result.shortfalls
    )


def _enis(n: int, adjective: str = "pool ") -> str:
    return f"{n} {adjective}ENI{'' if n == 1 else 's'}"
