r"""`eom symmetry`: what GD, gradient flow and the EoM do to symmetric parameter groups.

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
input: the command stops with exit code 2 and a message naming the fix; results.json records
status `failed` and the message.
"""

from __future__ import annotations

import csv
import html
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .._errors import DivergenceError, EomError
from ._app import (
    ConfigOpt,
    DatasetOpt,
    DepthOpt,
    LrOpt,
    NameOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    TargetOpt,
    console,
    out_dir,
    progress_bar,
)
from ._settings import ModelSettings
from ._store import RunDir, read_json

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


@dataclass
class SymmetrySettings(ModelSettings):
    """Settings of `eom symmetry` (also the keys of its `--config` TOML file)."""

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
    """'0,0.01' (or a list, or one number) → sorted distinct λ ≥ 0."""
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


def resolve(rd: RunDir, s: SymmetrySettings, problem) -> dict:
    """Learning rate, λ_max(θ_0), the weight decays and save_every: computed once, kept in
    config.json (a resumed run reuses them)."""
    from ..analysis import sharpness
    from ._run import choose_lr

    res = read_json(rd.config_path).get("resolved")
    if res:
        return res
    if s.lr is None:
        lr, lam = choose_lr(problem, s.target, 0.0)
        source = f"auto: lr·λ_max(θ_0) = {s.target}"
    else:
        lr = float(s.lr)
        lam = float(sharpness(problem.loss, problem.params0).eigenvalues[0])
        source = "given"
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
    save_every = s.save_every or max(1, math.ceil(s.steps / MAX_SAVED))
    res = {
        "lr": lr,
        "lr_source": source,
        "lambda_max_initial": lam,
        "eta_lambda_max_initial": lr * lam,
        "weight_decays": wds,
        "weight_decays_source": wd_source,
        "save_every": int(save_every),
        "n_params": int(problem.n_params),
        "n_samples": int(problem.dataset.X.shape[0]),
        "model_kwargs": s.model_kwargs(),
    }
    rd.update_config(resolved=res)
    return res


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
    if not rd.metrics_path.exists():
        return
    with open(rd.metrics_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    done_set = {float(x) for x in done}
    keep = [rows[0]] + [r for r in rows[1:] if r and float(r[0]) in done_set]
    if len(keep) == len(rows):
        return
    if len(keep) == 1:
        rd.metrics_path.unlink()
        return
    tmp = rd.metrics_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, rd.metrics_path)


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


