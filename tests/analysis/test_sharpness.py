"""Sharpness: matrix-free Lanczos/power eigenvalues against dense `jax.hessian` + `eigvalsh`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from eom import EomError
from eom.analysis import Sharpness, hvp_fn, lambda_max_fn, sharpness

# ---------------------------------------------------------------------------------------------
# Problems and dense references


def quadratic(rng, eigenvalues):
    """L = ½θᵀAθ with A = Q diag(eigenvalues) Qᵀ (known spectrum); returns (loss, θ, A)."""
    d = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (q * np.asarray(eigenvalues)) @ q.T
    A = 0.5 * (A + A.T)
    A_ = jnp.asarray(A)

    def loss(theta):
        return 0.5 * theta @ (A_ @ theta)

    return loss, jnp.asarray(rng.standard_normal(d)), A


def tanh_net(rng):
    """A 4-16-3 tanh MLP with squared loss (4 leaves, 131 parameters) at a random point."""
    X = jnp.asarray(rng.standard_normal((24, 4)))
    Y = jnp.asarray(rng.standard_normal((24, 3)))
    params = {
        "W1": jnp.asarray(rng.standard_normal((4, 16)) / 2.0),
        "b1": jnp.asarray(0.1 * rng.standard_normal(16)),
        "W2": jnp.asarray(rng.standard_normal((16, 3)) / 4.0),
        "b2": jnp.asarray(0.1 * rng.standard_normal(3)),
    }

    def loss(p):
        h = jnp.tanh(X @ p["W1"] + p["b1"])
        return 0.5 * jnp.mean(jnp.sum((h @ p["W2"] + p["b2"] - Y) ** 2, axis=1))

    return loss, params


def dense_hessian(loss, params) -> np.ndarray:
    """The explicit Hessian of the flattened loss (jitted: one compile instead of many)."""
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda v: loss(unravel(v))))(flat))


@pytest.fixture(scope="module")
def net():
    """One network (one loss object) for the whole module, so the HVP compiles once."""
    loss, params = tanh_net(np.random.default_rng(1))
    return loss, params, dense_hessian(loss, params)


def rel(a, b) -> float:
    return abs(float(a) - float(b)) / abs(float(b))


# ---------------------------------------------------------------------------------------------
# Lanczos against eigvalsh


def test_lanczos_quadratic_top_and_bottom(rng):
    lams = np.concatenate([[-4.0, -2.5], np.linspace(-1.0, 1.0, 54), [2.0, 2.6, 3.0]])
    loss, theta, A = quadratic(rng, lams)
    ev = np.linalg.eigvalsh(A)
    s = sharpness(loss, theta, 3, which="both")
    assert s.converged
    # tol=1e-10 bounds each eigenvalue error by the residual (≤ 1e-10·‖H‖): 1e-8 relative is
    # the acceptance tolerance, with a margin of 100.
    np.testing.assert_allclose(s.largest, ev[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(s.smallest, ev[:3], rtol=1e-8)
    np.testing.assert_allclose(s.eigenvalues, [3.0, 2.6, 2.0, -4.0, -2.5, -1.0], rtol=1e-8)
    assert s.lambda_max == pytest.approx(3.0, rel=1e-8) and s.lambda_min == pytest.approx(-4.0)
    # Separated ends converge well before the Krylov space fills R^d (else the test is vacuous).
    assert s.num_iters < len(lams)


def test_lanczos_tanh_network_top3(net):
    loss, params, H = net
    ev = np.linalg.eigvalsh(H)[::-1]
    s = sharpness(loss, params, 3)
    assert s.converged and s.num_hvps == s.num_iters
    # The acceptance criterion: relative 1e-8 on the top eigenvalue and on the k-th (k = 3).
    assert rel(s.largest[0], ev[0]) < 1e-8
    assert rel(s.largest[2], ev[2]) < 1e-8
    np.testing.assert_allclose(s.largest, ev[:3], rtol=1e-8)
    assert s.num_iters < H.shape[0]
    # The reported residuals are true residuals ‖Hy − θy‖ (Lanczos estimate under full
    # reorthogonalization), checked with the dense product; both are ≲ 1e-10·λ_max (the
    # tolerance), so they are compared in absolute terms at that scale.
    for i in range(3):
        y = s.largest_vectors[i]
        true_res = np.linalg.norm(H @ y - s.largest[i] * y)
        assert true_res <= 2e-10 * ev[0] and abs(true_res - s.residuals[i]) < 1e-10 * ev[0]
        assert np.linalg.norm(y) == pytest.approx(1.0, abs=1e-12)
    # The eigenvector as a params pytree has params' structure and is an eigenvector.
    v = s.vector(0)
    assert jax.tree.structure(v) == jax.tree.structure(params)
    vf = np.asarray(ravel_pytree(v)[0])
    np.testing.assert_allclose(H @ vf, s.lambda_max * vf, atol=1e-8 * ev[0])


def test_weight_decay_shifts_spectrum(net):
    loss, params, _ = net
    s0, s1 = sharpness(loss, params), sharpness(loss, params, weight_decay=0.3)
    # H(L + λ/2‖θ‖²) = H + λI; both values are accurate to ~1e-10 relative.
    assert s1.lambda_max - s0.lambda_max == pytest.approx(0.3, abs=1e-8)


def test_warm_start_uses_fewer_hvps(net, rng):
    loss, params, _ = net
    first = sharpness(loss, params)
    moved = jax.tree.map(lambda x: x + 1e-3 * jnp.asarray(rng.standard_normal(x.shape)), params)
    cold = sharpness(loss, moved)
    warm = sharpness(loss, moved, v0=first)
    warm_flat = sharpness(loss, moved, v0=first.warm_start)
    warm_tree = sharpness(loss, moved, v0=first.vector(0))
    assert cold.converged and warm.converged
    assert warm.lambda_max == pytest.approx(cold.lambda_max, rel=1e-9)
    assert warm.num_hvps < cold.num_hvps
    assert warm_flat.num_hvps == warm.num_hvps == warm_tree.num_hvps
    # The HVP is compiled once per loss: every call above (and in the other tests) shared it.
    assert hvp_fn(loss, 0.0)._cache_size() == 1


def test_exact_eigenvector_start_breakdown(rng):
    """Starting on an eigenvector makes the Krylov space invariant after one step."""
    loss, theta, A = quadratic(rng, np.linspace(0.1, 2.0, 20))
    ev, V = np.linalg.eigh(A)
    s = sharpness(loss, theta, v0=V[:, -1])
    assert s.converged and s.num_hvps == 1 and s.lambda_max == pytest.approx(ev[-1], rel=1e-12)
    # For k = 3 the iteration must restart from a fresh direction instead of stopping.
    s3 = sharpness(loss, theta, 3, v0=V[:, -1])
    assert s3.converged
    np.testing.assert_allclose(s3.largest, ev[::-1][:3], rtol=1e-8)


def test_power_method(rng):
    # Dominant magnitude at the negative end: power iteration must shift to find λ_max = 2.
    lams = np.concatenate([[-5.0], np.linspace(-1.0, 1.0, 10), [1.5, 2.0]])
    loss, theta, _ = quadratic(rng, lams)
    s = sharpness(loss, theta, method="power", tol=1e-9)
    # Residual 1e-9·|λ| bounds the eigenvalue error by 2e-9 (and by res²/gap ≪ that).
    assert s.converged and s.lambda_max == pytest.approx(2.0, rel=1e-8)
    lo = sharpness(loss, theta, which="smallest", method="power", tol=1e-9)
    assert lo.lambda_min == pytest.approx(-5.0, rel=1e-8)


def test_lambda_max_fn_jittable_and_warm(net, rng):
    loss, params, H = net
    lam_true = np.linalg.eigvalsh(H)[-1]
    fn = jax.jit(lambda_max_fn(loss, 20))
    cold = jnp.asarray(rng.standard_normal(H.shape[0]))
    lam, v = fn(params, cold)
    # Rayleigh–Ritz: never above λ_max (up to rounding); 20 cold steps on this 131-dimensional
    # problem with a separated top eigenvalue reach better than 1e-5 (see the docstring).
    assert float(lam) <= lam_true * (1 + 1e-12)
    assert rel(lam, lam_true) < 1e-5
    assert np.linalg.norm(np.asarray(v)) == pytest.approx(1.0, abs=1e-10)
    # Tracking: a slightly moved point, warm-started from v, with the same compiled function.
    moved = jax.tree.map(lambda x: x + 1e-3 * jnp.asarray(rng.standard_normal(x.shape)), params)
    lam2_true = np.linalg.eigvalsh(dense_hessian(loss, moved))[-1]
    lam2, _ = fn(moved, v)
    assert rel(lam2, lam2_true) < 1e-10  # warm start: the start angle is ~1e-3, 20 steps suffice
    # A zero vector means "cold start" (the default direction) without a second trace.
    lam0, _ = fn(params, jnp.zeros(H.shape[0]))
    assert float(lam0) <= lam_true * (1 + 1e-12) and rel(lam0, lam_true) < 1e-5
    assert fn._cache_size() == 1  # tracking along a run does not retrace
    assert lambda_max_fn(loss, 20) is lambda_max_fn(loss, 20)


def test_lambda_max_fn_small_dimension_starts(rng):
    """num_iters > d is capped at d; None, pytree and eigenvector (breakdown) starts all work."""
    loss_flat, theta, A = quadratic(rng, np.array([0.5, 1.0, 3.0]))

    def loss(p):  # the same quadratic on a two-leaf pytree
        return loss_flat(jnp.concatenate([p["a"], p["b"]]))

    params = {"a": theta[:2], "b": theta[2:]}
    fn = jax.jit(lambda_max_fn(loss, 20))
    # With m = d = 3 steps the Krylov space is all of R^3: exact up to rounding.
    assert float(fn(params, None)[0]) == pytest.approx(3.0, rel=1e-12)
    # A pytree start on the *smallest* eigenvector: the Krylov space is invariant after one
    # step, and only the breakdown restart lets the iteration reach λ_max.
    u = jnp.asarray(np.linalg.eigh(A)[1][:, 0])
    lam, _ = fn(params, {"a": u[:2], "b": u[2:]})
    assert float(lam) == pytest.approx(3.0, rel=1e-12)


def test_result_type_and_errors(net):
    loss, params, H = net
    d = H.shape[0]
    s = sharpness(loss, params, 2)
    assert isinstance(s, Sharpness) and s.smallest.size == 0 and s.eigenvalues.shape == (2,)
    with pytest.raises(EomError, match="λ_min"):
        s.lambda_min
    with pytest.raises(EomError, match="Ritz vector"):
        s.vector(5)
    with pytest.raises(EomError, match="k must be"):
        sharpness(loss, params, 0)
    with pytest.raises(EomError, match="exceeds"):
        sharpness(loss, params, d + 1)
    with pytest.raises(EomError, match="which"):
        sharpness(loss, params, which="top")
    with pytest.raises(EomError, match="method"):
        sharpness(loss, params, method="arnoldi")
    with pytest.raises(EomError, match="power"):
        sharpness(loss, params, 2, method="power")
    with pytest.raises(EomError, match="v0"):
        sharpness(loss, params, v0=jnp.ones(7))
    with pytest.raises(EomError, match="nonzero"):
        sharpness(loss, params, v0=jnp.zeros(d))
    with pytest.raises(EomError, match="num_iters"):
        lambda_max_fn(loss, 0)
    # Not converging within max_iters is reported, not hidden.
    short = sharpness(loss, params, 3, max_iters=4)
    assert not short.converged and short.num_hvps == 4 and np.all(short.residuals > 0)
