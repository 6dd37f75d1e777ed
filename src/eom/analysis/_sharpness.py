r"""Sharpness: extreme Hessian eigenvalues from matrix-free Hessian–vector products.

The Hessian $H = \nabla^2 L_\lambda(\theta)$ is never formed. Every method here only applies it,

$$Hv = \frac{d}{d\varepsilon}\nabla L_\lambda(\theta + \varepsilon v)\Big|_{\varepsilon=0}
\qquad(\text{one `jax.jvp` of `jax.grad`}),$$

in the flattened parameter space $\mathbb R^d$ (`jax.flatten_util.ravel_pytree`).

- `sharpness` runs the Lanczos iteration with full reorthogonalization (float64, on the host) until
  the requested Ritz pairs $(\theta_i, y_i)$ have residuals $\lVert Hy_i - \theta_iy_i\rVert \le$
  `tol`$\cdot\max_j|\theta_j|$. For a symmetric matrix each eigenvalue estimate is then within
  the residual of a true eigenvalue (and within residual²/gap once converged).
- `lambda_max_fn` returns a jittable fixed-iteration Lanczos for measurement loops.

The ratio $\eta\lambda_{\max}$ decides whether the EoM holds (THEORY.md §6; `eom.analysis.regime`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._errors import EomError
from .._memo import loss_cache
from ..engine import check_loss, regularized

Which = Literal["largest", "smallest", "both"]

#: Relative size of a Lanczos off-diagonal below which the Krylov space is taken as invariant
#: (a breakdown): the iteration then restarts from a random vector orthogonal to the basis.
BREAKDOWN_TOL = 1e-12


@dataclasses.dataclass(frozen=True, eq=False)
class Sharpness:
    """Extreme eigenpairs of the Hessian at one point (result of `eom.analysis.sharpness`).

    - `largest`: the k largest (algebraic) eigenvalue estimates, descending (empty if not
      requested); `largest_vectors`: the matching unit Ritz vectors as rows of a flat `(k, d)`
      float64 array; `largest_residuals`: their residual norms $\\lVert Hy - \\theta y\\rVert$.
    - `smallest`, `smallest_vectors`, `smallest_residuals`: the same for the k smallest (most
      negative) eigenvalues, ascending (empty unless `which` was "smallest" or "both").
    - `num_hvps`: Hessian–vector products used; `num_iters`: iterations; `converged`: whether
      every requested residual met the tolerance; `method`: "lanczos" or "power".

    Warm start the next call with `v0=result` (or `v0=result.warm_start`).
    """

    largest: np.ndarray
    largest_vectors: np.ndarray = dataclasses.field(repr=False)
    largest_residuals: np.ndarray
    smallest: np.ndarray
    smallest_vectors: np.ndarray = dataclasses.field(repr=False)
    smallest_residuals: np.ndarray
    num_hvps: int
    num_iters: int
    converged: bool
    method: str
    unravel: Callable = dataclasses.field(repr=False, compare=False)

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue estimate $\\lambda_{\\max}$."""
        if self.largest.size == 0:
            raise EomError(
                "λ_max was not computed; call sharpness(..., which='largest' or 'both')."
            )
        return float(self.largest[0])

    @property
    def lambda_min(self) -> float:
        """The smallest (most negative) eigenvalue estimate $\\lambda_{\\min}$."""
        if self.smallest.size == 0:
            raise EomError(
                "λ_min was not computed; call sharpness(..., which='smallest' or 'both')."
            )
        return float(self.smallest[0])

    @property
    def eigenvalues(self) -> np.ndarray:
        """All requested estimates: `largest` (descending) followed by `smallest` (ascending)."""
        return np.concatenate([self.largest, self.smallest])

    @property
    def residuals(self) -> np.ndarray:
        """Residual norms in the order of `eigenvalues`."""
        return np.concatenate([self.largest_residuals, self.smallest_residuals])

    @property
    def warm_start(self) -> np.ndarray:
        """A flat start vector for the next call: the sum of all computed Ritz vectors."""
        return np.concatenate([self.largest_vectors, self.smallest_vectors]).sum(axis=0)

    def vector(self, i: int = 0, which: Literal["largest", "smallest"] = "largest") -> PyTree:
        """The `i`-th Ritz vector of the `which` end as a params pytree (unit norm)."""
        vecs = self.largest_vectors if which == "largest" else self.smallest_vectors
        if which not in ("largest", "smallest") or not 0 <= i < len(vecs):
            raise EomError(
                f"no Ritz vector ({i}, {which!r}); this result holds {len(self.largest)} largest "
                f"and {len(self.smallest)} smallest."
            )
        return self.unravel(jnp.asarray(vecs[i]))


