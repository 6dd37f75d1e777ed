r"""GD, gradient flow and the EoM side by side: the measured discretization error.

For each order $N$ in `orders` (0 is gradient flow), `compare` runs GD
$\theta_{k+1} = \theta_k - \eta\nabla L_\lambda(\theta_k)$ and the order-$N$ EoM
$\dot\theta = -\nabla L_\lambda - \sum_{k\le N}\eta^k\xi_k$ from the same $\theta_0$, in lockstep
(each jitted chunk advances GD and every ODE over the same span of steps), and records at each
recorded step $k$

$$e^{(N)}_k = \lVert\theta^{(N)}(k\eta) - \theta_k\rVert, \qquad
  \frac{e^{(N)}_k}{\lVert\theta_k - \theta_0\rVert},$$

the per-leaf errors, the losses, optionally the one-step (local) error
$\lVert\Phi^{(N)}_\eta(\theta_k) - \theta_{k+1}\rVert
\approx \eta^{N+2}\lVert\xi_{N+1}(\theta_k)\rVert$
and the predicted error of `eom.measure._predict`. Memory is O(recorded scalars) unless
`keep_params=True`: the parameters live only inside one chunk.

**Any optimizer.** The discrete method and its continuous models come from an
`eom.engine.Optimizer` (`optimizer=None` is `GD(weight_decay)`): the iterates through its
`init`/`advance`, the models through `models(loss, lr, orders)` and `start`. Results are keyed
by model: for GD by the order itself (`c.error[1]`, columns `error_1`), otherwise by the model's
label (`c.error["switch1"]`, columns `error_switch1`). A model with `boundaries="step"` is solved
with a restart at every step; one with `every=m` has NaN in its columns at steps that are not
multiples of m.

**Order of work in a chunk.** The discrete iterates are advanced first and checked (a non-finite
loss or one past `DIVERGENCE_FACTOR`× its start stops the run, blamed on the optimizer and the
learning rate, never on the solver); only then are the chunk's ODEs solved, each with a step
budget of `BUDGET_GROWTH`× the steps its previous chunk took (`eom.engine.step_budget`). Running
out of it raises `EomError` naming the order, the step and η·λ_max there, in seconds rather than
after a minutes-long solve, and keeps every jitted call short (Ctrl-C acts between chunks).

**Solver honesty.** Unless given, tolerances are chosen per order from the expected local error
$\eta^{N+2}\lVert\xi_{N+1}(\theta_0)\rVert$ (`eom.measure._tolerance`), and on a sample of chunks
the ODE is re-solved at a 100× tighter tolerance; the difference accumulates into
`solver_error`. Recorded errors that are not at least 10× above it are flagged in `flagged[N]`
rather than reported as if they were real (`FLAG_REASON`). As the measured error falls the
tolerance is tightened chunk by chunk (down to the float64 floor), so that late, small errors are
still measurements.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._errors import DivergenceError, EomError
from .._tree import leaf_paths, tree_zeros_like
from ..engine import GD, ContinuousModel, Optimizer, check_loss, check_lr, check_order
from ..engine._cache import loss_cache
from ..engine._trajectory import (
    CHUNK,
    OK,
    OUT_OF_BUDGET,
    chunks,
    default_solver,
    save_grid,
    step_budget,
)
from . import _kernels as K
from ._predict import check_predict_every, predict_chunk_fn
from ._tolerance import (
    SOLVER_MARGIN,
    TIGHTEN_TARGET,
    optimizer_tolerance,
    resolve_tolerances,
    tightened,
)

#: GD counts as diverged once |loss| exceeds this factor times (|L(θ_0)| + 1), or is not finite.
DIVERGENCE_FACTOR = 1e8
#: Why a recorded point is flagged (printed next to flags by the CLI and reports).
FLAG_REASON = (
    "flagged: the error is less than SOLVER_MARGIN (10)× the estimated ODE-solver error at that "
    "point, so it may be solver error rather than discretization error; tighten rtol/atol (or "
    "let the automatic tolerance tighten over more chunks) to measure it"
)
#: A model whose error is within this factor of being flagged gets its next chunk verified.
RISK = 100.0
#: At most this many redos of a chunk at a finer tolerance when its points would be flagged.
MAX_REDO = 2
#: Smallest step budget of one step-wise (restarted) solve.
STEP_BUDGET_FLOOR = 256


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Comparison:
    r"""The measured (and optionally predicted) discretization error of GF/EoM against GD.

    Per-model quantities are dicts keyed by the order $N$ for GD (0 = gradient flow), or by the
    model's label for other optimizers (`orders` lists those keys in order); arrays run over the
    recorded steps `steps` (times `times` = steps·lr). A point is flagged when its error is not
    `SOLVER_MARGIN`× its estimated solver error (`FLAG_REASON`).
    """

    lr: float
    weight_decay: float
    num_steps: int
    orders: tuple
    steps: np.ndarray
    times: np.ndarray
    loss_gd: np.ndarray
    loss: dict[int, np.ndarray]
    error: dict[int, np.ndarray]
    relative_error: dict[int, np.ndarray]
    leaf_error: dict[int, np.ndarray]
    leaf_names: list[str]
    rtol: dict[int, float]
    atol: dict[int, float]
    solver_error: dict[int, np.ndarray]
    flagged: dict[int, np.ndarray]
    local_error: dict[int, np.ndarray] | None = None
    predicted: dict[int, np.ndarray] | None = None
    bound: dict[int, np.ndarray] | None = None
    diagnostics: dict[str, np.ndarray] | None = None
    params: dict | None = None
    wall_time: dict[str, float] = field(default_factory=dict)
    optimizer: str = "gd"

    def __repr__(self) -> str:
        last = ", ".join(f"{n}: {float(self.error[n][-1]):.3e}" for n in self.orders
                         if len(self.error[n]))
        return (f"Comparison(optimizer={self.optimizer!r}, lr={self.lr:g}, "
                f"num_steps={self.num_steps}, orders={tuple(self.orders)}, "
                f"final error {{{last}}})")

    def flagged_fraction(self) -> dict:
        """Per model, the fraction of recorded points flagged (see `FLAG_REASON`)."""
        return {
            n: float(np.mean(self.flagged[n])) if self.flagged[n].size else 0.0
            for n in self.orders
        }

    def final(self) -> dict:
        """Summary at the last recorded step: errors, ratios between successive orders, flags."""
        out: dict = {"step": int(self.steps[-1]), "lr": self.lr, "loss_gd": float(self.loss_gd[-1])}
        errs = {n: float(self.error[n][-1]) for n in self.orders}
        out["error"] = errs
        out["relative_error"] = {n: float(self.relative_error[n][-1]) for n in self.orders}
        out["solver_error"] = {n: float(self.solver_error[n][-1]) for n in self.orders}
        out["flagged"] = {n: bool(self.flagged[n][-1]) for n in self.orders}
        ratios = {}
        for a, b in zip(self.orders, self.orders[1:], strict=False):
            ratios[f"{b}/{a}"] = errs[b] / errs[a] if errs[a] > 0 else math.nan
        out["ratio"] = ratios
        if self.predicted is not None:
            out["predicted"] = {n: float(self.predicted[n][-1]) for n in self.orders}
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """Flat column name → array (one entry per recorded step), the CSV schema."""
        return _columns(self)

    def rows(self) -> list[dict]:
        """One dict per recorded step (for CSV writers and data frames)."""
        cols = self.columns()
        n = len(self.steps)
        return [{k: _scalar(v[i]) for k, v in cols.items()} for i in range(n)]

    def to_csv(self) -> str:
        buf = io.StringIO()
        rows = self.rows()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def to_dict(self) -> dict:
        """Plain-Python dict (JSON-serializable) of everything except stored params."""
        d = {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "num_steps": self.num_steps,
            "orders": [str(n) if isinstance(n, str) else n for n in self.orders],
            "rtol": {str(k): v for k, v in self.rtol.items()},
            "atol": {str(k): v for k, v in self.atol.items()},
            "leaf_names": self.leaf_names,
            "wall_time": self.wall_time,
            "columns": {k: v.tolist() for k, v in self.columns().items()},
        }
        return d


def _scalar(x):
    x = np.asarray(x).item()
    return x


def _columns(c: Comparison) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {"step": c.steps, "time": c.times, "loss_gd": c.loss_gd}
    for n in c.orders:
        cols[f"loss_{n}"] = c.loss[n]
        cols[f"error_{n}"] = c.error[n]
        cols[f"relative_error_{n}"] = c.relative_error[n]
        cols[f"solver_error_{n}"] = c.solver_error[n]
        cols[f"flagged_{n}"] = c.flagged[n].astype(int)
        if c.local_error is not None:
            cols[f"local_error_{n}"] = c.local_error[n]
        if c.predicted is not None:
            cols[f"predicted_{n}"] = c.predicted[n]
            cols[f"bound_{n}"] = c.bound[n]
    if c.diagnostics is not None:
        for k, v in c.diagnostics.items():
            cols[k] = v
    return cols


# --------------------------------------------------------------------------------------------
# Resumable state


@dataclass
class CompareState:
    """Everything needed to continue a comparison from a recorded step (for resumable runs)."""

    index: int  # how many grid points past 0 are done
    chunk: int
    theta_gd: PyTree
    theta: tuple  # per order
    dt0: np.ndarray
    ehat: tuple  # per order (zeros if no prediction)
    bound: np.ndarray
    solver_error: np.ndarray
    solver_rate: np.ndarray  # solver error one chunk adds at its end point (latest verified)
    solver_peak: np.ndarray  # worst solver error at any point of the latest verified chunk
    diag_v: np.ndarray | None = None  # warm start of the λ_max iteration (flat), if diagnosing
    opt_state: PyTree = ()  # the optimizer's own state (GD: none)
    work: np.ndarray | None = None  # solver steps each model's previous chunk took (budgets)
    tol_scale: np.ndarray | None = None  # tightening factor of each model's tolerance (≤ 1)
    last_error: np.ndarray | None = None  # each model's error at the last recorded point

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat float64 arrays (np.savez-able without pickle)."""
        out = {
            "index": np.asarray(self.index),
            "chunk": np.asarray(self.chunk),
            "theta_gd": np.asarray(ravel_pytree(self.theta_gd)[0]),
            "dt0": np.asarray(self.dt0),
            "bound": np.asarray(self.bound),
            "solver_error": np.asarray(self.solver_error),
            "solver_rate": np.asarray(self.solver_rate),
            "solver_peak": np.asarray(self.solver_peak),
        }
        for i, th in enumerate(self.theta):
            out[f"theta_{i}"] = np.asarray(ravel_pytree(th)[0])
        for i, e in enumerate(self.ehat):
            out[f"ehat_{i}"] = np.asarray(ravel_pytree(e)[0])
        if self.diag_v is not None:
            out["diag_v"] = np.asarray(self.diag_v)
        if jax.tree.leaves(self.opt_state):
            out["opt_state"] = np.asarray(ravel_pytree(self.opt_state)[0])
        if self.work is not None:
            out["work"] = np.asarray(self.work)
        if self.tol_scale is not None:
            out["tol_scale"] = np.asarray(self.tol_scale)
        if self.last_error is not None:
            out["last_error"] = np.asarray(self.last_error)
        return out

    @classmethod
    def from_arrays(
        cls, arrays, params0: PyTree, num_orders: int, opt_state: PyTree = ()
    ) -> CompareState:
        """Inverse of `to_arrays`; `opt_state` is a template of the optimizer's state (from
        `optimizer.init`), needed only for optimizers that have one."""
        unravel = ravel_pytree(params0)[1]
        saved_opt = opt_state
        if "opt_state" in arrays and jax.tree.leaves(opt_state):
            saved_opt = ravel_pytree(opt_state)[1](jnp.asarray(arrays["opt_state"]))
        return cls(
            index=int(arrays["index"]),
            chunk=int(arrays["chunk"]),
            theta_gd=unravel(jnp.asarray(arrays["theta_gd"])),
            theta=tuple(unravel(jnp.asarray(arrays[f"theta_{i}"])) for i in range(num_orders)),
            dt0=np.asarray(arrays["dt0"]),
            ehat=tuple(unravel(jnp.asarray(arrays[f"ehat_{i}"])) for i in range(num_orders)),
            bound=np.asarray(arrays["bound"]),
            solver_error=np.asarray(arrays["solver_error"]),
            solver_rate=np.asarray(arrays["solver_rate"]),
            solver_peak=np.asarray(arrays["solver_peak"]),
            diag_v=np.asarray(arrays["diag_v"]) if "diag_v" in arrays else None,
            opt_state=saved_opt,
            work=np.asarray(arrays["work"]) if "work" in arrays else None,
            tol_scale=np.asarray(arrays["tol_scale"]) if "tol_scale" in arrays else None,
            last_error=np.asarray(arrays["last_error"]) if "last_error" in arrays else None,
        )


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class SolverOptions:
    """How the continuous models are solved.

    - `solver`: a diffrax adaptive solver (None: Dopri8).
    - `rtol`, `atol`: a float or a dict per model (None: `auto_tolerance`, then tightened).
    - `method`: counter-term method of GD's fields (`"auto"`, `"reference"`, `"bseries"`).
    - `verify_every`: re-solve every this many chunks at 100× tighter tolerance.
    - `max_steps`: a fixed step budget per solve (None: derived from the previous chunk).
    - `tighten`: tighten the tolerance as the measured error falls (None: only automatic
      tolerances, i.e. rtol and atol both None; True: also given ones, e.g. a stored auto
      tolerance on resume; False: never).
    """

    solver: Any = None
    rtol: Any = None
    atol: Any = None
    method: str = "auto"
    verify_every: int = 8
    max_steps: int | None = None
    tighten: bool | None = None


