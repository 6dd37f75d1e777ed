"""`eom run`: GD, gradient flow and the EoM on a built-in or user problem, written as it goes."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._errors import DivergenceError, EomError
from ..measure import CompareState, auto_tolerance, compare_chunks
from ._figures import order_name, run_figures
from ._report import SUMMARY_HEADER, figure, kv_table, page, reading, summary_rows, table
from ._settings import RunSettings
from ._store import RunDir

#: Recorded points per chunk in the CLI: each chunk is checkpointed and moves the progress bar.
CLI_CHUNK = 16


def build_problem(s):
    from ..problems import make_problem

    return make_problem(s.model, s.dataset, seed=s.seed, subset=s.subset, **s.model_kwargs())


def choose_lr(problem, target: float, weight_decay: float) -> tuple[float, float]:
    """lr with lr·λ_max(θ_0) = target (2 significant digits), and λ_max(θ_0)."""
    from ..analysis import sharpness

    lam = float(sharpness(problem.loss, problem.params0, weight_decay=weight_decay).eigenvalues[0])
    if not lam > 0:
        raise EomError(
            f"λ_max(θ_0) = {lam:.3g} ≤ 0, so no learning rate can be derived from it; "
            "pass --lr explicitly."
        )
    lr = float(f"{target / lam:.2g}")
    return lr, lam


def resolve(rd: RunDir, s: RunSettings, problem, resuming: bool) -> dict:
    """Learning rate, λ_max(θ_0) and solver tolerances: computed once, stored in config.json."""
    from ..analysis import sharpness

    if resuming:
        cfg = rd.config_path.read_text()
        import json

        res = json.loads(cfg).get("resolved")
        if res:
            return res
    if s.lr is None:
        lr, lam = choose_lr(problem, s.target, s.weight_decay)
        source = f"auto: lr·λ_max(θ_0) = {s.target}"
    else:
        lr = float(s.lr)
        lam = float(
            sharpness(problem.loss, problem.params0, weight_decay=s.weight_decay).eigenvalues[0]
        )
        source = "given"
    tol = auto_tolerance(problem.loss, problem.params0, lr, tuple(s.orders), s.weight_decay)
    res = {
        "lr": lr,
        "lr_source": source,
        "lambda_max_initial": lam,
        "eta_lambda_max_initial": lr * lam,
        "n_params": int(problem.n_params),
        "n_samples": int(problem.dataset.X.shape[0]),
        "tolerance": {str(k): v for k, v in tol.items()},
    }
    rd.update_config(resolved=res)
    return res


def summarize(rd: RunDir, s: RunSettings, res: dict, status: str, message: str | None,
              wall: dict, problem=None) -> dict:
    """results.json from the metrics written so far."""
    m = rd.read_metrics()
    out = {
        "status": status,
        "message": message,
        "model": s.model,
        "dataset": s.dataset,
        "float64": True,
        "num_steps": s.steps,
        "orders": list(s.orders),
        "weight_decay": s.weight_decay,
        **{k: v for k, v in res.items() if k != "tolerance"},
        "tolerance": res.get("tolerance"),
        "wall_time": wall,
    }
    if not m or len(m.get("step", [])) == 0:
        out["steps_done"] = 0
        return out
    out["steps_done"] = int(m["step"][-1])
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
    out["final"] = final
    out["regime"] = regime_summary(m, res.get("lr"), res.get("eta_lambda_max_initial"))
    return out


def regime_summary(m: dict, lr: float | None, initial: float | None) -> dict:
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


def write_report(rd: RunDir) -> Path:
    """figures/*.png and report.html from the folder's files (used by `eom report` too)."""
    from ._store import read_json

    cfg = read_json(rd.config_path)
    results = rd.read_results()
    metrics = rd.read_metrics()
    command = cfg.get("command", "run")
    if command == "sweep":
        from ._sweep import write_sweep_report

        return write_sweep_report(rd, cfg, results)
    if command == "symmetry":
        from ._symmetry_cmd import write_symmetry_report

        return write_symmetry_report(rd, cfg, results)
    if command == "validity":
        from ._validity_cmd import write_validity_report

        return write_validity_report(rd, cfg, results)
    figs = run_figures(metrics, rd.figures) if metrics and len(metrics.get("step", [])) else []
    settings = cfg.get("settings", {})
    resolved = cfg.get("resolved", {})
    status = results.get("status", "unknown")
    sections = []
    if status != "complete":
        cls = "bad" if status in ("diverged", "failed") else "warn"
        msg = results.get("message") or ""
        sections.append(("", f"<p class='{cls}'>Run status: <b>{status}</b>. {msg}</p>"))
    sections.append(("Reading", reading(results)))
    summary = table(SUMMARY_HEADER, summary_rows(results))
    sections.append(("Summary at the last recorded step", summary))
    captions = {
        "error": "Distance ‖θ^(N)(kη) − θ_k‖ of gradient flow (order 0) and the EoM of each order "
                 "from GD, log scale. Dotted: the ODE solver's own error; hollow markers: within "
                 "10× of it.",
        "loss": "Training loss along GD and along each continuous model, and the loss gap.",
        "predicted": "Measured error against the leading-order prediction of THEORY.md §3.",
        "regime": "ηλ_max along the run over the EoM's validity regimes.",
    }
    sections.append(("Figures", "".join(figure(p, captions.get(p.stem, "")) for p in figs)))
    info = {
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "parameters": resolved.get("n_params"), "samples (full batch)": resolved.get("n_samples"),
        "learning rate η": resolved.get("lr"), "η chosen": resolved.get("lr_source"),
        "λ_max(θ_0)": resolved.get("lambda_max_initial"),
        "ηλ_max(θ_0)": resolved.get("eta_lambda_max_initial"),
        "steps": settings.get("steps"), "weight decay": settings.get("weight_decay"),
        "orders": settings.get("orders"), "seed": settings.get("seed"),
        "solver": "diffrax Dopri8, adaptive (PID); tolerances per order "
                  + str(resolved.get("tolerance")),
        "precision": "float64", "eom version": cfg.get("eom_version"),
        "git commit": cfg.get("git_commit"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    }
    sections.append(("Settings", kv_table(info)))
    title = f"eom run — {settings.get('model')} on {settings.get('dataset')}"
    rd.report_path.write_text(page(title, sections))
    return rd.report_path


def execute_run(
    s: RunSettings, rd: RunDir, *, resuming: bool,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the comparison, writing rows, checkpoints and results as it goes."""
    t_start = time.perf_counter()
    problem = build_problem(s)
    res = resolve(rd, s, problem, resuming)
    lr = res["lr"]
    orders = tuple(s.orders)
    tol = {int(k): v for k, v in res["tolerance"].items()}
    state = None
    if resuming:
        arrays = rd.load_state()
        if arrays is not None:
            state = CompareState.from_arrays(arrays, problem.params0, len(orders))
            done_step = int(arrays["step"])
            rd.truncate_metrics(done_step)
            log(f"resuming from step {done_step} of {s.steps}")
        else:
            rd.truncate_metrics(-1)
    setup = time.perf_counter() - t_start
    wall = {"setup": setup}
    prev = rd.read_results().get("wall_time", {}) if resuming else {}
    previous_compare = float(prev.get("compare", 0.0) or 0.0)
    start_step = int(state_step(state, s)) if state is not None else 0
    if on_start is not None:
        on_start(start_step, s.steps)
    t0 = time.perf_counter()
    status, message = "running", None
    try:
        for recs, st in compare_chunks(
            problem.loss, problem.params0, lr, s.steps, orders,
            weight_decay=s.weight_decay, record_every=s.record_every,
            rtol=tol, atol=tol, local=s.local, predict=s.predict,
            diagnose_every=s.diagnose_every or None, chunk_size=CLI_CHUNK, state=state,
        ):
            cols = {k: v for k, v in recs.items() if not k.startswith("_")}
            if cols and len(cols["step"]):
                rd.append_rows(cols)
            arrays = st.to_arrays()
            arrays["step"] = np.asarray(state_step(st, s))
            rd.save_state(arrays)
            wall["compare"] = previous_compare + time.perf_counter() - t0
            rd.write_results(summarize(rd, s, res, "running", None, wall))
            if on_progress is not None and len(recs["step"]):
                on_progress(int(recs["step"][-1]))
        status = "complete"
    except DivergenceError as exc:
        status, message = "diverged", str(exc)
        raise
    except EomError as exc:
        status, message = "failed", str(exc)
        raise
    except Exception as exc:
        status, message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        message = "Interrupted; rerun the same command (same --out) to resume from the last step."
        raise
    finally:
        wall["compare"] = previous_compare + time.perf_counter() - t0
        wall["total"] = wall["compare"] + setup
        results = summarize(rd, s, res, status, message, wall, problem)
        rd.write_results(results)
        with contextlib.suppress(Exception):
            write_report(rd)
    return results


def state_step(state: CompareState, s: RunSettings) -> int:
    from ..engine import save_grid

    return int(save_grid(s.steps, s.record_every)[state.index])


def summary_table_rows(results: dict) -> list[list[str]]:
    rows = []
    for key, r in (results.get("final") or {}).get("orders", {}).items():
        ratio = r.get("ratio_to_previous")
        rows.append([
            order_name(int(key)).replace(" (order 0)", ""),
            f"{r['error']:.3e}",
            f"{r['relative_error']:.2e}",
            "–" if ratio is None else f"{ratio:.3g}",
            "–" if r.get("predicted") is None else f"{r['predicted']:.3e}",
            f"{r['solver_error']:.1e}",
            "< solver" if r["flagged"] else "ok",
        ])
    return rows