# --------------------------------------------------------------------------------------------
# Hessian–vector products (compiled once per loss)


@loss_cache
def hvp_fn(loss: Callable, weight_decay: float = 0.0) -> Callable:
    """A jitted `(params, v_flat) -> H v_flat` for $L_\\lambda$ (cached on the loss's identity).

    `v_flat` is a flat vector of length d (any float dtype; cast to the parameters' dtype); the
    result is flat in the parameters' dtype. Reusing one loss object along a run means the
    product is traced and compiled once.
    """
    grad = jax.grad(regularized(loss, weight_decay))

    @jax.jit
    def hvp(params, v):
        flat, unravel = ravel_pytree(params)
        tangent = unravel(v.astype(flat.dtype))
        return ravel_pytree(jax.jvp(grad, (params,), (tangent,))[1])[0]

    return hvp


# --------------------------------------------------------------------------------------------
# Host-side Lanczos with full reorthogonalization


def _orthogonalize(w: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Remove the span of Q's rows from w (classical Gram–Schmidt, twice: 'twice is enough')."""
    if len(Q) == 0:
        return w
    for _ in range(2):
        w = w - Q.T @ (Q @ w)
    return w


def _select(theta: np.ndarray, k: int, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ascending Ritz values for the largest (descending) and smallest (ascending)."""
    m = len(theta)
    top = np.arange(m - 1, m - 1 - min(k, m), -1) if which in ("largest", "both") else []
    bottom = np.arange(min(k, m)) if which in ("smallest", "both") else []
    return np.asarray(top, dtype=int), np.asarray(bottom, dtype=int)


def _lanczos(
    matvec: Callable[[np.ndarray], np.ndarray],
    v0: np.ndarray,
    k: int,
    which: str,
    tol: float,
    max_iters: int,
    restart: Callable[[int], np.ndarray],
):
    d = v0.size
    m = min(max_iters, d)
    need = min(k if which != "both" else 2 * k, d)
    Q = np.zeros((m + 1, d))
    alpha, beta = np.zeros(m), np.zeros(m)
    Q[0] = v0 / np.linalg.norm(v0)
    converged, j = False, 0
    for j in range(m):  # noqa: B007 — j is used after the loop
        w = np.asarray(matvec(Q[j]), dtype=np.float64)
        alpha[j] = Q[j] @ w
        w = _orthogonalize(w, Q[: j + 1])
        b = float(np.linalg.norm(w))
        T = np.diag(alpha[: j + 1]) + np.diag(beta[:j], 1) + np.diag(beta[:j], -1)
        theta, S = np.linalg.eigh(T)
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        res = b * np.abs(S[-1])
        top, bottom = _select(theta, k, which)
        sel = np.concatenate([top, bottom])
        if j + 1 >= need and np.all(res[sel] <= tol * scale):
            converged = True
            break
        if j + 1 == m:
            break
        if b <= BREAKDOWN_TOL * scale:  # invariant subspace: continue from a fresh direction
            w = _orthogonalize(restart(j), Q[: j + 1])
            b_new = float(np.linalg.norm(w))
            if b_new == 0.0:
                break
            Q[j + 1], beta[j] = w / b_new, 0.0
        else:
            Q[j + 1], beta[j] = w / b, b
    vectors = S.T @ Q[: j + 1]  # rows: Ritz vectors for ascending theta
    return theta, vectors, res, j + 1, converged


def _power(
    matvec: Callable[[np.ndarray], np.ndarray], v0: np.ndarray, which: str, tol: float,
    max_iters: int,
):
    """Shifted power iteration for one extreme eigenvalue (largest or smallest algebraic)."""
    count = 0

    def run(v, shift):
        nonlocal count
        v = v / np.linalg.norm(v)
        rho, res, ok = 0.0, np.inf, False
        while count < max_iters:
            hv = np.asarray(matvec(v), dtype=np.float64)
            count += 1
            rho = float(v @ hv)
            res = float(np.linalg.norm(hv - rho * v))
            if res <= tol * max(abs(rho), np.finfo(np.float64).tiny):
                ok = True
                break
            w = hv - shift * v
            nw = np.linalg.norm(w)
            if nw == 0.0:
                ok = True
                break
            v = w / nw
        return rho, v, res, ok

    # Phase 1: the eigenvalue of largest magnitude. If it sits at the wrong end, shift by it so
    # that the wanted end becomes the one of largest magnitude (H - μI has the same vectors).
    rho, v, res, ok = run(v0, 0.0)
    if (which == "largest" and rho < 0) or (which == "smallest" and rho > 0):
        rho, v, res, ok = run(v0, rho)
    return rho, v, res, count, ok


def _flat_start(v0: Any, params: PyTree, d: int) -> np.ndarray | None:
    if v0 is None:
        return None
    if isinstance(v0, Sharpness):
        v0 = v0.warm_start
    if hasattr(v0, "ndim") and getattr(v0, "ndim", None) == 2 and v0.shape[1] == d:
        v0 = np.asarray(v0).sum(axis=0)  # a block of previous vectors
    if hasattr(v0, "shape") and tuple(v0.shape) == (d,):
        flat = np.asarray(v0, dtype=np.float64)
    else:
        try:
            flat_v, _ = ravel_pytree(v0)
            same = jax.tree.structure(v0) == jax.tree.structure(params)
        except Exception:  # noqa: BLE001 — reported below
            same, flat_v = False, None
        if not same or flat_v.size != d:
            raise EomError(
                f"v0 must be a flat vector of length {d}, a pytree shaped like params, a (m, {d}) "
                "block, or a previous Sharpness result."
            )
        flat = np.asarray(flat_v, dtype=np.float64)
    if not np.all(np.isfinite(flat)) or not np.any(flat):
        raise EomError("v0 must be finite and nonzero; pass v0=None for a random start.")
    return flat


def _check_sharpness_args(k, which, method, tol, max_iters, d: int) -> int:
    """Validate `sharpness`'s options; returns `max_iters` with its default filled in."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise EomError(f"k must be a positive integer, got {k!r}.")
    if which not in ("largest", "smallest", "both"):
        raise EomError(f"which must be 'largest', 'smallest' or 'both', got {which!r}.")
    if method not in ("lanczos", "power"):
        raise EomError(f"method must be 'lanczos' or 'power', got {method!r}.")
    if not (tol > 0):
        raise EomError(f"tol must be positive, got {tol!r}.")
    if k > d:
        raise EomError(f"k={k} exceeds the number of parameters d={d}; use k ≤ {d}.")
    if method == "power" and (k != 1 or which == "both"):
        raise EomError(
            "method='power' computes one eigenvalue (k=1, which='largest' or 'smallest'); "
            "use method='lanczos' for more."
        )
    if max_iters is None:
        max_iters = min(d, max(100, 20 * int(k))) if method == "lanczos" else 2000
    if int(max_iters) < 1:
        raise EomError(f"max_iters must be ≥ 1, got {max_iters}.")
    return int(max_iters)


def sharpness(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    k: int = 1,
    *,
    which: Which = "largest",
    method: Literal["lanczos", "power"] = "lanczos",
    tol: float = 1e-10,
    max_iters: int | None = None,
    v0: Any = None,
    key: jax.Array | None = None,
    weight_decay: float = 0.0,
) -> Sharpness:
    r"""The `k` extreme eigenvalues of the Hessian $H = \nabla^2 L_\lambda(\theta)$, matrix-free.

    Runs Lanczos with full reorthogonalization on $v \mapsto Hv$ (HVPs only; the Hessian is
    never formed) in the flattened float64 parameter space, stopping when every requested Ritz
    pair $(\theta_i, y_i)$ has $\lVert Hy_i - \theta_iy_i\rVert \le$ `tol`$\cdot\max_j|\theta_j|$
    (the residual is the Lanczos estimate $|\beta_j s_{j,i}|$, exact up to rounding under full
    reorthogonalization). Then $|\theta_i - \lambda| \le \lVert r_i\rVert$ for some eigenvalue
    $\lambda$ of $H$ (and $\le \lVert r_i\rVert^2/\mathrm{gap}$).

    **Arguments:**

    - `loss`, `params`: the scalar loss and the point θ (a pytree of float arrays).
    - `k`: number of eigenvalues at each requested end.
    - `which`: `"largest"` (algebraic, λ_max first), `"smallest"` (most negative first), `"both"`.
    - `method`: `"lanczos"`, or `"power"` (shifted power iteration; k = 1 only; slow when the
      top two eigenvalues are close — a fallback and a cross-check).
    - `tol`: relative residual tolerance. `max_iters`: iteration cap (default
      `min(d, max(100, 20k))` for Lanczos, 2000 for power). If reached, `converged` is False
      and the residuals say how good the estimates are.
    - `v0`: warm start — a previous `Sharpness`, its `warm_start`, a flat vector of length d, or
      a params-shaped pytree. Starting from the previous top eigenvector when tracking along a
      run cuts the number of HVPs.
    - `key`: PRNG key for the random start (default `PRNGKey(0)`: deterministic).
    - `weight_decay`: coupled weight decay λ; the eigenvalues are those of $L_\lambda$ (shifted
      by λ).

    The HVP is jitted once per `(loss, weight_decay)` (`hvp_fn`), so repeated calls along a run
    with the same loss object do not recompile.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> A = jnp.array([1.0, 3.0])
    >>> s = eom.sharpness(lambda p: 0.5 * jnp.sum(A * p**2), jnp.ones(2))  # H = diag(1, 3)
    >>> [round(v, 10) for v in s.largest.tolist()], s.converged
    ([3.0], True)
    """
    check_loss(loss, params)
    flat, unravel = ravel_pytree(params)
    d = int(flat.size)
    max_iters = _check_sharpness_args(k, which, method, tol, max_iters, d)
    key = jax.random.PRNGKey(0) if key is None else key

    hvp = hvp_fn(loss, float(weight_decay))
    dtype = flat.dtype

    def matvec(v: np.ndarray) -> np.ndarray:
        return np.asarray(hvp(params, jnp.asarray(v, dtype=dtype)), dtype=np.float64)

    def restart(j: int) -> np.ndarray:
        return np.asarray(jax.random.normal(jax.random.fold_in(key, j + 1), (d,)), np.float64)

    start = _flat_start(v0, params, d)
    if start is None:
        start = np.asarray(jax.random.normal(key, (d,)), np.float64)

    empty_vals, empty_vecs = np.zeros(0), np.zeros((0, d))
    if method == "power":
        rho, v, res, count, ok = _power(matvec, start, which, float(tol), int(max_iters))
        one = (np.array([rho]), v[None, :] / np.linalg.norm(v), np.array([res]))
        none = (empty_vals, empty_vecs, empty_vals)
        lo, hi = (one, none) if which == "smallest" else (none, one)
        return Sharpness(*hi, *lo, count, count, ok, "power", unravel)

    theta, vectors, res, iters, ok = _lanczos(
        matvec, start, int(k), which, float(tol), int(max_iters), restart
    )
    top, bottom = _select(theta, int(k), which)
    return Sharpness(
        theta[top], vectors[top], res[top],
        theta[bottom], vectors[bottom], res[bottom],
        iters, iters, bool(ok), "lanczos", unravel,
    )


# --------------------------------------------------------------------------------------------
# Jittable fixed-iteration Lanczos for measurement loops


def _pseudo_random(d: int, seed, dtype) -> jax.Array:
    """A cheap deterministic vector with entries in (-1/2, 1/2) (a sine hash; compiles fast).

    Only used as a start or restart direction, which merely needs to be generic.
    """
    i = jnp.arange(1, d + 1, dtype=dtype)
    x = jnp.sin(i * 12.9898 + (seed + 1) * 78.233) * 43758.5453
    return x - jnp.floor(x) - 0.5


def _lanczos_fixed(hvp: Callable, v0: jax.Array, m: int):
    """`m` Lanczos steps with full reorthogonalization in JAX; returns (Ritz values asc, V)."""
    d = v0.shape[0]
    dtype = v0.dtype
    Q = jnp.zeros((m + 1, d), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    alpha = jnp.zeros(m, dtype)
    beta = jnp.zeros(m, dtype)

    def orth(w, Q):
        w = w - Q.T @ (Q @ w)
        return w - Q.T @ (Q @ w)

    def body(j, state):
        Q, alpha, beta = state
        q = Q[j]
        w = hvp(q)
        a = jnp.vdot(q, w)
        w = orth(w, Q)  # rows beyond j are still zero, so this is against q_0..q_j
        b = jnp.linalg.norm(w)
        alpha = alpha.at[j].set(a)
        scale = jnp.max(jnp.abs(alpha))
        r = orth(_pseudo_random(d, j.astype(dtype), dtype), Q)
        broke = b <= BREAKDOWN_TOL * scale
        safe_b = jnp.where(broke, 1.0, b)
        q_next = jnp.where(broke, r / jnp.linalg.norm(r), w / safe_b)
        Q = Q.at[j + 1].set(q_next)
        beta = beta.at[j].set(jnp.where(broke, 0.0, b))
        return Q, alpha, beta

    Q, alpha, beta = jax.lax.fori_loop(0, m, body, (Q, alpha, beta))
    off = beta[: m - 1]
    T = jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, S = jnp.linalg.eigh(T)
    return theta, S.T @ Q[:m]


@loss_cache
def _lambda_max_fn(loss: Callable, num_iters: int, weight_decay: float) -> Callable:
    grad = jax.grad(regularized(loss, weight_decay))

    def fn(params, v0=None):
        flat, unravel = ravel_pytree(params)
        d = flat.size
        m = min(num_iters, d)

        def hvp(v):
            tangent = unravel(v.astype(flat.dtype))
            return ravel_pytree(jax.jvp(grad, (params,), (tangent,))[1])[0].astype(v.dtype)

        default = _pseudo_random(d, -1.0, flat.dtype)
        if v0 is None:
            start = default
        else:
            start = v0 if getattr(v0, "shape", None) == (d,) else ravel_pytree(v0)[0]
            start = start.astype(flat.dtype)
            # A zero warm start (e.g. an initial placeholder) falls back to the default vector.
            start = jnp.where(jnp.linalg.norm(start) > 0, start, default)
        theta, V = _lanczos_fixed(hvp, start, m)
        return theta[-1], V[-1]

    return fn


def lambda_max_fn(
    loss: Callable[[PyTree], Float[Array, ""]], num_iters: int = 20, *, weight_decay: float = 0.0
) -> Callable[[PyTree, Any], tuple[Float[Array, ""], Float[Array, " d"]]]:
    r"""A jittable `(params, v0) -> (λ_max, v)` for use inside a measurement loop.

    Runs exactly `num_iters` (capped at d) Lanczos steps with full reorthogonalization from `v0`
    (a flat vector of length d or a params-shaped pytree; `None` or a zero vector means a fixed
    random start) and returns the top Ritz value and its unit Ritz vector `v` (flat, in the
    parameters' dtype) — pass `v` back as the next `v0` to track λ_max along a run.

    **Accuracy.** The Ritz value never exceeds λ_max (Rayleigh–Ritz; up to rounding), and by the
    Kaniel–Paige bound $0 \le \lambda_1 - \theta_1 \le (\lambda_1 - \lambda_d)
    \big(\tan\angle(v_0, u_1)/T_{m-1}(1 + 2\gamma)\big)^2$ with $\gamma = (\lambda_1 -
    \lambda_2)/(\lambda_2 - \lambda_d)$ and $T$ the Chebyshev polynomial. Measured on small tanh
    networks (131 parameters, top gaps of 4–20 %) from the default start: relative error
    1e-4–1e-3 with 10 steps and ≤ 3e-12 with 20. Warm starts shrink $\tan\angle$ and the error
    with it; clustered top spectra (large models) need more steps. For a tolerance-controlled
    value use `sharpness`.

    The function is cached per `(loss, num_iters, weight_decay)` (the `LOSS_CACHE_SIZE` most
    recent), so jitting it repeatedly does not recompile. `v0=None` and an array `v0` are
    different jit signatures: pass a zero vector for a cold start to keep one trace along a run.
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, int | np.integer) or num_iters < 1:
        raise EomError(f"num_iters must be a positive integer, got {num_iters!r}.")
    return _lambda_max_fn(loss, int(num_iters), float(weight_decay))