def execute_symmetry(
    s: SymmetrySettings, rd: RunDir, *, resuming: bool,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) every λ: GD, GF, EoM-1, EoM-2, the symmetry report; rows and results are
    written as each λ finishes. Progress is counted in GD steps (4 processes × steps per λ)."""
    from ..engine import gradient_descent, integrate
    from ..symmetry import symmetry_report
    from ._run import build_problem

    t0 = time.perf_counter()
    old = rd.read_results() if resuming else {}
    previous = float((old.get("wall_time") or {}).get("total", 0.0) or 0.0)
    runs: dict[str, Any] = dict(old.get("runs") or {}) if resuming else {}
    done = [float(x) for x in old.get("weight_decays_done", [])] if resuming else []
    runs = {wd_key(wd): runs[wd_key(wd)] for wd in done if wd_key(wd) in runs}
    done = [wd for wd in done if wd_key(wd) in runs]
    if resuming:
        drop_unfinished_rows(rd, done)
    else:
        rd.metrics_path.unlink(missing_ok=True)
    info: dict[str, Any] = {"res": {}, "groups": {}}
    status, message = "running", None

    def results(status: str, message: str | None) -> dict:
        return symmetry_results(s, info["res"], info["groups"], runs, done, status, message,
                                previous + time.perf_counter() - t0)

    try:
        problem = build_problem(s)
        groups = find_groups(problem, s)  # before the Lanczos of `resolve`: bad input fails fast
        res = info["res"] = resolve(rd, s, problem)
        lr, wds, se = res["lr"], [float(x) for x in res["weight_decays"]], res["save_every"]
        scale, trans = plotted_groups(groups, problem.params0, s.groups)
        counts = {kind: sum(g.kind == kind for g in groups)
                  for kind in ("scale", "translation", "null")}
        info["groups"] = {"count": counts, "plotted": {
            "scale": [g.label for g in scale], "translation": [g.label for g in trans]}}
        names = column_names(scale, trans)
        log(f"η = {lr:.4g} ({res['lr_source']}), λ_max(θ_0) = {res['lambda_max_initial']:.4g}; "
            f"{problem.n_params} parameters; groups at θ_0: {counts['scale']} scale, "
            f"{counts['translation']} translation, {counts['null']} null; weight decays "
            + ", ".join(f"{x:g}" for x in wds) + f"; saving every {se} steps")
        todo = [wd for wd in wds if wd not in done]
        if done:
            log(f"resuming: {len(done)} of {len(wds)} weight decays already done")
        rd.write_results(results("running", None))
        if on_start is not None:
            on_start(len(done) * len(PROCESSES) * s.steps, len(wds) * len(PROCESSES) * s.steps)
        for wd in todo:
            t_wd = time.perf_counter()
            if on_phase is not None:
                on_phase(f"λ = {wd:g}: GD")
            trajs = {"gd": gradient_descent(problem.loss, problem.params0, lr, s.steps,
                                            weight_decay=wd, save_every=se)}
            if on_progress is not None:
                on_progress(s.steps)
            for p, order in ORDERS.items():
                if on_phase is not None:
                    on_phase(f"λ = {wd:g}: {NAMES[p]}")
                trajs[p] = integrate(problem.loss, problem.params0, lr, s.steps, order,
                                     weight_decay=wd, save_every=se)
                if on_progress is not None:
                    on_progress(s.steps)
            if on_phase is not None:
                on_phase(f"λ = {wd:g}: report")
            rep = symmetry_report(problem.loss, groups, trajs, lr, weight_decay=wd)
            del trajs
            rd.append_rows(metrics_columns(rep, names))
            runs[wd_key(wd)] = summarize_weight_decay(rep, lr, time.perf_counter() - t_wd)
            done.append(wd)
            rd.write_results(results("running", None))
        status = "complete"
    except DivergenceError as exc:
        status, message = "diverged", str(exc)
        raise
    except EomError as exc:
        status, message = "failed", str(exc)
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        message = "Interrupted; rerun the same command (same --out) to resume with the λ not done."
        raise
    except Exception as exc:
        status, message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        out = results(status, message)
        rd.write_results(out)
        try:
            write_symmetry_report(rd, read_json(rd.config_path), out)
        except Exception as exc:  # the report must never hide the run's own outcome
            log(f"could not write the report: {type(exc).__name__}: {exc}")
    return out


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
        "float64": True,
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


# --------------------------------------------------------------------------------------------
# Tables and reading


def _pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.3g}%"


def summary_rows(results: dict) -> tuple[list[str], list[list]]:
    """Per λ and quantity: groups, GD's change, and median/max of GF's, EoM-1's and EoM-2's
    end-of-run relative error against GD."""
    cont = [p for p in PROCESSES if p != "gd"]
    header = ["λ", "quantity", "groups", "GD change (median)"]
    for p in cont:
        header += [f"{NAMES[p]} median", f"{NAMES[p]} max"]
    rows = []
    for key, r in (results.get("runs") or {}).items():
        for q, label in (("sq_norm", "‖w‖²"), ("s", "s")):
            a = r["aggregate"][q]
            if not a["groups"]:
                continue
            row = [float(key), label, a["groups"], _pct((a["change"]["gd"] or {}).get("median"))]
            for p in cont:
                e = a["error_vs_gd"].get(p) or {}
                row += [e.get("median"), e.get("max")]
            rows.append(row)
    return header, rows


def prediction_rows(results: dict) -> tuple[list[str], list[list]]:
    """Per λ and quantity: median/max error of each analytic curve against its own run."""
    preds = list(PROCESSES)
    header = ["λ", "quantity"] + [f"{NAMES[p]} analytic (median / max)" for p in preds]
    rows = []
    for key, r in (results.get("runs") or {}).items():
        for q, label in (("sq_norm", "‖w‖²"), ("s", "s")):
            a = r["aggregate"][q]
            if not a["groups"]:
                continue
            row: list = [float(key), label]
            for p in preds:
                e = a["prediction_error"].get(p)
                row.append("–" if not e or e["median"] is None
                           else f"{e['median']:.2e} / {e['max']:.2e}")
            rows.append(row)
    return header, rows


def group_rows(results: dict) -> tuple[list[str], list[list]]:
    """Per λ and group (scale groups and measurable translation directions): the quantity's
    change under GD and GF's, EoM-1's and EoM-2's end-of-run relative error against GD."""
    cont = [p for p in PROCESSES if p != "gd"]
    header = ["λ", "group", "quantity", "GD change"] + [NAMES[p] for p in cont]
    rows = []
    for key, r in (results.get("runs") or {}).items():
        for g in r.get("groups", []):
            if g["kind"] == "null" or g.get("measurable") is False:
                continue
            start, end = g["gd_start"], g["gd_end"]
            change = end / start - 1 if start else None
            rows.append([float(key), g["group"], "‖w‖²" if g["quantity"] == "sq_norm" else "s",
                         _pct(change)] + [g.get(f"{p}_error_vs_gd") for p in cont])
    return header, rows