@dataclass(frozen=True)
class RecordOptions:
    """What is recorded: every `record_every` steps (and the last), in chunks of `chunk_size`
    points; `keep_params`, `local`, `predict`, `solve`, `diagnose_every` and `predict_every` as
    in `compare`."""

    record_every: int = 1
    keep_params: bool = False
    local: bool = False
    predict: bool = False
    solve: bool = True
    diagnose_every: int | None = None
    chunk_size: int = CHUNK
    predict_every: int = 1


def _key(model: ContinuousModel):
    """Results key of a model: its order for labels that are the order (GD), else its label."""
    return model.order if model.label == str(model.order) else model.label


@dataclass(frozen=True)
class _Run:
    """Everything fixed for one comparison (built once by `_setup`)."""

    loss: Callable
    optimizer: Optimizer
    models: tuple
    keys: tuple
    params0: PyTree
    starts: tuple
    lr: float
    grid: np.ndarray  # true step numbers: k0 + (0, record_every, …, num_steps)
    begin_params: PyTree  # θ_{k0}, where the discrete run and the models begin
    begin_state: PyTree  # the optimizer's state at step k0
    parts: list
    rtols: np.ndarray
    atols: np.ndarray
    tighten: np.ndarray  # per model: may the tolerance be tightened
    loss_limit: float
    diag_at: np.ndarray
    solver: Any
    solver_opts: SolverOptions
    rec: RecordOptions


