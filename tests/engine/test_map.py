"""`eom.engine.modified_terms_of_map`: the modified field of any near-identity map (THEORY.md §7).

References: the plain recursion (`modified_terms_reference`, nested jvps of closures) for Euler
maps; the §7 recursion with d-terms (`modified_terms_of_map_reference`) for a map with d_j ≠ 0
for j ≥ 2; the exact linear case F(x) = Mx at order 6 (F_n = (−1)^n M^{n+1}x/(n+1)); the
closed-form field of an affine map (A = log(M)/h, a = A(M − I)^{-1}c, scipy.linalg.logm).

Tolerances: the fast path (log of the iterated map) and the references agree to rounding; the
alternating weights of the log series cost a few digits at high order (measured ≤ 3e-14 relative
at order 4, see the report), so 1e-12 leaves margin while any wrong coefficient (≥ 1/720
relative) fails by orders of magnitude.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import eom
from eom.engine._bseries import modified_terms_bseries
from eom.engine._map import modified_terms_of_map_reference
from eom.engine._modified import euler_step, modified_terms_reference

from ._helpers import loglog_slope, lotka_volterra, rel_err

X0 = jnp.array([1.3, 0.7])


def test_euler_map_equals_plain_recursion_orders_1_to_3():
    step = euler_step(lotka_volterra)
    fast = jax.jit(lambda x: eom.engine.modified_terms_of_map(step, x, 3))(X0)
    ref = jax.jit(lambda x: modified_terms_reference(lotka_volterra, x, 3))(X0)
    assert len(fast) == 4
    assert rel_err(fast[0], lotka_volterra(X0)) <= 1e-15  # F_0 = d_1 = F exactly
    for n in range(1, 4):
        assert rel_err(fast[n], ref[n - 1]) <= 1e-12, n


def test_euler_map_order_4_equals_tree_expansion_and_modified_terms():
    """Order 4 against the B-series path (itself tested against the plain recursion in
    test_bseries.py; the plain recursion at order 4 alone compiles for ~10 s)."""
    step = euler_step(lotka_volterra)
    fast = jax.jit(lambda x: eom.engine.modified_terms_of_map(step, x, 4))(X0)
    trees = jax.jit(lambda x: modified_terms_bseries(lotka_volterra, x, 4))(X0)
    public = jax.jit(lambda x: eom.modified_terms(lotka_volterra, x, 4))(X0)
    for n in range(1, 5):
        assert rel_err(fast[n], trees[n]) <= 1e-12, n
        assert rel_err(public[n - 1], trees[n]) <= 1e-12, n


def test_order_6_linear_field_exact():
    """x + hMx = exp(h log(I + hM)/h) x, so F_n(x) = (−1)^n M^{n+1}x/(n+1) for any square M."""
    M = jnp.array([[-0.6, 0.9, 0.0], [-0.2, -0.4, 0.5], [0.3, 0.0, -0.8]])  # non-normal
    y = jnp.array([0.4, -1.1, 0.8])
    terms = jax.jit(lambda x: eom.modified_terms(lambda z: M @ z, x, 6))(y)
    Mk = M
    for n in range(1, 7):
        Mk = M @ Mk
        assert rel_err(terms[n - 1], (-1) ** n * Mk @ y / (n + 1)) <= 1e-12, n


def _two_field_map(x, h):
    """Euler on Lotka–Volterra then on a second, non-commuting field, each of size h/2:
    d_2 = ¼ G′F ≠ 0, so the d-terms of the §7 recursion are exercised."""

    def G(z):
        return jnp.stack([jnp.sin(z[1]), -z[0] * z[1]])

    x = x + 0.5 * h * lotka_volterra(x)
    return x + 0.5 * h * G(x)


def test_general_map_equals_section7_recursion():
    """Fast path vs the plain §7 recursion with d-terms (order 2: order 3 of the reference
    alone compiles for ~30 s)."""
    fast = jax.jit(lambda x: eom.engine.modified_terms_of_map(_two_field_map, x, 2))(X0)
    ref = jax.jit(lambda x: modified_terms_of_map_reference(_two_field_map, x, 2))(X0)
    for n in range(3):
        assert rel_err(fast[n], ref[n]) <= 1e-12, n
    assert float(jnp.linalg.norm(fast[1])) > 0.1  # a non-trivial first term


def test_pytree_state():
    """Dict states work and agree with the flat state."""

    def lv_tree(s):
        out = lotka_volterra(jnp.stack([s["a"], s["b"]]))
        return {"a": out[0], "b": out[1]}

    state = {"a": X0[0], "b": X0[1]}
    tree = jax.jit(lambda s: eom.engine.modified_terms_of_map(euler_step(lv_tree), s, 2))(state)
    flat = jax.jit(lambda x: eom.engine.modified_terms_of_map(euler_step(lotka_volterra), x, 2))(
        X0
    )
    for n in range(3):
        got = jnp.stack([tree[n]["a"], tree[n]["b"]])
        assert rel_err(got, flat[n]) <= 1e-15, n


# Two non-commuting 2×2 quadratics L_i = ½xᵀA_ix − b_iᵀx; one "epoch" is a step on L_1 then
# one on L_2, each of size h/2: an affine map x ↦ Mx + c.
A1 = np.array([[1.0, 0.3], [0.3, 0.5]])
A2 = np.array([[0.4, -0.2], [-0.2, 1.2]])
B1 = np.array([0.5, -1.0])
B2 = np.array([-0.3, 0.8])
P = jnp.array([0.7, -0.4])


def _affine_step(x, h):
    x = x - 0.5 * h * (jnp.asarray(A1) @ x - jnp.asarray(B1))
    return x - 0.5 * h * (jnp.asarray(A2) @ x - jnp.asarray(B2))


def _exact_field(h):
    I2 = np.eye(2)
    M = (I2 - 0.5 * h * A2) @ (I2 - 0.5 * h * A1)
    c = (I2 - 0.5 * h * A2) @ (0.5 * h * B1) + 0.5 * h * B2
    A = np.real(scipy.linalg.logm(M)) / h
    a = A @ np.linalg.solve(M - I2, c)
    return A @ np.asarray(P) + a


def test_affine_map_converges_to_log_field():
    """The truncated field Σ_{n≤N} h^n F_n differs from the exact A x + a by O(h^{N+1}):
    log-log slope N+1 ± 0.15 over h ∈ [0.05, 0.2] (the series' radius is set by h‖A_i‖ ~ 1,
    so these h are well inside it; ± 0.15 absorbs the next-order term)."""
    assert np.linalg.norm(A1 @ A2 - A2 @ A1) > 0.1  # non-commuting: d_2 has a commutator
    hs = np.array([0.2, 0.14, 0.1, 0.07, 0.05])
    # F_n are the h-independent coefficient fields of the map; the truncation at step h is
    # Σ_{n≤N} h^n F_n.
    terms = [np.asarray(t) for t in jax.jit(
        lambda x: eom.engine.modified_terms_of_map(_affine_step, x, 5))(P)]
    for N in range(5):
        errs = [
            np.linalg.norm(sum(h**n * terms[n] for n in range(N + 1)) - _exact_field(h))
            for h in hs
        ]
        slope = loglog_slope(hs, errs)
        assert abs(slope - (N + 1)) <= 0.15, (N, slope, errs)


@pytest.mark.parametrize("bad", [None, 3])
def test_bad_step_raises(bad):
    with pytest.raises(eom.EomError, match="step must be a callable"):
        eom.engine.modified_terms_of_map(bad, X0, 1)


def test_jet_path_equals_nested_jvp_on_a_softmax_mlp_epoch_map():
    """The Taylor coefficients of the iterates by one jet in a scan equal nested jvps in h on an
    SGD epoch map of a tanh/log-softmax MLP (primitives jet must handle: tanh, logsumexp's
    max and stop_gradient, gathers). Same polynomial arithmetic, different order: 1e-13."""
    from eom.engine._map import _iterates_jet, _taylor_jvp
    from eom.engine._sgd import epoch_step

    rng = np.random.default_rng(0)
    batches = {"x": jnp.asarray(rng.standard_normal((2, 8, 5))),
               "y": jnp.asarray(rng.integers(0, 3, (2, 8)))}
    p0 = {"W1": jnp.asarray(rng.standard_normal((5, 4))) / 3, "b1": jnp.zeros(4),
          "W2": jnp.asarray(rng.standard_normal((4, 3))) / 2, "b2": jnp.zeros(3)}

    def loss(p, b):
        z = jnp.tanh(b["x"] @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        picked = jnp.take_along_axis(z, b["y"][:, None], 1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - picked)

    step = epoch_step(loss, batches)

    def iterates(h):
        y, out = p0, []
        for _ in range(3):
            y = step(y, h)
            out.append(y)
        return tuple(out)

    by_jet = jax.jit(lambda p: _iterates_jet(step, p, 3, 3))(p0)
    by_jvp = jax.jit(lambda: _taylor_jvp(iterates, 3))()
    for j in range(1, 4):
        for i in range(3):
            assert rel_err(by_jet[j][i], by_jvp[j][i]) <= 1e-13, (j, i)
