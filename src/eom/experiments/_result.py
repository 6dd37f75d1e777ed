"""Typed results of the experiments: what a run folder holds, readable from Python."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .._errors import EomError
from ._store import RunDir, read_json, write_json


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """One experiment's outcome: `config` (settings, resolved values, versions), `results`
    (the summary of results.json) and `metrics` (the columns of metrics.csv).

    `to_dir(path)` writes config.json, results.json and metrics.csv; `from_dir(path)` reads
    them back (then `eom.report.write_report(path)` draws figures and report.html)."""

    kind: str
    config: dict
    results: dict
    metrics: dict[str, np.ndarray]

    @property
    def status(self) -> str:
        return self.results.get("status", "unknown")

    @property
    def settings(self) -> dict:
        return self.config.get("settings", {})

    def to_dir(self, path: str | os.PathLike) -> Path:
        rd = RunDir(path)
        rd.acquire()
        try:
            write_json(rd.config_path, self.config)
            write_json(rd.results_path, self.results)
            if self.metrics:
                keys = list(self.metrics)
                n = len(self.metrics[keys[0]])
                rows = [[_cell(self.metrics[k][i]) for k in keys] for i in range(n)]
                rd.write_rows(keys, rows)
        finally:
            rd.release()
        return rd.path

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> ExperimentResult:
        rd = RunDir(path)
        if not rd.exists():
            raise EomError(f"{path} is not an eom run folder (no config.json).")
        config = read_json(rd.config_path)
        kind = config.get("command", "run")
        klass = RESULT_TYPES.get(kind, ExperimentResult)
        if cls is not ExperimentResult and klass is not cls:
            raise EomError(f"{path} holds an `eom {kind}` run, not a {cls.__name__}.")
        return klass(kind, config, rd.read_results(), rd.read_metrics())


def _cell(x) -> str:
    x = np.asarray(x).item()
    if isinstance(x, bool):
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


class RunResult(ExperimentResult):
    """`eom.experiments.run`: GD against gradient flow and the EoM of each order."""


class SweepResult(ExperimentResult):
    """`eom.experiments.sweep`: error at a fixed time against η, fitted slopes."""


class SymmetryResult(ExperimentResult):
    """`eom.experiments.symmetry`: scale/translation groups under GD, GF and the EoM."""


class ValidityResult(ExperimentResult):
    """`eom.experiments.validity`: where each added order stops helping."""


class PaperResult(ExperimentResult):
    """`eom.experiments.paper`: the seed paper's claims, one sub-folder per experiment."""


RESULT_TYPES = {"run": RunResult, "sweep": SweepResult, "symmetry": SymmetryResult,
                "validity": ValidityResult, "paper": PaperResult}
