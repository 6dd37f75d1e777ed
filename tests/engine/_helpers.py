"""Shared test problems and brute-force references for the engine tests.

Everything here is deliberately *independent* of the engine: the references are built from dense
`jax.hessian` / `jax.jacfwd` tensors of the flattened loss (small dimensions only), so a test that
compares the engine against them checks the matrix-free code against plain linear algebra.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# ---------------------------------------------------------------------------------------------
# Comparisons


def flat(tree) -> jax.Array:
    """All leaves of a pytree as one flat float64 vector."""
    return ravel_pytree(tree)[0]


def rel_err(got, want) -> float:
    """‖got − want‖ / ‖want‖ over whole pytrees (flattened)."""
    got, want = flat(got), flat(want)
    return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(x)), np.log(np.asarray(y)), 1)[0])


# ---------------------------------------------------------------------------------------------
# Problems


def spd_quadratic(rng: np.random.Generator, d: int, lam_min: float = 0.2, lam_max: float = 1.0):
    """`(loss, A, b)` for L(θ) = ½θᵀAθ − bᵀθ with a random SPD A, spectrum in [lam_min, lam_max]."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lams = np.linspace(lam_min, lam_max, d)
    A = jnp.asarray((q * lams) @ q.T)
    A = 0.5 * (A + A.T)
    b = jnp.asarray(rng.standard_normal(d))

    def loss(theta):
        return 0.5 * theta @ (A @ theta) - b @ theta

    return loss, A, b


def nested_params() -> dict:
    """A nested dict/tuple pytree with 7 scalar parameters in leaves of different shapes."""
    return {
        "w": jnp.array([0.3, -0.5]),
        "layer": (
            {"u": jnp.array(0.7)},
            jnp.array([[0.2, 0.1], [-0.4, 0.5]]),
        ),
    }


def nested_loss(params) -> jax.Array:
    """A smooth non-polynomial loss of `nested_params()` (few primitives, so it compiles fast).

    Every derivative order is non-zero (log-cosh, sine), so ∇³L and higher contribute.
    """
    w = params["w"]
    u = params["layer"][0]["u"]
    z = params["layer"][1] @ w + u
    return jnp.sum(jnp.log(jnp.cosh(z))) + 0.5 * jnp.vdot(w, w) + 0.3 * jnp.sin(w[0] * u)


