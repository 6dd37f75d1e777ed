r"""`eom.experiments.run`: GD, gradient flow and the EoM side by side, written as it goes.

For each order $N$ the run records $\lVert\theta^{(N)}(k\eta) - \theta_k\rVert$ every
`record_every` steps (THEORY.md §3), in chunks of `CHUNK` recorded points: each chunk appends
its rows to metrics.csv, then checkpoints (state.npz), so an interrupted run resumes
bit-identically. Before any ODE solve the learning rate is checked: η·λ_max(θ_0) ≥ 2 is refused
(GD is unstable there) unless `allow_unstable`, which runs GD alone and records where it went.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np

from .._errors import DivergenceError, EomError
from ._common import (
    ProgressFn,
    check_stable,
    choose_lr,
    fingerprints,
    in_store,
    lambda_max,
    problem_on_devices,
    stored_resolved,
)
from ._optim import (
    batch_sharpness_fn,
    build_optimizer,
    effective,
    num_models,
    resolve_optimizer,
    sgd_extra_columns,
    sgd_extra_fn,
    state_template,
)
from ._result import RunResult
from ._runner import Runner
from ._settings import RunSettings, auto_target, validate
from ._store import RunDir, dtype_in_use

#: Recorded points per chunk: each chunk is checkpointed and moves the progress bar.
CHUNK = 16
#: GD alone (`allow_unstable`) stops once the loss grows this much beyond its start.
BLOWUP = 1e8


def make_optimizer(s: RunSettings, problem=None, res: dict | None = None):
    """The `eom.engine.Optimizer` for the settings; None means compare's built-in full-batch GD.
    SGD and momentum are built from the problem's data (`eom.experiments._optim`); `res` (the
    resolved values) fixes momentum's start and its η·λ_max."""
    if s.optimizer == "gd":
        return None
    if problem is None:
        raise EomError(f"optimizer {s.optimizer!r} is built from a problem; pass it.")
    return build_optimizer(s, problem, res)[0]


def resolve(s: RunSettings, problem) -> dict:
    """Learning rate, λ_max(θ_0) and solver tolerances, checked for stability (no ODE solve)."""
    from ..measure import auto_tolerance

    if s.lr is None:
        target, source = auto_target(s)
        lr, lam = choose_lr(problem, target, s.weight_decay)
    else:
        lr, lam, source = float(s.lr), lambda_max(problem, s.weight_decay), "given"
    check_stable(lr, lam, allow=s.allow_unstable and s.optimizer == "gd",
                 optimizer=None if s.optimizer == "gd" else build_optimizer(
                     s, problem, {"eta_lambda_max_initial": lr * lam})[0])
    unstable = not lr * lam < 2
    # Other optimizers: compare chooses (and tightens) tolerances per model itself.
    tol = {} if unstable or s.optimizer != "gd" else auto_tolerance(
        problem.loss, problem.params0, lr, tuple(s.orders), s.weight_decay)
    extra = resolve_optimizer(s, problem, lr, lam)
    if s.optimizer != "gd" and s.predict:
        extra.setdefault("notes", []).append(
            "predicted errors are derived for full-batch GD only: --predict is off for "
            f"--optimizer {s.optimizer}.")
    if s.optimizer != "gd" and s.local:
        extra.setdefault("notes", []).append(
            f"one-step (local) errors are measured for full-batch GD only: --local is off for "
            f"--optimizer {s.optimizer}.")
    return {**extra,
        "lr": lr,
        "lr_source": source,
        "lambda_max_initial": lam,
        "eta_lambda_max_initial": lr * lam,
        "n_params": int(problem.n_params),
        "n_samples": int(problem.dataset.X.shape[0]),
        "tolerance": {str(k): v for k, v in tol.items()},
        "gd_only": unstable,
    }


