"""A run's result and a batch's report: a row per fault and per shape feature, the JSON, and
the evidence of each violating run."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from enipin_lab.chaos.planning import (
    AZS,
    FAULTS,
    MAX_DESIRED,
    PARAMETERS,
    POOL_PER_AZ,
    STACK_DEVICE_INDEX,
    Shape,
    Step,
)


@dataclass(frozen=True)
class Violation:
    invariant: str
    step: int | None  # the step after which it was first seen; None: once the run settled
    detail: str


@dataclass
class RunResult:
    seed: int
    shape: Shape
    steps: list[Step]
    injected: list[str]  # the faults that found their moment (a mid-flight one may not)
    notes: list[str]
    violations: list[Violation]
    executions: dict[str, int]  # status -> count, both state machines
    wall_seconds: float
    aws_seconds: float
    # a violating run's record (ChaosRun.evidence), written beside the report, not in it
    evidence: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "evidence"},
            "shape": {**asdict(self.shape), "text": self.shape.describe()},
            "steps": [{**asdict(s), "text": s.describe()} for s in self.steps],
            "reproduce": f"enipin chaos --runs 1 --seed {self.seed}",
        }


@dataclass(frozen=True)
class FaultRow:
    fault: str
    injected: int
    runs: int
    survived: int  # runs with the fault and no violation
    violations: int  # violations in runs with the fault


@dataclass
class ChaosReport:
    seed: int
    runs: list[RunResult]
    wall_seconds: float
    jobs: int
    parameters: dict[str, Any] = field(default_factory=lambda: dict(PARAMETERS))

    @property
    def violations(self) -> list[tuple[int, Violation]]:
        return [(r.seed, v) for r in self.runs for v in r.violations]

    def table(self) -> list[FaultRow]:
        """A row per fault, then a row per shape feature (``injected``: runs of such a shape)."""
        rows = []
        for fault in FAULTS:
            hit = [r for r in self.runs if fault in r.injected]
            rows.append(_row(fault, hit, sum(r.injected.count(fault) for r in hit)))
        for label, has in SHAPE_FEATURES:
            hit = [r for r in self.runs if has(r.shape)]
            rows.append(_row(f"shape: {label}", hit, len(hit)))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "runs": len(self.runs),
            "jobs": self.jobs,
            "world": {"azs": AZS, "pool_per_az": POOL_PER_AZ, "max_desired": MAX_DESIRED},
            "parameters": self.parameters,
            "faults": [asdict(row) for row in self.table()],
            "violations": [
                {"seed": seed, **asdict(v), "reproduce": f"enipin chaos --runs 1 --seed {seed}"}
                for seed, v in self.violations
            ],
            "wall_seconds": round(self.wall_seconds, 1),
            "results": [r.to_dict() for r in self.runs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def write_evidence(self, directory: Path) -> list[Path]:
        """One file per violating run, ``seed-<N>.json``, in ``directory``."""
        written = []
        for run in self.runs:
            if run.evidence is None:
                continue
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"seed-{run.seed}.json"
            path.write_text(json.dumps(run.evidence, indent=1, default=str) + "\n")
            written.append(path)
        return written


SHAPE_FEATURES: tuple[tuple[str, Callable[[Shape], bool]], ...] = (
    ("warm pool KEEP", lambda shape: shape.warm_pool == "KEEP"),
    ("warm pool RELEASE", lambda shape: shape.warm_pool == "RELEASE"),
    ("two groups, one pool", lambda shape: shape.second_group),
    ("hooks move the device index", lambda shape: shape.device_index != STACK_DEVICE_INDEX),
    ("attaches paced", lambda shape: shape.paced),
)


def _row(name: str, hit: list[RunResult], injected: int) -> FaultRow:
    return FaultRow(
        fault=name,
        injected=injected,
        runs=len(hit),
        survived=sum(1 for r in hit if not r.violations),
        violations=sum(len(r.violations) for r in hit),
    )
