r"""Benchmarks: cost of the counter terms and of EoM trajectories, as ratios measured in one run.

Every number is a ratio against a baseline timed in the same process, interleaved with it:
wall and CPU time of the order-$N$ EoM field $-\nabla L - \sum_{k\le N}\eta^k\xi_k$ over one
gradient $\nabla L$, its compile time, its XLA FLOP count and temporary-buffer size over the
gradient's, and the wall time of an EoM trajectory over the GD run it reproduces. Baselines:
the naive approach (the reference recursion, `method="reference"`: every Lie derivative its own
nested `jvp`) and, on a small model, the full-Hessian approach (dense `jax.hessian`, and its
`jvp` for $\nabla^3L[g, g]$).

Timings on a shared machine are noisy: each timing is the minimum over interleaved repeats
(the least-disturbed run), reported with the CPU-time ratio and XLA's own FLOP ratio, which
does not depend on the load at all.

`run_bench(quick=...)` returns a `BenchReport` (rows + machine description + the targets of
`eom.bench._targets`); `format_table` turns it into Markdown, the targets table first. `eom bench`
prints it; `benchmarks/run_bench.py` writes it to a file.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import PyTree

from .._tree import tree_norm, tree_sub
from ..engine import eom_field
from ..engine._trajectory import gd_advance, ode_advance
from ._machine import PeakRSS
from ._timing import call_time as _call, compile_fn, time_ratio, xla_cost as _cost


def _compile(fn: Callable, *args) -> tuple[Any, float]:
    return compile_fn(fn, *args, cold=False)


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class BenchRow:
    """One measured quantity.

    - `section`: `field`, `compile`, `memory`, `trajectory`, `gd-memory`.
    - `model`: problem label (with its parameter count).
    - `method`: `bseries` (ours), `reference` (naive nested jvp), `hessian` (dense), or `gd`.
    - `order`: EoM order N (None where it does not apply).
    - `metric`: what `value` is, e.g. `wall/grad`.
    - `value`: the number (NaN when skipped; `note` says why).
    - `note`: free text (tolerances, solver steps, the baseline's absolute time, …).
    """

    section: str
    model: str
    method: str
    order: int | None
    metric: str
    value: float
    note: str = ""


@dataclasses.dataclass
class BenchReport:
    """All rows of one benchmark run, the machine it ran on, and the settings used."""

    rows: list[BenchRow]
    machine: dict[str, Any]
    settings: dict[str, Any]
    seconds: float = 0.0
    targets: list = dataclasses.field(default_factory=list)  # eom.bench.TargetResult rows

    def value(self, section: str, model: str, method: str, order: int | None, metric: str):
        """Look one number up (None if absent)."""
        for r in self.rows:
            if (r.section, r.model, r.method, r.order, r.metric) == (
                section,
                model,
                method,
                order,
                metric,
            ):
                return r.value
        return None


# ---------------------------------------------------------------------------------------------
# Fields: ours, the naive recursion, the dense Hessian


def hessian_field(loss: Callable, params: PyTree, order: int) -> Callable:
    r"""The full-Hessian approach to the EoM field (orders 1, 2) — a baseline, not for use.

    Forms $H = \nabla^2L$ densely (`jax.hessian`) and, for order 2, the matrix
    $\nabla^3L[g] = \frac{d}{d\epsilon}H(\theta + \epsilon g)$ (`jax.jvp` of `jax.hessian`):
    $-g - \eta\tfrac12Hg - \eta^2(\tfrac13H^2g + \tfrac1{12}\nabla^3L[g]g)$.
    """
    if order not in (1, 2):
        raise ValueError("the full-Hessian baseline covers orders 1 and 2 only.")
    _, unravel = ravel_pytree(params)

    def flat_loss(v):
        return loss(unravel(v))

    hess = jax.hessian(flat_loss)

    def field(p, lr):
        v = ravel_pytree(p)[0]
        g = jax.grad(flat_loss)(v)
        H = hess(v)
        Hg = H @ g
        out = -g - lr * 0.5 * Hg
        if order == 2:
            Tg = jax.jvp(hess, (v,), (g,))[1]
            out = out - lr**2 * (H @ Hg / 3.0 + Tg @ g / 12.0)
        return unravel(out)

    return field


def _field(loss: Callable, params: PyTree, order: int, method: str) -> Callable:
    if method == "hessian":
        return hessian_field(loss, params, order)
    return eom_field(loss, order, 0.0, method)


def field_rows(
    label: str,
    loss: Callable,
    params: PyTree,
    lr: float,
    orders: dict[str, Sequence[int]],
    *,
    budget: float,
    max_rep: int,
    min_rep: int = 3,
    log: Callable[[str], None] = lambda s: None,
) -> list[BenchRow]:
    """Field cost over one gradient, compile time, FLOPs and temp memory, per method and order.

    `orders` maps a method (`bseries`, `reference`, `hessian`) to the orders to measure. Adds
    the row "ξ_1 with the gradient / gradient alone" (`grad_and_terms_fn(loss, 1)`).
    """
    from ..engine import grad_and_terms_fn

    grad = jax.grad(loss)
    cg, tcg = _compile(grad, params)
    flops_g, temp_g = _cost(cg)
    rows = [BenchRow("compile", label, "gd", 0, "seconds", tcg, "gradient alone")]
    xi1, t_xi1 = _compile(grad_and_terms_fn(loss, 1), params)
    reps = {"budget": budget, "max_rep": max_rep, "min_rep": min_rep}
    w, c, tf, tb = time_ratio(xi1, (params,), cg, (params,), **reps)
    rows.append(BenchRow("field", label, "bseries", 1, "(g, ξ1)/grad wall", w, f"cpu {c:.2f}×"))
    for method, ords in orders.items():
        for N in ords:
            f = _field(loss, params, N, method)
            cf, tcf = _compile(f, params, lr)
            flops, temp = _cost(cf)
            w, c, tf, tb = time_ratio(cf, (params, lr), cg, (params,), **reps)
            note = f"cpu {c:.2f}×; field {tf * 1e3:.1f} ms, grad {tb * 1e3:.2f} ms"
            rows += [
                BenchRow("field", label, method, N, "wall/grad", w, note),
                BenchRow("field", label, method, N, "cpu/grad", c),
                BenchRow("field", label, method, N, "flops/grad", flops / flops_g),
                BenchRow("compile", label, method, N, "seconds", tcf),
                BenchRow(
                    "memory",
                    label,
                    method,
                    N,
                    "temp/grad",
                    temp / temp_g,
                    f"XLA temp buffers {temp / 2**20:.1f} MiB vs {temp_g / 2**20:.2f} MiB",
                ),
            ]
            log(f"  {label} {method} N={N}: {w:.2f}× grad (cpu {c:.2f}×), compile {tcf:.1f}s")
    return rows


# ---------------------------------------------------------------------------------------------
# Trajectories


def _count_calls(field: Callable, counter: list[int]) -> Callable:
    def counted(y, lr):
        jax.debug.callback(lambda: counter.__setitem__(0, counter[0] + 1))
        return field(y, lr)

    return counted


def _solve_fn(field: Callable, t1: float) -> Callable:
    """Jitted `(y0, lr, rtol, atol) -> (y(t1), ok, accepted steps)` (tolerances traced)."""

    @jax.jit
    def run(y0, lr, rtol, atol):
        ys, result, nsteps = ode_advance(
            field, y0, 0.0, jnp.array([t1]), lr, solver=diffrax.Dopri8(),
            rtol=rtol, atol=atol, dt0=0.1 * lr, max_steps=1_000_000,
        )  # fmt: skip
        return jax.tree.map(lambda x: x[-1], ys), result == diffrax.RESULTS.successful, nsteps

    return run


def trajectory_rows(
    label: str,
    loss: Callable,
    params: PyTree,
    lr: float,
    num_steps: int,
    orders: dict[str, Sequence[int]],
    *,
    rtols: Sequence[float] = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9),
    ref_rtol: float = 1e-11,
    repeats: int = 2,
    log: Callable[[str], None] = lambda s: None,
) -> list[BenchRow]:
    r"""EoM wall time per GD step over GD wall time per step, at a verified tolerance.

    For each order $N$ (ours): the EoM error $e = \lVert\theta^{EoM}(K\eta) - \theta_K\rVert$ is
    measured against GD with a reference solve at `ref_rtol`; then the loosest `rtol` (with
    `atol = rtol/100`) whose solver error $\lVert\theta_{rtol} - \theta_{ref}\rVert \le e/10$ is
    used and timed. The other methods reuse that tolerance (same ODE). Dopri8 (14 stages, the
    last reused); field evaluations are counted by a host callback in the timed program (one
    small transfer per evaluation, negligible next to a field evaluation).
    """
    grad = jax.grad(loss)
    gd = jax.jit(lambda p, lr: gd_advance(grad, p, lr, num_steps))
    theta_gd = gd(params, lr)
    t_gd = min(_call(gd, (params, lr))[0] for _ in range(max(repeats, 3)))
    rows = [
        BenchRow("trajectory", label, "gd", None, "seconds/step", t_gd / num_steps,
                 f"{num_steps} steps, lr {lr:g}")
    ]  # fmt: skip
    t1 = num_steps * lr
    chosen: dict[int, float] = {}
    for method, ords in orders.items():
        for N in ords:
            counter = [0]
            run = _solve_fn(_count_calls(_field(loss, params, N, method), counter), t1)
            t_start = time.perf_counter()
            if method == "bseries" or N not in chosen:
                ref, ok, _ = run(params, lr, ref_rtol, ref_rtol * 1e-2)
                eom_err = float(tree_norm(tree_sub(ref, theta_gd)))
                rtol, solver_err = rtols[-1], math.nan
                for r in rtols:
                    y, ok, _ = run(params, lr, r, r * 1e-2)
                    solver_err = float(tree_norm(tree_sub(y, ref)))
                    if bool(ok) and solver_err <= 0.1 * eom_err:
                        rtol = r
                        break
                chosen[N] = rtol
                rows.append(BenchRow("trajectory", label, method, N, "eom error", eom_err,
                                     f"‖θ_EoM(Kη) − θ_K‖; solver error {solver_err:.2e} at "
                                     f"rtol {rtol:g}"))  # fmt: skip
            rtol = chosen[N]
            args = (params, lr, rtol, rtol * 1e-2)
            counter[0] = 0
            nsteps = jax.block_until_ready(run(*args))[2]
            nfev = counter[0]
            # GD and the EoM timed round-robin (minimum of each): a load change between them
            # would otherwise bias the ratio (GD alone, timed first, at load 1 vs the EoM at 6).
            pairs = [(_call(gd, (params, lr))[0], _call(run, args)[0]) for _ in range(repeats)]
            t_gd_n = min(a for a, _ in pairs)
            t_eom = min(b for _, b in pairs)
            ratio = t_eom / t_gd_n
            rows += [
                BenchRow("trajectory", label, method, N, "eom/gd wall", ratio,
                         f"rtol {rtol:g}, atol {rtol * 1e-2:g}"),
                BenchRow("trajectory", label, method, N, "solver steps/gd step",
                         int(nsteps) / num_steps),
                BenchRow("trajectory", label, method, N, "field evals/gd step",
                         nfev / num_steps),
            ]  # fmt: skip
            log(
                f"  {label} {method} N={N}: EoM/GD {ratio:.1f}× (rtol {rtol:g}, "
                f"{int(nsteps) / num_steps:.2f} steps and {nfev / num_steps:.1f} evals per GD step"
                f"; {time.perf_counter() - t_start:.0f}s)"
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Memory of a long GD run


def gd_memory_rows(
    label: str,
    loss: Callable,
    params: PyTree,
    lr: float,
    steps: Sequence[int] = (1_000, 10_000),
    saved: int = 11,
    log: Callable[[str], None] = lambda s: None,
) -> list[BenchRow]:
    """Peak RSS growth of `eom.gradient_descent` runs of different lengths, same saved points.

    `save_every = steps // (saved - 1)`, so every run keeps `saved` points; memory must not grow
    with the number of steps (the chunked `lax.scan` keeps one point per saved step).
    """
    from ..engine import gradient_descent

    gradient_descent(loss, params, lr, saved - 1, save_every=1)  # compile
    rows = []
    for n in steps:
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            traj = gradient_descent(loss, params, lr, n, save_every=n // (saved - 1))
            jax.block_until_ready(traj.params)
        secs = time.perf_counter() - t0
        kept = len(np.asarray(traj.steps))
        growth = (mem.peak - mem.base) / 2**20
        note = f"{kept} saved points, {secs:.1f}s, rss via {mem.source}"
        rows.append(BenchRow("gd-memory", label, "gd", None, f"peak RSS growth MiB ({n} steps)",
                             growth, note))  # fmt: skip
        log(f"  {label} GD {n} steps: peak RSS +{growth:.1f} MiB ({kept} saved), {secs:.1f}s")
    return rows


# ---------------------------------------------------------------------------------------------
# The whole benchmark


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """A benchmark problem: `make_problem(name, "digits", **options)` and what to run on it."""

    label: str
    name: str
    options: dict
    field_orders: dict  # method -> orders
    trajectory_orders: dict  # method -> orders
    num_steps: int
    subset: int | None = None


def bench_models(quick: bool) -> list[BenchModel]:
    """The problems of the quick and of the full benchmark (digits, float64)."""
    if quick:
        return [
            BenchModel("mlp", "mlp", {"width": 32},
                       {"bseries": (1, 2, 3, 4), "reference": (1, 2)},
                       {"bseries": (0, 1, 2), "reference": (1,)}, num_steps=30),
            BenchModel("cnn", "cnn", {"width": 4, "hidden": 32},
                       {"bseries": (1, 2)}, {}, num_steps=0),
            BenchModel("mlp-small", "mlp", {"width": 4},
                       {"hessian": (1, 2), "bseries": (1, 2)}, {}, num_steps=0),
        ]  # fmt: skip
    return [
        BenchModel("mlp", "mlp", {},
                   {"bseries": (1, 2, 3, 4), "reference": (1, 2, 3, 4)},
                   {"bseries": (0, 1, 2), "reference": (1, 2)}, num_steps=200),
        BenchModel("cnn", "cnn", {"width": 16, "hidden": 192},
                   {"bseries": (1, 2, 3, 4), "reference": (1, 2, 3)},
                   {"bseries": (0, 1, 2)}, num_steps=20),
        BenchModel("mlp-small", "mlp", {"width": 8},
                   {"hessian": (1, 2), "bseries": (1, 2), "reference": (1, 2)},
                   {"bseries": (1, 2), "hessian": (1, 2)}, num_steps=30),
    ]  # fmt: skip


def _learning_rate(loss: Callable, params: PyTree, eta_lambda: float) -> tuple[float, float]:
    """lr with lr·λ_max(H(θ_0)) = `eta_lambda` (λ_max by Lanczos on HVPs); returns (lr, λ_max)."""
    from ..analysis import sharpness

    lam = float(sharpness(loss, params, tol=1e-4).lambda_max)
    return eta_lambda / lam, lam