def summarize(rd: RunDir, s: RunSettings, res: dict, status: str, message: str | None,
              wall: dict, problem=None) -> dict:
    """results.json from the metrics written so far."""
    m = rd.read_metrics()
    out = {
        "status": status, "message": message, "model": s.model, "dataset": s.dataset,
        "dtype": dtype_in_use(), "float64": dtype_in_use() == "float64",
        "optimizer": s.optimizer, "num_steps": s.steps, "orders": list(s.orders),
        "weight_decay": s.weight_decay,
        **{k: v for k, v in res.items() if k != "tolerance"},
        "tolerance": res.get("tolerance"), "wall_time": wall,
    }
    if not m or len(m.get("step", [])) == 0:
        out["steps_done"] = 0
        return out
    out["steps_done"] = int(m["step"][-1])
    if s.optimizer != "gd":
        out["num_steps"] = int(res.get("steps_total", s.steps))
        out["final"] = _final_models(m, res)
        if s.optimizer == "momentum":
            _order_ratios(out["final"]["models"])
        out["regime"] = regime_summary(m, res.get("lr"), res.get("eta_lambda_max_initial"))
        out["optimizer_regime"] = optimizer_regime(m, s, res)
        return out
    out["final"] = _final(m, s, problem)
    if s.predict:
        out["predict_every"] = s.predict_every
    out["regime"] = regime_summary(m, res.get("lr"), res.get("eta_lambda_max_initial"))
    return out


def _final(m: dict, s: RunSettings, problem) -> dict:
    final = {"step": int(m["step"][-1]), "loss_gd": float(m["loss_gd"][-1]), "orders": {}}
    prev = None
    for n in s.orders:
        if f"error_{n}" not in m:
            continue
        e = float(m[f"error_{n}"][-1])
        r = {
            "error": e,
            "relative_error": float(m[f"relative_error_{n}"][-1]),
            "loss": float(m[f"loss_{n}"][-1]),
            "solver_error": float(m[f"solver_error_{n}"][-1]),
            "flagged": bool(m[f"flagged_{n}"][-1]),
            "ratio_to_previous": (e / prev if prev else None),
        }
        if f"predicted_{n}" in m:
            r["predicted"] = float(m[f"predicted_{n}"][-1])
        final["orders"][str(n)] = r
        prev = e
    if problem is not None and problem.accuracy is not None:
        with contextlib.suppress(Exception):
            final["accuracy_gd_initial"] = float(problem.accuracy(problem.params0))
    return final


def _model_keys(m: dict) -> list[str]:
    return [k[len("error_"):] for k in m if k.startswith("error_")]


def _final_models(m: dict, res: dict) -> dict:
    """Per model (label), its error at the last recorded step where it is defined (epoch models:
    the last epoch boundary); momentum from rest: only steps ≥ K count."""
    steps = np.asarray(m["step"])
    K = int(res.get("transient_steps", 0) or 0)
    final = {"step": int(steps[-1]), "loss_gd": float(m["loss_gd"][-1]), "models": {}}
    for key in _model_keys(m):
        e = np.asarray(m[f"error_{key}"], dtype=float)
        ok = np.isfinite(e) & (steps >= K)
        if not ok.any():
            continue
        i = int(np.flatnonzero(ok)[-1])
        r = {"step": int(steps[i]), "error": float(e[i]),
             "relative_error": float(m[f"relative_error_{key}"][i]),
             "solver_error": float(m[f"solver_error_{key}"][i]),
             "flagged": bool(m[f"flagged_{key}"][i]),
             "max_error_after_transient": float(np.nanmax(e[ok]))}
        final["models"][key] = r
    for col in ("reg_sgd", "reg_gd"):
        if col in m:
            final[col] = float(m[col][-1])
    for col in (c for c in m if c.startswith("gap_")):
        v = np.asarray(m[col], dtype=float)
        if np.isfinite(v).any():
            final[col] = float(v[np.isfinite(v)][-1])
    return final


def _order_ratios(models: dict) -> None:
    """Momentum: each order's final and worst-after-transient error over the previous order's
    (gf → eom1 → eom2 …), as `ratio_to_previous` / `max_ratio_to_previous` (< 1: it beat it)."""
    keys = sorted((k for k in models if k == "gf" or k[3:].isdigit()),
                  key=lambda k: 0 if k == "gf" else int(k[3:]))
    for prev, key in zip(keys, keys[1:], strict=False):
        a, b = models[prev], models[key]
        b["ratio_to_previous"] = b["error"] / a["error"] if a["error"] > 0 else None
        b["max_ratio_to_previous"] = (b["max_error_after_transient"] /
                                      a["max_error_after_transient"]
                                      if a["max_error_after_transient"] > 0 else None)


