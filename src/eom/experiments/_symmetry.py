r"""`eom.experiments.symmetry`: what GD, gradient flow and the EoM do to symmetric parameter groups.

THEORY.md §4–5. On the weights feeding a normalization (a *scale* group $w$) gradient flow
conserves $\lVert w\rVert^2$ while GD grows it,
$\lVert w_{k+1}\rVert^2 = (1-\eta\lambda)^2\lVert w_k\rVert^2 + \eta^2\lVert g_w\rVert^2$;
the EoM's rate equation $d\lVert w\rVert^2/dt = -2\lambda(1+\eta\lambda/2)\lVert w\rVert^2
+ \eta\lVert g_w\rVert^2 + O(\eta^2)$ follows GD. On a softmax-logit direction $u$ (a
*translation* direction) with weight decay, $s = u\cdot\theta$ decays as $(1-\eta\lambda)^k$ under
GD, $e^{-\lambda t}$ under gradient flow and $e^{r_N t}$,
$r_N = -(\lambda + \sum_{k\le N}\eta^k\lambda^{k+1}/(k+1))$, under the order-$N$ EoM.

For each weight decay $\lambda$ (by default $0$ and one $\lambda > 0$ with
$\eta\lambda\cdot\text{steps}$ = `decay`), the command runs GD (`eom.gradient_descent`) and
gradient flow, EoM-1 and EoM-2 (`eom.integrate`, orders 0, 1, 2) on one save grid, from the same
$\theta_0$ and learning rate, and hands them to `eom.symmetry.symmetry_report` with the groups
`eom.symmetry.detect` finds at $\theta_0$ (detection uses the loss without decay, so one
detection serves every $\lambda$).

Files (a `RunDir`, as `eom run` writes them):

- `metrics.csv`: one row per ($\lambda$, saved step): columns `weight_decay`, `step`, `time`, and
  for the plotted groups (the `--groups` largest scale groups by $\lVert w_0\rVert^2$ and
  translation directions by $\lvert s_0\rvert$) the `SymmetryReport.columns()` of each:
  `"<label>|measured|<p>"` and `"<label>|predicted|<p>"` for p in gd, gf, eom1, eom2 (plus
  `predicted|eom-series` for translation directions and, with $\lambda > 0$,
  `"<label>|equilibrium_sq_norm"` and `"<label>|angular_update"` for scale groups; NaN where a
  column does not apply to a $\lambda$). Rows are appended as each $\lambda$ finishes.
- `results.json`: per $\lambda$ (under `runs`, keyed by `repr(λ)`): every group's end-of-run
  relative errors against GD (`groups`), their median and maximum by quantity (`aggregate`), the
  change of $\lVert w\rVert^2$ / $s$ over the run per process, the errors of the analytic curves
  against the integrated runs, and with $\lambda > 0$ the equilibrium norm and the angular update
  against $\sqrt{2\eta\lambda}$; also group counts by kind. `weight_decays_done` lists the
  $\lambda$ finished: a rerun with the same `--out` skips them (resume per $\lambda$).
- `figures/sq_norm_wd<λ>.png`, `figures/s_wd<λ>.png` ($\lambda > 0$),
  `figures/equilibrium_wd<λ>.png` ($\lambda > 0$) and `report.html`.

A model without any scale or translation group (e.g. a tanh MLP with mean-squared error) is bad
input: the command stops with exit code 2 and a message naming the fix, before anything is
written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._errors import EomError
from ._common import (
    ProgressFn,
    choose_lr,
    fingerprints,
    in_store,
    lambda_max,
    problem_on_devices,
    stored_resolved,
)
from ._result import SymmetryResult
from ._runner import INTERRUPTED, Runner
from ._settings import ModelSettings, validate
from ._store import RunDir, dtype_in_use

#: The processes compared, with the EoM order of each continuous one.
PROCESSES: tuple[str, ...] = ("gd", "gf", "eom1", "eom2")
ORDERS: dict[str, int] = {"gf": 0, "eom1": 1, "eom2": 2}
NAMES: dict[str, str] = {
    "gd": "GD", "gf": "GF", "eom1": "EoM-1", "eom2": "EoM-2", "eom-series": "EoM, full series",
}
#: Defaults of the full run and of `--quick`. The hidden width of built-in models is 32 here
#: (their own default, 128, makes the default run take ~40 min on 2 busy cores instead of ~7).
DEFAULT_STEPS, QUICK_STEPS, QUICK_SUBSET, DEFAULT_WIDTH = 300, 40, 256, 32
#: The automatic save_every keeps at most this many saved points per trajectory.
MAX_SAVED = 200
#: η·λ·steps of the automatic λ > 0: enough decay to see within the run (e^{-λT} ≈ 0.6).
DEFAULT_DECAY = 0.5
#: Translation directions with |s_0| below this fraction of the largest |s_0| (e.g. a
#: zero-initialized logit bias) have no meaningful relative error and are left out of the medians.
S_FLOOR = 1e-8


@dataclass(frozen=True)
class SymmetrySettings(ModelSettings):
    """Settings of `eom symmetry` (also the keys of its `--config` TOML file)."""

    #: What `quick` sets when not given.
    QUICK: ClassVar[dict] = {"steps": QUICK_STEPS, "subset": QUICK_SUBSET}

    model: str = "mlp-bn"
    dataset: str = "digits"
    lr: float | None = None  # None: lr·λ_max(θ_0) = target
    target: float = 0.2
    steps: int = DEFAULT_STEPS
    weight_decays: list[float] | None = None  # None: [0, decay / (lr·steps)]
    decay: float = DEFAULT_DECAY  # η·λ·steps of the automatic λ > 0
    seed: int = 0
    subset: int | None = None
    width: int | None = None
    depth: int | None = None
    devices: int | None = None  # local devices the batch is split over (None: all)
    save_every: int | None = None  # None: ceil(steps / MAX_SAVED)
    groups: int = 4  # plotted scale groups (and translation directions)
    quick: bool = False
    name: str | None = None
    out: str | None = None

    def model_kwargs(self) -> dict:
        """width/depth as given; a built-in model's width defaults to `DEFAULT_WIDTH`."""
        from ..problems import MODELS, model_defaults

        width = self.width
        if width is None and self.model in MODELS and "width" in model_defaults(self.model):
            width = DEFAULT_WIDTH
        return {k: v for k, v in (("width", width), ("depth", self.depth)) if v is not None}

    @property
    def weight_decay(self) -> float:
        """The smallest λ (for the shared checks of `_settings.validate`)."""
        return min(self.weight_decays) if self.weight_decays else 0.0