def _check_orders(orders) -> tuple[int, ...]:
    orders = (int(orders),) if isinstance(orders, int) else tuple(int(n) for n in orders)
    if not orders:
        raise EomError("orders is empty; pass e.g. orders=(0, 1, 2) (0 = gradient flow).")
    if len(set(orders)) != len(orders):
        raise EomError(f"orders {orders} has repeats; list each order once.")
    return tuple(check_order(n) for n in orders)


def _check_supported(optimizer: Optimizer, rec: RecordOptions) -> None:
    if isinstance(optimizer, GD):
        return
    for flag in ("predict", "local"):
        if getattr(rec, flag):
            raise EomError(
                f"{flag}=True is only supported for gradient descent (optimizer=GD), not for "
                f"{type(optimizer).__name__}; run without it."
            )


def _setup(loss, params0, lr, num_steps, orders, optimizer, solver_opts, rec) -> _Run:
    check_loss(optimizer.full_loss(loss), params0)
    lr = check_lr(lr)
    orders = _check_orders(orders)
    _check_supported(optimizer, rec)
    if rec.predict:
        check_order(max(orders) + 1)
        check_predict_every(rec.predict_every)
    k0, begin_params, begin_state = optimizer.begin(loss, params0, lr)
    grid = int(k0) + save_grid(num_steps, rec.record_every)
    models = tuple(optimizer.models(loss, lr, orders))
    keys = tuple(_key(m) for m in models)
    if len(set(keys)) != len(keys):
        raise EomError(f"{type(optimizer).__name__}.models gave repeated labels {keys}.")
    model_orders = tuple(m.order for m in models)
    r, a = resolve_tolerances(
        solver_opts.rtol, solver_opts.atol, keys, model_orders,
        lambda: optimizer_tolerance(loss, optimizer, params0, lr, model_orders),
    )
    loss0 = float(optimizer.full_loss(loss)(params0))
    if not math.isfinite(loss0):
        raise EomError(
            f"the loss is {loss0} at the starting parameters, before any step: check the loss "
            "function and the data (a log of zero, a division by zero, NaN inputs)."
        )
    auto_r, auto_a = solver_opts.rtol is None, solver_opts.atol is None
    return _Run(
        loss=loss, optimizer=optimizer, models=models, keys=keys, params0=params0,
        # begun at k0 > 0: every model is the flow through θ_{k0} (Optimizer.begin's contract)
        starts=tuple(optimizer.start(loss, params0, lr, m) if k0 == 0 else begin_params
                     for m in models), lr=lr, grid=grid,
        begin_params=begin_params, begin_state=begin_state,
        parts=list(chunks(grid, rec.chunk_size)),
        rtols=np.array([r[k] for k in keys]), atols=np.array([a[k] for k in keys]),
        tighten=np.full(len(models), bool(
            solver_opts.tighten if solver_opts.tighten is not None else auto_r and auto_a
        )),
        loss_limit=DIVERGENCE_FACTOR * (abs(loss0) + 1.0),
        diag_at=_diagnosis_mask(grid, rec.diagnose_every),
        solver=default_solver() if solver_opts.solver is None else solver_opts.solver,
        solver_opts=solver_opts, rec=rec,
    )