def optimizer_regime(m: dict, s: RunSettings, res: dict) -> dict:
    """SGD: per-batch η·λ_max vs 1 (switching EoM), m·η·λ_max(L) vs 1 (epoch/averaged flows);
    momentum: η·λ_max vs the momentum radius. Start and worst values along the run."""
    lam = np.asarray(m.get("eta_lambda_max", []), dtype=float)
    lam = lam[np.isfinite(lam)]
    worst = float(max([res.get("eta_lambda_max_initial") or 0.0, *lam.tolist()]))
    if s.optimizer == "sgd":
        mb = int(res["batches"])
        bat = np.asarray(m.get("eta_lambda_max_batch", []), dtype=float)
        bat = bat[np.isfinite(bat)]
        worst_b = float(max([res.get("eta_lambda_max_batch_initial") or 0.0, *bat.tolist()]))
        return {
            "switching": {"value_initial": res.get("eta_lambda_max_batch_initial"),
                          "value_max": worst_b, "radius": 1.0, "inside": worst_b < 1.0},
            "epoch": {"value_initial": res.get("m_eta_lambda_max_initial"),
                      "value_max": mb * worst, "radius": 1.0, "inside": mb * worst < 1.0},
        }
    bound = float(res["momentum_radius"])
    # along the compared steps only (≥ K: after the transient, where the models are compared)
    steps = np.asarray(m.get("step", []), dtype=float)
    along = np.asarray(m.get("eta_lambda_max", []), dtype=float)
    K = int(res.get("transient_steps", 0) or 0)
    sel = np.isfinite(along) & (steps >= K) if along.size else np.zeros(0, bool)
    compared = float(along[sel].max()) if sel.any() else None
    q = float(res["beta"]) * (1 - worst if res.get("nesterov") else 1.0)
    return {"momentum": {"value_initial": res.get("eta_lambda_max_initial"), "value_max": worst,
                         "radius": bound, "inside": worst < bound,
                         "value_compared_max": compared,
                         "inside_compared": None if compared is None else compared < bound,
                         "sqrt_beta": math.sqrt(float(res["beta"])),
                         "sharp_modulus": math.sqrt(abs(q)),
                         "stability_limit": res.get("stability_limit")}}


def regime_summary(m: dict, lr: float | None, initial: float | None) -> dict:
    """The EoM's validity regime at the start and end, and the warning where it worsened."""
    from ..analysis import regime, regime_warning, warning_message

    steps = [0]
    vals = [initial if initial is not None else math.nan]
    if "eta_lambda_max" in m:
        sel = np.isfinite(m["eta_lambda_max"])
        steps += [int(x) for x in m["step"][sel]]
        vals += [float(x) for x in m["eta_lambda_max"][sel]]
    vals_arr = np.array(vals)
    ok = np.isfinite(vals_arr)
    if not ok.any():
        return {}
    steps_ok = [s for s, o in zip(steps, ok, strict=True) if o]
    v = vals_arr[ok]
    warning = regime_warning(steps_ok, v, lr=lr)
    if warning is None and regime(float(v[0])) != "accurate":
        # Already outside the accurate regime at θ_0: say so even though it never "worsened".
        warning = warning_message(steps_ok[0], float(v[0]), lr=lr).replace(
            "EoM regime worsened at step 0", "At the start (step 0) the EoM is not in its "
            "accurate regime"
        )
    return {
        "initial": regime(float(v[0])),
        "final": regime(float(v[-1])),
        "eta_lambda_max_final": float(v[-1]),
        "eta_lambda_max_max": float(v.max()),
        "warning": warning,
    }


def state_step(state, s: RunSettings, res: dict | None = None) -> int:
    """The true step number of a checkpoint (momentum's settled start: K + the compared ones)."""
    return int(run_grid(s, res or {})[state.index])


def run_grid(s: RunSettings, res: dict):
    """The recorded steps of the run: `step_offset` + 0, record_every, …, the compared steps."""
    from ..engine import save_grid

    e = effective(s, res)
    k0 = int(res.get("step_offset", 0) or 0)
    return k0 + save_grid(e.steps - k0, e.record_every)