def _num(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "–"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


def _sci(x) -> str:
    """Compact scientific notation: 2.3e-4."""
    if x is None or not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    m, e = f"{x:.1e}".split("e")
    return f"{m}e{int(e)}"


def reading(results: dict) -> str:
    """Plain-language reading, one paragraph per λ (HTML)."""
    runs = results.get("runs") or {}
    if not runs:
        return "<p>No weight decay finished yet.</p>"
    paras = []
    for key, r in runs.items():
        wd, k, horizon = r["weight_decay"], r["steps"], r["horizon"]
        sq, s = r["aggregate"]["sq_norm"], r["aggregate"]["s"]
        parts = []
        if sq["groups"]:
            ch, pch, err = sq["change"], sq["predicted_change"], sq["error_vs_gd"]
            gd = ch["gd"]
            if wd == 0:
                parts.append(
                    f"Without weight decay, gradient flow says the norm of every scale-invariant "
                    f"group is conserved (GF's ‖w‖² changes by {_pct(ch['gf']['median'])}), but "
                    f"GD grows it: over {k} steps by {_pct(gd['median'])} (median of "
                    f"{sq['groups']} groups; from {_pct(gd['min'])} to {_pct(gd['max'])})."
                )
            else:
                parts.append(
                    f"With weight decay λ = {wd:g} (ηλ·steps = {r['eta_lambda_steps']:.2g}), "
                    f"gradient flow shrinks ‖w‖² of the scale groups as e^(−2λt): by "
                    f"{_pct(ch['gf']['median'])}; GD's changes by {_pct(gd['median'])} "
                    f"(median of {sq['groups']} groups), since the gradient keeps pushing the "
                    "norm out."
                )
            for p in ("eom1", "eom2"):
                if p in ch and ch[p]["median"] is not None:
                    pred = (pch.get(p) or {}).get("median")
                    pred_txt = (f" (its rate equation, integrated along the run, predicts "
                                f"{_pct(pred)})") if pred is not None else ""
                    parts.append(f"{NAMES[p]} changes it by {_pct(ch[p]['median'])}{pred_txt}.")
            gf_e, e1 = err["gf"]["median"], (err.get("eom1") or {}).get("median")
            if gf_e is not None and e1:
                e2 = (err.get("eom2") or {}).get("median")
                parts.append(
                    f"At the end the relative error in ‖w‖² against GD is {_num(gf_e)} for GF, "
                    f"{_num(e1)} for EoM-1 ({_num(gf_e / e1)}× smaller)"
                    + (f" and {_num(e2)} for EoM-2." if e2 is not None else ".")
                )
        if s["groups"] and wd > 0:
            f = r["s_factor"]
            err = s["error_vs_gd"]
            parts.append(
                f"The translation sums s = u·θ ({s['groups']} softmax-logit directions) decay "
                f"under GD as (1−ηλ)^k = {f['gd']:.6g} after {k} steps; gradient flow predicts "
                f"e^(−λT) = {f['gf']:.6g} (relative error {_num(err['gf']['median'])}), EoM-1 "
                f"{f['eom1']:.6g} ({_num(err['eom1']['median'])}), EoM-2 {f['eom2']:.6g} "
                f"({_num(err['eom2']['median'])}); the full series ṡ = log(1−ηλ)/η · s is GD "
                f"exactly (relative difference {_num((s.get('series_vs_gd') or {}).get('max'))})."
            )
        elif s["groups"]:
            parts.append(
                f"The translation sums s = u·θ of {s['groups']} softmax-logit directions are "
                f"conserved by all four processes without weight decay (largest relative change "
                f"under GD {_num(max(abs(s['change']['gd']['min'] or 0), abs(s['change']['gd']['max'] or 0)))})."  # noqa: E501
            )
        eq = r.get("equilibrium")
        if eq:
            parts.append(
                f"Equilibrium: the angle GD turns each scale group per step ends at "
                f"{_num(eq['angular_update_final']['median'])} rad (median), "
                f"{_num(eq['angular_update_final_over_limit']['median'])}× the equilibrium value "
                f"√(2ηλ) = {_num(eq['angular_update_limit'])}; ‖w‖² ends at "
                f"{_num(eq['sq_norm_final_over_equilibrium']['median'])}× its equilibrium value "
                f"√(η‖ĝ‖²/(2λ)). Both ratios approach 1 only after several relaxation times "
                f"1/(2ηλ) = {_num(eq['relaxation_steps'])} steps (the run has {k})."
            )
        paras.append(f"<p><b>λ = {wd:g}, T = {horizon:.4g}.</b> " + html.escape(" ".join(parts))
                     + "</p>")
    return "".join(paras)


# --------------------------------------------------------------------------------------------
# Figures (drawn from metrics.csv and results.json only, so `eom report` redraws them)

STYLE: dict[str, dict] = {
    "gd": dict(color="k", lw=2.6, alpha=0.55, ls="-"),
    "gf": dict(color="C0", lw=1.6, ls="--"),
    "eom1": dict(color="C1", lw=1.6, ls="-", marker="o", ms=3.5),
    "eom2": dict(color="C2", lw=1.6, ls="-.", marker="s", ms=3.5, mfc="none"),
    "eom-series": dict(color="C3", lw=1.2, ls=(0, (1, 1))),
}


def _short(label: str) -> str:
    return label.split(" ", 1)[1] if " " in label else label


def group_figure(m: dict, labels: list[str], quantity: str, path: Path, title: str) -> Path:
    """Per group: top, the quantity relative to its start for each process (thick: measured;
    dotted: its analytic curve); bottom, the relative gap |x_p − x_GD|/|x_GD| on a log scale."""
    import matplotlib.pyplot as plt

    from ._figures import _positive

    n = len(labels)
    ncol = min(n, 4)
    blocks = math.ceil(n / ncol)
    height = 5.0 * blocks + 0.9
    fig, axes = plt.subplots(2 * blocks, ncol, figsize=(3.7 * ncol + 0.7, height),
                             squeeze=False, sharex=True)
    x = m["step"]
    every = max(1, len(x) // 12)
    sym = "‖w‖²" if quantity == "sq_norm" else "s"
    for i, lab in enumerate(labels):
        top, bot = axes[2 * (i // ncol), i % ncol], axes[2 * (i // ncol) + 1, i % ncol]
        ref = m[f"{lab}|measured|gd"]
        x0 = ref[0] if ref[0] != 0 else 1.0
        floor = []  # smallest gap of the measured runs, to keep the log axis readable
        for p in (*PROCESSES, "eom-series"):
            st = dict(STYLE[p])
            meas = m.get(f"{lab}|measured|{p}")
            pred = m.get(f"{lab}|predicted|{p}")
            if meas is not None:
                top.plot(x, meas / x0, label=NAMES[p], markevery=every, **st)
                if p != "gd":
                    gap = _positive(np.abs(meas - ref) / np.abs(ref))
                    bot.semilogy(x, gap, label=NAMES[p], markevery=every, **st)
                    floor.append(0.03 * np.nanmin(gap) if np.isfinite(gap).any() else np.nan)
            if pred is not None and np.isfinite(pred).any():
                if p == "eom-series":
                    kw, name = dict(STYLE[p]), NAMES[p]
                else:
                    kw, name = dict(color=st["color"], lw=1.0, ls=":"), f"{NAMES[p]} analytic"
                top.plot(x, pred / x0, label=name, **kw)
                if p != "gd":
                    gap = _positive(np.abs(pred - ref) / np.abs(ref))
                    bot.semilogy(x, gap, label=name, **kw)
                    if p == "eom-series" and np.isfinite(gap).any():
                        floor.append(float(np.nanmedian(gap)))  # round-off: show it
        lo = np.nanmin(floor) if np.isfinite(floor).any() else np.nan
        if np.isfinite(lo):
            bot.set_ylim(bottom=max(lo, 1e-17))
        top.set_title(_short(lab), fontsize=8)
        top.ticklabel_format(axis="y", useOffset=False)
        top.grid(True, alpha=0.3)
        bot.grid(True, which="both", alpha=0.3)
        bot.set_xlabel("GD step k")
        if i % ncol == 0:
            top.set_ylabel(f"{sym} / {sym}(0)")
            bot.set_ylabel(f"|{sym} − {sym}_GD| / |{sym}_GD|")
    for j in range(n, blocks * ncol):
        axes[2 * (j // ncol), j % ncol].set_visible(False)
        axes[2 * (j // ncol) + 1, j % ncol].set_visible(False)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    # Fixed margins: tight_layout costs seconds per figure on a busy machine.
    fig.subplots_adjust(left=0.85 / fig.get_figwidth(), right=0.99, top=1 - 0.55 / height,
                        bottom=1.05 / height, hspace=0.25, wspace=0.3)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8,
               frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def equilibrium_figure(m: dict, labels: list[str], lr: float, wd: float, path: Path) -> Path:
    """λ > 0: left, ‖w‖² along GD against the equilibrium value √(η n‖g_w‖²/(2λ)) at each
    point; right, GD's angular update per step against √(2ηλ)."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = m["step"]
    for i, lab in enumerate(labels):
        c = f"C{i}"
        a1.plot(x, m[f"{lab}|measured|gd"], color=c, label=_short(lab))
        eq = m.get(f"{lab}|equilibrium_sq_norm")
        if eq is not None:
            a1.plot(x, eq, color=c, ls="--", lw=1)
        ang = m.get(f"{lab}|angular_update")
        if ang is not None:
            a2.plot(x, ang, color=c, label=_short(lab))
    a2.axhline(math.sqrt(2 * lr * wd), color="k", ls=":", label="√(2ηλ)")
    a1.set_title("‖w‖² under GD (solid) and its equilibrium value (dashed)", fontsize=9)
    a1.set_xlabel("GD step k")
    a1.set_ylabel("‖w‖²")
    a2.set_title("angle turned per GD step", fontsize=9)
    a2.set_xlabel("GD step k")
    a2.set_ylabel("radians")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"Approach to equilibrium with weight decay λ = {wd:g}", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.86, bottom=0.13, wspace=0.22)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def wd_tag(wd: float) -> str:
    return f"wd{wd:g}"


def symmetry_figures(metrics: dict, results: dict, folder: Path) -> list[tuple[Path, str]]:
    """All figures with their captions; returns (path, caption) pairs."""
    out = []
    lr = results.get("lr")
    for wd, m in split_metrics(metrics).items():
        scale, trans = labels_in(m, "scale"), labels_in(m, "translation")
        if scale:
            p = group_figure(m, scale, "sq_norm", folder / f"sq_norm_{wd_tag(wd)}.png",
                             f"‖w‖² of the {len(scale)} largest scale-invariant groups, λ = {wd:g}")
            out.append((p, (
                f"λ = {wd:g}. Top: ‖w‖² of each scale group relative to its start, for GD (thick "
                "grey), gradient flow (blue dashed), EoM-1 (orange, circles) and EoM-2 (green, "
                "squares); dotted lines are each process's analytic curve (GD: the exact "
                "recursion; GF: e^(−2λt); EoM: the rate equation of THEORY.md §4 integrated "
                "along the run). Bottom: relative distance from GD's ‖w‖², log scale."
            )))
        if trans and wd > 0:
            p = group_figure(m, trans, "s", folder / f"s_{wd_tag(wd)}.png",
                             f"s = u·θ of {len(trans)} translation directions, λ = {wd:g}")
            out.append((p, (
                f"λ = {wd:g}. Top: s = u·θ of softmax-logit directions relative to its start: "
                "GD (1−ηλ)^k, GF e^(−λt), EoM-1 and EoM-2 e^(r_N t), dotted their closed forms, "
                "red dots the full series (= GD). Bottom: relative distance from GD's s."
            )))
        if scale and wd > 0 and lr:
            p = equilibrium_figure(m, scale, lr, wd, folder / f"equilibrium_{wd_tag(wd)}.png")
            out.append((p, (
                f"λ = {wd:g}. Left: ‖w‖² along GD (solid) and the equilibrium value "
                "√(η‖ĝ‖²/(2λ)) at each point (dashed). Right: the angle GD turns each group per "
                "step, against the equilibrium angular update √(2ηλ)."
            )))
    return out


def write_symmetry_report(rd: RunDir, cfg: dict, results: dict) -> Path:
    """figures/*.png and report.html from metrics.csv and results.json (`eom report` too)."""
    from ._report import figure, kv_table, page, table

    sections = []
    status = results.get("status")
    if status != "complete":
        cls = "bad" if status in ("failed", "diverged") else "warn"
        sections.append(("", f"<p class='{cls}'>Status: <b>{html.escape(str(status))}</b>. "
                             f"{html.escape(results.get('message') or '')}</p>"))
    if results.get("runs"):
        sections.append(("Reading", reading(results)))
        header, rows = summary_rows(results)
        sections.append((
            "End-of-run relative error against GD (median and max over groups)",
            table(header, rows)
            + "<p class='note'>‖w‖²: scale-invariant groups; s: translation directions "
              f"(|s_0| > {S_FLOOR:g}·max|s_0|). GD change: x(T)/x(0) − 1.</p>",
        ))
        header, rows = group_rows(results)
        sections.append((
            "Per group",
            f"<details><summary>End-of-run relative error against GD for each of the "
            f"{len(rows)} (λ, group) pairs</summary>{table(header, rows)}</details>",
        ))
        header, rows = prediction_rows(results)
        sections.append((
            "Analytic curves against their own runs (relative error at the end)",
            table(header, rows)
            + "<p class='note'>Each process's closed-form or rate-equation curve (THEORY.md "
              "§4–5) against the value measured on that process's trajectory. For translation "
              "directions the closed forms are exact, so these numbers are the ODE solver's "
              "error; for scale groups the EoM's rate equation is integrated by the trapezoid "
              "rule on the saved grid (second order in the save spacing).</p>",
        ))
    g = results.get("groups") or {}
    if g.get("count"):
        c = g["count"]
        plotted = g.get("plotted") or {}
        sections.append(("Symmetric groups found at θ_0", kv_table({
            "scale-invariant groups": c.get("scale"),
            "translation-invariant directions": c.get("translation"),
            "null slices (no gradient)": c.get("null"),
            "plotted scale groups": ", ".join(plotted.get("scale", [])) or None,
            "plotted translation directions": ", ".join(plotted.get("translation", [])) or None,
        })))
    metrics = rd.read_metrics()
    if metrics and results.get("runs"):
        figs = symmetry_figures(metrics, results, rd.figures)
        sections.append(("Figures", "".join(figure(p, cap) for p, cap in figs)))
    settings = cfg.get("settings", {})
    resolved = cfg.get("resolved", {})
    sections.append(("Settings", kv_table({
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "model options": resolved.get("model_kwargs"),
        "parameters": resolved.get("n_params"), "samples (full batch)": resolved.get("n_samples"),
        "learning rate η": resolved.get("lr"), "η chosen": resolved.get("lr_source"),
        "λ_max(θ_0)": resolved.get("lambda_max_initial"),
        "ηλ_max(θ_0)": resolved.get("eta_lambda_max_initial"),
        "steps": settings.get("steps"), "saved every": resolved.get("save_every"),
        "weight decays": resolved.get("weight_decays"),
        "weight decays chosen": resolved.get("weight_decays_source"),
        "seed": settings.get("seed"),
        "solver": "diffrax Dopri8, adaptive (PID), rtol 1e-10, atol 1e-12",
        "precision": "float64", "eom version": cfg.get("eom_version"),
        "git commit": cfg.get("git_commit"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    })))
    title = f"eom symmetry — {settings.get('model')} on {settings.get('dataset')}"
    rd.report_path.write_text(page(title, sections))
    return rd.report_path


def print_summary(results: dict, rd: RunDir) -> None:
    from rich import box
    from rich.table import Table

    _, rows = summary_rows(results)
    t = Table(
        title=f"{results.get('model')} on {results.get('dataset')}: η = "
              f"{_num(results.get('lr'))}, η·λ_max(θ_0) = "
              f"{_num(results.get('eta_lambda_max_initial'))}, {results.get('num_steps')} steps\n"
              "relative error against GD at the end, median / max over groups",
        box=box.SIMPLE_HEAD,
    )
    for h in ("λ", "", "groups", "GD change", "GF", "EoM-1", "EoM-2"):
        t.add_column(h, justify="right", no_wrap=True)
    for r in rows:
        pairs = [f"{_sci(r[j])} / {_sci(r[j + 1])}" for j in range(4, len(r), 2)]
        t.add_row(_num(r[0]), r[1], str(r[2]), r[3], *pairs)
    console.print(t)
    c = (results.get("groups") or {}).get("count") or {}
    if c:
        console.print(f"groups at θ_0: {c.get('scale')} scale, {c.get('translation')} "
                      f"translation, {c.get('null')} null")
    for key, r in (results.get("runs") or {}).items():
        eq = r.get("equilibrium")
        if eq:
            console.print(
                f"λ = {float(key):g}: angular update at the end "
                f"{_num(eq['angular_update_final']['median'])} (median) vs √(2ηλ) = "
                f"{_num(eq['angular_update_limit'])}; ‖w‖²/equilibrium "
                f"{_num(eq['sq_norm_final_over_equilibrium']['median'])}")
    wall = (results.get("wall_time") or {}).get("total")
    if wall is not None:
        console.print(f"wall time {wall:.1f} s")
    console.print(f"report: [bold]{rd.report_path}[/]")


# --------------------------------------------------------------------------------------------
# The command


def symmetry_command(
    model: Annotated[str | None, typer.Option(
        "--model", "-m",
        help="A model with normalization and/or a softmax output: mlp-bn, linear, mlp, cnn, or "
             "package.module:factory. \\[default: mlp-bn]")] = None,
    dataset: DatasetOpt = None,
    lr: LrOpt = None,
    target: TargetOpt = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help=f"Number of GD steps. \\[default: {DEFAULT_STEPS}; --quick: "
                        f"{QUICK_STEPS}]")] = None,
    weight_decays: Annotated[str | None, typer.Option(
        "--weight-decays", help="Weight decays λ to run, e.g. 0,0.01 (coupled: GD on "
                                "L + λ/2‖θ‖²). \\[default: 0 and λ with η·λ·steps = --decay]")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Run only this one weight decay λ (shorthand for "
                               "--weight-decays λ).")] = None,
    decay: Annotated[float | None, typer.Option(
        "--decay", help="η·λ·steps of the automatic λ > 0, so the decay shows within the run. "
                        f"\\[default: {DEFAULT_DECAY}]")] = None,
    seed: SeedOpt = None,
    subset: Annotated[int | None, typer.Option(
        "--subset", help=f"Use only N samples (seeded shuffle). \\[default: all; --quick: "
                         f"{QUICK_SUBSET}]")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", help=f"Hidden width of built-in models. \\[default: {DEFAULT_WIDTH}]")] = None,
    depth: DepthOpt = None,
    save_every: Annotated[int | None, typer.Option(
        "--save-every", help=f"Save every this many steps. \\[default: steps/{MAX_SAVED} rounded "
                             f"up, so at most ~{MAX_SAVED} saved points]")] = None,
    groups: Annotated[int | None, typer.Option(
        "--groups", help="How many of the largest scale groups (and translation directions) to "
                         "plot and keep curves of in metrics.csv. \\[default: 4]")] = None,
    quick: Annotated[bool | None, typer.Option(
        "--quick/--no-quick", help=f"A short run ({QUICK_STEPS} steps, {QUICK_SUBSET} samples "
                                   "unless given) for a first look or a test. \\[default: off]")
    ] = None,
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Scale- and translation-invariant groups: where gradient flow is wrong and the EoM is not.

    Runs GD, gradient flow (GF), EoM-1 and EoM-2 on mlp-bn (batch-normalized MLP of width 32,
    softmax output) on digits for 300 steps, with λ = 0 and with a λ > 0. GF says the norm of
    the weights feeding a BatchNorm is conserved; GD grows it, and the EoM follows GD. With
    weight decay the softmax-logit sums s = u·θ decay as (1−ηλ)^k under GD but as e^(−λt)
    under GF. Writes config.json, metrics.csv (‖w‖² and s per saved step, measured and
    analytic), results.json (per λ and group: relative errors against GD at the end),
    figures/*.png and report.html; rerunning with the same --out resumes with the weight
    decays not yet done. A model with no symmetric group ends with exit code 2.
    """
    from .._version import __version__
    from ._settings import build_settings, load_toml

    if weight_decay is not None and weight_decays is not None:
        raise EomError("give either --weight-decay or --weight-decays, not both.")
    wds = parse_weight_decays(weight_decays if weight_decay is None else weight_decay)
    flags = dict(model=model, dataset=dataset, lr=lr, target=target, steps=steps,
                 weight_decays=wds, decay=decay, seed=seed, subset=subset, width=width,
                 depth=depth, save_every=save_every, groups=groups, quick=quick, name=name,
                 out=str(out) if out is not None else None)
    file_values = load_toml(config, SymmetrySettings)
    if "weight_decays" in file_values:
        file_values["weight_decays"] = parse_weight_decays(file_values["weight_decays"])
    if flags["quick"] if flags["quick"] is not None else file_values.get("quick", False):
        for key, value in (("steps", QUICK_STEPS), ("subset", QUICK_SUBSET)):
            if flags[key] is None and key not in file_values:
                flags[key] = value
    s = build_settings(file_values, flags, SymmetrySettings)
    check_settings(s)
    rd = RunDir(out_dir(s.name, Path(s.out) if s.out else None))
    resuming = rd.prepare(s.as_dict(), overwrite=overwrite, command="symmetry")
    if resuming and rd.read_results().get("status") == "complete":
        console.print(f"[green]{rd.path} is already complete[/] (use --overwrite to rerun).")
        print_summary(rd.read_results(), rd)
        return
    console.print(f"eom {__version__}: writing to [bold]{rd.path}[/] (float64)")
    with progress_bar() as bar:
        task = bar.add_task("symmetry", total=None)
        results = execute_symmetry(
            s, rd, resuming=resuming,
            on_start=lambda done, total: bar.update(task, completed=done, total=total),
            on_progress=lambda k: bar.advance(task, k),
            on_phase=lambda text: bar.update(task, description=text),
            log=lambda msg: console.print(msg),
        )
    print_summary(results, rd)
