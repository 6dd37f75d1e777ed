r"""`eom.experiments.validity`: where adding EoM orders stops paying off (THEORY.md §6).

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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from .._errors import DivergenceError, EomError
from ._common import (
    ProgressFn,
    fingerprints,
    in_store,
    problem_on_devices,
    stored_resolved,
)
from ._result import ValidityResult
from ._runner import Runner
from ._settings import ModelSettings, validate
from ._store import RunDir, dtype_in_use

#: Defaults of the full sweep and of `--quick` (points, horizon_steps).
DEFAULT_POINTS, DEFAULT_HORIZON_STEPS, DEFAULT_SUBSET = 7, 3, 256
QUICK_POINTS, QUICK_HORIZON_STEPS = 4, 2


@dataclass(frozen=True)
class ValiditySettings(ModelSettings):
    """Settings of `eom validity` (also the keys of its `--config` TOML file)."""

    #: What `quick` sets when not given.
    QUICK: ClassVar[dict] = {"points": QUICK_POINTS, "horizon_steps": QUICK_HORIZON_STEPS}

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
    devices: int | None = None  # local devices the batch is split over (None: all)
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

    >>> import eom
    >>> eom.experiments.step_counts(3, 0.1, 1.5, horizon_steps=2)  # η·λ_max ≈ 0.1, 0.75, 1.5
    [30, 4, 2]
    """
    c = horizon_steps * max_target
    ks: list[int] = []
    for x in np.linspace(min_target, max_target, points)[::-1]:
        k = max(horizon_steps, int(round(c / x)))
        if ks and k <= ks[-1]:
            k = ks[-1] + 1
        ks.append(k)
    return ks[::-1]


def resolve(s: ValiditySettings, problem):
    """λ_max(θ_0), the horizon T and the learning rates (kept in config.json).

    Returns `(resolved, sharpness at θ_0)`.
    """
    from ..analysis import sharpness

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

    >>> import eom
    >>> problem = eom.experiments.build_problem(eom.experiments.RunSettings("linear", subset=16))
    >>> pt = eom.experiments.measure_point(problem, 0, lr=0.05, num_steps=1, orders=[0, 1])
    >>> bool(pt.error[1] < pt.error[0])  # EoM-1 is closer to GD than gradient flow
    True
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

    >>> import eom
    >>> eom.experiments.not_better(1e-3, 2e-3, False, False)  # the higher order is worse
    True
    >>> print(eom.experiments.not_better(1e-3, 2e-3, False, True))  # flagged: cannot tell
    None
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
    """For each order b after a: the smallest η·λ_max at which order b is not better than a.

    >>> import eom
    >>> eom.experiments.stops_helping([0.1, 1.5], [0, 1], {0: [0.03, 0.4], 1: [7e-4, 0.5]},
    ...                               {0: [False, False], 1: [False, False]})
    {'1': {'previous': 0, 'eta_lambda_max': 1.5}}
    """
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
    """The order with the smallest finite error at a point (None if all failed).

    >>> import math
    >>> import eom
    >>> eom.experiments.best_order([0, 1, 2], [0.03, 7e-4, math.nan])  # a failed order never wins
    1
    """
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
        "dtype": dtype_in_use(), "float64": dtype_in_use() == "float64", "orders": orders,
        "weight_decay": s.weight_decay,
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
    errors measured (finite and above the solver margin).

    >>> import eom
    >>> gains = eom.experiments.accurate_gains([0.1, 1.5], [0, 1], {0: [0.03, 0.4], 1: [6e-4, 0.5]},
    ...                                        {0: [False, False], 1: [False, False]})
    >>> round(gains["1"], 6)  # only η·λ_max = 0.1 is accurate: 0.03 / 6e-4
    50.0
    """
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
    names, body = rd.read_rows()
    return [dict(zip(names, r, strict=True)) for r in body]


def drop_partial_points(rd: RunDir, orders: list[int]) -> set[int]:
    """Remove rows of points not written for every order (an interrupted append); return the
    complete points."""
    have: dict[int, set[int]] = {}
    try:
        for r in read_rows(rd):
            have.setdefault(int(r["point"]), set()).add(int(r["order"]))
    except (KeyError, ValueError) as exc:
        raise rd._corrupt(f"a row does not parse ({exc})") from None
    done = {p for p, ns in have.items() if set(orders) <= ns}
    rd.keep_rows(lambda r: int(r["point"]) in done)
    return done


# --------------------------------------------------------------------------------------------
# The sweep


def validity(settings: ValiditySettings | None = None, store: str | Path | None = None, *,
             overwrite: bool = False, progress: ProgressFn | None = None,
             log=None) -> ValidityResult:
    """Run (or resume) the sweep, appending rows as each learning rate finishes.

    >>> from eom.experiments import ValiditySettings, validity
    >>> r = validity(ValiditySettings(subset=32, width=4, depth=1, orders=[0, 1], points=2,
    ...                               horizon_steps=1))
    >>> r.status, r.results["points_done"]
    ('complete', 2)
    """
    s = settings or ValiditySettings()
    validate(s)
    check_settings(s)
    log = log or (lambda msg: None)
    problem, devices = problem_on_devices(s, clamp_subset=True)
    fp = fingerprints(problem, s.model)
    old = stored_resolved(store, overwrite)
    res, lam0 = (old, None) if old else resolve(s, problem)
    return in_store(
        store, overwrite, s, "validity", fp, devices, res, ValidityResult,
        lambda rd, resuming: _execute(s, rd, problem, res, lam0, resuming, progress, log), log,
    )


def _execute(s, rd, problem, res, lam0, resuming, progress, log) -> dict:
    from ..analysis import sharpness

    t0 = time.perf_counter()
    prev = rd.read_results().get("wall_time", {}) if resuming else {}
    previous = float(prev.get("total", 0.0) or 0.0)
    done = drop_partial_points(rd, s.orders) if resuming else set()
    if not resuming:
        rd.keep_rows(lambda r: False)
    n = len(res["lrs"])
    log(f"λ_max(θ_0) = {res['lambda_max_initial']:.4g}; T = {res['horizon']:.4g} "
        f"(T·λ_max = {res['horizon_lambda']:.3g}); {n} learning rates, η·λ_max(θ_0) = "
        + ", ".join(f"{x:.3g}" for x in res["eta_lambda_max"]))
    if done:
        log(f"resuming: {len(done)} of {n} learning rates already done")
    if progress is not None:
        progress(len(done), n, "validity sweep")

    def summary(status, message):
        return validity_results(rd, s, res, status, message, previous + time.perf_counter() - t0)

    def body(r: Runner) -> None:
        lam = lam0
        for j, (lr, k) in enumerate(zip(res["lrs"], res["num_steps"], strict=True)):
            if j in done:
                continue
            if lam is None:
                lam = sharpness(problem.loss, problem.params0, weight_decay=s.weight_decay)
            pt = measure_point(problem, j, lr, k, s.orders, weight_decay=s.weight_decay,
                               lambda0=lam)
            rd.append_rows(pt.columns())
            r.chunk_done()
            rd.write_results(summary("running", None))
            done.add(j)
            if progress is not None:
                progress(len(done), n, "validity sweep")

    return Runner(rd, summary).execute(body)
