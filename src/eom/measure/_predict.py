r"""The leading-order prediction of the global discretization error (THEORY.md §3).

With $e_k = \theta^{(N)}(k\eta) - \theta_k$ the order-$N$ EoM solution minus the GD iterate,

$$\hat e_{k+1} = (I - \eta H(\theta_k))\,\hat e_k + \eta^{N+2}\,\xi_{N+1}(\theta_k),
  \qquad \hat e_0 = 0,$$

evaluated along the GD path with one Hessian–vector product and one $\xi_{N+1}$ per step (both
matrix-free). The simple bound, valid when $0 \preceq \eta H(\theta_k) \preceq 2I$ so that
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

from .._tree import tree_norm, tree_zeros_like
from ..engine import check_loss, check_lr, check_order, grad_and_terms_fn, regularized, save_grid
from ..engine._cache import loss_cache
from ..engine._trajectory import chunks


def gd_prediction_step(
    grad_wd: Callable,
    terms_fn: Callable | None,
    orders: tuple[int, ...],
    theta: PyTree,
    ehat: tuple,
    bound: Float[Array, " n"],
    lr,
):
    r"""One GD step $\theta \to \theta - \eta\nabla L_\lambda(\theta)$, advancing each order's
    predicted error $\hat e$ and bound $b$ (see module docstring). Returns the new triple.

    `terms_fn` is `eom.engine.grad_and_terms_fn(L_λ, max(orders) + 1)` (gives ∇L_λ and every
    ξ_{N+1} in one evaluation), or `None` when no prediction is wanted.
    """
    if terms_fn is None:
        g = grad_wd(theta)
    else:
        g, xi = terms_fn(theta)
        new_e, new_b = [], []
        for i, n in enumerate(orders):
            hv = jax.jvp(grad_wd, (theta,), (ehat[i],))[1]
            scale = lr ** (n + 2)
            new_e.append(
                jax.tree.map(lambda e, h, x: e - lr * h + scale * x, ehat[i], hv, xi[n])
            )
            new_b.append(bound[i] + scale * tree_norm(xi[n]))
        ehat = tuple(new_e)
        bound = jax.numpy.stack(new_b) if new_b else bound
    theta = jax.tree.map(lambda p, gi: p - lr * gi, theta, g)
    return theta, ehat, bound


@loss_cache
def predict_chunk_fn(loss, orders, weight_decay, method):
    """`run(theta, ehat, bound, lr, counts) -> ((θ, ê, b) at the end, (θ_k, ‖ê_k‖, b_k) stacked)`
    over the recorded steps of one chunk (`counts` GD steps between recorded points)."""
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
) -> PredictedError:
    r"""Predict $\lVert\theta^{(N)}(k\eta) - \theta_k\rVert$ without solving the EoM.

    Runs GD and the recursion $\hat e_{k+1} = (I-\eta H)\hat e_k + \eta^{N+2}\xi_{N+1}$ (one HVP and
    one $\xi_{N+1}$ per step), recording $\lVert\hat e_k\rVert$ and the bound every `record_every`
    steps. Use `eom.compare(..., predict=True)` to get it next to the measured error.

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
    run = predict_chunk_fn(loss, (order,), float(weight_decay), "auto")
    grid = save_grid(num_steps, record_every)
    carry = (params0, (tree_zeros_like(params0),), jnp.zeros(1))
    prev, norms, bounds = 0, [np.zeros(1)], [np.zeros(1)]
    for part, n in chunks(grid):
        counts = jnp.asarray(np.diff(np.concatenate([[prev], part])))
        carry, (_, e, b) = run(*carry, lr, counts)
        norms.append(np.asarray(e)[:n, 0])
        bounds.append(np.asarray(b)[:n, 0])
        prev = part[n - 1]
    return PredictedError(
        order, float(lr), grid[1:], np.concatenate(norms)[1:], np.concatenate(bounds)[1:]
    )
