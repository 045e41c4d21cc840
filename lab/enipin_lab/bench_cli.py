"""``enipin bench``: enipin and the classic boot script side by side, in the sandbox."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

import click

from enipin.cli.console import fail
from enipin_lab.bench import (
    CLASSIC,
    CLOCKS,
    ENIPIN,
    PHASES,
    SCALE_IN,
    SCALE_OUT_AGAIN,
    BenchConfig,
    BenchResult,
    CostLine,
    Phase,
    run_bench,
)

PHASE_TITLES = {"scale_out": "out", "scale_in": "in", "scale_out_again": "again"}
LEGEND = (
    "out: scale out {n} at once and settle; in: scale in {n}; again: scale out {n} at once "
    "again. Per instance: per instance launched (out, again) or terminated (in)."
)


def _parameters(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        parsed[key] = val
    return parsed


@click.command()
@click.option("--instances", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--azs", type=click.IntRange(1, 6), default=3, show_default=True)
@click.option("--pool-per-az", type=click.IntRange(min=1), help="[max per AZ + 1 spare]")
@click.option(
    "--clock",
    type=click.Choice(CLOCKS),
    default="auto",
    show_default=True,
    help="enipin's sandbox clock. auto: fast (1/50) up to 16 instances, real time above, "
    "where the in-process simulation could not keep up with a compressed clock. slow: "
    "--slowdown times slower than real time, for latency figures at hundreds of launches.",
)
@click.option(
    "--slowdown",
    type=click.FloatRange(min=1.0),
    default=4.0,
    show_default=True,
    metavar="N",
    help="Real seconds per AWS second with --clock slow.",
)
@click.option(
    "--parameter",
    "parameters",
    multiple=True,
    callback=_parameters,
    metavar="KEY=VALUE",
    help="Template parameter for the enipin stack, repeatable (e.g. PollSeconds=10).",
)
@click.option(
    "--billed-ms",
    type=click.FloatRange(min=1),
    default=100.0,
    show_default=True,
    help="Assumed billed duration of one Lambda invocation, for the cost estimate.",
)
@click.option(
    "--buckets/--no-buckets",
    default=True,
    show_default=True,
    help="EC2's and Step Functions' documented request buckets, shared by every caller.",
)
@click.option(
    "--neighbour",
    type=click.FloatRange(0.0, 0.99),
    default=0.0,
    show_default=True,
    metavar="F",
    help="The fraction of each bucket the account's other tooling holds (with --buckets).",
)
@click.option("--json", "json_file", type=click.File("w"), help="Also write the results here.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
def bench(
    instances: int,
    azs: int,
    pool_per_az: int | None,
    clock: str,
    slowdown: float,
    parameters: dict[str, str],
    billed_ms: float,
    buckets: bool,
    neighbour: float,
    json_file: IO[str] | None,
    markdown: bool,
) -> None:
    """Scale out N instances at once, scale in, scale out again: enipin's workflows and the
    classic boot script (first tagged ENI, no filter, no retry) in the sandbox, side by side.

    Exit status 1 when enipin pinned fewer than all instances or attached an ENI twice.
    JSON keys: config, enipin, classic (each: phases.{scale_out,scale_in,scale_out_again},
    notes, clock, memory_mb, template_parameters, model), cost, wall_seconds.
    """
    config = BenchConfig(
        instances=instances,
        azs=azs,
        pool_per_az=pool_per_az,
        clock=clock,
        slowdown=slowdown,
        parameters=parameters,
        billed_ms=billed_ms,
        buckets=buckets,
        neighbour=neighbour,
    )
    if config.pool_size_per_az < -(-instances // azs):
        fail(f"a pool of {config.pool_size_per_az} per AZ cannot hold {instances} instances")
    result = run_bench(config, progress=lambda line: click.echo(line, err=True))
    click.echo(render(result, markdown))
    if json_file is not None:
        json_file.write(result.to_json() + "\n")
    if not _enipin_ok(result):
        sys.exit(1)


def _enipin_ok(result: BenchResult) -> bool:
    return all(
        p.double_attached == 0 and (p.pinned is None or p.pinned == p.instances)
        for p in result.enipin.phases
    )


# -- rendering -------------------------------------------------------------------------------


def render(result: BenchResult, markdown: bool = False) -> str:
    header, rows = table_rows(result)
    lines = [LEGEND.format(n=result.config.instances), ""]
    lines += [_markdown(header, rows) if markdown else _aligned(header, rows), ""]
    lines += _footer(result)
    return "\n".join(lines)


def table_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    header = [""]
    for name in PHASES:
        header += [f"{PHASE_TITLES[name]}: {ENIPIN}", CLASSIC]
    pairs = [(result.enipin.phase(name), result.classic.phase(name)) for name in PHASES]
    rows: list[list[str]] = []
    for label, cell in _metrics(pairs):
        rows.append([label, *(cell(p) for pair in pairs for p in pair)])
    return header, rows


Cell = Callable[[Phase], str]


def _metrics(pairs: list[tuple[Phase, Phase]]) -> list[tuple[str, Cell]]:
    phases = [p for pair in pairs for p in pair]
    failures = sorted({code for p in phases for code in p.failures})
    operations = sorted({op for p in phases for op in p.calls})
    metrics: list[tuple[str, Cell]] = [
        ("pinned", _pinned),
        ("double attachments", lambda p: str(p.double_attached)),
        *((f"failed: {code}", _failure(code)) for code in failures),
        ("races lost per pin", lambda p: _num(p.races_lost_per_pin)),
        ("executions", _executions),
        ("lifecycle actions timed out", lambda p: _num(p.actions_timed_out)),
        ("state transitions / execution", _transitions),
        ("Lambda invocations / execution", _invocations),
        ("execution duration p50 / max (AWS s)", _duration),
        ("launch to CONTINUE over the floor p50 / p99 / max (AWS s)", _over_floor),
        *((f"{op} / instance", _calls(op)) for op in operations),
        ("AWS calls / instance", lambda p: _num(_ratio(sum(p.calls.values()), p.instances))),
        ("throttled calls", lambda p: str(p.throttled)),
        ("pool ENIs free when settled", lambda p: f"{p.pool_free_after}/{p.pool_size}"),
        ("all free after (AWS s)", _free_seconds),
        ("MACs reused from 1st scale-out", _reused),
        ("wall time (s)", lambda p: f"{p.wall_seconds:.1f}"),
        ("max scheduler lag (AWS s)", lambda p: f"{p.max_clock_lag:.1f}"),
    ]
    return metrics


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _ratio(count: float, units: int) -> float | None:
    return round(count / units, 2) if units else None


def _pinned(p: Phase) -> str:
    if p.pinned is None:
        return "-"
    return f"{p.pinned}/{p.instances} ({p.pinned_pct:g}%)"


def _failure(code: str) -> Cell:
    return lambda p: str(p.failures.get(code, 0))


def _executions(p: Phase) -> str:
    if p.executions is None:
        return "-"
    return ", ".join(f"{n} {status}" for status, n in sorted(p.executions.statuses.items()))


def _transitions(p: Phase) -> str:
    if p.executions is None:
        return "-"
    return _num(_ratio(p.executions.transitions, p.executions.count))


def _invocations(p: Phase) -> str:
    if p.executions is None:
        return "-"
    return _num(_ratio(sum(p.invocations.values()), p.executions.count))


def _over_floor(p: Phase) -> str:
    if not p.over_floor:
        return "-"
    return " / ".join(f"{p.over_floor[k]:g}" for k in ("p50", "p99", "max"))


def _duration(p: Phase) -> str:
    if p.executions is None or p.executions.duration_p50 is None:
        return "-"
    return f"{p.executions.duration_p50:g} / {p.executions.duration_max:g}"


def _calls(operation: str) -> Cell:
    return lambda p: _num(_ratio(p.calls.get(operation, 0), p.instances))


def _free_seconds(p: Phase) -> str:
    if p.name != SCALE_IN:
        return "-"
    return "not within limit" if p.pool_free_seconds is None else f"{p.pool_free_seconds:g}"


def _reused(p: Phase) -> str:
    if p.name != SCALE_OUT_AGAIN or p.macs_reused is None:
        return "-"
    return f"{p.macs_reused}/{len(p.macs)}"


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _footer(result: BenchResult) -> list[str]:
    cost = result.cost
    prices = cost.prices
    lines = [
        f"enipin clock: {result.enipin.clock}; classic clock: {result.classic.clock}; "
        f"modelled delays (AWS s): {_pairs(result.enipin.model)}; "
        f"template: {_pairs(result.enipin.template_parameters)}",
        f"request buckets: {_buckets(result.config)}",
        f"latency floor: {_floor(result)} AWS s from a launch's lifecycle action to its "
        "CONTINUE (the model's pending, agent start-up and one command; the attach fits inside)",
        f"cost at {prices.region} list prices: Step Functions Standard "
        f"{_usd(prices.sfn_standard_per_1k_transitions)} per 1,000 state transitions (retries "
        f"included); Lambda arm64 {_usd(prices.lambda_arm64_per_gb_second)} per GB-second and "
        f"{_usd(prices.lambda_per_1m_requests)} per 1M requests; free tiers {prices.free_tiers}",
        f"  Lambda memory (MB): {_memory(cost.memory_mb)}",
        _cost(cost.launch),
        _cost(cost.release),
        "  the classic boot script has no workflow: its only cost is the instances' API calls",
    ]
    lines += [f"  assumed: {a}" for a in cost.assumptions]
    lines += [
        f"{strategy.strategy}: {note}"
        for strategy in (result.enipin, result.classic)
        for note in strategy.notes
    ]
    lines.append(
        f"wall time {result.wall_seconds:.1f} s (both strategies, sandbox set-up included)"
    )
    return lines


def _floor(result: BenchResult) -> str:
    floors = {p.over_floor["floor"] for p in result.enipin.phases if p.over_floor}
    return ", ".join(f"{f:g}" for f in sorted(floors)) or "-"


def _buckets(config: BenchConfig) -> str:
    if not config.buckets:
        return "off (no call is ever throttled)"
    held = f", a neighbour holding {config.neighbour:.0%} of each" if config.neighbour else ""
    return f"EC2's and Step Functions' as documented, shared by every caller{held}"


def _usd(price: float) -> str:
    return "$" + f"{price:.10f}".rstrip("0").ljust(len(f"{price:.2f}"), "0")


def _cost(line: CostLine) -> str:
    return (
        f"  per 1,000 {line.unit}: ${line.total_usd:.4f} = Step Functions "
        f"${line.step_functions_usd:.4f} ({line.transitions:g} transitions each) + Lambda "
        f"requests ${line.lambda_requests_usd:.4f} ({line.invocations:g} each) + Lambda "
        f"duration ${line.lambda_duration_usd:.4f} ({line.gb_seconds:g} GB-s each)"
    )


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def _memory(memory: dict[str, int]) -> str:
    sizes = sorted(set(memory.values()))
    if len(sizes) == 1:
        return f"{sizes[0]} for all {len(memory)} functions"
    return ", ".join(f"{fn}={mb}" for fn, mb in memory.items())
