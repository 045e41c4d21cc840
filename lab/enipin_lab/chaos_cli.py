"""``enipin chaos``: seeded fault runs in the sandbox; a per-fault table; exit 1 on a violation."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

import click

from enipin.cli.console import table
from enipin_lab.chaos import INVARIANTS, ChaosReport, RunResult, run_chaos


@click.command()
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Run i uses seed SEED + i.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="the CPU count",
    help="Runs at once, one process each.",
)
@click.option(
    "--guest",
    type=click.Choice(["model", "netns", "auto"]),
    default="model",
    show_default=True,
    help="The guest OS: the model, or the SSM document's script in network namespaces.",
)
@click.option(
    "--buckets/--no-buckets",
    default=True,
    show_default=True,
    help="EC2's and Step Functions' documented request buckets, shared by every caller.",
)
@click.option("--json", "json_file", type=click.File("w"), help="Also write the results here.")
def chaos(
    runs: int, seed: int, jobs: int, guest: str, buckets: bool, json_file: IO[str] | None
) -> None:
    """Random, reproducible fault runs against the deployed stack in the sandbox.

    Each run's shape may have a warm pool (KEEP or RELEASE), a second group on the same pool,
    and hooks that move the ENI's device index. The run scales the group out, then draws 3-6
    faults (scale in and out, duplicated, dropped and late lifecycle events, throttling bursts,
    slow and absent SSM agents, NICs that never come up, ENIs detached or deleted by hand,
    instances terminated mid-workflow, executions failed and replayed, warm pools resized),
    lets the sandbox settle and the reconciler run, and checks EC2, Auto Scaling and Step
    Functions. Exit status 1 on any violation, with the seed and step
    that reproduce it.
    """
    report = run_chaos(seed, runs, jobs=jobs, guest_mode=guest, buckets=buckets, progress=_progress)
    click.echo(render(report))
    if json_file is not None:
        json_file.write(report.to_json() + "\n")
        # a violating run's histories, calls and records, to study what its replay may not redo
        for path in report.write_evidence(Path(f"{json_file.name}.evidence")):
            click.echo(f"evidence: {path}", err=True)
    if report.violations:
        sys.exit(1)


def _progress(result: RunResult) -> None:
    verdict = f"{len(result.violations)} violations" if result.violations else "ok"
    faults = ", ".join(result.injected[1:]) or "-"
    shape = result.shape.describe()
    click.echo(
        f"seed {result.seed}: {verdict} ({shape}: {faults}; {result.wall_seconds:.0f} s)", err=True
    )


def render(report: ChaosReport) -> str:
    rows = [
        {
            "fault": row.fault,
            "injected": row.injected,
            "runs": row.runs,
            "survived": row.survived,
            "violations": row.violations,
        }
        for row in report.table()
    ]
    lines = [table(rows, ["fault", "injected", "runs", "survived", "violations"]), ""]
    counts = {name: 0 for name in INVARIANTS}
    for _, violation in report.violations:
        counts[violation.invariant] += 1
    lines.append(
        table(
            [{"invariant": k, "violations": v} for k, v in counts.items()],
            ["invariant", "violations"],
        )
    )
    lines.append("")
    seeds = f"{report.seed}..{report.seed + len(report.runs) - 1}"
    total = len(report.violations)
    lines.append(
        f"{len(report.runs)} runs (seeds {seeds}), {total} violations, "
        f"{report.wall_seconds:.0f} s on {report.jobs} processes"
    )
    for seed, violation in report.violations:
        where = "once settled" if violation.step is None else f"after step {violation.step}"
        run = next(r for r in report.runs if r.seed == seed)
        step = "" if violation.step is None else f" [{run.steps[violation.step].describe()}]"
        lines.append(
            f"VIOLATION seed {seed} {where}{step}: {violation.invariant}: {violation.detail}"
            f" -- reproduce: enipin chaos --runs 1 --seed {seed}"
        )
    return "\n".join(lines)
