"""Typed results of the experiments: what a run folder holds, readable from Python."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._errors import EomError
from . import _notebook
from ._store import RunDir, read_json, write_json

#: kind → `draw(result) -> list[Figure]`, filled by `eom.report` (which may import this layer;
#: this layer may not import it), so `.plot()` reuses the report's figure functions.
PLOTTERS: dict[str, Callable[[ExperimentResult], list]] = {}

#: The parts of a paper, each in its sub-folder.
PAPER_PARTS = ("run", "sweep", "symmetry", "validity")


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """One experiment's outcome: `config` (settings, resolved values, versions), `results`
    (the summary of results.json) and `metrics` (the columns of metrics.csv).

    `to_dir(path)` writes config.json, results.json and metrics.csv; `from_dir(path)` reads
    them back (then `eom.report.write_report(path)` draws figures and report.html). It prints
    as one line, renders in Jupyter as a short table (settings, final errors, flags) and
    `.plot()` draws its report's figures. A paper's `parts` holds its four sub-results."""

    kind: str
    config: dict
    results: dict
    metrics: dict[str, np.ndarray]
    parts: dict[str, ExperimentResult] = dataclasses.field(default_factory=dict, repr=False,
                                                           compare=False)

    def __repr__(self) -> str:
        return _notebook.text(self.kind, type(self).__name__, self.config, self.results)

    def _repr_html_(self) -> str:
        return _notebook.html_table(self.kind, type(self).__name__, self.config, self.results)

    def plot(self) -> list:
        """The figures of this result's report as open matplotlib `Figure`s (the Agg backend
        outside Jupyter; in a notebook the inline backend shows them). Empty when nothing was
        recorded yet; a paper returns its parts' figures in order."""
        if self.kind == "paper":
            return [f for k in PAPER_PARTS if k in self.parts for f in self.parts[k].plot()]
        draw = PLOTTERS.get(self.kind)
        if draw is None:
            raise EomError(f"no figures are registered for `{self.kind}` results (import "
                           "eom.report, which registers them).")
        return draw(self)

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
        for name, part in self.parts.items():
            part.to_dir(rd.path / name)
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
        parts = {}
        if kind == "paper":
            parts = {k: ExperimentResult.from_dir(rd.path / k) for k in PAPER_PARTS
                     if RunDir(rd.path / k).exists()}
        return klass(kind, config, rd.read_results(), rd.read_metrics(), parts)


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
