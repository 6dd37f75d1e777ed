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

**Solver honesty.** Unless given, tolerances are chosen per order from the expected local error
$\eta^{N+2}\lVert\xi_{N+1}(\theta_0)\rVert$, and on a sample of chunks the ODE is re-solved at a
100× tighter tolerance; the difference accumulates into `solver_error`. Recorded errors that are
not at least 10× above it are flagged in `flagged[N]` rather than reported as if they were real.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._errors import DivergenceError, EomError
from .._tree import leaf_paths, tree_norm, tree_sub, tree_zeros_like
from ..engine import check_loss, check_lr, check_order, grad_and_terms_fn, regularized
from ..engine._trajectory import (
    CHUNK,
    _gd_chunk_fn,
    _ode_chunk_fn,
    chunks,
    default_solver,
    eom_field,
    ode_advance,
    save_grid,
)
from ._predict import gd_prediction_step

#: A recorded error must exceed the solver's own error by this factor to count as measured.
SOLVER_MARGIN = 10.0
#: Tightest tolerance we ask of the solver in float64 (below it rounding dominates).
TOL_FLOOR = 1e-13
TOL_CEIL = 1e-6
#: GD counts as diverged once |loss| exceeds this factor times (|L(θ_0)| + 1), or is not finite.
DIVERGENCE_FACTOR = 1e8


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Comparison:
    r"""The measured (and optionally predicted) discretization error of GF/EoM against GD.

    Per-order quantities are dicts keyed by the order $N$ (0 = gradient flow); arrays run over
    the recorded steps `steps` (times `times` = steps·lr).
    """

    lr: float
    weight_decay: float
    num_steps: int
    orders: tuple[int, ...]
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
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "num_steps": self.num_steps,
            "orders": list(self.orders),
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
        return out

    @classmethod
    def from_arrays(cls, arrays, params0: PyTree, num_orders: int) -> CompareState:
        unravel = ravel_pytree(params0)[1]
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
        )


# --------------------------------------------------------------------------------------------
# Jitted pieces (cached on the loss function's identity, so repeated runs do not recompile)


@functools.cache
def _gd_predict_chunk_fn(loss, orders, weight_decay, method):
    loss_wd = regularized(loss, weight_decay)
    grad_wd = jax.grad(loss_wd)
    terms_fn = grad_and_terms_fn(loss_wd, max(orders) + 1, method=method)

    @jax.jit
    def run(theta, ehat, bound, lr, counts):
        def record(carry, n):
            carry = jax.lax.fori_loop(
                0, n, lambda _, c: gd_prediction_step(grad_wd, terms_fn, orders, *c, lr), carry
            )
            theta, ehat, bound = carry
            norms = jnp.stack([tree_norm(e) for e in ehat])
            return carry, (theta, norms, bound)

        return jax.lax.scan(record, (theta, ehat, bound), counts)

    return run