def parse_weight_decays(text: str | float | Sequence | None) -> list[float] | None:
    """'0,0.01' (or a list, or one number) → sorted distinct λ ≥ 0.

    >>> import eom
    >>> eom.experiments.parse_weight_decays("0.1,0,0.1")
    [0.0, 0.1]
    """
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        items: list = [text]
    elif isinstance(text, list | tuple):
        items = list(text)
    else:
        items = [x for x in str(text).replace(" ", "").split(",") if x != ""]
    out = []
    for x in items:
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise EomError(
                f"--weight-decays: {x!r} is not a number; give e.g. --weight-decays 0,0.01."
            ) from None
        if not (math.isfinite(v) and v >= 0):
            raise EomError(f"--weight-decays: each λ must be a finite number ≥ 0, got {x!r}.")
        out.append(v)
    if not out:
        raise EomError("--weight-decays is empty; give e.g. --weight-decays 0,0.01.")
    return sorted(set(out))


def check_settings(s: SymmetrySettings) -> None:
    """Checks of the symmetry-specific settings (the shared ones are in `_settings.validate`)."""
    for flag, v, lo in (("--save-every", s.save_every, 1), ("--groups", s.groups, 1)):
        if v is None and flag == "--save-every":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise EomError(f"{flag} must be a whole number ≥ {lo}, got {v!r}.")
    if isinstance(s.decay, bool) or not isinstance(s.decay, int | float) or not 0 < s.decay < 50:
        raise EomError(
            f"--decay (η·λ·steps of the automatic weight decay) must be in (0, 50), got "
            f"{s.decay!r}; 0.3–1 makes the decay visible within the run."
        )
    if s.lr is not None and s.weight_decays:
        bad = [wd for wd in s.weight_decays if s.lr * wd >= 1]
        if bad:
            raise EomError(
                f"lr·λ = {s.lr * bad[0]:g} ≥ 1 for λ = {bad[0]:g}: GD then flips or stalls the "
                "weights and no flow describes it. Use a smaller --weight-decays or --lr."
            )


