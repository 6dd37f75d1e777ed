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
    build_problem,
    check_stable,
    choose_lr,
    fingerprints,
    header,
    lambda_max,
    opened,
    stored_resolved,
)
from ._result import RunResult
from ._runner import Runner
from ._settings import RunSettings, validate
from ._store import RunDir, dtype_in_use

#: Recorded points per chunk: each chunk is checkpointed and moves the progress bar.
CHUNK = 16
#: GD alone (`allow_unstable`) stops once the loss grows this much beyond its start.
BLOWUP = 1e8


def make_optimizer(s: RunSettings):
    """The `eom.engine.Optimizer` for the settings; None means compare's built-in full-batch GD
    (the others are refused by `validate` until they land in the engine)."""
    if s.optimizer == "gd":
        return None
    raise EomError(f"optimizer {s.optimizer!r} is not available yet; use optimizer='gd'.")


def resolve(s: RunSettings, problem) -> dict:
    """Learning rate, λ_max(θ_0) and solver tolerances, checked for stability (no ODE solve)."""
    from ..measure import auto_tolerance

    if s.lr is None:
        lr, lam = choose_lr(problem, s.target, s.weight_decay)
        source = f"auto: lr·λ_max(θ_0) = {s.target}"
    else:
        lr, lam, source = float(s.lr), lambda_max(problem, s.weight_decay), "given"
    check_stable(lr, lam, allow=s.allow_unstable)
    unstable = not lr * lam < 2
    tol = {} if unstable else auto_tolerance(problem.loss, problem.params0, lr, tuple(s.orders),
                                             s.weight_decay)
    return {
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
    out["final"] = _final(m, s, problem)
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


def state_step(state, s: RunSettings) -> int:
    from ..engine import save_grid

    return int(save_grid(s.steps, s.record_every)[state.index])


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
    problem = build_problem(s)  # bad model/data fail here, before the folder is touched
    fp = fingerprints(problem, s.model)
    res = stored_resolved(store, overwrite) or resolve(s, problem)  # may refuse: no folder yet
    with opened(store) as rd:
        resuming = rd.prepare(s.as_dict(), overwrite=overwrite, command="run",
                              fingerprints=fp, defaults=RunSettings().as_dict())
        if resuming and rd.read_results().get("status") == "complete":
            log(f"{rd.path} is already complete (use --overwrite to rerun).")
            return RunResult.from_dir(rd.path)
        if store is not None:
            log(header(rd))
        rd.update_config(resolved=res)
        _execute(s, rd, problem, res, resuming, progress, log)
        return RunResult.from_dir(rd.path)


def _execute(s, rd, problem, res, resuming, progress, log) -> dict:
    t_start = time.perf_counter()
    prev = rd.read_results().get("wall_time", {}) if resuming else {}
    wall = {"setup": 0.0, "previous": float(prev.get("compare", 0.0) or 0.0)}
    runner = Runner(rd, lambda status, msg: summarize(
        rd, s, res, status, msg, _wall(wall), problem))
    if res.get("gd_only"):
        return runner.execute(lambda r: _gd_alone(s, rd, problem, res, r, progress))
    state = _resume_state(s, rd, problem, resuming, log)
    wall["setup"] = time.perf_counter() - t_start
    wall["t0"] = time.perf_counter()
    if progress is not None:
        progress(state_step(state, s) if state is not None else 0, s.steps, "GD vs EoM")

    def body(r: Runner) -> None:
        for recs, st in _chunks(s, problem, res, state):
            cols = {k: v for k, v in recs.items() if not k.startswith("_")}
            if cols and len(cols["step"]):
                rd.append_rows(cols)
            arrays = st.to_arrays()
            arrays["step"] = np.asarray(state_step(st, s))
            rd.save_state(arrays)
            r.chunk_done()
            rd.write_results(summarize(rd, s, res, "running", None, _wall(wall)))
            if progress is not None and len(recs["step"]):
                progress(int(recs["step"][-1]), s.steps, "GD vs EoM")

    return runner.execute(body)


def _wall(w: dict) -> dict:
    compare = w["previous"] + (time.perf_counter() - w["t0"] if "t0" in w else 0.0)
    return {"setup": w["setup"], "compare": compare, "total": compare + w["setup"]}


def _resume_state(s, rd, problem, resuming, log):
    from ..measure import CompareState

    if not resuming:
        return None
    arrays = rd.load_state()
    if arrays is None:
        rd.truncate_metrics(-1)
        return None
    try:
        state = CompareState.from_arrays(arrays, problem.params0, len(s.orders))
        done_step = int(arrays["step"])
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise EomError(
            f"{rd.state_path} (the checkpoint) does not fit this run ({type(exc).__name__}: "
            f"{exc}). Pass --overwrite to start afresh."
        ) from None
    rd.truncate_metrics(done_step)
    log(f"resuming from step {done_step} of {s.steps}")
    return state


def _chunks(s, problem, res, state):
    from ..measure import compare_chunks

    opt = make_optimizer(s)
    extra = {} if opt is None else {"optimizer": opt}
    tol = {int(k): v for k, v in res["tolerance"].items()}
    return compare_chunks(
        problem.loss, problem.params0, res["lr"], s.steps, tuple(s.orders),
        weight_decay=s.weight_decay, record_every=s.record_every, rtol=tol, atol=tol,
        local=s.local, predict=s.predict, diagnose_every=s.diagnose_every or None,
        chunk_size=CHUNK, state=state, **extra,
    )


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
