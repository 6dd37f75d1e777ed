r"""Counter terms of gradient descent and the EoM vector field.

GD $\theta_{k+1} = \theta_k - \eta\nabla L_\lambda(\theta_k)$ is explicit Euler with step $\eta$ on
$F = -\nabla L_\lambda$, where $L_\lambda = L + \tfrac{\lambda}{2}\lVert\theta\rVert^2$ (coupled
weight decay). The counter terms are $\xi_k = -F_k$ (THEORY.md §2), so the order-$N$ EoM is

$$\dot\theta = -\nabla L_\lambda(\theta) - \sum_{k=1}^{N}\eta^k\,\xi_k(\theta).$$

Check values: $\xi_1 = \tfrac12 Hg$, $\xi_2 = \tfrac13H^2g + \tfrac1{12}\nabla^3L[g,g]$.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from .._errors import EomError
from .._tree import check_params, check_precision, tree_add, tree_scale
from ._cache import loss_cache
from ._modified import check_order, modified_field_terms

Loss = Callable[[Any], jax.Array]
Method = Literal["auto", "reference", "bseries"]


def regularized(loss: Loss, weight_decay: float = 0.0) -> Loss:
    r"""$L_\lambda(\theta) = L(\theta) + \tfrac{\lambda}{2}\lVert\theta\rVert^2$ (λ = 0: `loss`)."""
    weight_decay = float(weight_decay)
    if weight_decay < 0:
        raise EomError(f"weight_decay must be ≥ 0, got {weight_decay}.")
    if weight_decay == 0.0:
        return loss

    def loss_wd(params):
        sq = sum(jnp.vdot(p, p) for p in jax.tree.leaves(params))
        return loss(params) + 0.5 * weight_decay * sq

    return loss_wd


def check_loss(loss: Loss, params: PyTree) -> None:
    """Raise a clear `EomError` if `loss(params)` is not a real scalar, or `params` are not
    float64 arrays while JAX's x64 mode is on."""
    check_params(params)
    check_precision(params)
    if not callable(loss):
        raise EomError(
            f"loss must be a callable loss(params) -> scalar, got {type(loss).__name__}."
        )
    try:
        out = jax.eval_shape(loss, params)
    except Exception as exc:  # noqa: BLE001 — re-raised with context
        raise EomError(
            f"calling loss(params) failed: {type(exc).__name__}: {exc}. "
            "Check that params has the structure and shapes your loss expects."
        ) from exc
    shape = getattr(out, "shape", None)
    if shape != ():
        raise EomError(
            f"loss(params) must return a scalar, got shape {shape}; reduce it with a mean or sum."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise EomError(f"loss(params) must return a float, got dtype {out.dtype}.")


def _neg_grad(loss: Loss) -> Callable:
    grad = jax.grad(loss)
    return lambda p: tree_scale(-1.0, grad(p))


def grad_and_terms_fn(
    loss: Loss, order: int, *, method: Method = "auto"
) -> Callable[[PyTree], tuple[PyTree, tuple[PyTree, ...]]]:
    """A function `params -> (∇L, (ξ_1, …, ξ_order))` for an already-regularized loss.

    This is the one place that chooses how counter terms are computed; every other module
    (vector fields, measurements, analyses, the CLI) goes through it.
    """
    order = check_order(order)
    if method == "auto":
        method = _auto_method(order)
    if method == "reference":
        grad = jax.grad(loss)
        fields = modified_field_terms(_neg_grad(loss), order)
        return lambda p: (grad(p), tuple(tree_scale(-1.0, f(p)) for f in fields[1:]))
    if method == "bseries":
        from ._bseries import grad_and_counter_terms

        return lambda p: grad_and_counter_terms(loss, p, order)
    raise EomError(f"unknown method {method!r}; use 'auto', 'reference' or 'bseries'.")


def counter_term_fn(
    loss: Loss, order: int, *, weight_decay: float = 0.0, method: Method = "auto"
) -> Callable[[PyTree], tuple[PyTree, ...]]:
    """A function `params -> (ξ_1, …, ξ_order)` (not jitted; jit it or call inside jit)."""
    fn = grad_and_terms_fn(regularized(loss, weight_decay), order, method=method)
    return lambda p: fn(p)[1]


def _auto_method(order: int) -> str:
    try:
        from . import _bseries  # noqa: F401
    except ImportError:
        return "reference"
    return "bseries"


def counter_terms(
    loss: Loss, params: PyTree, order: int, *, weight_decay: float = 0.0, method: Method = "auto"
) -> tuple[PyTree, ...]:
    r"""The counter terms $(\xi_1(\theta), \dots, \xi_{order}(\theta))$ of GD on `loss`.

    $\xi_k = -F_k$ for $F = -\nabla L_\lambda$ (THEORY.md §2); e.g. $\xi_1 = \tfrac12 H\nabla L$.
    Matrix-free: only `jax.jvp`/`jax.grad` are used, no Hessian is formed.

    **Arguments:**

    - `loss`: scalar function `loss(params)`.
    - `params`: pytree of float arrays, the point θ.
    - `order`: number of terms N ≥ 0.
    - `weight_decay`: coupled weight decay λ (the terms are those of $L_\\lambda$).
    - `method`: `"reference"` (plain recursion), `"bseries"` (shared elementary differentials),
      or `"auto"` (the fastest available). All agree to rounding.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p: jnp.sum(p**2)  # H = 2, g = 2θ: ξ₁ = ½Hg = 2θ, ξ₂ = ⅓H²g = 8θ/3
    >>> xi1, xi2 = eom.counter_terms(loss, jnp.array([1.0]), order=2)
    >>> xi1.tolist(), [round(v, 6) for v in xi2.tolist()]
    ([2.0], [2.666667])
    """
    check_loss(loss, params)
    return counter_term_fn(loss, order, weight_decay=weight_decay, method=method)(params)


def vector_field(
    loss: Loss, lr: float, order: int, *, weight_decay: float = 0.0, method: Method = "auto"
) -> Callable[[PyTree], PyTree]:
    r"""The order-$N$ EoM field $\theta\mapsto-\nabla L_\lambda-\sum_{k\le N}\eta^k\xi_k$.

    `order=0` is gradient flow. The returned function is pure and jit-compatible. It is
    `eom_field` (the one field builder) with the learning rate fixed.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> f = eom.vector_field(lambda p: jnp.sum(p**2), lr=0.1, order=1)
    >>> f(jnp.array([1.0])).tolist()  # -∇L - η ξ₁ = -2 - 0.1·2
    [-2.2]
    """
    lr = check_lr(lr)
    field = eom_field(loss, order, weight_decay, method)
    return lambda params: field(params, lr)


def eom_field(
    loss: Loss, order: int, weight_decay: float = 0.0, method: Method = "auto"
) -> Callable[[PyTree, Any], PyTree]:
    r"""The EoM field as `(params, lr) -> dθ/dt`, lr traced (sweeps over it do not recompile).

    $F_N(\theta; \eta) = -\nabla L_\lambda(\theta) - \sum_{k=1}^{N}\eta^k\xi_k(\theta)$; the only
    place the field is assembled. Cached per loss in a bounded cache (`eom.engine._cache`), so
    jitted callers see the same function object without keeping old losses alive.
    """
    return _field_fn(loss, check_order(order), float(weight_decay), method)


@loss_cache
def _field_fn(loss: Loss, order: int, weight_decay: float, method: str) -> Callable:
    loss_wd = regularized(loss, weight_decay)
    if order == 0:
        grad = jax.grad(loss_wd)
        return lambda p, lr: tree_scale(-1.0, grad(p))
    fn = grad_and_terms_fn(loss_wd, order, method=method)

    def field(p, lr):
        g, xi = fn(p)
        out = tree_scale(-1.0, g)
        for k, term in enumerate(xi, start=1):
            out = tree_add(out, tree_scale(-(lr**k), term))
        return out

    return field


def check_lr(lr: Any) -> float:
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise EomError(f"learning rate must be a positive number, got {lr!r}.") from None
    if not (lr > 0 and jnp.isfinite(lr)):
        raise EomError(f"learning rate must be a positive finite number, got {lr}.")
    return lr