def _initial_state(run: _Run) -> CompareState:
    m = len(run.models)
    return CompareState(
        index=0, chunk=0, theta_gd=run.begin_params, theta=run.starts, dt0=np.full(m, run.lr),
        ehat=(tree_zeros_like(run.params0),) * m,
        bound=np.zeros(m), solver_error=np.zeros(m), solver_rate=np.zeros(m),
        solver_peak=np.zeros(m),
        opt_state=run.begin_state,
        work=np.zeros(m, dtype=np.int64), tol_scale=np.ones(m),
    )


# --------------------------------------------------------------------------------------------
# One chunk: discrete side, check, continuous side, records


@dataclass
class _Discrete:
    thetas: PyTree  # stacked over the chunk's points
    losses: np.ndarray
    end: PyTree
    opt_state: PyTree
    ehat: tuple
    bound: np.ndarray
    ehat_norms: np.ndarray | None = None
    bounds: np.ndarray | None = None


def _advance_discrete(run: _Run, state: CompareState, part: np.ndarray) -> _Discrete:
    prev_step = int(run.grid[state.index])
    counts = jnp.asarray(np.diff(np.concatenate([[prev_step], part])))
    if run.rec.predict:
        gd: GD = run.optimizer  # type: ignore[assignment]  (checked in _check_supported)
        fn = predict_chunk_fn(run.loss, run.keys, float(gd.weight_decay), gd.method,
                              int(run.rec.predict_every))
        (end, ehat, bound), (thetas, norms, bounds) = fn(
            state.theta_gd, state.ehat, jnp.asarray(state.bound), run.lr, counts,
            jnp.asarray(prev_step)
        )
        losses = K.loss_values_fn(run.loss, run.optimizer)(thetas)
        return _Discrete(thetas, np.asarray(losses), end, state.opt_state, tuple(ehat),
                         np.asarray(bound), np.asarray(norms), np.asarray(bounds))
    fn = K.discrete_chunk_fn(run.loss, run.optimizer)
    end, opt_state, thetas, losses = fn(
        state.theta_gd, state.opt_state, run.lr, jnp.asarray(prev_step), counts
    )
    return _Discrete(thetas, np.asarray(losses), end, opt_state, state.ehat, state.bound)


def _first_divergent(losses: np.ndarray, limit: float) -> int | None:
    bad = ~(np.abs(losses) <= limit)  # NaN, inf, or a blow-up past limit
    return int(np.argmax(bad)) if bad.any() else None


def _divergence_error(run: _Run, losses, steps, first: int) -> DivergenceError:
    what = "not finite" if not np.isfinite(losses[first]) else (
        f"{losses[first]:.3g}, over {DIVERGENCE_FACTOR:.0e}× its initial value"
    )
    name = "gradient descent" if isinstance(run.optimizer, GD) else type(run.optimizer).__name__
    return DivergenceError(
        f"{name} diverged: the loss is {what} at step {int(steps[first])} with learning rate "
        f"{run.lr:g}. Lower the learning rate (GD is stable only for lr·λ_max < 2, and the EoM "
        "is accurate for lr·λ_max well below 1). Results up to the previous recorded step are "
        "kept. (The ODEs of that stretch were not solved: this is the discrete method or the "
        "loss blowing up, not the solver.)"
    )


def _budget(run: _Run, state: CompareState, i: int) -> int:
    if run.solver_opts.max_steps is not None:
        return int(run.solver_opts.max_steps)
    if run.models[i].boundaries == "step":  # per step: the average step's work
        per_step = int(state.work[i]) // max(int(run.grid[min(state.index, 1)] - run.grid[0]), 1)
        return step_budget(per_step, STEP_BUDGET_FLOOR)
    return step_budget(int(state.work[i]))


def _solve_model(run, state, i, part, scale, budget):
    """One model over one chunk at tolerance scale `scale`: `(ys, status, steps)`."""
    model = run.models[i]
    prev_step = int(run.grid[state.index])
    rtol, atol = run.rtols[i] * scale, run.atols[i] * scale
    if model.boundaries == "step":
        fn = K.stepwise_chunk_fn(run.loss, model.field, run.solver, budget,
                                 getattr(model, "step_field", None))
        counts = jnp.asarray(np.diff(np.concatenate([[prev_step], part])))
        per_step_dt = float(state.dt0[i])
        return fn(state.theta[i], jnp.asarray(prev_step), counts, run.lr, per_step_dt, rtol, atol)
    fn = K.smooth_chunk_fn(run.loss, model.field, run.solver, budget)
    return fn(state.theta[i], prev_step * run.lr, jnp.asarray(part * run.lr), run.lr,
              state.dt0[i], rtol, atol)


