r"""`eom validity`: where adding EoM orders stops paying off (THEORY.md §6).

A learning-rate sweep at an exactly fixed time $T$. From $\lambda_{\max}(\theta_0)$ (Lanczos,
`eom.analysis.sharpness`) it takes

$$T = \frac{K\,x_{\max}}{\lambda_{\max}(\theta_0)}, \qquad \eta_j = \frac{T}{k_j},
\qquad x_j = \eta_j\lambda_{\max}(\theta_0) = \frac{K x_{\max}}{k_j},$$

with $K$ = `horizon_steps` (the steps of the largest learning rate) and whole step counts $k_j$
chosen so that the $x_j$ are as close as possible to evenly spaced targets in
$[x_{\min}, x_{\max}]$ (default 0.1 … 1.9). For each $\eta_j$ it measures, for every order $N$,
the error $\lVert\theta^{(N)}(T) - \theta_{k_j}\rVert$ of the order-$N$ EoM against GD
(`eom.compare`, one order at a time so that a failing order does not take the others with it),
the term ratios $r_k = \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k\rVert$ at $\theta_0$
(`eom.analysis.term_ratios`) and $\eta\lambda_{\max}$ again at the end of the GD run (the
sharpness may change along the run).

Beyond the series radius ($\eta\lambda_{\max} \ge 1$) the EoM solve may fail or the error
explode: such a point is recorded as NaN with the reason, and the sweep goes on.

Files (a `RunDir`): `metrics.csv` has one row per (learning rate, order), written as each learning
rate finishes (a rerun skips the learning rates already written); `results.json` the table, the
regime label and best order per point and, for each added order, the smallest $\eta\lambda_{\max}$
at which it is no better than the order below; `figures/validity.png`; `report.html`.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from .._errors import DivergenceError, EomError
from ._app import (
    ConfigOpt,
    DatasetOpt,
    DepthOpt,
    ModelOpt,
    NameOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    WdOpt,
    WidthOpt,
    console,
    out_dir,
)
from ._figures import REGIME_BANDS, _positive, _save, order_name
from ._settings import ModelSettings
from ._store import RunDir, read_json

#: Defaults of the full sweep and of `--quick` (points, horizon_steps).
DEFAULT_POINTS, DEFAULT_HORIZON_STEPS, DEFAULT_SUBSET = 7, 3, 256
QUICK_POINTS, QUICK_HORIZON_STEPS = 4, 2


@dataclass
class ValiditySettings(ModelSettings):
    """Settings of `eom validity` (also the keys of its `--config` TOML file)."""

    model: str = "mlp"
    dataset: str = "digits"
    points: int = DEFAULT_POINTS
    min_target: float = 0.1  # smallest η·λ_max(θ_0) aimed at
    max_target: float = 1.9  # largest η·λ_max(θ_0); the learning rate of exactly this value
    horizon_steps: int = DEFAULT_HORIZON_STEPS  # T = horizon_steps · max_target / λ_max(θ_0)
    orders: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    weight_decay: float = 0.0
    seed: int = 0
    subset: int | None = DEFAULT_SUBSET  # samples of the data set (all if it has fewer)
    width: int | None = None
    depth: int | None = None
    quick: bool = False
    name: str | None = None
    out: str | None = None


def check_settings(s: ValiditySettings) -> None:
    """Validity-specific checks (the shared ones are in `_settings.validate`)."""
    if isinstance(s.points, bool) or not isinstance(s.points, int) or s.points < 2:
        raise EomError(f"--points must be a whole number ≥ 2, got {s.points!r}.")
    for flag, v in (("--min-target", s.min_target), ("--max-target", s.max_target)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 2:
            raise EomError(
                f"{flag} (a value of η·λ_max(θ_0)) must be in (0, 2), got {v!r}; beyond 2 GD "
                "itself is unstable."
            )
    if not s.min_target < s.max_target:
        raise EomError(
            f"--min-target {s.min_target} must be below --max-target {s.max_target}; "
            "e.g. --min-target 0.1 --max-target 1.9."
        )


# --------------------------------------------------------------------------------------------
# Choosing the learning rates


def step_counts(points: int, min_target: float, max_target: float, horizon_steps: int,
                ) -> list[int]:
    r"""Whole step counts $k_j$, descending (so $x_j = K x_{\max}/k_j$ ascends), one per target
    of `points` evenly spaced values of η·λ_max in [`min_target`, `max_target`].

    From the top: $k = K$ for `max_target` (exact), then each $k_j$ is $K x_{\max}/x_j$ rounded,
    or one more than the previous $k$ where rounding would repeat it (when $K$ is too small to
    resolve neighbouring targets), so there are always `points` distinct learning rates.
    """
    c = horizon_steps * max_target
    ks: list[int] = []
    for x in np.linspace(min_target, max_target, points)[::-1]:
        k = max(horizon_steps, int(round(c / x)))
        if ks and k <= ks[-1]:
            k = ks[-1] + 1
        ks.append(k)
    return ks[::-1]


def build_problem(s: ValiditySettings):
    """The problem on at most `s.subset` samples (all of them if the data set is smaller)."""
    from ..problems import make_problem, open_dataset

    data = open_dataset(s.dataset, seed=s.seed)
    subset = None if s.subset is None or s.subset >= data.n_samples else s.subset
    return make_problem(s.model, data, seed=s.seed, subset=subset, **s.model_kwargs())


def resolve(rd: RunDir, s: ValiditySettings, problem):
    """λ_max(θ_0), the horizon T and the learning rates: computed once, kept in config.json.

    Returns `(resolved, sharpness at θ_0 or None)` (None when read back from config.json).
    """
    from ..analysis import sharpness

    res = read_json(rd.config_path).get("resolved")
    if res:
        return res, None
    sharp0 = sharpness(problem.loss, problem.params0, weight_decay=s.weight_decay)
    lam = float(sharp0.lambda_max)
    if not (math.isfinite(lam) and lam > 0):
        raise EomError(
            f"λ_max(θ_0) = {lam:.3g} ≤ 0: the loss has no positive curvature at θ_0, so no "
            "learning rates can be chosen from it. Use another model or initialization."
        )
    ks = step_counts(s.points, s.min_target, s.max_target, s.horizon_steps)
    horizon = s.horizon_steps * s.max_target / lam
    res = {
        "lambda_max_initial": lam,
        "horizon": horizon,
        "horizon_lambda": horizon * lam,
        "num_steps": ks,
        "lrs": [horizon / k for k in ks],
        "eta_lambda_max": [horizon * lam / k for k in ks],
        "n_params": int(problem.n_params),
        "n_samples": int(problem.dataset.X.shape[0]),
    }
    rd.update_config(resolved=res)
    return res, sharp0


# --------------------------------------------------------------------------------------------
# One learning rate


@dataclass
class ValidityPoint:
    """The measurements at one learning rate (NaN and a reason where an order failed)."""

    point: int
    lr: float
    num_steps: int
    eta_lambda_max: float  # η·λ_max(θ_0)
    eta_lambda_max_final: float  # η·λ_max(θ_GD(T))
    ratios: np.ndarray  # r_0..r_N at θ_0, N = max order
    error: dict[int, float]
    relative_error: dict[int, float]
    solver_error: dict[int, float]
    flagged: dict[int, bool]
    reason: dict[int, str]  # "" where the order succeeded

    def columns(self) -> dict[str, np.ndarray]:
        """One metrics.csv row per order."""
        from ..analysis import regime

        orders = list(self.error)
        m = len(orders)
        cols = {
            "point": np.full(m, self.point),
            "lr": np.full(m, self.lr),
            "num_steps": np.full(m, self.num_steps),
            "eta_lambda_max": np.full(m, self.eta_lambda_max),
            "regime": np.full(m, regime(self.eta_lambda_max), dtype=object),
            "eta_lambda_max_final": np.full(m, self.eta_lambda_max_final),
            "regime_final": np.full(m, regime(self.eta_lambda_max_final), dtype=object),
            "order": np.asarray(orders),
            "error": np.asarray([self.error[n] for n in orders]),
            "relative_error": np.asarray([self.relative_error[n] for n in orders]),
            "solver_error": np.asarray([self.solver_error[n] for n in orders]),
            "flagged": np.asarray([int(self.flagged[n]) for n in orders]),
            "status": np.asarray(["failed" if self.reason[n] else "ok" for n in orders],
                                 dtype=object),
            "reason": np.asarray([self.reason[n] for n in orders], dtype=object),
        }
        for k, r in enumerate(self.ratios):
            cols[f"ratio_{k}"] = np.full(m, float(r))
        return cols


def measure_point(problem, point: int, lr: float, num_steps: int, orders, *,
                  weight_decay: float = 0.0, lambda0=None) -> ValidityPoint:
    r"""Errors of each order at $T = k\eta$, ηλ_max at θ_0 and at θ_k, term ratios at θ_0.

    Never raises `EomError`: a GD divergence makes every order NaN; a failed EoM solve makes
    that order NaN; the reason is recorded either way.
    """
    from ..analysis import sharpness, term_ratios
    from ..engine import gradient_descent
    from ..measure import compare

    loss, params0 = problem.loss, problem.params0
    orders = [int(n) for n in orders]
    nan = math.nan
    error = dict.fromkeys(orders, nan)
    rel, serr = dict.fromkeys(orders, nan), dict.fromkeys(orders, nan)
    flagged, reason = dict.fromkeys(orders, False), dict.fromkeys(orders, "")
    lam0 = lambda0 if lambda0 is not None else sharpness(loss, params0, weight_decay=weight_decay)
    try:
        ratios = term_ratios(loss, params0, lr, max(orders), weight_decay=weight_decay)
    except EomError:
        ratios = np.full(max(orders) + 1, nan)
    try:
        gd = gradient_descent(loss, params0, lr, num_steps, weight_decay=weight_decay,
                              save_every=num_steps)
    except DivergenceError as exc:
        msg = f"GD diverged: {exc}"
        return ValidityPoint(point, lr, num_steps, lr * lam0.lambda_max, nan, ratios, error, rel,
                             serr, flagged, dict.fromkeys(orders, msg))
    import jax

    theta_t = jax.tree.map(lambda x: x[-1], gd.params)
    try:
        lam_t = sharpness(loss, theta_t, v0=lam0, weight_decay=weight_decay).lambda_max
    except EomError:
        lam_t = nan
    for n in orders:
        try:
            c = compare(loss, params0, lr, num_steps, (n,), weight_decay=weight_decay,
                        record_every=num_steps)
        except EomError as exc:
            reason[n] = str(exc)
            continue
        error[n] = float(c.error[n][-1])
        rel[n] = float(c.relative_error[n][-1])
        serr[n] = float(c.solver_error[n][-1])
        flagged[n] = bool(c.flagged[n][-1])
        if not math.isfinite(error[n]):
            reason[n] = "the EoM solution is not finite at T (the counter-term series blew up)."
    return ValidityPoint(point, lr, num_steps, lr * lam0.lambda_max, lr * lam_t, ratios, error,
                         rel, serr, flagged, reason)


# --------------------------------------------------------------------------------------------
# Summary


def not_better(e_lo: float, e_hi: float, flag_lo: bool, flag_hi: bool) -> bool | None:
    """Is the higher order *not* better than the lower one at a point? None: cannot tell.

    Failed (NaN) counts as worse than any number; an error within the solver's margin is only an
    upper bound, so a flagged higher order that does not come out lower is inconclusive.
    """
    lo_ok, hi_ok = math.isfinite(e_lo), math.isfinite(e_hi)
    if not hi_ok:
        return True  # the higher order failed (or both did): adding it does not help
    if not lo_ok:
        return False
    if e_hi < e_lo:
        return False
    return None if flag_hi else True


def stops_helping(eta_lambda: list[float], orders: list[int], error: dict, flagged: dict) -> dict:
    """For each order b after a: the smallest η·λ_max at which order b is not better than a."""
    out = {}
    for a, b in zip(orders, orders[1:], strict=False):
        where = None
        for j, x in enumerate(eta_lambda):
            if not_better(error[a][j], error[b][j], flagged[a][j], flagged[b][j]):
                where = x
                break
        out[str(b)] = {"previous": a, "eta_lambda_max": where}
    return out


def best_order(orders: list[int], errors: list[float]) -> int | None:
    finite = [(e, n) for n, e in zip(orders, errors, strict=True) if math.isfinite(e)]
    return min(finite)[1] if finite else None


def validity_results(rd: RunDir, s: ValiditySettings, res: dict, status: str,
                     message: str | None, wall: float) -> dict:
    """results.json from the rows written so far (so an interrupted sweep still has a table)."""
    from ..analysis import regime

    m = read_rows(rd)
    orders = list(s.orders)
    out = {
        "status": status, "message": message, "model": s.model, "dataset": s.dataset,
        "float64": True, "orders": orders, "weight_decay": s.weight_decay,
        "lambda_max_initial": res.get("lambda_max_initial"), "horizon": res.get("horizon"),
        "horizon_lambda": res.get("horizon_lambda"), "n_params": res.get("n_params"),
        "n_samples": res.get("n_samples"), "points_total": len(res.get("lrs", [])),
        "wall_time": {"total": wall},
    }
    points = sorted({int(r["point"]) for r in m})
    by = {(int(r["point"]), int(r["order"])): r for r in m}
    points = [p for p in points if all((p, n) in by for n in orders)]
    out["points_done"] = len(points)

    def col(key, conv=float):
        return {str(n): [conv(by[(p, n)][key]) for p in points] for n in orders}

    first = [by[(p, orders[0])] for p in points]
    eta = [float(r["eta_lambda_max"]) for r in first]
    error = col("error")
    flagged = col("flagged", lambda v: bool(int(float(v))))
    table = {
        "point": points,
        "lr": [float(r["lr"]) for r in first],
        "num_steps": [int(float(r["num_steps"])) for r in first],
        "eta_lambda_max": eta,
        "regime": [regime(x) for x in eta],
        "eta_lambda_max_final": [float(r["eta_lambda_max_final"]) for r in first],
        "regime_final": [regime(float(r["eta_lambda_max_final"])) for r in first],
        "error": error,
        "relative_error": col("relative_error"),
        "solver_error": col("solver_error"),
        "flagged": flagged,
        "failed": {str(n): [by[(p, n)]["reason"] or None for p in points] for n in orders},
        "term_ratios": [
            [float(r[f"ratio_{k}"]) for k in range(max(orders) + 1)] for r in first
        ],
        "best_order": [best_order(orders, [error[str(n)][j] for n in orders])
                       for j in range(len(points))],
    }
    table["gain"] = {
        str(b): [_ratio(error[str(a)][j], error[str(b)][j]) for j in range(len(points))]
        for a, b in zip(orders, orders[1:], strict=False)
    }
    out["table"] = table
    err_i = {n: error[str(n)] for n in orders}
    flg_i = {n: flagged[str(n)] for n in orders}
    sh = stops_helping(eta, orders, err_i, flg_i)
    out["stops_helping"] = sh
    xs = [v["eta_lambda_max"] for v in sh.values() if v["eta_lambda_max"] is not None]
    out["stops_helping_first"] = min(xs) if xs else None
    out["gain_accurate"] = accurate_gains(eta, orders, err_i, flg_i)
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def accurate_gains(eta, orders, error, flagged) -> dict:
    """Geometric mean of e_a/e_b (gain of adding order b) over accurate-regime points with both
    errors measured (finite and above the solver margin)."""
    from ..analysis import ACCURATE_MAX

    out = {}
    for a, b in zip(orders, orders[1:], strict=False):
        g = [error[a][j] / error[b][j] for j, x in enumerate(eta)
             if x < ACCURATE_MAX and all(math.isfinite(error[n][j]) and error[n][j] > 0
                                         and not flagged[n][j] for n in (a, b))]
        out[str(b)] = float(np.exp(np.mean(np.log(g)))) if g else None
    return out


# --------------------------------------------------------------------------------------------
# metrics.csv: rows per (point, order)


def read_rows(rd: RunDir) -> list[dict]:
    if not rd.metrics_path.exists():
        return []
    with open(rd.metrics_path, newline="") as f:
        return list(csv.DictReader(f))


def drop_partial_points(rd: RunDir, orders: list[int]) -> set[int]:
    """Remove rows of points not written for every order (an interrupted append); return the
    complete points."""
    rows = read_rows(rd)
    if not rows:
        return set()
    have: dict[int, set[int]] = {}
    for r in rows:
        have.setdefault(int(r["point"]), set()).add(int(r["order"]))
    done = {p for p, ns in have.items() if set(orders) <= ns}
    keep = [r for r in rows if int(r["point"]) in done]
    if len(keep) != len(rows):
        tmp = rd.metrics_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)
        os.replace(tmp, rd.metrics_path)
    return done


# --------------------------------------------------------------------------------------------
# The sweep


def execute_validity(
    s: ValiditySettings, rd: RunDir, *, resuming: bool,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the sweep, appending rows as each learning rate finishes."""
    from ..analysis import sharpness

    t0 = time.perf_counter()
    prev = rd.read_results().get("wall_time", {}) if resuming else {}
    previous = float(prev.get("total", 0.0) or 0.0)
    problem = build_problem(s)
    res, lam0 = resolve(rd, s, problem)
    done = drop_partial_points(rd, s.orders) if resuming else set()
    if not resuming:
        rd.metrics_path.unlink(missing_ok=True)
    n = len(res["lrs"])
    log(f"λ_max(θ_0) = {res['lambda_max_initial']:.4g}; T = {res['horizon']:.4g} "
        f"(T·λ_max = {res['horizon_lambda']:.3g}); {n} learning rates, η·λ_max(θ_0) = "
        + ", ".join(f"{x:.3g}" for x in res["eta_lambda_max"]))
    if done:
        log(f"resuming: {len(done)} of {n} learning rates already done")
    if on_start is not None:
        on_start(len(done), n)
    status, message = "running", None
    try:
        for j, (lr, k) in enumerate(zip(res["lrs"], res["num_steps"], strict=True)):
            if j in done:
                continue
            if lam0 is None:
                lam0 = sharpness(problem.loss, problem.params0, weight_decay=s.weight_decay)
            pt = measure_point(problem, j, lr, k, s.orders, weight_decay=s.weight_decay,
                               lambda0=lam0)
            rd.append_rows(pt.columns())
            rd.write_results(validity_results(rd, s, res, "running", None,
                                              previous + time.perf_counter() - t0))
            if on_progress is not None:
                on_progress(1)
        status = "complete"
    except EomError as exc:
        status, message = "failed", str(exc)
        raise
    except Exception as exc:
        status, message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    except KeyboardInterrupt:
        status, message = "interrupted", "Interrupted; rerun the same command to resume."
        raise
    finally:
        results = validity_results(rd, s, res, status, message,
                                   previous + time.perf_counter() - t0)
        rd.write_results(results)
        if results.get("points_done"):
            write_validity_report(rd, read_json(rd.config_path), results)
    return results