@functools.cache
def _metrics_fn(loss, num_orders):
    def leaf_sq(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return jnp.stack([jnp.sum((x - y) ** 2) for x, y in pairs])

    @jax.jit
    def run(thetas_gd, ys, theta0):
        loss_gd = jax.vmap(loss)(thetas_gd)
        disp = jax.vmap(lambda th: tree_norm(tree_sub(th, theta0)))(thetas_gd)
        losses, leaf = [], []
        for i in range(num_orders):
            losses.append(jax.vmap(loss)(ys[i]))
            leaf.append(jax.vmap(leaf_sq)(ys[i], thetas_gd))
        return loss_gd, disp, losses, leaf

    return run


@functools.cache
def _local_fn(loss, order, weight_decay, method, solver, max_steps):
    field = eom_field(loss, order, weight_decay, method)
    grad_wd = jax.grad(regularized(loss, weight_decay))

    @jax.jit
    def run(thetas, lr, rtol, atol):
        def one(theta):
            gd1 = jax.tree.map(lambda p, g: p - lr * g, theta, grad_wd(theta))
            ys, result, _ = ode_advance(
                field, theta, 0.0, jnp.reshape(lr, (1,)), lr, solver=solver, rtol=rtol,
                atol=atol, dt0=lr / 4, max_steps=max_steps,
            )
            err = tree_norm(tree_sub(jax.tree.map(lambda y: y[0], ys), gd1))
            # A failed one-step solve is reported as NaN, never as a number.
            return jnp.where(result == diffrax.RESULTS.successful, err, jnp.nan)

        return jax.lax.map(one, thetas)

    return run


@functools.cache
def _local_scale_fn(loss, max_order, weight_decay, method):
    fn = grad_and_terms_fn(regularized(loss, weight_decay), max_order + 1, method=method)

    @jax.jit
    def run(theta):
        g, xi = fn(theta)
        return jnp.stack([tree_norm(x) for x in xi])

    return run


def auto_tolerance(loss, params0, lr, orders, weight_decay=0.0, method="auto") -> dict[int, float]:
    r"""Per-order solver tolerance from the expected local error $\eta^{N+2}\lVert\xi_{N+1}\rVert$.

    Diffrax's PID controller bounds the RMS of err_i/(atol + rtol|y_i|) per step, i.e. an L2 error
    of about $\sqrt d\,\tau(1 + y_{rms})$ with rtol = atol = τ. We ask for 1/100 of the local error
    per step, clipped to [1e-13, 1e-6].
    """
    norms = np.asarray(_local_scale_fn(loss, max(orders), float(weight_decay), method)(params0))
    flat = np.asarray(ravel_pytree(params0)[0])
    d = flat.size
    y_rms = float(np.sqrt(np.mean(flat**2))) if d else 0.0
    out = {}
    for n in orders:
        local = lr ** (n + 2) * float(norms[n])
        tau = local / (100.0 * math.sqrt(d) * (1.0 + y_rms)) if local > 0 else TOL_FLOOR
        out[n] = float(np.clip(tau, TOL_FLOOR, TOL_CEIL))
    return out


# --------------------------------------------------------------------------------------------
# The lockstep loop


def compare_chunks(
    loss: Callable,
    params0: PyTree,
    lr: float,
    num_steps: int,
    orders=(0, 1, 2),
    *,
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
    max_steps: int = 1_000_000,
    chunk_size: int = CHUNK,
    state: CompareState | None = None,
) -> Iterator[tuple[dict, CompareState]]:
    """The engine of `compare`: yields `(records, state)` after every chunk of recorded steps.

    `records` maps column names to arrays over the chunk's recorded steps (the schema of
    `Comparison.columns()`, plus `_params_*` pytrees when `keep_params`). Pass a saved `state`
    to resume; the continuation is bit-identical to an uninterrupted run.
    """
    check_loss(loss, params0)
    lr = check_lr(lr)
    orders = tuple(check_order(n) for n in orders)
    if not orders:
        raise EomError("orders is empty; pass e.g. orders=(0, 1, 2) (0 = gradient flow).")
    if len(set(orders)) != len(orders):
        raise EomError(f"orders {orders} has repeats; list each order once.")
    if predict:
        check_order(max(orders) + 1)
    weight_decay = float(weight_decay)
    solver = default_solver() if solver is None else solver
    grid = save_grid(num_steps, record_every)
    m = len(orders)
    tol = _resolve_tol(rtol, atol, loss, params0, lr, orders, weight_decay, method)
    rtols = np.array([tol[0][n] for n in orders])
    atols = np.array([tol[1][n] for n in orders])
    theta0 = params0
    loss_limit = DIVERGENCE_FACTOR * (abs(float(loss(params0))) + 1.0)
    if state is None:
        state = CompareState(
            index=0, chunk=0, theta_gd=params0, theta=(params0,) * m,
            dt0=np.full(m, lr), ehat=(tree_zeros_like(params0),) * m,
            bound=np.zeros(m), solver_error=np.zeros(m), solver_rate=np.zeros(m),
            solver_peak=np.zeros(m),
        )
    gd_run = (
        _gd_predict_chunk_fn(loss, orders, weight_decay, method) if predict
        else _gd_chunk_fn(loss, weight_decay)
    )
    ode_runs = [_ode_chunk_fn(loss, n, weight_decay, method, solver, max_steps) for n in orders]
    metrics = _metrics_fn(loss, m if solve else 0)
    all_chunks = list(chunks(grid, chunk_size))
    diag_at = _diagnosis_mask(grid, diagnose_every)
    diagnose = _diagnose_fn(loss, max(orders), weight_decay, method) if diag_at.any() else None
    for ci in range(state.chunk, len(all_chunks)):
        part, nvalid = all_chunks[ci]
        prev_step = int(grid[state.index])
        t0 = prev_step * lr
        counts = jnp.asarray(np.diff(np.concatenate([[prev_step], part])))
        ts = jnp.asarray(part * lr)
        tic = time.perf_counter()
        if predict:
            (_, ehat_end, bound_end), (thetas_gd, ehat_norms, bounds) = gd_run(
                state.theta_gd, state.ehat, jnp.asarray(state.bound), lr, counts
            )
            ehat_end = tuple(ehat_end)
        else:
            _, thetas_gd = gd_run(state.theta_gd, lr, counts)
            ehat_end, bound_end = state.ehat, state.bound
        recs: dict = {"step": part[:nvalid].copy(), "time": part[:nvalid] * lr}
        ys, new_dt0, new_theta = [], state.dt0.copy(), list(state.theta)
        solver_err = state.solver_error.copy()
        solver_rate = state.solver_rate.copy()
        solver_peak = state.solver_peak.copy()
        point_dev: dict[int, np.ndarray] = {}
        if solve:
            verify = ci % max(int(verify_every), 1) == 0
            for i, n in enumerate(orders):
                y, ok, nst = ode_runs[i](
                    state.theta[i], t0, ts, lr, state.dt0[i], rtols[i], atols[i]
                )
                if not bool(ok):
                    raise EomError(
                        f"the ODE solver failed for order {n} between steps {prev_step} and "
                        f"{int(part[nvalid - 1])} (lr {lr:g}): the EoM is too stiff or diverges "
                        "there, usually because lr·λ_max is near or above 1. Lower the learning "
                        "rate or drop the highest orders."
                    )
                ys.append(y)
                new_theta[i] = jax.tree.map(lambda x: x[nvalid - 1], y)
                span = float(part[nvalid - 1]) * lr - t0
                new_dt0[i] = span / max(int(nst), 1) if span > 0 else state.dt0[i]
                if verify:
                    y_tight, ok2, _ = ode_runs[i](
                        state.theta[i], t0, ts, lr, state.dt0[i], rtols[i] / 100, atols[i] / 100
                    )
                    if bool(ok2):
                        dev = np.asarray(_deviation(y, y_tight))[:nvalid]
                        point_dev[i] = np.maximum(dev, dev[-1])
                        solver_rate[i] = float(dev[-1])  # carried into later chunks
                        solver_peak[i] = float(dev.max())  # interpolated points can be worse
                    else:
                        solver_rate[i] = solver_peak[i] = math.inf
            loss_gd, disp, losses, leaf = metrics(thetas_gd, ys, theta0)
        else:
            loss_gd, disp, losses, leaf = metrics(thetas_gd, [], theta0)
        loss_gd = np.asarray(loss_gd)[:nvalid]
        disp = np.asarray(disp)[:nvalid]
        recs["loss_gd"] = loss_gd
        for i, n in enumerate(orders):
            if solve:
                err_leaf = np.sqrt(np.asarray(leaf[i])[:nvalid])
                err = np.sqrt(np.sum(np.asarray(leaf[i])[:nvalid], axis=1))
                # Solver error at each recorded point: what earlier chunks carried in, plus this
                # chunk's own. Verified chunk: each point's deviation between the loose and the
                # 100× tighter solve, floored by the end point's (two solves can agree by
                # accident at an early point). Otherwise the worst point of the latest verified
                # chunk, which also covers dense-output interpolation between solver steps.
                own = point_dev.get(i)
                if own is None:
                    own = np.full(nvalid, solver_peak[i])
                serr = solver_err[i] + own
                recs[f"loss_{n}"] = np.asarray(losses[i])[:nvalid]
                recs[f"error_{n}"] = err
                with np.errstate(divide="ignore", invalid="ignore"):
                    recs[f"relative_error_{n}"] = np.where(disp > 0, err / disp, np.nan)
                recs[f"solver_error_{n}"] = serr
                recs[f"flagged_{n}"] = (~(err >= SOLVER_MARGIN * serr)).astype(int)
                recs[f"_leaf_error_{n}"] = err_leaf
                solver_err[i] = solver_err[i] + solver_rate[i]
            if predict:
                recs[f"predicted_{n}"] = np.asarray(ehat_norms)[:nvalid, i]
                recs[f"bound_{n}"] = np.asarray(bounds)[:nvalid, i]
        if local and solve:
            for i, n in enumerate(orders):
                loc = _local_fn(loss, n, weight_decay, method, solver, max_steps)(
                    thetas_gd, lr, rtols[i] / 100, atols[i] / 100
                )
                recs[f"local_error_{n}"] = np.asarray(loc)[:nvalid]
        if keep_params:
            recs["_params_gd"] = jax.tree.map(lambda x: np.asarray(x[:nvalid]), thetas_gd)
            for i, n in enumerate(orders):
                if solve:
                    recs[f"_params_{n}"] = jax.tree.map(lambda x: np.asarray(x[:nvalid]), ys[i])
        diag_v = state.diag_v
        if diagnose is not None:
            diag_v = _record_diagnostics(
                recs, diagnose, thetas_gd, diag_at[state.index + 1 : state.index + 1 + nvalid],
                lr, max(orders), diag_v,
            )
        recs["_wall"] = time.perf_counter() - tic
        # Divergence: keep what is valid, then stop with a clear message.
        bad = ~(np.abs(loss_gd) <= loss_limit)  # NaN, inf, or a blow-up past loss_limit
        if bad.any():
            first = int(np.argmax(bad))
            if first > 0:
                yield _slice_records(recs, first), state
            what = "not finite" if not np.isfinite(loss_gd[first]) else (
                f"{loss_gd[first]:.3g}, over {DIVERGENCE_FACTOR:.0e}× its initial value"
            )
            raise DivergenceError(
                f"gradient descent diverged: the loss is {what} at step "
                f"{int(recs['step'][first])} with learning rate {lr:g}. Lower the learning rate "
                "(GD is stable only for lr·λ_max < 2, and the EoM is accurate for lr·λ_max well "
                "below 1). Results up to the previous recorded step are kept."
            )
        state = CompareState(
            index=state.index + nvalid,
            chunk=ci + 1,
            theta_gd=jax.tree.map(lambda x: x[nvalid - 1], thetas_gd),
            theta=tuple(new_theta),
            dt0=new_dt0,
            ehat=ehat_end,
            bound=np.asarray(bound_end),
            solver_error=solver_err,
            solver_rate=solver_rate,
            solver_peak=solver_peak,
            diag_v=diag_v,
        )
        yield recs, state


@jax.jit
def _deviation(a, b):
    """‖a_i − b_i‖ for each point i along the leading axis."""
    return jax.vmap(lambda x, y: tree_norm(tree_sub(x, y)))(a, b)


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


@functools.cache
def _diagnose_fn(loss, order, weight_decay, method):
    from ..analysis import diagnostics_fn

    return jax.jit(diagnostics_fn(loss, order, weight_decay=weight_decay, method=method))


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


def _slice_records(recs: dict, n: int) -> dict:
    out = {}
    for k, v in recs.items():
        if k == "_wall":
            out[k] = v
        elif k.startswith("_params"):
            out[k] = jax.tree.map(lambda x: x[:n], v)
        else:
            out[k] = v[:n]
    return out


def _resolve_tol(rtol, atol, loss, params0, lr, orders, weight_decay, method):
    auto = None
    if rtol is None or atol is None:
        auto = auto_tolerance(loss, params0, lr, orders, weight_decay, method)

    def pick(given, name):
        if given is None:
            return dict(auto)
        if isinstance(given, dict):
            missing = [n for n in orders if n not in given]
            if missing:
                raise EomError(f"{name} has no entry for orders {missing}; give one per order.")
            return {n: float(given[n]) for n in orders}
        return {n: float(given) for n in orders}

    r, a = pick(rtol, "rtol"), pick(atol, "atol")
    for n in orders:
        if not (r[n] > 0 and a[n] > 0):
            raise EomError(f"rtol and atol must be positive, got {r[n]}, {a[n]} for order {n}.")
    return r, a


def assemble(
    records: list[dict], *, lr, weight_decay, num_steps, orders, rtol, atol, leaf_names,
    predict, local, solve, keep_params,
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
) -> Comparison:
    r"""Run GD and the order-$N$ EoM for each $N$ in `orders` in lockstep and measure the error.

    **Arguments:**

    - `loss`, `params0`: scalar loss over a pytree and the common start $\theta_0$.
    - `lr`, `num_steps`: the learning rate $\eta$ and number of GD steps.
    - `orders`: EoM truncation orders (0 = gradient flow).
    - `weight_decay`: coupled λ (GD and the EoM on $L_\lambda$).
    - `record_every`: record every this many steps (the last step is always recorded).
    - `rtol`, `atol`: solver tolerances (a float, or a dict per order); default: chosen per order
      from the expected local error (see `auto_tolerance`).
    - `keep_params`: also return the parameters at recorded steps (memory O(recorded × params)).
    - `local`: also measure the one-step error $\lVert\Phi^{(N)}_\eta(\theta_k)-\theta_{k+1}\rVert$.
    - `predict`: also run the prediction $\hat e$ of THEORY.md §3 and its bound.
    - `diagnose_every`: every this many steps record ηλ_max (warm-started Lanczos), the term
      ratios $r_k = \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k\rVert$ and the regime label
      (`eom.analysis`); `None` switches diagnostics off.
    - `verify_every`: re-solve every this many chunks at 100× tighter tolerance (solver error).

    **Returns:** a `Comparison`. Raises `DivergenceError` if GD's loss becomes non-finite.
    """
    orders = tuple(int(n) for n in orders) if not isinstance(orders, int) else (int(orders),)
    if not orders:
        raise EomError("orders is empty; pass e.g. orders=(0, 1, 2) (0 = gradient flow).")
    check_loss(loss, params0)
    lr = check_lr(lr)
    tol = _resolve_tol(rtol, atol, loss, params0, lr, orders, float(weight_decay), method)
    records = [
        recs
        for recs, _ in compare_chunks(
            loss, params0, lr, num_steps, orders, weight_decay=weight_decay,
            record_every=record_every, rtol=tol[0], atol=tol[1], local=local, predict=predict,
            solve=solve, keep_params=keep_params, diagnose_every=diagnose_every,
            verify_every=verify_every, solver=solver, method=method,
        )
    ]
    return assemble(
        records, lr=float(lr), weight_decay=float(weight_decay), num_steps=int(num_steps),
        orders=orders, rtol=tol[0], atol=tol[1], leaf_names=leaf_paths(params0),
        predict=predict, local=local, solve=solve, keep_params=keep_params,
    )