# --------------------------------------------------------------------------------------------
# Resolved settings and groups


def resolve(s: SymmetrySettings, problem) -> dict:
    """Learning rate, λ_max(θ_0), the weight decays and save_every (kept in config.json, so a
    resumed run reuses them)."""
    if s.lr is None:
        lr, lam = choose_lr(problem, s.target, 0.0)
        source = f"auto: lr·λ_max(θ_0) = {s.target}"
    else:
        lr, lam, source = float(s.lr), lambda_max(problem), "given"
    if s.weight_decays is None:
        wds = [0.0, float(f"{s.decay / (lr * s.steps):.2g}")]
        wd_source = f"auto: 0 and η·λ·steps = {s.decay}"
    else:
        wds, wd_source = list(s.weight_decays), "given"
    bad = [wd for wd in wds if lr * wd >= 1]
    if bad:
        raise EomError(
            f"lr·λ = {lr * bad[0]:g} ≥ 1 for λ = {bad[0]:g}: GD then flips or stalls the weights "
            "and no flow describes it. Use a smaller --weight-decays (or --decay)."
        )
    from ._common import check_stable

    check_stable(lr, lam)
    return {
        "lr": lr,
        "lr_source": source,
        "lambda_max_initial": lam,
        "eta_lambda_max_initial": lr * lam,
        "weight_decays": wds,
        "weight_decays_source": wd_source,
        "save_every": int(s.save_every or max(1, math.ceil(s.steps / MAX_SAVED))),
        "n_params": int(problem.n_params),
        "n_samples": int(problem.dataset.X.shape[0]),
        "model_kwargs": s.model_kwargs(),
    }


def find_groups(problem, s: SymmetrySettings):
    """`detect` at θ_0; EomError when there is no scale group and no translation direction."""
    from ..symmetry import detect

    groups = detect(problem.loss, problem.params0)
    if not any(g.kind in ("scale", "translation") for g in groups):
        raise EomError(
            f"no symmetric groups found: model {s.model!r} on {s.dataset!r} has no "
            "scale-invariant weights (weights feeding a normalization) and no translation-"
            "invariant directions (softmax logits), so there is nothing for `eom symmetry` to "
            "show. Use a model with batch normalization and a softmax output on a "
            "classification dataset, e.g. --model mlp-bn --dataset digits."
        )
    return groups


def plotted_groups(groups, params0, k: int) -> tuple[tuple, tuple]:
    """The `k` largest scale groups (by ‖w_0‖²) and translation directions (by |s_0|, s_0 ≠ 0)."""
    from ..symmetry import largest_groups

    scale = largest_groups(groups, params0, kind="scale", k=k)
    trans = [
        g for g in largest_groups(groups, params0, kind="translation", k=k)
        if float(np.abs(g.extract(params0))) > 0
    ]
    return tuple(scale), tuple(trans)


def column_names(scale, trans) -> list[str]:
    """metrics.csv header: the same for every λ (NaN where a column does not apply)."""
    names = ["weight_decay", "step", "time"]
    for g in scale:
        names += [f"{g.label}|measured|{p}" for p in PROCESSES]
        names += [f"{g.label}|predicted|{p}" for p in PROCESSES]
        names += [f"{g.label}|equilibrium_sq_norm", f"{g.label}|angular_update"]
    for g in trans:
        names += [f"{g.label}|measured|{p}" for p in PROCESSES]
        names += [f"{g.label}|predicted|{p}" for p in (*PROCESSES, "eom-series")]
    return names


def metrics_columns(rep, names: list[str]) -> dict[str, np.ndarray]:
    """The rows of one λ: `rep.columns()` restricted to `names` (NaN where absent)."""
    cols = rep.columns()
    n = len(rep.steps)
    out = {"weight_decay": np.full(n, float(rep.weight_decay))}
    for k in names[1:]:
        out[k] = np.asarray(cols[k], float) if k in cols else np.full(n, math.nan)
    return out


