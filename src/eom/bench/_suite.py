"""The whole benchmark: the targets table, then the detailed cost rows, as one report and its
Markdown (`eom bench`, `python -m eom.bench`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._tree import tree_size
from ..problems import make_problem
from ._bench import (
    BenchModel,
    BenchReport,
    BenchRow,
    _learning_rate,
    bench_models,
    field_rows,
    gd_memory_rows,
    trajectory_rows,
)
from ._machine import load_average, machine_info
from ._targets import FIELD_LIMITS, TargetSettings, format_targets, run_targets


def run_bench(
    quick: bool = False,
    *,
    eta_lambda: float = 0.25,
    models: Sequence[BenchModel] | None = None,
    targets: Any = "default",
    log: Callable[[str], None] = lambda s: None,
) -> BenchReport:
    """Run the benchmark and return every row (see the module docstring for what is measured).

    **Arguments:**

    - `quick`: smaller models, fewer repeats, no full-size CNN (a few minutes on 2 cores).
    - `eta_lambda`: learning rates are set so that lr·λ_max(H(θ_0)) equals this.
    - `models`: override the problems (`bench_models(quick)` by default).
    - `targets`: a `TargetSettings` for the targets table (`"default"`: `TargetSettings.quick()`
      when `quick`, else `.full()`), or None to skip it.
    - `log`: called with a progress line after each measurement.
    """
    t_start = time.perf_counter()
    machine = machine_info()
    if isinstance(targets, str):
        targets = TargetSettings.quick() if quick else TargetSettings.full()
    target_rows = [] if targets is None else run_targets(targets, log=log)
    budget, max_rep, min_rep = (1.0, 3, 2) if quick else (6.0, 15, 3)
    models = bench_models(quick) if models is None else models
    rows: list[BenchRow] = []
    settings: dict[str, Any] = {"quick": quick, "eta_lambda": eta_lambda, "models": {}}
    for m in models:
        problem = make_problem(m.name, "digits", subset=m.subset, **m.options)
        loss, params = problem.loss, problem.params0
        label = f"{m.label} ({tree_size(params) / 1000:.1f}k)"
        lr, lam = _learning_rate(loss, params, eta_lambda)
        settings["models"][label] = {
            "model": m.name, "options": m.options, "samples": int(problem.dataset.X.shape[0]),
            "lr": lr, "lambda_max": lam, "num_steps": m.num_steps,
        }  # fmt: skip
        log(f"{label}: lr {lr:.4g} (λ_max {lam:.4g}), {problem.dataset.X.shape[0]} samples")
        rows += field_rows(label, loss, params, lr, m.field_orders, budget=budget,
                           max_rep=max_rep, min_rep=min_rep, log=log)  # fmt: skip
        if m.trajectory_orders and m.num_steps:
            rows += trajectory_rows(label, loss, params, lr, m.num_steps, m.trajectory_orders,
                                    repeats=1 if quick else 2, log=log)  # fmt: skip
    small = make_problem("linear", "digits")
    lr_small, _ = _learning_rate(small.loss, small.params0, eta_lambda)
    steps = (1_000, 10_000)
    rows += gd_memory_rows(f"linear ({small.n_params / 1000:.2f}k)", small.loss, small.params0,
                           lr_small, steps, log=log)  # fmt: skip
    machine["load_avg_end"] = load_average()
    return BenchReport(rows, machine, settings, time.perf_counter() - t_start, target_rows)


# ---------------------------------------------------------------------------------------------
# Formatting

#: Field / gradient limits shown in the detailed table (issue 14; see `_targets`).
TARGETS = FIELD_LIMITS


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 1 or x == 0:
        return f"{x:.2f}"
    return f"{x:.2e}"


def format_table(report: BenchReport) -> str:
    """The report as Markdown: one table per section, then the machine."""
    out = []
    if report.targets:
        out.append("### Targets (issue 14)\n")
        out.append(format_targets(report.targets) + "\n")
    models = list(dict.fromkeys(r.model for r in report.rows))
    out.append("### Order-N EoM field / one gradient (min over interleaved repeats)\n")
    out.append("| model | method | N | wall/grad | cpu/grad | FLOPs/grad | target | compile s |"
               " temp mem/grad |")  # fmt: skip
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in report.rows:
        if r.section == "field" and r.metric == "wall/grad":
            g = lambda sec, met, r=r: report.value(sec, r.model, r.method, r.order, met)  # noqa: E731
            target = f"≤ {TARGETS[r.order]:g}" if r.method == "bseries" else ""
            out.append(
                f"| {r.model} | {r.method} | {r.order} | {_fmt(r.value)} | "
                f"{_fmt(g('field', 'cpu/grad'))} | {_fmt(g('field', 'flops/grad'))} | {target} | "
                f"{_fmt(g('compile', 'seconds'))} | {_fmt(g('memory', 'temp/grad'))} |"
            )
    for m in models:
        v = [r for r in report.rows if r.model == m and r.metric == "(g, ξ1)/grad wall"]
        if v:
            out.append(f"\nξ_1 with the gradient / gradient alone, {m}: {_fmt(v[0].value)}× wall "
                       f"({v[0].note}).")  # fmt: skip
    traj = [r for r in report.rows if r.section == "trajectory" and r.metric == "eom/gd wall"]
    if traj:
        out.append("\n### EoM trajectory wall time / GD wall time (same steps)\n")
        out.append("| model | method | N | EoM/GD wall | solver steps/GD step | "
                   "field evals/GD step | rtol | EoM error ‖θ_EoM − θ_GD‖ |")  # fmt: skip
        out.append("|---|---|---|---|---|---|---|---|")
        for r in traj:
            g = lambda met, r=r: report.value("trajectory", r.model, r.method, r.order, met)  # noqa: E731
            err = report.value("trajectory", r.model, "bseries", r.order, "eom error")
            out.append(
                f"| {r.model} | {r.method} | {r.order} | {_fmt(r.value)} | "
                f"{_fmt(g('solver steps/gd step'))} | {_fmt(g('field evals/gd step'))} | "
                f"{r.note.split(',')[0].removeprefix('rtol ')} | {_fmt(err)} |"
            )
    mem = [r for r in report.rows if r.section == "gd-memory"]
    if mem:
        out.append("\n### Memory of long GD runs (same number of saved points)\n")
        out.append("| model | run | peak RSS growth (MiB) | note |")
        out.append("|---|---|---|---|")
        for r in mem:
            out.append(f"| {r.model} | {r.metric.split('(')[-1].rstrip(')')} | {_fmt(r.value)} | "
                       f"{r.note} |")  # fmt: skip
    mach = report.machine
    out.append(
        f"\nMachine: {mach['cpu']}, {mach['nproc']} cores, backend {mach['backend']}, "
        f"jax {mach['jax']}; load average at start {mach['load_avg_1_5_15']}, at end "
        f"{mach.get('load_avg_end', '?')}. Total {report.seconds:.0f} s."
    )
    for label, s in report.settings.get("models", {}).items():
        out.append(f"- {label}: {s['model']} {s['options'] or ''}, {s['samples']} samples, "
                   f"lr {s['lr']:.4g} (lr·λ_max = {report.settings['eta_lambda']}), "
                   f"{s['num_steps']} GD steps")  # fmt: skip
    return "\n".join(out)