def _solver_failure(run, state, i, part, nvalid, status, budget) -> EomError:
    model = run.models[i]
    a, b = int(run.grid[state.index]), int(part[nvalid - 1])
    note = ""
    try:
        lam = float(K.lambda_max_fn(run.loss, run.optimizer)(state.theta_gd))
        sharp = f"η·λ_max ≈ {run.lr * lam:.3g} at step {a}"
        note = run.optimizer.stiffness_note(model.order, run.lr * lam)
    except Exception:  # noqa: BLE001 — the message must not fail
        sharp = "η·λ_max unknown"
    what = f"the order-{model.order} {model.kind.upper() if model.kind != 'eom' else 'EoM'}"
    if model.label != str(model.order):
        what += f" ({model.label!r})"
    if status == OUT_OF_BUDGET:
        why = (f"is too stiff at step {a}: the ODE solver used its whole budget of {budget} "
               f"steps before step {b}")
    else:
        why = f"could not be solved between steps {a} and {b} (the solution left finite values)"
    return EomError(
        f"{what} {why} ({sharp}, lr {run.lr:g}). The discrete iterates are fine there. Lower the "
        "learning rate (the EoM series needs η·λ_max well below 1) or drop the highest orders."
        f"{note}"
    )


@dataclass
class _Solved:
    ys: list
    theta: list
    dt0: np.ndarray
    work: np.ndarray
    point_dev: dict
    solver_rate: np.ndarray
    solver_peak: np.ndarray
    scale: np.ndarray  # tolerance scale each model's chunk was solved at


def _solve_models(run: _Run, state: CompareState, ci, part, nvalid, thetas) -> _Solved:
    m = len(run.models)
    out = _Solved([], list(state.theta), state.dt0.copy(), state.work.copy(), {},
                  state.solver_rate.copy(), state.solver_peak.copy(), state.tol_scale.copy())
    scheduled = ci % max(int(run.solver_opts.verify_every), 1) == 0
    t0 = int(run.grid[state.index]) * run.lr
    for i in range(m):
        budget = _budget(run, state, i)
        for attempt in range(MAX_REDO + 1):
            y, status, nst = _solve_model(run, state, i, part, out.scale[i], budget)
            if int(status) != OK:
                raise _solver_failure(run, state, i, part, nvalid, int(status), budget)
            if not (scheduled or attempt or _at_risk(run, state, i)):
                break
            if not _verify(run, state, i, part, nvalid, y, budget, out) or not run.tighten[i]:
                break
            finer = _finer_scale(run, state, i, part[:nvalid], y, thetas, out)
            if finer is None:
                break
            out.scale[i] = finer  # redo this chunk at the finer tolerance
        out.ys.append(y)
        out.theta[i] = jax.tree.map(lambda x: x[nvalid - 1], y)
        nst = int(nst)
        out.work[i] = nst
        span = float(part[nvalid - 1]) * run.lr - t0
        if run.models[i].boundaries == "step":
            out.dt0[i] = run.lr * max(1, round(span / run.lr)) / max(nst, 1)
        elif span > 0:
            out.dt0[i] = span / max(nst, 1)
    return out


def _finer_scale(run, state, i, steps, y, thetas, out: _Solved) -> float | None:
    """The tolerance scale at which to redo a verified chunk whose points would be flagged, or
    None (nothing flagged; or the flags come from solver error carried in from earlier chunks,
    which no redo can reduce; or the tolerance is at the float64 floor)."""
    n = len(steps)
    err = np.asarray(K.deviation(y, thetas))[:n]
    keep = (steps % run.models[i].every) == 0
    serr = state.solver_error[i] + out.point_dev[i]
    flagged = keep & ~(err >= SOLVER_MARGIN * serr)
    fixable = flagged & (err >= SOLVER_MARGIN * RISK * state.solver_error[i])
    last = _last(np.where(keep, err, np.nan))
    # what this chunk carries forward must stay small against the error of later chunks too
    carries_too_much = out.solver_rate[i] * TIGHTEN_TARGET > last
    if not (fixable.any() or carries_too_much):
        return None
    measured = min(float(err[fixable].min()), last) if fixable.any() else last
    finer = tightened(out.scale[i], run.rtols[i], out.solver_peak[i], measured)
    return finer if finer < out.scale[i] else None


def _at_risk(run: _Run, state: CompareState, i: int) -> bool:
    """Is model i's last measured error within `RISK`× the flag margin of its solver error?
    (Then its next chunk is verified, so that its solver error is measured, not extrapolated,
    and — with automatic tolerances — its tolerance can be tightened.)"""
    if state.last_error is None or not run.tighten[i]:
        return False
    carried = state.solver_error[i] + state.solver_peak[i]
    return not state.last_error[i] >= RISK * SOLVER_MARGIN * carried


def _verify(run, state, i, part, nvalid, y, budget, out: _Solved) -> bool:
    """Re-solve model i at a 100× tighter tolerance; record each point's deviation. Returns
    whether the tighter solve succeeded."""
    y_tight, status, _ = _solve_model(run, state, i, part, out.scale[i] / 100, 2 * budget)
    if int(status) != OK:
        out.solver_rate[i] = out.solver_peak[i] = math.inf
        out.point_dev.pop(i, None)
        return False
    dev = np.asarray(K.deviation(y, y_tight))[:nvalid]
    out.point_dev[i] = np.maximum(dev, dev[-1])
    out.solver_rate[i] = float(dev[-1])  # carried into later chunks
    out.solver_peak[i] = float(dev.max())  # interpolated points can be worse
    return True