# --------------------------------------------------------------------------------------------
# Summaries of one λ


def _stat(values, how=("median", "max")) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None], float)
    v = v[np.isfinite(v)]
    fns = {"median": np.median, "max": np.max, "min": np.min}
    return {h: (float(fns[h](v)) if v.size else None) for h in how}


def _measurable(reports) -> list:
    """Translation directions whose |s_0| is not negligible (relative errors are meaningful)."""
    s0 = np.array([abs(float(gr.measured["gd"][0])) for gr in reports])
    if not s0.size or not s0.max() > 0:
        return []
    return [gr for gr, v in zip(reports, s0, strict=True) if v > S_FLOOR * s0.max()]


def _aggregate(reports, processes) -> dict[str, Any]:
    """Median/max over groups of the errors against GD and of the analytic curves, and the
    relative change of the quantity over the run per process (measured and analytic)."""
    cont = [p for p in processes if p != "gd"]
    preds = sorted({p for gr in reports for p in gr.prediction_error}, key=_pred_key)
    series = [gr for gr in reports if "eom-series" in gr.predicted]
    return {
        # The full-series flow log(1−ηλ)/η of a translation direction against GD's measured s.
        "series_vs_gd": _stat(
            abs(float(gr.predicted["eom-series"][-1]) - float(gr.measured["gd"][-1]))
            / abs(float(gr.measured["gd"][-1])) for gr in series
        ) if series else None,
        "groups": len(reports),
        "error_vs_gd": {p: _stat(gr.error_vs_gd[p] for gr in reports) for p in cont},
        "prediction_error": {
            p: _stat(gr.prediction_error.get(p) for gr in reports) for p in preds
        },
        "change": {
            p: _stat((_change(gr.measured[p]) for gr in reports), ("median", "min", "max"))
            for p in processes
        },
        "predicted_change": {
            p: _stat((_change(gr.predicted[p]) for gr in reports if p in gr.predicted),
                     ("median", "min", "max"))
            for p in preds
        },
    }


def _pred_key(p: str) -> int:
    order = [*PROCESSES, "eom-series"]
    return order.index(p) if p in order else len(order)


def _change(x) -> float:
    """x(T)/x(0) − 1 (NaN when x(0) = 0)."""
    x0 = float(x[0])
    return float(x[-1]) / x0 - 1.0 if x0 != 0 else math.nan


def summarize_weight_decay(rep, lr: float, wall: float) -> dict[str, Any]:
    """results.json entry of one λ, from its `SymmetryReport`."""
    from ..symmetry import translation_rate

    wd = float(rep.weight_decay)
    horizon = float(rep.times[-1] - rep.times[0])
    k = int(rep.steps[-1] - rep.steps[0])
    by_kind = {kind: [gr for gr in rep.groups if gr.group.kind == kind]
               for kind in ("scale", "translation", "null")}
    measurable = _measurable(by_kind["translation"])
    keep = {id(gr) for gr in measurable}
    rows = []
    for row, gr in zip(rep.summary(), rep.groups, strict=True):
        row = dict(row)
        for p in rep.processes:
            row[f"{p}_end"] = float(gr.measured[p][-1])
        if gr.group.kind == "translation":
            row["measurable"] = id(gr) in keep
        rows.append(row)
    out: dict[str, Any] = {
        "weight_decay": wd,
        "eta_lambda": lr * wd,
        "eta_lambda_steps": lr * wd * k,
        "horizon": horizon,
        "steps": k,
        "aggregate": {
            "sq_norm": _aggregate(by_kind["scale"], rep.processes),
            "s": _aggregate(measurable, rep.processes),
        },
        "translation_unmeasurable": len(by_kind["translation"]) - len(measurable),
        "s_factor": {
            "gd": (1.0 - lr * wd) ** k,
            "gf": math.exp(-wd * horizon),
            "eom1": math.exp(translation_rate(lr, wd, 1) * horizon),
            "eom2": math.exp(translation_rate(lr, wd, 2) * horizon),
        },
        "wall_time": wall,
        "groups": rows,
    }
    if wd > 0 and by_kind["scale"]:
        ang = [float(gr.extras["angular_update"][-1]) for gr in by_kind["scale"]]
        eq = [float(gr.extras["equilibrium_sq_norm"][-1]) for gr in by_kind["scale"]]
        ratio = [float(gr.measured["gd"][-1]) / e if e > 0 else math.nan
                 for gr, e in zip(by_kind["scale"], eq, strict=True)]
        limit = float(rep.angular_update_limit)
        out["equilibrium"] = {
            "angular_update_limit": limit,
            "angular_update_final": _stat(ang, ("median", "min", "max")),
            "angular_update_final_over_limit": _stat([a / limit for a in ang],
                                                     ("median", "min", "max")),
            "sq_norm_final_over_equilibrium": _stat(ratio, ("median", "min", "max")),
            "relaxation_steps": 1.0 / (2.0 * lr * wd),
        }
    return out


