r"""The performance targets (issue 14) as a table of measured rows with pass/fail.

Each row is a measured number against a limit:

- order-$N$ EoM field / one gradient, $N = 1\dots4$ (limits 2.2×, 5×, 10×, 20×) on the digits MLP:
  every program compiled cold, then all called round-robin `repeats` (≥ 25) times and each
  one's minimum kept (`eom.bench._timing.interleaved_minima`); the note gives the CPU-time
  ratio and XLA's FLOP ratio (load-independent: the work count the floor analysis of
  `benchmarks/README.md` is about);
- compile of the order-4 field, cold (≤ 10 s);
- EoM-1 / GD and EoM-2 / GD wall time over the same steps (≤ 3×, ≤ 5×) at a *verified*
  tolerance: the loosest rtol whose solver error is ≤ 1/10 of the EoM's own error against GD
  (`eom.bench._bench.trajectory_rows`).

Rows are produced by *measures* kept in a registry: `register_target(name, measure)` adds one
(a callable `TargetSettings -> list[TargetResult]`), so the switching-SGD step and the momentum
field get their rows by registering a measure (`eom.bench._optimizer_rows`: measures `sgd` and
`momentum`, informational rows, `limit` = inf). `run_targets` runs them in
registration order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax

from .._tree import tree_size
from ._bench import _learning_rate, trajectory_rows
from ._machine import load_average
from ._timing import compile_fn, interleaved_minima, xla_cost

#: Issue 14's limits: field / gradient per order, compile seconds, EoM / GD per order.
FIELD_LIMITS = {1: 2.2, 2: 5.0, 3: 10.0, 4: 20.0}
COMPILE_LIMIT = 10.0
TRAJECTORY_LIMITS = {1: 3.0, 2: 5.0}


@dataclasses.dataclass(frozen=True)
class TargetSettings:
    """What the target measures run on.

    - `model`, `options`, `subset`: the problem, `make_problem(model, "digits", ...)`.
    - `orders`: field orders timed; `compile_order`: whose cold compile is a row.
    - `repeats`: interleaved calls per function (minimum kept); the issue asks for ≥ 25.
    - `num_steps`: GD steps of the trajectory rows (0: skip them); `trajectory_orders`.
    - `eta_lambda`: lr·λ_max(H(θ_0)) of the trajectory runs.
    - `sgd_batches` ($m$), `epoch_orders`, `sgd_solve_order`, `sgd_solve_rtol`: the SGD rows
      (`eom.bench._optimizer_rows`; switching orders are `orders`; no solve row when
      `sgd_solve_order` is None); `momentum_beta`: the
      momentum rows' β (orders `orders`, heavy ball and Nesterov).
    """

    model: str = "mlp"
    options: tuple[tuple[str, Any], ...] = ()
    subset: int | None = None
    orders: tuple[int, ...] = (1, 2, 3, 4)
    compile_order: int = 4
    repeats: int = 25
    num_steps: int = 1_000
    trajectory_orders: tuple[int, ...] = (1, 2)
    eta_lambda: float = 0.25
    sgd_batches: int = 8
    epoch_orders: tuple[int, ...] = (1, 2, 3, 4)
    sgd_solve_order: int | None = 1
    sgd_solve_rtol: float = 1e-8
    momentum_beta: float = 0.9

    @classmethod
    def full(cls) -> TargetSettings:
        """The issue's setting: the 26k digits MLP, 25 interleaved calls, 1,000 GD steps."""
        return cls()

    @classmethod
    def quick(cls) -> TargetSettings:
        """Same rows on the same model with fewer GD steps (100) — minutes, not tens."""
        return cls(num_steps=100)

    @classmethod
    def tiny(cls) -> TargetSettings:
        """Smoke-test size: a 0.3k-parameter MLP on 64 digits, order 1 only, no trajectories, no
        SGD step solve (seconds; the rows' limits are the issue's, so pass/fail is only
        indicative here)."""
        return cls(options=(("width", 4),), subset=64, orders=(1,), compile_order=1,
                   repeats=3, num_steps=0, sgd_batches=4, epoch_orders=(1,),
                   sgd_solve_order=None)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One row: `value` against `limit` (`passed` is None when it was not measured, or when
    the row is informational: `limit` = inf, no target set)."""

    name: str
    value: float
    limit: float
    unit: str
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None or math.isnan(self.value) or math.isinf(self.limit):
            return None
        return self.value <= self.limit


Measure = Callable[[TargetSettings], list[TargetResult]]
_REGISTRY: dict[str, Measure] = {}


def register_target(name: str, measure: Measure) -> None:
    """Add (or replace) a measure; its rows appear in `run_targets` in registration order."""
    _REGISTRY[name] = measure


def registered_targets() -> tuple[str, ...]:
    """Names of the registered measures, in order."""
    return tuple(_REGISTRY)


def _problem(s: TargetSettings):
    from ..problems import make_problem

    return make_problem(s.model, "digits", subset=s.subset, **dict(s.options))


def _label(s: TargetSettings, problem) -> str:
    return f"{s.model} {tree_size(problem.params0) / 1000:.1f}k"


def measure_fields(s: TargetSettings) -> list[TargetResult]:
    """Rows: field / gradient per order (interleaved minima) and the cold compile of one order."""
    from ..engine import eom_field

    problem = _problem(s)
    loss, x = problem.loss, problem.params0
    label = _label(s, problem)
    lr = 0.1  # the cost does not depend on the value
    calls, seconds, flops = {}, {}, {}
    grad, seconds["grad"] = compile_fn(jax.grad(loss), x)
    calls["grad"] = (grad, (x,))
    flops["grad"] = xla_cost(grad)[0]
    for n in s.orders:
        field = eom_field(loss, n, 0.0, "bseries")
        compiled, seconds[n] = compile_fn(field, x, lr)
        calls[n] = (compiled, (x, lr))
        flops[n] = xla_cost(compiled)[0]
    best = interleaved_minima(calls, repeats=s.repeats)
    (gw, gc) = best["grad"]
    rows = []
    for n in s.orders:
        w, c = best[n]
        rows.append(TargetResult(
            f"order-{n} field / gradient ({label})", w / gw, FIELD_LIMITS.get(n, math.inf), "×",
            f"cpu {c / gc:.2f}×, XLA FLOPs {flops[n] / flops['grad']:.2f}×; grad "
            f"{gw * 1e3:.2f} ms; min of {s.repeats} interleaved calls"))  # fmt: skip
    n = s.compile_order
    if n in seconds:
        rows.append(
            TargetResult(
                f"compile order-{n} field, cold ({label})",
                seconds[n],
                COMPILE_LIMIT,
                "s",
                f"gradient alone {seconds['grad']:.1f} s",
            )
        )
    return rows


def measure_trajectories(s: TargetSettings) -> list[TargetResult]:
    """Rows: EoM-N / GD wall over `num_steps` steps at a verified tolerance."""
    if not s.num_steps or not s.trajectory_orders:
        return []
    problem = _problem(s)
    loss, x = problem.loss, problem.params0
    label = _label(s, problem)
    lr, _ = _learning_rate(loss, x, s.eta_lambda)
    rows = trajectory_rows(label, loss, x, lr, s.num_steps, {"bseries": s.trajectory_orders},
                           repeats=3)  # fmt: skip
    out = []
    for n in s.trajectory_orders:
        ratio = next(r for r in rows if r.order == n and r.metric == "eom/gd wall")
        err = next(r for r in rows if r.order == n and r.metric == "eom error")
        evals = next(r for r in rows if r.order == n and r.metric == "field evals/gd step")
        note = (f"{ratio.note}; EoM error {err.value:.2e}, {err.note.split(';')[1].strip()}; "
                f"{evals.value:.2f} field evals per GD step; GD and EoM timed round-robin")
        out.append(TargetResult(f"EoM-{n} / GD wall, {s.num_steps} steps ({label})", ratio.value,
                                TRAJECTORY_LIMITS.get(n, math.inf), "×", note))  # fmt: skip
    return out


register_target("fields", measure_fields)
register_target("trajectories", measure_trajectories)


def run_targets(
    settings: TargetSettings | None = None,
    *,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> list[TargetResult]:
    """Run the registered measures (all, or those named in `only`) and return their rows."""
    settings = settings or TargetSettings.full()
    rows: list[TargetResult] = []
    for name, measure in _REGISTRY.items():
        if only is not None and name not in only:
            continue
        log(f"targets: {name} (load {load_average()[0]})")
        new = measure(settings)
        for r in new:
            log(f"  {r.name}: {r.value:.3g}{r.unit} (limit {r.limit:g})")
        rows += new
    return rows


def format_targets(rows: Sequence[TargetResult]) -> str:
    """Markdown table: target, measured, limit, pass/fail (`info`: no target), note."""
    out = ["| target | measured | limit | | note |", "|---|---|---|---|---|"]
    for r in rows:
        info = math.isinf(r.limit)
        verdict = "info" if info else {True: "PASS", False: "FAIL", None: "—"}[r.passed]
        measured = r.value is not None and math.isfinite(r.value)
        value = f"{r.value:.2f}{r.unit}" if measured else "—"
        limit = "—" if info else f"≤ {r.limit:g}{r.unit}"
        out.append(f"| {r.name} | {value} | {limit} | {verdict} | {r.note} |")
    return "\n".join(out)
