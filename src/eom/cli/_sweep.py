"""`eom sweep`: learning rates × orders → the order-of-accuracy figure and table.

Each learning rate η_j = η_0/2^j runs GD and the EoM to the same time T = K·η_0; the error at T
falls like η^{N+1} for order N (THEORY.md §3). Rows are written per learning rate, so an
interrupted sweep resumes with the learning rates it has not done yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._errors import EomError
from ..measure import fit_sweep, sweep_point
from ._figures import order_accuracy_figure, order_name
from ._report import figure, kv_table, page, table
from ._run import build_problem, choose_lr
from ._settings import ModelSettings
from ._store import RunDir, read_json


@dataclass
class SweepSettings(ModelSettings):
    """Settings of `eom sweep` (also the keys of its `--config` TOML file)."""

    model: str = "mlp"
    dataset: str = "digits"
    lrs: list[float] | None = None  # None: lr_0·2^-j, j = 0..num_lrs-1, lr_0 from --target
    num_lrs: int = 4
    target: float = 0.2
    horizon_steps: int = 20  # T = horizon_steps · max(lrs)
    orders: list[int] = field(default_factory=lambda: [0, 1, 2])
    weight_decay: float = 0.0
    seed: int = 0
    subset: int | None = None
    width: int | None = None
    depth: int | None = None
    name: str | None = None
    out: str | None = None


def parse_lrs(text: str | list | None) -> list[float] | None:
    if text is None:
        return None
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    out = []
    for x in items:
        if str(x).strip() == "":
            continue
        try:
            v = float(x)
        except ValueError:
            raise EomError(f"--lrs: {x!r} is not a number; give e.g. --lrs 0.2,0.1,0.05.") from None
        if not v > 0:
            raise EomError(f"--lrs: learning rates must be positive, got {v}.")
        out.append(v)
    if len(out) < 2:
        raise EomError("--lrs needs at least two learning rates to fit a slope.")
    return sorted(set(out), reverse=True)


def execute_sweep(
    s: SweepSettings, rd: RunDir, *, resuming: bool,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    t0 = time.perf_counter()
    problem = build_problem(s)
    cfg = read_json(rd.config_path)
    res = cfg.get("resolved")
    if not res:
        if s.lrs is None:
            lr0, lam = choose_lr(problem, s.target, s.weight_decay)
            lrs = [lr0 / 2**j for j in range(s.num_lrs)]
        else:
            lrs, lam = list(s.lrs), None
        horizon = s.horizon_steps * max(lrs)
        res = {"lrs": lrs, "horizon": horizon, "lambda_max_initial": lam,
               "n_params": int(problem.n_params)}
        rd.update_config(resolved=res)
    lrs, horizon = res["lrs"], res["horizon"]
    done = rd.read_metrics() if resuming else {}
    done_lrs = set(np.round(done.get("lr", np.zeros(0)), 15).tolist())
    if on_start is not None:
        on_start(len([x for x in lrs if round(x, 15) in done_lrs]), len(lrs))
    status, message = "running", None
    try:
        for lr in lrs:
            if round(lr, 15) in done_lrs:
                continue
            err, flg = sweep_point(problem.loss, problem.params0, lr, s.orders, horizon,
                                   weight_decay=s.weight_decay)
            k = int(round(horizon / lr))
            rd.append_rows({
                "lr": np.full(len(s.orders), lr),
                "num_steps": np.full(len(s.orders), k),
                "order": np.asarray(s.orders),
                "error": np.asarray([err[n] for n in s.orders]),
                "flagged": np.asarray([int(flg[n]) for n in s.orders]),
            })
            if on_progress is not None:
                on_progress(1)
        status = "complete"
    except EomError as exc:
        status, message = "failed", str(exc)
        raise
    except KeyboardInterrupt:
        status, message = "interrupted", "Interrupted; rerun the same command to resume."
        raise
    finally:
        results = sweep_results(rd, s, res, status, message, time.perf_counter() - t0)
        rd.write_results(results)
        if status == "complete":
            write_sweep_report(rd, read_json(rd.config_path), results)
    return results


def sweep_results(rd, s, res, status, message, wall) -> dict:
    m = rd.read_metrics()
    out = {"status": status, "message": message, "model": s.model, "dataset": s.dataset,
           "orders": list(s.orders), "horizon": res["horizon"], "float64": True,
           "lambda_max_initial": res.get("lambda_max_initial"), "wall_time": {"total": wall}}
    if not m:
        return out
    lrs = sorted(set(m["lr"].tolist()))
    if len(lrs) < 2:
        return out
    errors, flags = {}, {}
    for n in s.orders:
        sel = m["order"] == n
        by_lr = dict(zip(m["lr"][sel].tolist(), zip(m["error"][sel], m["flagged"][sel],
                                                      strict=True), strict=True))
        errors[n] = [by_lr[x][0] for x in lrs]
        flags[n] = [bool(by_lr[x][1]) for x in lrs]
    sw = fit_sweep(res["horizon"], lrs, s.orders, errors, flags)
    out.update({
        "lrs": sw.lrs.tolist(),
        "num_steps": sw.num_steps.tolist(),
        "error": {str(n): sw.error[n].tolist() for n in sw.orders},
        "flagged": {str(n): sw.flagged[n].tolist() for n in sw.orders},
        "slope": {str(n): sw.slope[n] for n in sw.orders},
        "slope_stderr": {str(n): sw.slope_stderr[n] for n in sw.orders},
        "expected_slope": {str(n): n + 1 for n in sw.orders},
    })
    return out


def write_sweep_report(rd: RunDir, cfg: dict, results: dict):
    sections = []
    if "slope" in results:
        fig = order_accuracy_figure(results, rd.figures / "order_accuracy.png")
        rows = [[order_name(int(n)), results["slope"][n], results["slope_stderr"][n], int(n) + 1]
                for n in results["slope"]]
        sections.append(("Fitted slopes", table(["model", "slope", "std. error", "theory N+1"],
                                                rows)))
        err_rows = [[lr] + [results["error"][str(n)][j] for n in results["orders"]]
                    for j, lr in enumerate(results["lrs"])]
        sections.append(("Error at T against η", table(
            ["η"] + [order_name(n) for n in results["orders"]], err_rows)))
        sections.append(("Figure", figure(
            fig, "log–log error at the fixed time T against η; the slope of order N should be "
                 "N+1. Crosses mark points within 10× of the solver's own error.")))
    else:
        sections.append(("", f"<p class='warn'>Status: {results.get('status')}. "
                             f"{results.get('message') or ''}</p>"))
    settings = cfg.get("settings", {})
    sections.append(("Settings", kv_table({
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "horizon T": results.get("horizon"), "orders": settings.get("orders"),
        "weight decay": settings.get("weight_decay"), "precision": "float64",
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    })))
    rd.report_path.write_text(page("eom sweep — order of accuracy", sections))
    return rd.report_path