def _model_records(run, state, disc, solved, nvalid, steps, recs) -> tuple:
    """Error, loss, solver-error and flag columns of every model; returns the solver error
    carried into the next chunk, the next tolerance scales and the last measured errors."""
    disp, losses, leaf = K.metrics_fn(run.loss, run.optimizer, len(run.models))(
        disc.thetas, solved.ys, run.params0
    )
    disp = np.asarray(disp)[:nvalid]
    solver_err = state.solver_error.copy()
    scales = solved.scale.copy()
    last = np.full(len(run.models), np.nan) if state.last_error is None else state.last_error.copy()
    for i, (model, key) in enumerate(zip(run.models, run.keys, strict=True)):
        sq = np.asarray(leaf[i])[:nvalid]
        err = np.sqrt(np.sum(sq, axis=1))
        # Solver error at each point: what earlier chunks carried in, plus this chunk's own.
        # Verified chunk: each point's deviation between the loose and the 100× tighter solve,
        # floored by the end point's (two solves can agree by accident at an early point).
        # Otherwise the worst point of the latest verified chunk (covers dense-output
        # interpolation between solver steps).
        own = solved.point_dev.get(i)
        if own is None:
            own = np.full(nvalid, solved.solver_peak[i])
        serr = solver_err[i] + own
        mask = (steps % model.every) != 0 if model.every > 1 else None
        cols = {
            "loss": np.array(losses[i])[:nvalid], "error": err,
            "relative_error": _ratio(err, disp), "solver_error": serr,
        }
        if mask is not None:
            cols = {name: np.where(mask, np.nan, v) for name, v in cols.items()}
            sq = np.where(mask[:, None], np.nan, sq)
        for name, v in cols.items():
            recs[f"{name}_{key}"] = v
        flagged = ~(err >= SOLVER_MARGIN * serr)
        recs[f"flagged_{key}"] = (flagged if mask is None else flagged & ~mask).astype(int)
        recs[f"_leaf_error_{key}"] = np.sqrt(sq)
        solver_err[i] = solver_err[i] + solved.solver_rate[i]
        if run.tighten[i] and i in solved.point_dev:
            scales[i] = tightened(scales[i], run.rtols[i], solved.solver_peak[i], _last(err))
        last[i] = _last(err)
    return solver_err, scales, last


def _last(err: np.ndarray) -> float:
    finite = err[np.isfinite(err)]
    return float(finite[-1]) if finite.size else math.nan


def _ratio(err, disp):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(disp > 0, err / disp, np.nan)


def _extra_records(run, state, disc, solved, nvalid, recs) -> Any:
    """Prediction, local error, kept params and diagnostics; returns the new λ_max warm start."""
    if run.rec.predict:
        for i, key in enumerate(run.keys):
            recs[f"predicted_{key}"] = disc.ehat_norms[:nvalid, i]
            recs[f"bound_{key}"] = disc.bounds[:nvalid, i]
    if run.rec.local and solved is not None:
        for i, (model, key) in enumerate(zip(run.models, run.keys, strict=True)):
            fn = K.local_fn(run.loss, run.optimizer, model.field, run.solver,
                            step_budget(None))
            loc = fn(disc.thetas, run.lr, run.rtols[i] / 100, run.atols[i] / 100)
            recs[f"local_error_{key}"] = np.asarray(loc)[:nvalid]
    if run.rec.keep_params:
        recs["_params_gd"] = jax.tree.map(lambda x: np.asarray(x[:nvalid]), disc.thetas)
        if solved is not None:
            for y, key in zip(solved.ys, run.keys, strict=True):
                recs[f"_params_{key}"] = jax.tree.map(lambda x: np.asarray(x[:nvalid]), y)
    mask = run.diag_at[state.index + 1 : state.index + 1 + nvalid]
    if not mask.any():
        return state.diag_v
    order = max(m.order for m in run.models)
    diagnose = _diagnose_fn(run.loss, run.optimizer, order)
    return _record_diagnostics(recs, diagnose, disc.thetas, mask, run.lr, order, state.diag_v)


def chunk_step(run: _Run, state: CompareState) -> tuple[dict, CompareState, Exception | None]:
    """Advance one chunk from `state`: `(records, new state, error to raise after yielding)`.

    Pure in the sense that matters for resuming: the result depends only on `run` and
    `state`, so a run continued from a saved state is bit-identical to an uninterrupted one.
    """
    ci = state.chunk
    part, nvalid = run.parts[ci]
    tic = time.perf_counter()
    disc = _advance_discrete(run, state, part)
    first = _first_divergent(disc.losses[:nvalid], run.loss_limit)
    error = None
    if first is not None:
        error = _divergence_error(run, disc.losses, part, first)
        if first == 0:
            return {}, state, error
        nvalid = first  # solve only up to the last good point (pad with its time)
        part = np.concatenate([part[:nvalid], np.full(len(part) - nvalid, part[nvalid - 1])])
    steps = part[:nvalid].copy()
    recs: dict = {"step": steps, "time": steps * run.lr, "loss_gd": disc.losses[:nvalid]}
    solved = _solve_models(run, state, ci, part, nvalid, disc.thetas) if run.rec.solve else None
    solver_err, scales, last = state.solver_error, state.tol_scale, state.last_error
    if solved is not None:
        solver_err, scales, last = _model_records(run, state, disc, solved, nvalid, steps, recs)
    diag_v = _extra_records(run, state, disc, solved, nvalid, recs)
    recs["_wall"] = time.perf_counter() - tic
    new = CompareState(
        index=state.index + nvalid, chunk=ci + 1,
        theta_gd=jax.tree.map(lambda x: x[nvalid - 1], disc.thetas),
        theta=tuple(solved.theta) if solved else state.theta,
        dt0=solved.dt0 if solved else state.dt0,
        ehat=disc.ehat, bound=np.asarray(disc.bound), solver_error=solver_err,
        solver_rate=solved.solver_rate if solved else state.solver_rate,
        solver_peak=solved.solver_peak if solved else state.solver_peak,
        diag_v=diag_v, opt_state=disc.opt_state,
        work=solved.work if solved else state.work, tol_scale=scales, last_error=last,
    )
    return recs, new, error


