r"""The leading-order prediction of the global discretization error (THEORY.md §3).

With $e_k = \theta^{(N)}(k\eta) - \theta_k$ the order-$N$ EoM solution minus the GD iterate,

$$\hat e_{k+1} = (I - \eta H(\theta_k))\,\hat e_k + \eta^{N+2}\,\xi_{N+1}(\theta_k),
  \qquad \hat e_0 = 0,$$

evaluated along the GD path with one Hessian–vector product per step (all orders' $\hat e$ as
stacked tangents of one `jvp`, whose primal is GD's own gradient) and one $\xi_{N+1}$ every
`predict_every` = r steps (both matrix-free). For r > 1, $\xi_{N+1}$ is continued linearly
between evaluations from the last two (`predict_chunk_fn`). Along the GD path its components
in the sharp directions decay by a factor $\approx 1 - \eta\lambda_{\max}$ per step, so the
continued source is off by $O((r\eta\lambda_{\max})^2)$ relative: on the default digits run
(ηλ_max = 0.2, 200 steps) r = 2 changes ‖ê‖ by ≤ 3 %, r = 3 by ≤ 8 % and r = 5 by ≤ 23 %
(order 1; benchmarks/README.md); r = 1 is the exact recursion and the default.

The simple bound, valid when $0 \preceq \eta H(\theta_k) \preceq 2I$ so that
$\lVert I - \eta H\rVert \le 1$, is the accumulated local error

$$\lVert e_k\rVert \le b_k = \sum_{j<k} \eta^{N+2}\lVert\xi_{N+1}(\theta_j)\rVert .$$

`gd_prediction_step` is the single place where this recursion is written; `predict_chunk_fn`
runs it over a chunk of recorded steps, in lockstep with GD inside `eom.compare` and alone in
`predicted_error` (which does not call `compare`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._errors import EomError
from .._tree import tree_norm, tree_zeros_like
from ..engine import check_loss, check_lr, check_order, grad_and_terms_fn, regularized, save_grid
from ..engine._cache import loss_cache
from ..engine._trajectory import chunks


def check_predict_every(every) -> int:
    """`predict_every` as a whole number ≥ 1, or `EomError`."""
    try:
        r = int(every)
        ok = r == every and r >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise EomError(
            f"predict_every must be a whole number ≥ 1 (1: evaluate ξ_(N+1) at every GD step), "
            f"got {every!r}."
        )
    return r


def gd_prediction_step(
    grad_wd: Callable,
    orders: tuple[int, ...],
    theta: PyTree,
    ehat: tuple,
    bound: Float[Array, " n"],
    lr,
    xi: tuple | None,
    g: PyTree | None = None,
):
    r"""One GD step $\theta \to \theta - \eta\nabla L_\lambda(\theta)$, advancing each order's
    predicted error $\hat e \leftarrow (I - \eta H)\hat e + \eta^{N+2}\xi$ and bound
    $b \leftarrow b + \eta^{N+2}\lVert\xi\rVert$ (see module docstring). Returns the new triple.

    `xi[i]` is the source $\xi_{N+1}$ of `orders[i]` used at this step (evaluated here or
    continued from earlier evaluations), or `xi is None` when no prediction is wanted. `g` is
    $\nabla L_\lambda(\theta)$ if already computed (else the primal of the first HVP's `jvp`).
    One `jvp` per order: they share their primal (XLA merges it), so the step costs one gradient
    plus one HVP tangent (≈ 1.8 gradients) per order. Stacking the tangents under `vmap` does the
    same FLOPs but runs ≈ 1.5× slower on the CPU (batched matmuls), so it is not done.
    """
    if xi is None:
        return jax.tree.map(lambda p, gi: p - lr * gi, theta, grad_wd(theta)), ehat, bound
    new_e, new_b = [], []
    for i, n in enumerate(orders):
        g_i, hv = jax.jvp(grad_wd, (theta,), (ehat[i],))
        g = g_i if g is None else g
        scale = lr ** (n + 2)
        new_e.append(jax.tree.map(lambda e, h, x: e - lr * h + scale * x, ehat[i], hv, xi[i]))
        new_b.append(bound[i] + scale * tree_norm(xi[i]))
    theta = jax.tree.map(lambda p, gi: p - lr * gi, theta, g)
    return theta, tuple(new_e), jnp.stack(new_b)


@loss_cache
def predict_chunk_fn(loss, orders, weight_decay, method, every=1):
    r"""`run(theta, ehat, bound, lr, counts, start) -> ((θ, ê, b) at the end, (θ_k, ‖ê_k‖, b_k)
    stacked)` over the recorded steps of one chunk (`counts` GD steps between recorded points;
    `start` is the GD step index of `theta`).

    With `every` = r > 1, $\xi_{N+1}$ is evaluated exactly at the steps $k \equiv 0 \pmod r$
    and continued linearly through the last two evaluations $(k_a, \xi_a), (k_b, \xi_b)$:
    $\xi(k) \approx \xi_b + (k - k_b)(\xi_b - \xi_a)/(k_b - k_a)$. At the chunk's first step
    $k_0$ (no earlier evaluation in this call) $\xi_a = \xi(\theta_{k_0})$ and $\xi_b$ is
    evaluated at the next multiple of r after a look-ahead of plain GD steps, so the first block
    is interpolated. The HVPs stay per step: they carry $\hat e$, which changes every step."""
    loss_wd = regularized(loss, weight_decay)
    grad_wd = jax.grad(loss_wd)
    terms_fn = grad_and_terms_fn(loss_wd, max(orders) + 1, method=method)
    def xi_at(theta):
        return tuple(terms_fn(theta)[1][n] for n in orders)

    @jax.jit
    def run(theta, ehat, bound, lr, counts, start):
        def gd(_, p):
            return jax.tree.map(lambda x, g: x - lr * g, p, grad_wd(p))

        def step_every(_, c):
            theta, ehat, bound, src = c
            g, xi = terms_fn(theta)
            xi = tuple(xi[n] for n in orders)
            return (*gd_prediction_step(grad_wd, orders, theta, ehat, bound, lr, xi, g), src)

        def step_sparse(k, c):
            theta, ehat, bound, (xa, xb, ka, kb) = c
            xa, xb, ka, kb = jax.lax.cond(
                (k % every == 0) & (k > kb),
                lambda _: (xb, xi_at(theta), kb, k),
                lambda _: (xa, xb, ka, kb),
                None,
            )
            w = (k - kb).astype(bound.dtype) / (kb - ka).astype(bound.dtype)
            xi = jax.tree.map(lambda a_, b_: b_ + w * (b_ - a_), xa, xb)
            return (*gd_prediction_step(grad_wd, orders, theta, ehat, bound, lr, xi),
                    (xa, xb, ka, kb))

        start = jnp.asarray(start)
        if every == 1:
            src, step = None, step_every
        else:
            kb = (start // every + 1) * every
            ahead = jax.lax.fori_loop(start, kb, gd, theta)
            src, step = (xi_at(theta), xi_at(ahead), start, kb), step_sparse

        def record(carry, n):
            k, c = carry
            c = jax.lax.fori_loop(k, k + n, step, c)
            theta, ehat, bound, _ = c
            return (k + n, c), (theta, jnp.stack([tree_norm(e) for e in ehat]), bound)

        (_, (theta, ehat, bound, _)), recs = jax.lax.scan(
            record, (start, (theta, ehat, bound, src)), counts
        )
        return (theta, ehat, bound), recs

    return run


@dataclass(frozen=True)
class PredictedError:
    r"""Predicted global error of the order-`order` EoM along a GD run.

    - `steps`: recorded GD steps; `predicted`: $\lVert\hat e_k\rVert$; `bound`: $b_k$.
    """

    order: int
    lr: float
    steps: np.ndarray
    predicted: np.ndarray
    bound: np.ndarray


def predicted_error(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    lr: float,
    num_steps: int,
    order: int,
    *,
    weight_decay: float = 0.0,
    record_every: int = 1,
    predict_every: int = 1,
) -> PredictedError:
    r"""Predict $\lVert\theta^{(N)}(k\eta) - \theta_k\rVert$ without solving the EoM.

    Runs GD and the recursion $\hat e_{k+1} = (I-\eta H)\hat e_k + \eta^{N+2}\xi_{N+1}$ (one HVP and
    one $\xi_{N+1}$ per step), recording $\lVert\hat e_k\rVert$ and the bound every `record_every`
    steps. Use `eom.compare(..., predict=True)` to get it next to the measured error.
    `predict_every` = r > 1 evaluates $\xi_{N+1}$ every r steps only and extrapolates it linearly
    in between (see `predict_chunk_fn`; the HVP stays per step).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> pe = eom.predicted_error(lambda p: 0.5 * jnp.sum(p**2), jnp.ones(2), 0.1, 10, order=1)
    >>> round(float(pe.predicted[-1]), 4)  # `compare` measures 0.0018 on this run
    0.0018
    """
    check_loss(loss, params0)
    lr = check_lr(lr)
    order = check_order(order)
    check_order(order + 1)
    every = check_predict_every(predict_every)
    run = predict_chunk_fn(loss, (order,), float(weight_decay), "auto", every)
    grid = save_grid(num_steps, record_every)
    carry = (params0, (tree_zeros_like(params0),), jnp.zeros(1))
    prev, norms, bounds = 0, [np.zeros(1)], [np.zeros(1)]
    for part, n in chunks(grid):
        counts = jnp.asarray(np.diff(np.concatenate([[prev], part])))
        carry, (_, e, b) = run(*carry, lr, counts, jnp.asarray(int(prev)))
        norms.append(np.asarray(e)[:n, 0])
        bounds.append(np.asarray(b)[:n, 0])
        prev = part[n - 1]
    return PredictedError(
        order, float(lr), grid[1:], np.concatenate(norms)[1:], np.concatenate(bounds)[1:]
    )