# --------------------------------------------------------------------------------------------
# Figure, table and report


def validity_figure(results: dict, path: Path) -> Path:
    """Left: error at T against η·λ_max(θ_0), log y, one line per order, regime bands behind
    (hollow markers: within the solver's margin; ×: the order failed there; dotted verticals:
    where each added order stops helping). Right: the gain e_{N−1}/e_N of each added order, with
    1 (no gain) and the quadratic-model estimate 1/(η·λ_max) for reference."""
    import matplotlib.pyplot as plt

    t = results["table"]
    orders = results["orders"]
    x = np.asarray(t["eta_lambda_max"], float)
    fig, (ax, ag) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    right = max(2.1, float(np.nanmax(x)) * 1.05) if x.size else 2.1
    for a in (ax, ag):
        for lo, hi, color, label in REGIME_BANDS:
            if lo < right:
                a.axvspan(lo, min(hi, right), color=color, alpha=0.8, lw=0,
                          label=label if a is ax else None)
        a.set_xlim(0, right)
        a.set_xlabel("η·λ_max(θ_0)")
        a.grid(True, which="both", alpha=0.3)
    finite = [v for n in orders for v in t["error"][str(n)]
              if v is not None and np.isfinite(v) and v > 0]
    top = max(finite) * 3 if finite else 1.0
    for i, n in enumerate(orders):
        color = f"C{i}"
        err = _positive([np.nan if v is None else v for v in t["error"][str(n)]])
        ax.semilogy(x, err, "o-", color=color, label=order_name(n))
        flg = np.asarray(t["flagged"][str(n)], bool)
        if flg.any():
            ax.semilogy(x[flg], err[flg], "o", mfc="white", color=color, ms=7)
        failed = np.asarray([f is not None for f in t["failed"][str(n)]], bool)
        if failed.any():
            ax.semilogy(x[failed], np.full(failed.sum(), top), "x", color=color, ms=9, mew=2)
        stop = (results.get("stops_helping") or {}).get(str(n), {}).get("eta_lambda_max")
        if stop is not None:
            ax.axvline(stop, color=color, ls=":", lw=1.5)
        gain = (t.get("gain") or {}).get(str(n))
        if gain is not None:
            g = _positive([np.nan if v is None else v for v in gain])
            prev = orders[i - 1]
            ag.semilogy(x, g, "o-", color=color, label=f"{order_name(n)} vs {order_name(prev)}")
    xs = np.linspace(max(float(np.nanmin(x)) * 0.8, 0.05), right, 100) if x.size else []
    ag.semilogy(xs, 1 / np.asarray(xs), "k--", lw=1, label="1/(η·λ_max)")
    ag.axhline(1.0, color="k", lw=1.5)
    ag.set_ylabel("gain of the added order  e_(N−1)/e_N")
    ag.set_title("Below 1: the added order makes it worse")
    ag.legend(fontsize=8)
    ax.set_ylabel(f"‖θ^(N)(T) − θ_(T/η)‖ at T = {results['horizon']:.3g}")
    ax.set_title("Where adding EoM orders stops paying off")
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    return _save(fig, path)