def run(settings: RunSettings | None = None, store: str | Path | None = None, *,
        overwrite: bool = False, progress: ProgressFn | None = None,
        log=None) -> RunResult:
    """Run (or resume, when `store` holds the same run) GD against the EoM of each order.

    Without `store` the run happens in a temporary folder and only the result is kept.

    >>> from eom.experiments import RunSettings, run
    >>> r = run(RunSettings(subset=32, width=4, depth=1, steps=4, record_every=2, orders=[0],
    ...                     predict=False, diagnose_every=0, lr=0.1))
    >>> r.status, r.results["steps_done"]
    ('complete', 4)
    """
    s = settings or RunSettings()
    validate(s)
    log = log or (lambda msg: None)
    # bad model/data/devices fail here, before the folder is touched
    problem, devices = problem_on_devices(s)
    fp = fingerprints(problem, s.model)
    res = stored_resolved(store, overwrite) or resolve(s, problem)  # may refuse: no folder yet
    res = {**res, "devices": devices}  # the devices of this session (a resume may differ)
    return in_store(
        store, overwrite, s, "run", fp, devices, res, RunResult,
        lambda rd, resuming: _execute(s, rd, problem, res, resuming, progress, log), log,
    )


def _execute(s, rd, problem, res, resuming, progress, log) -> dict:
    t_start = time.perf_counter()
    prev = rd.read_results().get("wall_time", {}) if resuming else {}
    wall = {"setup": 0.0, "previous": float(prev.get("compare", 0.0) or 0.0)}
    runner = Runner(rd, lambda status, msg: summarize(
        rd, s, res, status, msg, _wall(wall), problem))
    if res.get("gd_only"):
        return runner.execute(lambda r: _gd_alone(s, rd, problem, res, r, progress))
    state = _resume_state(s, rd, problem, resuming, log, res)
    wall["setup"] = time.perf_counter() - t_start
    wall["t0"] = time.perf_counter()
    if progress is not None:
        progress(state_step(state, s, res) if state is not None else int(
            res.get("step_offset", 0) or 0), effective(s, res).steps,
                 _what(s))

    def body(r: Runner) -> None:
        for recs, st in _chunks(s, problem, res, state):
            cols = {k: v for k, v in recs.items() if not k.startswith("_")}
            if cols and len(cols["step"]):
                rd.append_rows(cols)
            arrays = st.to_arrays()
            arrays["step"] = np.asarray(state_step(st, s, res))
            rd.save_state(arrays)
            r.chunk_done()
            rd.write_results(summarize(rd, s, res, "running", None, _wall(wall)))
            if progress is not None and len(recs["step"]):
                progress(int(recs["step"][-1]), effective(s, res).steps, _what(s))

    return runner.execute(body)


def _what(s: RunSettings) -> str:
    return {"gd": "GD", "sgd": "SGD", "momentum": "momentum"}[s.optimizer] + " vs EoM"


def _wall(w: dict) -> dict:
    compare = w["previous"] + (time.perf_counter() - w["t0"] if "t0" in w else 0.0)
    return {"setup": w["setup"], "compare": compare, "total": compare + w["setup"]}


def _resume_state(s, rd, problem, resuming, log, res):
    from ..measure import CompareState

    if not resuming:
        return None
    arrays = rd.load_state()
    if arrays is None:
        rd.truncate_metrics(-1)
        return None
    try:
        state = CompareState.from_arrays(arrays, problem.params0,
                                         num_models(s, problem, res["lr"]),
                                         state_template(s, problem))
        done_step = int(arrays["step"])
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise EomError(
            f"{rd.state_path} (the checkpoint) does not fit this run ({type(exc).__name__}: "
            f"{exc}). Pass --overwrite to start afresh."
        ) from None
    rd.truncate_metrics(done_step)
    log(f"resuming from step {done_step} of {effective(s, res).steps}")
    return state