# --------------------------------------------------------------------------------------------
# The lockstep loop


def compare_chunks(
    loss: Callable,
    params0: PyTree,
    lr: float,
    num_steps: int,
    orders=(0, 1, 2),
    *,
    optimizer: Optimizer | None = None,
    weight_decay: float = 0.0,
    record_every: int = 1,
    rtol: float | dict | None = None,
    atol: float | dict | None = None,
    local: bool = False,
    predict: bool = False,
    solve: bool = True,
    keep_params: bool = False,
    diagnose_every: int | None = None,
    verify_every: int = 8,
    solver=None,
    method: str = "auto",
    max_steps: int | None = None,
    chunk_size: int = CHUNK,
    tighten: bool | None = None,
    predict_every: int = 1,
    state: CompareState | None = None,
) -> Iterator[tuple[dict, CompareState]]:
    """The engine of `compare`: yields `(records, state)` after every chunk of recorded steps.

    `records` maps column names to arrays over the chunk's recorded steps (the schema of
    `Comparison.columns()`, plus `_params_*` pytrees when `keep_params`). Pass a saved `state`
    to resume; the continuation is bit-identical to an uninterrupted run. `tighten` as in
    `SolverOptions` (None: tighten automatic tolerances only).
    """
    if optimizer is None:
        optimizer = GD(float(weight_decay), method)
    solver_opts = SolverOptions(solver, rtol, atol, method, verify_every, max_steps, tighten)
    rec = RecordOptions(record_every, keep_params, local, predict, solve, diagnose_every,
                        chunk_size, predict_every)
    yield from run_chunks(loss, params0, lr, num_steps, orders, optimizer, solver_opts, rec,
                          state)


def run_chunks(loss, params0, lr, num_steps, orders, optimizer: Optimizer,
               solver_opts: SolverOptions, rec: RecordOptions,
               state: CompareState | None = None) -> Iterator[tuple[dict, CompareState]]:
    """`compare_chunks` with its options as objects."""
    run = _setup(loss, params0, lr, num_steps, orders, optimizer, solver_opts, rec)
    state = _initial_state(run) if state is None else _fill_state(run, state)
    while state.chunk < len(run.parts):
        recs, state, error = chunk_step(run, state)
        if recs and len(recs["step"]):
            yield recs, state
        if error is not None:
            raise error


def _fill_state(run: _Run, state: CompareState) -> CompareState:
    """A state saved before `work`/`tol_scale` existed resumes with their defaults."""
    m = len(run.models)
    if state.work is None:
        state.work = np.zeros(m, dtype=np.int64)
    if state.tol_scale is None:
        state.tol_scale = np.ones(m)
    return state