def table_rows(results: dict, *, short: bool = False) -> tuple[list[str], list[list]]:
    """Header and rows (raw values) of the per-point table (`short`: terminal headers)."""
    t = results.get("table") or {}
    orders = results["orders"]
    top = max(orders)

    def name(n):
        return order_name(n).replace(" (order 0)", "") if short else order_name(n)

    if short:
        header = ["ηλ_max", "regime", "η", "k", *map(name, orders), "best", "ηλ_max(T)",
                  f"r_{top}"]
    else:
        header = ["ηλ_max(θ_0)", "regime", "η", "steps k", *map(name, orders), "best order",
                  "ηλ_max at T", f"r_{top}(θ_0) = η‖ξ_{top + 1}‖/‖ξ_{top}‖"]
    rows = []
    for j in range(len(t.get("point", []))):
        best = t["best_order"][j]
        rows.append(
            [t["eta_lambda_max"][j], t["regime"][j], t["lr"][j], t["num_steps"][j]]
            + [t["error"][str(n)][j] for n in orders]
            + [None if best is None else name(best), t["eta_lambda_max_final"][j],
               t["term_ratios"][j][top]]
        )
    return header, rows


def reading(results: dict) -> str:
    """A plain-language reading of the sweep (HTML paragraph)."""
    import html

    from ._report import _num

    t = results.get("table") or {}
    if not t.get("point"):
        return "<p>No learning rate finished yet.</p>"
    orders = results["orders"]
    parts = [
        f"Each point runs GD and the EoM of orders {', '.join(map(str, orders))} to the same time "
        f"T = {_num(results.get('horizon'))} (T·λ_max(θ_0) = {_num(results.get('horizon_lambda'))})"
        f" at a learning rate with η·λ_max(θ_0) between {_num(min(t['eta_lambda_max']))} and "
        f"{_num(max(t['eta_lambda_max']))}."
    ]
    gains = {k: v for k, v in (results.get("gain_accurate") or {}).items() if v is not None}
    if gains:
        txt = ", ".join(f"order {k}: {_num(v)}×" for k, v in gains.items())
        parts.append(f"In the accurate regime (η·λ_max < 0.5) each added order brings the EoM "
                     f"closer to GD by a factor of (geometric mean) {txt}.")
    sh = results.get("stops_helping") or {}
    stops = [(k, v) for k, v in sh.items() if v["eta_lambda_max"] is not None]
    never = [k for k, v in sh.items() if v["eta_lambda_max"] is None]
    if stops:
        txt = "; ".join(f"order {k} is no better than order {v['previous']} from η·λ_max ≈ "
                        f"{_num(v['eta_lambda_max'])}" for k, v in stops)
        parts.append(f"Adding orders stops paying off: {txt}. Theory (THEORY.md §6) puts the "
                     "limit at the counter-term series' radius η·λ_max = 1 on a quadratic.")
    if never:
        parts.append(f"Order(s) {', '.join(never)} helped at every measured point, with gains "
                     "that shrink toward 1 as η·λ_max grows.")
    top = max(orders)
    above = [x for x, r in zip(t["eta_lambda_max"], t["term_ratios"], strict=True)
             if r[top] is not None and math.isfinite(r[top]) and r[top] >= 1]
    if above:
        parts.append(f"The term ratio r_{top} = η‖ξ_{top + 1}‖/‖ξ_{top}‖ at θ_0 reaches 1 at "
                     f"η·λ_max = {_num(min(above))}: from there the counter-term series no longer "
                     "shrinks, and higher orders cannot be expected to help (THEORY.md §6).")
    last = len(t["point"]) - 1
    gain_last = {k: v[last] for k, v in (t.get("gain") or {}).items()
                 if v[last] is not None and math.isfinite(v[last])}
    if gain_last:
        txt = ", ".join(f"order {k}: {_num(v)}×" for k, v in gain_last.items())
        parts.append(f"At the largest η·λ_max the factors are {txt} (a factor near or below 1 "
                     "means the added order no longer pays off).")
    best = t["best_order"][last]
    parts.append(f"At the largest η·λ_max = {_num(t['eta_lambda_max'][last])} the closest model "
                 f"to GD is {order_name(best) if best is not None else 'none (all failed)'}.")
    failed = sorted({(t["eta_lambda_max"][j], n) for n in orders
                     for j, f in enumerate(t["failed"][str(n)]) if f})
    if failed:
        txt = ", ".join(f"order {n} at {_num(x)}" for x, n in failed)
        parts.append(f"The EoM solve failed (recorded as missing): {txt}.")
    moved = [(t["eta_lambda_max"][j], t["eta_lambda_max_final"][j]) for j in range(last + 1)
             if t["regime_final"][j] != t["regime"][j]]
    if moved:
        txt = ", ".join(f"{_num(a)} → {_num(b)}" for a, b in moved)
        parts.append(f"The sharpness changed the regime along some runs (η·λ_max at θ_0 → at T): "
                     f"{txt}.")
    return "<p>" + html.escape(" ".join(parts)) + "</p>"