def _chunks(s, problem, res, state):
    from ..measure import compare_chunks

    opt, loss = build_optimizer(s, problem, res)
    e = effective(s, res)
    if opt is None:
        tol = {int(k): v for k, v in res["tolerance"].items()}
        yield from compare_chunks(
            problem.loss, problem.params0, res["lr"], e.steps, tuple(s.orders),
            weight_decay=s.weight_decay, record_every=e.record_every, rtol=tol, atol=tol,
            local=s.local, predict=s.predict, diagnose_every=s.diagnose_every or None,
            chunk_size=CHUNK, predict_every=s.predict_every, state=state,
        )
        return
    try:
        yield from _optimizer_chunks(s, problem, res, state, opt, loss, e)
    except EomError as exc:
        if s.optimizer != "momentum" or res.get("start_kind", s.start) != "rest" or res.get(
                "optimizer_regime_inside", True):
            raise
        raise EomError(
            f"{exc} η·λ_max(θ_0) = {res['eta_lambda_max_initial']:.3g} is "
            f"{res['eta_lambda_max_initial'] / res['momentum_radius']:.3g}× the momentum radius "
            f"{res['momentum_radius']:.3g}: the sharp directions oscillate with |μ| = √β and no "
            "flow describes them, so the EoM's effective start (its flow integrated back over "
            "the K transient steps) does not exist. Use --start manifold to see the EoM follow "
            "the slow directions only, or lower --target/--lr (or β) to get inside the radius."
        ) from None


def _optimizer_chunks(s, problem, res, state, opt, loss, e):
    from ..measure import compare_chunks

    sgd = s.optimizer == "sgd"
    extra_fn = sgd_extra_fn(opt, loss, res["lr"]) if sgd else None
    sharp = batch_sharpness_fn(opt, loss) if sgd else None
    keys = [m.label for m in opt.models(loss, res["lr"], tuple(s.orders))]
    k0 = int(res.get("step_offset", 0) or 0)  # compare begins at step k0 (Optimizer.begin)
    for recs, st in compare_chunks(
        loss, problem.params0, res["lr"], e.steps - k0, tuple(s.orders), optimizer=opt,
        record_every=e.record_every, diagnose_every=s.diagnose_every or None,
        chunk_size=CHUNK, state=state, keep_params=sgd,
    ):
        if sgd and len(recs.get("step", ())):
            recs.update(sgd_extra_columns(recs, extra_fn, keys))
            recs["eta_lambda_max_batch"] = _batch_sharpness(sharp, res["lr"], st, recs)
        yield {k: v for k, v in recs.items() if not k.startswith("_params")}, st


def _batch_sharpness(fn, lr, st, recs) -> np.ndarray:
    """max_i η·λ_max(L_i) at the chunk's last recorded iterate (NaN at the others)."""
    out = np.full(len(recs["step"]), np.nan)
    out[-1] = lr * float(np.max(fn(st.theta_gd)))
    return out


def _gd_alone(s, rd, problem, res, runner: Runner, progress) -> None:
    """η·λ_max(θ_0) ≥ 2 with `allow_unstable`: plain GD, its loss recorded until it blows up
    (non-finite or `BLOWUP`× its start); no ODE is solved."""
    import jax

    lr, wd = res["lr"], s.weight_decay
    grad = jax.jit(jax.value_and_grad(problem.loss))
    p = problem.params0
    rd.keep_rows(lambda r: False)
    start = abs(float(problem.loss(p))) + 1.0
    steps, losses = [], []
    for k in range(1, s.steps + 1):
        _, g = grad(p)
        p = jax.tree.map(lambda x, gx: x - lr * (gx + wd * x), p, g)
        if k % s.record_every and k != s.steps:
            continue
        loss = float(problem.loss(p))
        steps.append(k)
        losses.append(loss)
        if not math.isfinite(loss) or abs(loss) > BLOWUP * start:
            break
    rd.append_rows({"step": np.asarray(steps), "loss_gd": np.asarray(losses)})
    runner.chunk_done()
    if progress is not None:
        progress(steps[-1], s.steps, "GD alone")
    if not math.isfinite(losses[-1]) or abs(losses[-1]) > BLOWUP * start:
        raise DivergenceError(
            f"GD alone (--allow-unstable) diverged: η·λ_max(θ_0) = "
            f"{res['eta_lambda_max_initial']:.3g} ≥ 2 and the loss reached {losses[-1]:.3g} at "
            f"step {steps[-1]} (from {start - 1:.3g}). Lower the learning rate."
        )
