r"""Closed forms on a quadratic $L(\theta) = \tfrac12\theta^\top A\theta - b^\top\theta$, A SPD.

With $\theta^* = A^{-1}b$, $g = \nabla L = A(\theta - \theta^*)$ and
$A = V\,\mathrm{diag}(\lambda)\,V^\top$ (THEORY.md §2), writing $\delta = \theta - \theta^*$:

| object | closed form |
|---|---|
| GD iterate | $\delta_k = (I - \eta A)^k\delta_0$ |
| gradient flow | $\delta(t) = e^{-tA}\delta_0$ |
| counter term | $\xi_k = A^kg/(k+1)$ |
| exact EoM field | $\dot\theta = \frac1\eta\log(I - \eta A)A^{-1}g$ (real iff $\eta\lambda < 1$) |
| exact EoM solution | $\delta(t) = (I - \eta A)^{t/\eta}\delta_0$ (= GD at $t = k\eta$) |
| order-N EoM | $\dot\theta = -M_N\delta$, $M_N = \sum_{k=0}^{N}\eta^kA^{k+1}/(k+1)$ |
| order-N solution | $\delta(t) = e^{-tM_N}\delta_0$ |

All are evaluated in float64 numpy on the eigenbasis of A — exact up to rounding — and serve as
analytic references for tests. Vectors are 1-D arrays of length d; a 1-D array of times (or
steps) returns one row per time.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._errors import EomError
from ..engine import check_lr

Vector = Float[ArrayLike, " d"]


def _eig(A: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of a symmetric positive definite A (raises EomError otherwise)."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise EomError(f"A must be a square matrix, got shape {A.shape}.")
    scale = max(float(np.max(np.abs(A))), np.finfo(np.float64).tiny)
    if np.max(np.abs(A - A.T)) > 1e-12 * scale:
        raise EomError("A must be symmetric; pass (A + A.T) / 2.")
    lam, V = np.linalg.eigh(0.5 * (A + A.T))
    if lam[0] <= 0:
        raise EomError(
            f"A must be positive definite (its smallest eigenvalue is {lam[0]:.3g}); the closed "
            "forms need the minimizer θ* = A⁻¹b. Add a multiple of the identity to A."
        )
    return lam, V


def _vec(x: ArrayLike, d: int, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (d,):
        raise EomError(f"{name} must be a vector of length {d}, got shape {x.shape}.")
    return x


def _b(b: ArrayLike | None, d: int) -> np.ndarray:
    return np.zeros(d) if b is None else _vec(b, d, "b")


def _evolve(A, b, theta0, factors: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """θ* + V diag(factors(λ)) Vᵀ (θ0 − θ*), where `factors` returns shape (..., d)."""
    lam, V = _eig(A)
    d = len(lam)
    b = _b(b, d)
    star = V @ ((V.T @ b) / lam)
    c = V.T @ (_vec(theta0, d, "theta0") - star)
    return star + (factors(lam) * c) @ V.T


def quadratic_loss(A: ArrayLike, b: ArrayLike | None = None) -> Callable[[Array], Array]:
    r"""The loss $\theta \mapsto \tfrac12\theta^\top A\theta - b^\top\theta$ as a JAX function."""
    A_ = jnp.asarray(A, dtype=jnp.float64)
    b_ = jnp.zeros(A_.shape[0], jnp.float64) if b is None else jnp.asarray(b, dtype=jnp.float64)

    def loss(theta):
        return 0.5 * theta @ (A_ @ theta) - b_ @ theta

    return loss


def quadratic_minimizer(A: ArrayLike, b: ArrayLike | None = None) -> np.ndarray:
    r"""$\theta^* = A^{-1}b$."""
    lam, V = _eig(A)
    return V @ ((V.T @ _b(b, len(lam))) / lam)


def gd_closed_form(
    A: ArrayLike, b: ArrayLike | None, theta0: Vector, lr: float, steps: ArrayLike
) -> np.ndarray:
    r"""GD iterates $\theta_k = \theta^* + (I - \eta A)^k(\theta_0 - \theta^*)$ (any η > 0).

    `steps`: an integer k or a 1-D array of them (then one row per k).
    """
    lr = check_lr(lr)
    k = np.asarray(steps)
    if not np.issubdtype(k.dtype, np.integer) or np.any(k < 0):
        raise EomError(f"steps must be non-negative integers, got {steps!r}.")
    return _evolve(A, b, theta0, lambda lam: np.power(1.0 - lr * lam, k[..., None]))


def gf_closed_form(A: ArrayLike, b: ArrayLike | None, theta0: Vector, t: ArrayLike) -> np.ndarray:
    r"""Gradient flow $\theta(t) = \theta^* + e^{-tA}(\theta_0 - \theta^*)$."""
    t = np.asarray(t, dtype=np.float64)
    return _evolve(A, b, theta0, lambda lam: np.exp(-t[..., None] * lam))


def counter_term_closed_form(
    A: ArrayLike, b: ArrayLike | None, theta: Vector, k: int
) -> np.ndarray:
    r"""The k-th counter term $\xi_k = A^k g/(k+1)$, $g = A\theta - b$ (k ≥ 0; $\xi_0 = g$)."""
    A = np.asarray(A, dtype=np.float64)
    d = A.shape[0]
    g = A @ _vec(theta, d, "theta") - _b(b, d)
    return np.linalg.matrix_power(A, int(k)) @ g / (int(k) + 1)


def _check_radius(lam: np.ndarray, lr: float) -> None:
    x = lr * float(lam[-1])
    if x >= 1.0:
        raise EomError(
            f"the exact EoM is not real: η·λ_max = {x:.4g} ≥ 1, so log(I − ηA) has a complex "
            "eigenvalue (GD flips sign along the top eigenvector, which no real flow does). "
            f"Use lr < 1/λ_max = {1.0 / float(lam[-1]):.4g}, or a truncated order instead."
        )


def exact_eom_field(A: ArrayLike, b: ArrayLike | None, theta: Vector, lr: float) -> np.ndarray:
    r"""The all-orders EoM field $\frac1\eta\log(I - \eta A)A^{-1}g$ at θ.

    On the eigenbasis each component of g is multiplied by $\log(1 - \eta\lambda)/(\eta\lambda)$.
    Raises `EomError` if some $\eta\lambda \ge 1$ (the logarithm is not real).
    """
    lr = check_lr(lr)
    lam, V = _eig(A)
    _check_radius(lam, lr)
    d = len(lam)
    g = np.asarray(A, dtype=np.float64) @ _vec(theta, d, "theta") - _b(b, d)
    x = lr * lam
    return V @ (np.log1p(-x) / x * (V.T @ g))


def exact_eom_solution(
    A: ArrayLike, b: ArrayLike | None, theta0: Vector, lr: float, t: ArrayLike
) -> np.ndarray:
    r"""Exact EoM solution $\theta(t) = \theta^* + (I - \eta A)^{t/\eta}(\theta_0 - \theta^*)$.

    Equals the GD iterate at $t = k\eta$. Raises `EomError` if some $\eta\lambda \ge 1$.
    """
    lr = check_lr(lr)
    _check_radius(_eig(A)[0], lr)
    t = np.asarray(t, dtype=np.float64)
    return _evolve(A, b, theta0, lambda lam: np.exp(t[..., None] / lr * np.log1p(-lr * lam)))


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise EomError(f"order must be a non-negative integer, got {order!r}.")
    return int(order)


def truncated_eom_rates(lam: ArrayLike, lr: float, order: int) -> np.ndarray:
    r"""Eigenvalues of $M_N$: $m_N(\lambda) = \sum_{k=0}^{N}\eta^k\lambda^{k+1}/(k+1)$."""
    lam = np.asarray(lam, dtype=np.float64)
    return sum(lr**k * lam ** (k + 1) / (k + 1) for k in range(_check_order(order) + 1))


def truncated_eom_field(
    A: ArrayLike, b: ArrayLike | None, theta: Vector, lr: float, order: int
) -> np.ndarray:
    r"""The order-N EoM field $-M_N(\theta - \theta^*) = -g - \sum_{k=1}^N\eta^k A^kg/(k+1)$."""
    lr = check_lr(lr)
    lam, V = _eig(A)
    d = len(lam)
    b = _b(b, d)
    c = V.T @ (_vec(theta, d, "theta") - V @ ((V.T @ b) / lam))
    return -V @ (truncated_eom_rates(lam, lr, order) * c)


def truncated_eom_solution(
    A: ArrayLike, b: ArrayLike | None, theta0: Vector, lr: float, order: int, t: ArrayLike
) -> np.ndarray:
    r"""Solution of the order-N EoM: $\theta(t) = \theta^* + e^{-tM_N}(\theta_0 - \theta^*)$.

    Real for every η (order 0 is gradient flow); it matches GD only where the series converges.
    """
    lr = check_lr(lr)
    order = _check_order(order)
    t = np.asarray(t, dtype=np.float64)
    return _evolve(
        A, b, theta0, lambda lam: np.exp(-t[..., None] * truncated_eom_rates(lam, lr, order))
    )
