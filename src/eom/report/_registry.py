"""kind → reporter, and `write_report`, the one entry point (`eom report DIR` and every command).

A reporter turns a run folder's files into `(title, sections)`; `write_report` renders the page
and writes it atomically. It never replaces a report with a worse one: a folder whose
metrics.csv is missing or unreadable while its results say rows were written is an `EomError`,
and the old report.html stays. A run whose results say `running` but whose lock nobody holds
was killed: its report says `interrupted`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from .._errors import EomError
from ..experiments import RunDir, atomic_write
from ..experiments._store import read_json
from ._html import page
from ._kinds import REPORTERS, Reporter, effective_results
from ._paper import paper_report
from ._run import run_report
from ._sweep import sweep_report
from ._symmetry import symmetry_report
from ._validity import validity_report

REPORTERS.update({
    "run": run_report, "sweep": sweep_report, "symmetry": symmetry_report,
    "validity": validity_report, "paper": paper_report,
})


def register(kind: str, reporter: Reporter) -> None:
    """Add (or replace) the reporter of an experiment kind."""
    REPORTERS[kind] = reporter


def _rows_expected(results: dict) -> bool:
    keys = ("steps_done", "points_done")
    return any((results.get(k) or 0) > 0 for k in keys) or bool(
        results.get("lrs") or results.get("weight_decays_done"))


#: Columns each kind's metrics.csv must have for its report.
REQUIRED = {"run": ("step", "loss_gd"), "sweep": ("lr", "order", "error"),
            "symmetry": ("weight_decay", "step"), "validity": ("point", "order", "error")}


def _check_metrics(rd: RunDir, kind: str, results: dict) -> None:
    if kind == "paper":
        return
    header, rows = rd.read_rows()  # a damaged file raises EomError here
    missing = [c for c in REQUIRED.get(kind, ()) if header and c not in header]
    if missing:
        raise EomError(
            f"{rd.metrics_path} lacks the column(s) {', '.join(missing)} (renamed or damaged); "
            "the report was left as it was. Restore metrics.csv, or rerun the command with "
            "--overwrite."
        )
    if _rows_expected(results) and not rows:
        raise EomError(
            f"{rd.metrics_path} is missing or holds no rows, but results.json says rows were "
            "written; the report was left as it was. Restore metrics.csv, or rerun the command "
            "with --overwrite."
        )


def write_report(folder: str | os.PathLike | RunDir) -> Path:
    """figures/*.png and report.html of a run folder, from its files alone."""
    rd = folder if isinstance(folder, RunDir) else RunDir(folder)
    if not rd.exists():
        raise EomError(f"{rd.path} is not an eom run folder (no config.json); give the folder "
                       "that an eom command wrote, e.g. runs/<name>.")
    cfg = read_json(rd.config_path)
    kind = cfg.get("command", "run")
    if kind not in REPORTERS:
        raise EomError(f"{rd.path} holds an `eom {html.escape(str(kind))}` run, which has no "
                       f"reporter (known: {', '.join(REPORTERS)}).")
    results = effective_results(rd)
    _check_metrics(rd, kind, results)
    try:
        title, sections = REPORTERS[kind](rd, cfg, results)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise EomError(
            f"cannot build the report of {rd.path}: its files do not have the expected columns "
            f"({type(exc).__name__}: {exc}); the old report was left as it was. Rerun the "
            "command with --overwrite."
        ) from None
    atomic_write(rd.report_path, page(title, sections, cfg.get("dtype", "float64")))
    return rd.report_path
