"""Running: each run in a sandbox of its own (a process each when several run at once), its
shape built, each step acted and checked, then the run settled and checked again."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from enipin_lab.chaos.faults import _Faults
from enipin_lab.chaos.invariants import _Invariants
from enipin_lab.chaos.planning import AZS, MAX_DESIRED, Step, plan, shape_of
from enipin_lab.chaos.results import ChaosReport, RunResult

RELEASE_DELAY = 120.0  # AWS seconds EC2 takes to free the ENI of a terminated instance


class ChaosRun(_Faults, _Invariants):
    """One run's view of the sandbox: acting on it as operators and AWS would, and checking
    it through the AWS APIs (plus what Auto Scaling and EC2 record of how things ended).

    The faults are :class:`_Faults`' (``faults``), the checks :class:`_Invariants`'
    (``invariants``), both reading the sandbox through :class:`_Observer` (``observer``)."""


def run_chaos(
    seed: int,
    runs: int,
    jobs: int = 1,
    guest_mode: str = "model",
    progress: Callable[[RunResult], None] = lambda _: None,
    buckets: bool = True,
) -> ChaosReport:
    """Runs ``seed`` .. ``seed + runs - 1``, ``jobs`` at a time (a process each: moto's
    backends are per process)."""
    started = time.monotonic()
    seeds = range(seed, seed + runs)
    results: list[RunResult] = []
    if jobs <= 1:
        for s in seeds:
            results.append(run_one(s, guest_mode, buckets))
            progress(results[-1])
    else:
        # spawned, not forked: a fork would copy whatever threads and locks this process holds
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            for result in pool.map(run_one, seeds, [guest_mode] * runs, [buckets] * runs):
                results.append(result)
                progress(result)
    return ChaosReport(seed, results, time.monotonic() - started, jobs)


def run_one(seed: int, guest_mode: str = "model", buckets: bool = True) -> RunResult:
    from enipin_lab.sandbox import Sandbox

    shape, steps = shape_of(seed), plan(seed)
    started = time.monotonic()
    with Sandbox(
        azs=AZS,
        pool_per_az=shape.pool_per_az,
        max_size=MAX_DESIRED + 2,
        release_delay=RELEASE_DELAY,
        guest_mode=guest_mode,
        deploy=False,
        buckets=buckets,
    ) as sb:
        chaos = ChaosRun(sb, shape)
        chaos.build()
        sb.run_schedules()  # the reconciler and the pool metrics on their schedules, as deployed
        step: Step | None = None
        try:
            for step in steps:
                chaos.act(step)
                chaos.check_always(step.index)
                sb.clock.sleep(step.gap)
            step = None
            chaos.converge()
            chaos.check_always(None)
            chaos.check_converged()
        except Exception as exc:  # one broken run must not hide the others' results
            where = None if step is None else step.index
            chaos.flag("run_crashed", where, f"{type(exc).__name__}: {exc}")
            # kept in the report: a seed does not fix an interleaving, a replay may not crash
            chaos.notes.append(traceback.format_exc(limit=8))
        return RunResult(
            seed=seed,
            shape=shape,
            steps=steps,
            injected=chaos.injected,
            notes=chaos.notes,
            violations=chaos.violations,
            executions=chaos.execution_statuses(),
            wall_seconds=round(time.monotonic() - started, 1),
            aws_seconds=round(sb.clock.monotonic(), 1),
            evidence=chaos.evidence() if chaos.violations else None,
        )