def write_validity_report(rd: RunDir, cfg: dict, results: dict) -> Path:
    """figures/validity.png and report.html from results.json (used by `eom report` too)."""
    from ._report import figure, kv_table, page, table

    sections = []
    status = results.get("status")
    if status != "complete":
        cls = "bad" if status == "failed" else "warn"
        sections.append(("", f"<p class='{cls}'>Status: <b>{status}</b>. "
                             f"{results.get('message') or ''}</p>"))
    if (results.get("table") or {}).get("point"):
        sections.append(("Reading", reading(results)))
        header, rows = table_rows(results)
        sections.append(("Error at the fixed time T against η·λ_max", table(header, rows)))
        fig = validity_figure(results, rd.figures / "validity.png")
        sections.append(("Figure", figure(
            fig, "Left: error of each order at the fixed time T against η·λ_max(θ_0), log "
                 "scale, over the EoM's regimes (accurate < 0.5 ≤ marginal < 1 ≤ beyond-series "
                 "< 2 ≤ unstable). Hollow markers: within 10× of the solver's own error (an "
                 "upper bound); ×: the EoM solve failed; dotted verticals: where each added "
                 "order stops being better than the one below. Right: the factor by which each "
                 "added order reduces the error; 1 means no gain, and the dashed line 1/(ηλ_max) "
                 "is what a quadratic's top direction alone would give.")))
    settings = cfg.get("settings", {})
    sections.append(("Settings", kv_table({
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "parameters": results.get("n_params"), "samples (full batch)": results.get("n_samples"),
        "λ_max(θ_0)": results.get("lambda_max_initial"), "horizon T": results.get("horizon"),
        "T·λ_max(θ_0)": results.get("horizon_lambda"), "orders": settings.get("orders"),
        "weight decay": settings.get("weight_decay"), "seed": settings.get("seed"),
        "precision": "float64", "eom version": cfg.get("eom_version"),
        "git commit": cfg.get("git_commit"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    })))
    title = f"eom validity — {settings.get('model')} on {settings.get('dataset')}"
    rd.report_path.write_text(page(title, sections))
    return rd.report_path


def print_summary(results: dict, rd: RunDir) -> None:
    from rich import box
    from rich.table import Table

    header, rows = table_rows(results, short=True)
    t = Table(title=f"{results.get('model')} on {results.get('dataset')}: error at T = "
                    f"{results.get('horizon', math.nan):.3g} (T·λ_max(θ_0) = "
                    f"{results.get('horizon_lambda', math.nan):.3g})", box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0), pad_edge=False)
    for h in header:
        t.add_column(h, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(*[_cell(v) for v in r])
    console.print(t)
    tab = results.get("table") or {}
    for k, v in (results.get("stops_helping") or {}).items():
        x = v["eta_lambda_max"]
        where = "better at every point" if x is None else f"stops helping at η·λ_max ≈ {x:.3g}"
        gain = (tab.get("gain") or {}).get(k) or []
        if len(gain) >= 2:
            where += (f"; gain {_cell(gain[0])}× at η·λ_max {_cell(tab['eta_lambda_max'][0])}"
                      f" → {_cell(gain[-1])}× at {_cell(tab['eta_lambda_max'][-1])}")
        console.print(f"order {k} vs order {v['previous']}: {where}")
    wall = (results.get("wall_time") or {}).get("total")
    if wall is not None:
        console.print(f"wall time {wall:.1f} s")
    console.print(f"report: [bold]{rd.report_path}[/]")


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return "failed"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


# --------------------------------------------------------------------------------------------
# The command


def validity_command(
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    orders: Annotated[str | None, typer.Option(
        "--orders", help="EoM orders to compare, e.g. 0-3 (0 = gradient flow). "
                         "\\[default: 0-3]")] = None,
    points: Annotated[int | None, typer.Option(
        "--points", help=f"Number of learning rates. \\[default: {DEFAULT_POINTS}; "
                         f"--quick: {QUICK_POINTS}]")] = None,
    min_target: Annotated[float | None, typer.Option(
        "--min-target", help="Smallest η·λ_max(θ_0) of the sweep. \\[default: 0.1]")] = None,
    max_target: Annotated[float | None, typer.Option(
        "--max-target", help="Largest η·λ_max(θ_0) of the sweep (must be < 2). "
                             "\\[default: 1.9]")] = None,
    horizon_steps: Annotated[int | None, typer.Option(
        "--horizon-steps", help="Steps at the largest learning rate; the fixed time is T = "
                                "horizon_steps·max_target/λ_max(θ_0). "
                                f"\\[default: {DEFAULT_HORIZON_STEPS}; --quick: "
                                f"{QUICK_HORIZON_STEPS}]")] = None,
    quick: Annotated[bool | None, typer.Option(
        "--quick/--no-quick", help="A small sweep (fewer points, a shorter T) for a first look "
                                   "or a test. \\[default: off]")] = None,
    weight_decay: WdOpt = None,
    seed: SeedOpt = None,
    subset: Annotated[int | None, typer.Option(
        "--subset", help="Use only N samples (seeded shuffle); a data set with fewer is used "
                         f"whole (give a large N for all samples). \\[default: {DEFAULT_SUBSET}]",
    )] = None,
    width: WidthOpt = None,
    depth: DepthOpt = None,
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Where does the EoM stop working? Error of orders 0–3 at a fixed time against η·λ_max.

    Learning rates with η·λ_max(θ_0) from 0.1 to 1.9 (λ_max from Lanczos at θ_0), all run to
    the same time T; the figure shows each order's error over the regimes accurate (< 0.5),
    marginal (< 1), beyond-series (< 2) and unstable, i.e. where adding orders stops paying
    off. Writes config.json, metrics.csv (one row per learning rate and order), results.json,
    figures/validity.png and report.html; rerunning with the same --out resumes.
    """
    from .._version import __version__
    from ._settings import build_settings, load_toml

    flags = dict(model=model, dataset=dataset, orders=orders, points=points,
                 min_target=min_target, max_target=max_target, horizon_steps=horizon_steps,
                 quick=quick, weight_decay=weight_decay, seed=seed, subset=subset, width=width,
                 depth=depth, name=name, out=str(out) if out is not None else None)
    file_values = load_toml(config, ValiditySettings)
    if flags["quick"] if flags["quick"] is not None else file_values.get("quick", False):
        for key, value in (("points", QUICK_POINTS), ("horizon_steps", QUICK_HORIZON_STEPS)):
            if flags[key] is None and key not in file_values:
                flags[key] = value
    s = build_settings(file_values, flags, ValiditySettings)
    check_settings(s)
    rd = RunDir(out_dir(s.name, Path(s.out) if s.out else None))
    resuming = rd.prepare(s.as_dict(), overwrite=overwrite, command="validity")
    if resuming and rd.read_results().get("status") == "complete":
        console.print(f"[green]{rd.path} is already complete[/] (use --overwrite to rerun).")
        print_summary(rd.read_results(), rd)
        return
    console.print(f"eom {__version__}: writing to [bold]{rd.path}[/] (float64)")
    with _progress() as bar:
        task = bar.add_task("validity sweep", total=None)
        results = execute_validity(
            s, rd, resuming=resuming,
            on_start=lambda done, total: bar.update(task, completed=done, total=total),
            on_progress=lambda k: bar.advance(task, k),
            log=lambda msg: console.print(msg),
        )
    print_summary(results, rd)


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("learning rates"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, transient=False,
    )