def _diagnosis_mask(grid: np.ndarray, every: int | None) -> np.ndarray:
    """Which grid points get diagnostics: the first recorded step at or after each multiple of
    `every`, and the last step."""
    mask = np.zeros(len(grid), bool)
    if not every:
        return mask
    every = int(every)
    if every < 1:
        raise EomError(f"diagnose_every must be ≥ 1 (or None to switch it off), got {every}.")
    mask[1:] = (grid[1:] // every) > (grid[:-1] // every)
    mask[-1] = len(grid) > 1
    return mask


@loss_cache
def _diagnose_fn(loss, optimizer, order):
    from ..analysis import diagnostics_fn

    wd = float(getattr(optimizer, "weight_decay", 0.0))
    method = getattr(optimizer, "method", "auto")
    return jax.jit(diagnostics_fn(optimizer.full_loss(loss), order, weight_decay=wd,
                                  method=method))


def _record_diagnostics(recs, diagnose, thetas_gd, mask, lr, order, v):
    """Fill `eta_lambda_max`, `ratio_k` and `regime` columns (NaN/'' where not diagnosed)."""
    from ..analysis import regimes

    n = len(mask)
    eta_lam = np.full(n, np.nan)
    ratios = np.full((n, order + 1), np.nan)
    for i in np.flatnonzero(mask):
        theta = jax.tree.map(lambda x: x[i], thetas_gd)
        x, r, v = diagnose(theta, lr, None if v is None else jnp.asarray(v))
        eta_lam[i], ratios[i] = float(x), np.asarray(r)
        v = np.asarray(v)
    recs["eta_lambda_max"] = eta_lam
    for k in range(order + 1):
        recs[f"ratio_{k}"] = ratios[:, k]
    labels = np.where(np.isfinite(eta_lam), regimes(np.nan_to_num(eta_lam)), "")
    recs["regime"] = labels.astype(str)
    return v


def assemble(
    records: list[dict], *, lr, weight_decay, num_steps, orders, rtol, atol, leaf_names,
    predict, local, solve, keep_params, optimizer: str = "gd",
) -> Comparison:
    """Concatenate chunk records into a `Comparison`."""

    def cat(key):
        return np.concatenate([r[key] for r in records]) if records else np.zeros(0)

    def per(prefix, when=True):
        return {n: cat(f"{prefix}_{n}") for n in orders} if when else None

    params = None
    if keep_params and records:
        params = {
            "gd": jax.tree.map(lambda *x: np.concatenate(x), *[r["_params_gd"] for r in records])
        }
        if solve:
            for n in orders:
                params[n] = jax.tree.map(
                    lambda *x: np.concatenate(x), *[r[f"_params_{n}"] for r in records]
                )
    empty = {n: np.zeros(0) for n in orders}
    return Comparison(
        lr=lr,
        weight_decay=weight_decay,
        num_steps=num_steps,
        orders=orders,
        steps=cat("step").astype(int),
        times=cat("time"),
        loss_gd=cat("loss_gd"),
        loss=per("loss") if solve else empty,
        error=per("error") if solve else empty,
        relative_error=per("relative_error") if solve else empty,
        leaf_error={n: (np.concatenate([r[f"_leaf_error_{n}"] for r in records])) for n in orders}
        if solve and records else empty,
        leaf_names=leaf_names,
        rtol=rtol,
        atol=atol,
        solver_error=per("solver_error") if solve else empty,
        flagged={n: cat(f"flagged_{n}").astype(bool) for n in orders} if solve else empty,
        local_error=per("local_error", local and solve),
        predicted=per("predicted", predict),
        bound=per("bound", predict),
        params=params,
        diagnostics=_diagnostic_columns(records),
        wall_time={"total": float(sum(r["_wall"] for r in records))},
        optimizer=optimizer,
    )


def _diagnostic_columns(records: list[dict]) -> dict[str, np.ndarray] | None:
    if not records or "eta_lambda_max" not in records[0]:
        return None
    keys = [k for k in records[0] if k == "eta_lambda_max" or k.startswith("ratio_")]
    keys.append("regime")
    return {k: np.concatenate([r[k] for r in records]) for k in keys}


def compare(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    lr: float,
    num_steps: int,
    orders: tuple[int, ...] = (0, 1, 2),
    *,
    optimizer: Optimizer | None = None,
    weight_decay: float = 0.0,
    record_every: int = 1,
    rtol: float | dict | None = None,
    atol: float | dict | None = None,
    keep_params: bool = False,
    local: bool = False,
    predict: bool = False,
    solve: bool = True,
    diagnose_every: int | None = None,
    verify_every: int = 8,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    method: str = "auto",
    max_steps: int | None = None,
    tighten: bool | None = None,
    predict_every: int = 1,
) -> Comparison:
    r"""Run a discrete optimizer and its continuous models in lockstep and measure the error.

    For GD (the default) the models are gradient flow ($N = 0$) and the order-$N$ EoM
    $\dot\theta = -\nabla L_\lambda - \sum_{k\le N}\eta^k\xi_k$, and the recorded error is
    $e^{(N)}_k = \lVert\theta^{(N)}(k\eta) - \theta_k\rVert$.

    **Arguments:**

    - `loss`, `params0`: the loss the optimizer consumes and the common start $\theta_0$.
    - `lr`, `num_steps`: the learning rate $\eta$ and number of discrete steps.
    - `orders`: model truncation orders (0 = gradient flow).
    - `optimizer`: an `eom.engine.Optimizer` (None: `GD(weight_decay, method)`).
    - `weight_decay`: coupled λ of the default GD (ignored when `optimizer` is given).
    - `record_every`: record every this many steps (the last step is always recorded).
    - `rtol`, `atol`: solver tolerances (a float, or a dict per order / label); default: chosen
      per order from the expected local error (see `auto_tolerance`), then tightened as the
      measured error falls (`tighten`).
    - `keep_params`: also return the parameters at recorded steps (memory O(recorded × params)).
    - `local`: also measure the one-step error $\lVert\Phi^{(N)}_\eta(\theta_k)-\theta_{k+1}\rVert$
      (GD only).
    - `predict`: also run the prediction $\hat e$ of THEORY.md §3 and its bound (GD only).
    - `predict_every`: evaluate the prediction's source $\xi_{N+1}$ every this many GD steps and
      extrapolate it linearly in between (1: every step, the exact recursion; the HVP of
      $\hat e$ stays per step). r = `record_every` cuts the prediction's cost per step by ≈ 2–3×.
    - `diagnose_every`: every this many steps record ηλ_max (warm-started Lanczos), the term
      ratios $r_k = \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k\rVert$ and the regime label
      (`eom.analysis`); `None` switches diagnostics off.
    - `verify_every`: re-solve every this many chunks at 100× tighter tolerance (solver error).
    - `max_steps`: a fixed solver-step budget per chunk (None: derived from the previous chunk).
    - `tighten`: tighten the tolerance chunk by chunk as the measured error falls, so that small
      late errors stay measurements (None: for automatic tolerances only; see `SolverOptions`).

    **Returns:** a `Comparison`. Raises `DivergenceError` if the discrete loss becomes
    non-finite or blows up, and `EomError` if a model is too stiff to solve within its budget.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p: 0.5 * jnp.sum(p**2)
    >>> c = eom.compare(loss, jnp.ones(2), lr=0.1, num_steps=10, orders=(0, 1))
    >>> {n: round(e, 4) for n, e in c.final()["error"].items()}  # GF: √2·|0.9¹⁰ - e⁻¹|
    {0: 0.0272, 1: 0.0018}
    """
    if optimizer is None:
        optimizer = GD(float(weight_decay), method)
    orders = _check_orders(orders)
    solver_opts = SolverOptions(solver, rtol, atol, method, verify_every, max_steps, tighten)
    rec = RecordOptions(record_every, keep_params, local, predict, solve, diagnose_every,
                        predict_every=predict_every)
    records = [
        recs for recs, _ in run_chunks(loss, params0, lr, num_steps, orders, optimizer,
                                       solver_opts, rec)
    ]
    models = optimizer.models(loss, check_lr(lr), orders)
    keys = tuple(_key(m) for m in models)
    r, a = resolve_tolerances(
        rtol, atol, keys, tuple(m.order for m in models),
        lambda: optimizer_tolerance(loss, optimizer, params0, check_lr(lr),
                                    tuple(m.order for m in models)),
    )
    return assemble(
        records, lr=float(lr), weight_decay=float(getattr(optimizer, "weight_decay", 0.0)),
        num_steps=int(num_steps), orders=keys, rtol=r, atol=a,
        leaf_names=leaf_paths(params0), predict=predict, local=local, solve=solve,
        keep_params=keep_params, optimizer=optimizer.name,
    )
