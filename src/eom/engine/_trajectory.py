r"""Gradient descent and EoM trajectories on a common time grid.

GD: $\theta_{k+1} = \theta_k - \eta\nabla L_\lambda(\theta_k)$. EoM of order $N$:
$\dot\theta = -\nabla L_\lambda - \sum_{k\le N}\eta^k\xi_k$, solved with a diffrax adaptive solver
and sampled at $t = k\eta$. Both are advanced chunk by chunk (a fixed number of saved points per
jitted call), so memory grows only with what is saved and a Python loop can report progress.

The two primitives here — `gd_advance` (a run of GD steps) and `ode_advance` (one adaptive solve
sampled at given times) — are the only places GD and the EoM are stepped; `eom.compare` and the
analyses reuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from .._errors import DivergenceError, EomError
from ._cache import loss_cache
from ._counter import Method, check_loss, check_lr, eom_field, regularized
from ._lie import check_order

#: Saved points per jitted chunk. Bounds the memory of one chunk to CHUNK × (number of params).
CHUNK = 64


class Trajectory(eqx.Module):
    """Saved points of a GD or EoM run.

    - `steps`: int array of GD step indices $k$ (always starts at 0 and ends at `num_steps`).
    - `times`: $t = k\\eta$.
    - `params`: the params pytree with a leading axis over saved points.
    - `loss`: the loss (without weight decay) at each saved point.
    """

    steps: Int[Array, " n"]
    times: Float[Array, " n"]
    params: PyTree
    loss: Float[Array, " n"]

    def at(self, i: int) -> PyTree:
        """The params at saved point `i`."""
        return jax.tree.map(lambda x: x[i], self.params)


def gd_advance(grad_wd: Callable, params: PyTree, lr, num: Int[Array, ""]) -> PyTree:
    """`num` (traced) GD steps on the regularized gradient `grad_wd`."""

    def body(_, p):
        return jax.tree.map(lambda x, g: x - lr * g, p, grad_wd(p))

    return jax.lax.fori_loop(0, num, body, params)


def default_solver() -> diffrax.AbstractAdaptiveSolver:
    """Dopri8: 8th-order explicit RK, the efficient choice at the tight tolerances we need."""
    return diffrax.Dopri8()


def ode_advance(
    field: Callable,
    y0: PyTree,
    t0,
    ts: Float[Array, " c"],
    lr,
    *,
    solver,
    rtol: float,
    atol: float,
    dt0,
    max_steps: int = 100_000,
):
    """Solve $\\dot y = $ `field(y, lr)` from `t0`, returning (ys at `ts`, result, steps taken)."""
    return solve_at(
        lambda t, y, lr_: field(y, lr_), y0, t0, ts, lr, solver=solver, rtol=rtol, atol=atol,
        dt0=dt0, max_steps=max_steps,
    )


class DetachedField(eqx.Module):
    """A field traced to a jaxpr whose constants (the data a loss closes over) are pytree leaves.

    diffrax's solve, called inside `jax.jit`, keeps the term's function alive in JAX's global
    caches (jax-ml/jax#16226): a closure over a dataset would leak that dataset for the life of
    the process. Handing diffrax this module instead, the data are ordinary (dynamic) arguments
    and only the small jaxpr is retained.
    """

    jaxpr: Any = eqx.field(static=True)
    out_tree: Any = eqx.field(static=True)
    consts: list

    def __call__(self, t, y, args):
        out = jax.core.eval_jaxpr(self.jaxpr, self.consts, *jax.tree.leaves((t, y, args)))
        return jax.tree.unflatten(self.out_tree, out)


def detach(field: Callable, t, y, args) -> DetachedField:
    """`field(t, y, args)` as a `DetachedField` (traced at these example arguments)."""
    closed, shape = jax.make_jaxpr(field, return_shape=True)(t, y, args)
    return DetachedField(closed.jaxpr, jax.tree.structure(shape), list(closed.consts))


def solve_at(
    field: Callable, y0: PyTree, t0, ts, lr, *, solver, rtol, atol, dt0, max_steps: int
):
    """Solve $\\dot y = $ `field(t, y, lr)` from `t0` (a time-dependent field), sampled at `ts`.

    Returns `(ys, result, steps taken)`; never raises (`throw=False`): callers read `result`.
    """
    t_example = jnp.asarray(t0, dtype=jnp.result_type(float))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(detach(field, t_example, y0, lr)),
        solver,
        t0=t0,
        t1=ts[-1],
        dt0=dt0,
        y0=y0,
        args=lr,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return sol.ys, sol.result, sol.stats["num_accepted_steps"]


#: A solve may take this many times the steps its previous chunk needed before it is stopped.
BUDGET_GROWTH = 16
#: The smallest step budget of one solve (a first chunk has no previous one to go by).
BUDGET_FLOOR = 4096
#: Status codes of a chunk solve.
OK, OUT_OF_BUDGET, FAILED = 0, 1, 2


def step_budget(previous: int | None = None, floor: int = BUDGET_FLOOR) -> int:
    """The step budget of a solve: `BUDGET_GROWTH` × the steps the previous chunk took, at least
    `floor`, rounded up to a power of two (so a slowly changing budget rarely recompiles)."""
    need = max(int(floor), BUDGET_GROWTH * int(previous or 0), 1)
    return 1 << (need - 1).bit_length()


def solve_status(result) -> jax.Array:
    """`OK`, `OUT_OF_BUDGET` (max_steps reached: too stiff for the budget) or `FAILED`."""
    return jnp.where(
        result == diffrax.RESULTS.successful,
        OK,
        jnp.where(result == diffrax.RESULTS.max_steps_reached, OUT_OF_BUDGET, FAILED),
    )


def save_grid(num_steps: int, save_every: int) -> np.ndarray:
    """Steps 0, save_every, 2·save_every, … and always `num_steps` itself."""
    num_steps, save_every = int(num_steps), int(save_every)
    if num_steps < 0:
        raise EomError(f"num_steps must be ≥ 0, got {num_steps}.")
    if save_every < 1:
        raise EomError(f"save_every must be ≥ 1, got {save_every}.")
    grid = np.arange(0, num_steps + 1, save_every)
    if grid[-1] != num_steps:
        grid = np.append(grid, num_steps)
    return grid


def chunks(grid: np.ndarray, size: int = CHUNK) -> Iterator[tuple[np.ndarray, int]]:
    """Split `grid[1:]` into fixed-size chunks (padded by repeating the last step).

    Yields `(padded_steps, n_valid)`; padding keeps one compiled shape for every chunk.
    """
    rest = grid[1:]
    for i in range(0, len(rest), size):
        part = rest[i : i + size]
        n = len(part)
        if n < size:
            part = np.concatenate([part, np.full(size - n, part[-1])])
        yield part, n


def _stack(points: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *points)


def _loss_trace(loss, params_stacked):
    return jax.vmap(loss)(params_stacked)


@loss_cache
def _gd_chunk_fn(loss, weight_decay):
    grad_wd = jax.grad(regularized(loss, weight_decay))

    @jax.jit
    def run(p, lr, counts):
        def body(p, n):
            p = gd_advance(grad_wd, p, lr, n)
            return p, p

        return jax.lax.scan(body, p, counts)

    return run


def chunk_solve_fn(field: Callable, solver, max_steps: int) -> Callable:
    """Jitted `run(y0, t0, ts, lr, dt0, rtol, atol) -> (ys at ts, status, accepted steps)`: one
    adaptive solve of $\dot y = $ `field(t, y, lr)` over a chunk (tolerances and times traced)."""

    @jax.jit
    def run(y0, t0, ts, lr, dt0, rtol, atol):
        ys, result, nsteps = solve_at(
            field, y0, t0, ts, lr, solver=solver, rtol=rtol, atol=atol, dt0=dt0,
            max_steps=max_steps,
        )
        return ys, solve_status(result), nsteps

    return run


@loss_cache
def _ode_chunk_fn(loss, order, weight_decay, method, solver, max_steps):
    field = eom_field(loss, order, weight_decay, method)
    return chunk_solve_fn(lambda t, y, lr: field(y, lr), solver, max_steps)


def _check_finite(loss_values: np.ndarray, steps: np.ndarray, what: str, lr: float) -> None:
    bad = ~np.isfinite(loss_values)
    if bad.any():
        k = int(steps[np.argmax(bad)])
        raise DivergenceError(
            f"{what} diverged: the loss is not finite at step {k} with learning rate {lr:g}. "
            "Lower the learning rate (GD is stable only for lr·λ_max < 2; the EoM is accurate "
            "for lr·λ_max well below 1)."
        )


def gradient_descent(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    lr: float,
    num_steps: int,
    *,
    weight_decay: float = 0.0,
    save_every: int = 1,
) -> Trajectory:
    r"""Run full-batch GD $\theta_{k+1} = \theta_k - \eta\nabla L_\lambda(\theta_k)$.

    Saves every `save_every` steps (and the last step); memory is O(saved points).
    Raises `DivergenceError` if the loss becomes non-finite.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> gd = eom.gradient_descent(lambda p: 0.5 * jnp.sum(p**2), jnp.ones(2), lr=0.1, num_steps=3)
    >>> [round(v, 6) for v in gd.params[-1].tolist()]  # (1 - η)³
    [0.729, 0.729]
    """
    check_loss(loss, params0)
    lr = check_lr(lr)
    grid = save_grid(num_steps, save_every)
    run = _gd_chunk_fn(loss, float(weight_decay))
    p, saved = params0, [jax.tree.map(lambda x: x[None], params0)]
    prev = 0
    for part, n in chunks(grid):
        counts = np.diff(np.concatenate([[prev], part]))
        p_end, ps = run(p, lr, jnp.asarray(counts))
        saved.append(jax.tree.map(lambda x: x[:n], ps))
        p, prev = jax.tree.map(lambda x: x[n - 1], ps), part[n - 1]
        del p_end
    params = _stack(saved)
    losses = _loss_trace(loss, params)
    _check_finite(np.asarray(losses), grid, "gradient descent", lr)
    return Trajectory(jnp.asarray(grid), jnp.asarray(grid * lr), params, losses)


def integrate(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    lr: float,
    num_steps: int,
    order: int,
    *,
    weight_decay: float = 0.0,
    save_every: int = 1,
    rtol: float | None = None,
    atol: float | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    method: Method = "auto",
    max_steps: int | None = None,
) -> Trajectory:
    r"""Solve the order-$N$ EoM $\dot\theta = -\nabla L_\lambda - \sum_{k=1}^{N}\eta^k\xi_k$.

    Sampled at $t = k\eta$ on the same grid as `gradient_descent(..., save_every)`, so the two
    trajectories subtract leaf by leaf. `order=0` is gradient flow. Defaults: Dopri8 with
    `rtol=1e-10`, `atol=1e-12` (float64 needed for meaningful errors below ~1e-7). Each chunk's
    solve gets a step budget (`max_steps`, default `step_budget` of the previous chunk's steps);
    running out of it raises `EomError` (the EoM is too stiff at this learning rate).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> gf = eom.integrate(lambda p: 0.5 * jnp.sum(p**2), jnp.ones(2), lr=0.1, num_steps=3, order=0)
    >>> [round(v, 4) for v in gf.params[-1].tolist()]  # gradient flow: e^(-t) at t = 0.3
    [0.7408, 0.7408]
    """
    check_loss(loss, params0)
    lr = check_lr(lr)
    order = check_order(order)
    rtol = 1e-10 if rtol is None else float(rtol)
    atol = 1e-12 if atol is None else float(atol)
    solver = default_solver() if solver is None else solver
    grid = save_grid(num_steps, save_every)
    y, t0, dt0, prev = params0, 0.0, lr, None  # a first step of one GD step; the controller adapts
    saved = [jax.tree.map(lambda x: x[None], params0)]
    for part, n in chunks(grid):
        budget = int(max_steps) if max_steps is not None else step_budget(prev)
        run = _ode_chunk_fn(loss, order, float(weight_decay), method, solver, budget)
        ys, status, nsteps = run(y, t0, jnp.asarray(part * lr), lr, dt0, rtol, atol)
        if int(status) != OK:
            why = (
                f"ran out of its budget of {budget} solver steps"
                if int(status) == OUT_OF_BUDGET else "failed"
            )
            raise EomError(
                f"the ODE solver {why} between t={t0:g} and t={part[n - 1] * lr:g} "
                f"(order {order}, lr {lr:g}): the EoM is too stiff or diverging there. Lower the "
                "learning rate, or raise max_steps / loosen rtol, atol."
            )
        saved.append(jax.tree.map(lambda x: x[:n], ys))
        y = jax.tree.map(lambda x: x[n - 1], ys)
        span = float(part[n - 1] * lr - t0)
        t0 = float(part[n - 1] * lr)
        prev = int(nsteps)
        dt0 = span / max(prev, 1)
    params = _stack(saved)
    losses = _loss_trace(loss, params)
    _check_finite(np.asarray(losses), grid, f"the order-{order} EoM", lr)
    return Trajectory(jnp.asarray(grid), jnp.asarray(grid * lr), params, losses)