def mlp_params(key) -> dict:
    """An MLP-like pytree (one tanh hidden layer, 2 → 3 → 1), 13 parameters."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "hidden": {"W": jax.random.normal(k1, (2, 3)), "b": 0.5 * jax.random.normal(k2, (3,))},
        "out": {"w": jax.random.normal(k3, (3,)), "b": 0.5 * jax.random.normal(k4, ())},
    }


def mlp_loss_fn(key) -> Callable:
    """Half the summed squared error of the MLP on 4 fixed random samples (few primitives: the
    order-4 reference recursion is dispatched eagerly and its cost scales with them)."""
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (4, 2))
    y = jax.random.normal(ky, (4,))

    def loss(p):
        r = jnp.tanh(x @ p["hidden"]["W"] + p["hidden"]["b"]) @ p["out"]["w"] + p["out"]["b"] - y
        return 0.5 * jnp.vdot(r, r)

    return loss


_WAVE_A = jnp.array([1.0, 0.6, 0.3])
_WAVE_C = jnp.array([1.0, 2.0, -1.0])


def wave_loss(theta: jax.Array) -> jax.Array:
    """L(θ) = ½ Σ a_i θ_i² + 0.3 sin(c·θ): 3 parameters, O(1) curvature, every derivative non-zero,
    and few primitives, so the ODE solver compiles quickly around its order-4 EoM field."""
    return 0.5 * jnp.vdot(_WAVE_A * theta, theta) + 0.3 * jnp.sin(jnp.vdot(_WAVE_C, theta))


WAVE_THETA0 = jnp.array([1.0, 0.4, -0.6])

#: One quadratic shared by every test module (the compiled ODE solvers are cached per loss
#: object, so sharing it saves a compile per order): d = 5, spectrum of A in [0.2, 1].
QUAD_LOSS, QUAD_A, QUAD_B = spd_quadratic(np.random.default_rng(123), d=5)
QUAD_THETA0 = jnp.asarray(np.random.default_rng(124).standard_normal(5))


def quad_minimizer() -> jax.Array:
    return jnp.linalg.solve(QUAD_A, QUAD_B)


def lotka_volterra(x: jax.Array) -> jax.Array:
    """A non-gradient field: F(x, y) = (x(1 − y/2), y(x/2 − 1)) (its Jacobian is not symmetric)."""
    return jnp.stack([x[0] * (1.0 - 0.5 * x[1]), x[1] * (0.5 * x[0] - 1.0)])


# ---------------------------------------------------------------------------------------------
# Brute-force references (dense derivative tensors of the flattened function)


def flat_loss(loss: Callable, params):
    """`(f, v0)`: the loss as a function of the flat parameter vector, and θ flattened."""
    v0, unravel = ravel_pytree(params)
    return (lambda v: loss(unravel(v))), v0


def brute_parts(loss: Callable, params) -> dict:
    """Dense-tensor pieces at θ (flat): g, Hg, H²g and ∇³L[g, g] (jit this: eager is slow)."""
    f, v = flat_loss(loss, params)
    g = jax.grad(f)(v)
    H = jax.hessian(f)(v)
    T = jax.jacfwd(jax.hessian(f))(v)  # T[i, j, k] = ∂³f / ∂v_i ∂v_j ∂v_k
    return {"g": g, "Hg": H @ g, "HHg": H @ (H @ g), "Tgg": jnp.einsum("ijk,j,k->i", T, g, g)}


def brute_xi12(loss: Callable, params) -> tuple[jax.Array, jax.Array]:
    """Flat ξ_1 = ½Hg and ξ_2 = ⅓H²g + (1/12)∇³L[g, g] from dense derivative tensors."""
    parts = brute_parts(loss, params)
    return 0.5 * parts["Hg"], parts["HHg"] / 3.0 + parts["Tgg"] / 12.0


def brute_field_terms(F: Callable, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """F_1, F_2, F_3 of explicit Euler for a general field, from dense Jacobians (THEORY.md §2).

    F_1 = −½F′F, F_2 = ⅓F′F′F + (1/12)F″(F,F),
    F_3 = −¼F′F′F′F − (1/12)F′F″(F,F) − (1/12)F″(F,F′F).
    """
    f = F(x)
    J = jax.jacfwd(F)(x)  # J[i, j] = ∂F_i/∂x_j
    K = jax.jacfwd(jax.jacfwd(F))(x)  # K[i, j, k] = ∂²F_i/∂x_j∂x_k

    def d2(u, v):
        return jnp.einsum("ijk,j,k->i", K, u, v)

    Jf = J @ f
    F1 = -0.5 * Jf
    F2 = J @ Jf / 3.0 + d2(f, f) / 12.0
    F3 = -0.25 * J @ (J @ Jf) - J @ d2(f, f) / 12.0 - d2(f, Jf) / 12.0
    return F1, F2, F3


def one_d_xi(L: Callable, x: float) -> tuple[float, float, float, float]:
    """The 1-D closed forms ξ_1 … ξ_4 of THEORY.md §2 from the derivatives of a scalar L."""
    ds = [L]
    for _ in range(5):
        ds.append(jax.grad(ds[-1]))
    derivs = jax.jit(lambda y: [d(y) for d in ds[1:]])(jnp.asarray(x, jnp.float64))
    g, h, t, q, p = (float(d) for d in derivs)
    xi1 = g * h / 2
    xi2 = (g**2 * t + 4 * g * h**2) / 12
    xi3 = g * h * (2 * g * t + 3 * h**2) / 12
    xi4 = (
        144 * h**4 * g + 174 * g**2 * h**2 * t + 6 * g**3 * t**2 - 2 * g**3 * h * q - g**4 * p
    ) / 720
    return xi1, xi2, xi3, xi4


# ---------------------------------------------------------------------------------------------
# B-series schedules (pure Python)


BULLET = ()


def check_schedule_accounts(sched, combos) -> None:
    """Terms + bundles + the fused pair of a B-series `sched` (`eom.engine._bseries.Schedule`)
    reproduce `combos` = (F_1, …, F_N) exactly. Trees are sorted tuples of children (• = ())."""
    order = len(combos)
    known = set(sched.vectors) | {BULLET}
    for n in range(1, order + 1):
        got: dict = {}
        for tau, c in sched.terms[n - 1]:
            assert tau in known
            got[tau] = got.get(tau, 0) + c
        for k, group in sched.bundles[n - 1]:
            for sigma, c in group:
                assert sigma in known  # bundled children are evaluated before use
                tau = tuple(sorted((BULLET,) * k + (sigma,)))
                got[tau] = got.get(tau, 0) + c
        if sched.fuse is not None and n == order:
            top = (BULLET,) * order
            partner = tuple(sorted((BULLET,) * (order - 2) + ((BULLET,),)))
            got[partner] = sched.fuse * got[top]
        assert got == {t: c for t, c in combos[n - 1].items() if c != 0}, n
    # Every child of every evaluated tree is itself evaluated first (topological order).
    seen = {BULLET}
    for tau in sched.vectors:
        assert all(c in seen for c in tau), tau
        seen.add(tau)