# --------------------------------------------------------------------------------------------
# metrics.csv per λ


def wd_key(wd: float) -> str:
    """Key of a λ in results.json (exact: `repr` round-trips a float)."""
    return repr(float(wd))


def drop_unfinished_rows(rd: RunDir, done: Sequence[float]) -> None:
    """Keep only the metrics rows of finished λ (an interruption may leave a λ's rows without
    its results entry)."""
    done_set = {float(x) for x in done}
    rd.keep_rows(lambda r: float(r["weight_decay"]) in done_set)


def split_metrics(metrics: dict[str, np.ndarray]) -> dict[float, dict[str, np.ndarray]]:
    """metrics.csv columns → {λ: columns of that λ's rows}."""
    if not metrics or "weight_decay" not in metrics:
        return {}
    wd = metrics["weight_decay"]
    out = {}
    for v in dict.fromkeys(wd.tolist()):
        sel = wd == v
        out[float(v)] = {k: col[sel] for k, col in metrics.items()}
    return out


def labels_in(metrics: dict, kind: str) -> list[str]:
    """The group labels of `kind` with curves in metrics.csv, in column order."""
    suffix = "|measured|gd"
    return [k[: -len(suffix)] for k in metrics if k.endswith(suffix) and k.startswith(kind + " ")]


# --------------------------------------------------------------------------------------------
# The run


def symmetry(settings: SymmetrySettings | None = None, store: str | Path | None = None, *,
             overwrite: bool = False, progress: ProgressFn | None = None,
             log=None) -> SymmetryResult:
    """Run (or resume) every λ: GD, GF, EoM-1, EoM-2 and the symmetry report of each; rows
    and results are written as each λ finishes. Progress counts GD steps (4 processes × steps
    per λ).

    >>> from eom.experiments import SymmetrySettings, symmetry
    >>> r = symmetry(SymmetrySettings(subset=32, width=4, depth=1, steps=4, lr=0.05,
    ...                               weight_decays=[0.0]))
    >>> r.status, r.results["weight_decays_done"]
    ('complete', [0.0])
    """
    s = settings or SymmetrySettings()
    validate(s)
    check_settings(s)
    log = log or (lambda msg: None)
    problem, devices = problem_on_devices(s, clamp_subset=s.quick)
    groups = find_groups(problem, s)  # before the Lanczos of `resolve`: bad input fails fast
    fp = fingerprints(problem, s.model)
    res = stored_resolved(store, overwrite) or resolve(s, problem)  # may refuse: no folder yet
    return in_store(
        store, overwrite, s, "symmetry", fp, devices, res, SymmetryResult,
        lambda rd, resuming: _execute(s, rd, problem, groups, res, resuming, progress, log), log,
    )


def _execute(s, rd, problem, groups, res, resuming, progress, log) -> dict:
    t0 = time.perf_counter()
    old = rd.read_results() if resuming else {}
    previous = float((old.get("wall_time") or {}).get("total", 0.0) or 0.0)
    runs: dict[str, Any] = dict(old.get("runs") or {})
    done = [float(x) for x in old.get("weight_decays_done", [])]
    runs = {wd_key(wd): runs[wd_key(wd)] for wd in done if wd_key(wd) in runs}
    done = [wd for wd in done if wd_key(wd) in runs]
    drop_unfinished_rows(rd, done)
    lr, wds, se = res["lr"], [float(x) for x in res["weight_decays"]], res["save_every"]
    scale, trans = plotted_groups(groups, problem.params0, s.groups)
    counts = {kind: sum(g.kind == kind for g in groups)
              for kind in ("scale", "translation", "null")}
    info = {"count": counts, "plotted": {
        "scale": [g.label for g in scale], "translation": [g.label for g in trans]}}
    names = column_names(scale, trans)
    log(f"η = {lr:.4g} ({res['lr_source']}), λ_max(θ_0) = {res['lambda_max_initial']:.4g}; "
        f"{problem.n_params} parameters; groups at θ_0: {counts['scale']} scale, "
        f"{counts['translation']} translation, {counts['null']} null; weight decays "
        + ", ".join(f"{x:g}" for x in wds) + f"; saving every {se} steps")
    if done:
        log(f"resuming: {len(done)} of {len(wds)} weight decays already done")
    total = len(wds) * len(PROCESSES) * s.steps

    def results(status: str, message: str | None) -> dict:
        if status == "interrupted":
            message = INTERRUPTED
        return symmetry_results(s, res, info, runs, done, status, message,
                                previous + time.perf_counter() - t0)

    def tick(what: str) -> None:
        if progress is not None:
            progress(tick.done, total, what)
    tick.done = len(done) * len(PROCESSES) * s.steps

    def body(r: Runner) -> None:
        rd.write_results(results("running", None))
        tick("symmetry")
        for wd in [wd for wd in wds if wd not in done]:
            t_wd = time.perf_counter()
            rep = _one_weight_decay(s, problem, groups, lr, wd, se, tick)
            rd.append_rows(metrics_columns(rep, names))
            r.chunk_done()
            runs[wd_key(wd)] = summarize_weight_decay(rep, lr, time.perf_counter() - t_wd)
            done.append(wd)
            rd.write_results(results("running", None))

    return Runner(rd, results).execute(body)


def _one_weight_decay(s, problem, groups, lr, wd, se, tick):
    """GD, GF, EoM-1 and EoM-2 at weight decay `wd`, and their `SymmetryReport`."""
    from ..engine import gradient_descent, integrate
    from ..symmetry import symmetry_report

    tick(f"λ = {wd:g}: GD")
    trajs = {"gd": gradient_descent(problem.loss, problem.params0, lr, s.steps,
                                    weight_decay=wd, save_every=se)}
    tick.done += s.steps
    for p, order in ORDERS.items():
        tick(f"λ = {wd:g}: {NAMES[p]}")
        trajs[p] = integrate(problem.loss, problem.params0, lr, s.steps, order,
                             weight_decay=wd, save_every=se)
        tick.done += s.steps
    tick(f"λ = {wd:g}: report")
    return symmetry_report(problem.loss, groups, trajs, lr, weight_decay=wd)


def symmetry_results(s: SymmetrySettings, res: dict, groups: dict, runs: dict, done: list,
                     status: str, message: str | None, wall: float) -> dict:
    """results.json: settings that matter, the resolved values and the runs finished."""
    wds = res.get("weight_decays") or s.weight_decays or []
    return {
        "status": status,
        "message": message,
        "command": "symmetry",
        "model": s.model,
        "dataset": s.dataset,
        "dtype": dtype_in_use(),
        "float64": dtype_in_use() == "float64",
        "num_steps": s.steps,
        "save_every": res.get("save_every"),
        "processes": list(PROCESSES),
        "lr": res.get("lr"),
        "lr_source": res.get("lr_source"),
        "lambda_max_initial": res.get("lambda_max_initial"),
        "eta_lambda_max_initial": res.get("eta_lambda_max_initial"),
        "n_params": res.get("n_params"),
        "n_samples": res.get("n_samples"),
        "weight_decays": list(wds),
        "weight_decays_done": [float(x) for x in wds if float(x) in set(done)],
        "groups": groups,
        "runs": {wd_key(x): runs[wd_key(x)] for x in wds if wd_key(x) in runs},
        "wall_time": {"total": wall},
    }


