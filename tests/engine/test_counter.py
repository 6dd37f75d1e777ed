"""Counter terms ξ_k of gradient descent and the EoM vector field (THEORY.md §2).

References are independent of the engine: closed forms (quadratic, one dimension) and dense
`jax.hessian` / `jax.jacfwd` tensors of the flattened loss. Tolerances: the engine is exact up to
rounding, so the only error is float64 round-off amplified by the few dozen operations in a term
(≈1e-15 relative); 1e-12 (quadratic, method agreement) and 1e-10 (brute force with dense
third-derivative tensors, where cancellation in ∇³L[g, g] costs a few more digits) leave ample
margin while any wrong coefficient or missing tree (≥ 1e-3 relative here) fails by many orders.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom

from ._helpers import (
    WAVE_THETA0,
    brute_parts,
    brute_xi12,
    flat,
    flat_loss,
    mlp_loss_fn,
    mlp_params,
    nested_loss,
    nested_params,
    one_d_xi,
    rel_err,
    spd_quadratic,
    wave_loss,
)

METHODS = ["reference", "bseries"]


# ---------------------------------------------------------------------------------------------
# Closed forms


def test_quadratic_closed_form_to_order_6(rng):
    """ξ_k = A^k g/(k+1) exactly for L = ½θᵀAθ − bᵀθ (default method, k = 1…6)."""
    loss, A, b = spd_quadratic(rng, d=6)
    theta = jnp.asarray(rng.standard_normal(6))
    # Inside jit: one compile is much cheaper than eager dispatch of the ~100 sub-terms.
    xi = jax.jit(lambda p: eom.counter_terms(loss, p, 6))(theta)
    assert len(xi) == 6
    v = A @ theta - b
    for k in range(1, 7):
        v = A @ v
        assert rel_err(xi[k - 1], v / (k + 1)) <= 1e-12, k


def test_quadratic_closed_form_reference_and_weight_decay(rng):
    """Reference recursion (order 3: its order-4 cost is spent once, in the MLP agreement test);
    weight decay λ turns A into A + λI (L_λ is quadratic too)."""
    loss, A, b = spd_quadratic(rng, d=5)
    theta = jnp.asarray(rng.standard_normal(5))
    lam = 0.3
    A_lam = A + lam * jnp.eye(5)
    for method, order, wd, M in [("reference", 3, 0.0, A), ("bseries", 3, lam, A_lam)]:
        xi = jax.jit(
            lambda p, order=order, wd=wd, method=method: eom.counter_terms(
                loss, p, order, weight_decay=wd, method=method
            )
        )(theta)
        v = M @ theta - b
        for k in range(1, order + 1):
            v = M @ v
            assert rel_err(xi[k - 1], v / (k + 1)) <= 1e-12, (method, k)


def _one_d_loss(x):
    # Non-polynomial, so every derivative up to L⁽⁵⁾ (needed by ξ_4) is non-zero at x0.
    return jnp.log(jnp.cosh(1.3 * x)) + 0.2 * jnp.sin(x) + 0.1 * x**2


@pytest.mark.parametrize(("method", "order"), [("bseries", 4), ("reference", 3)])
def test_one_d_closed_forms(method, order):
    """ξ_1 … ξ_4 against THEORY.md's 1-D formulas (the reference's ξ_4 is covered by the MLP test,
    which compares it with the B-series ξ_4 checked here)."""
    x0 = 0.7
    want = one_d_xi(_one_d_loss, x0)[:order]
    got = jax.jit(lambda x: eom.counter_terms(_one_d_loss, x, order, method=method))(
        jnp.asarray(x0)
    )
    assert len(got) == order
    for k, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        assert g.shape == ()
        assert abs(float(g) - w) <= 1e-10 * abs(w), (k, float(g), w)


# ---------------------------------------------------------------------------------------------
# Brute force on a nested pytree


@pytest.mark.parametrize("method", METHODS)
def test_brute_force_xi1_xi2_nested_pytree(method):
    """ξ_1 = ½Hg, ξ_2 = ⅓H²g + (1/12)∇³L[g, g] with dense H and ∇³L of the flattened loss."""
    params = nested_params()
    xi1, xi2 = jax.jit(lambda p: eom.counter_terms(nested_loss, p, 2, method=method))(params)
    # Same structure, shapes and dtypes as params.
    for term in (xi1, xi2):
        assert jax.tree.structure(term) == jax.tree.structure(params)
        for a, p in zip(jax.tree.leaves(term), jax.tree.leaves(params), strict=True):
            assert a.shape == p.shape and a.dtype == jnp.float64
    parts = _brute_nested()
    ref1, ref2 = 0.5 * parts["Hg"], parts["HHg"] / 3 + parts["Tgg"] / 12
    assert rel_err(xi1, ref1) <= 1e-10
    assert rel_err(xi2, ref2) <= 1e-10


_BRUTE: dict = {}


def _brute_nested() -> dict:
    """Dense pieces for nested_loss at nested_params() (jitted and memoised: dense third
    derivatives are slow to dispatch eagerly)."""
    if not _BRUTE:
        _BRUTE.update(jax.jit(lambda p: brute_parts(nested_loss, p))(nested_params()))
    return _BRUTE


def test_brute_force_third_derivative_matters():
    """Guard on the test problem: ∇³L[g, g]/12 is a sizeable part of ξ_2 (≥ 1%), so the brute-force
    test above would catch a missing or mis-weighted F″(F, F) tree."""
    parts = _brute_nested()
    xi2 = parts["HHg"] / 3 + parts["Tgg"] / 12
    assert float(jnp.linalg.norm(parts["Tgg"] / 12) / jnp.linalg.norm(xi2)) > 1e-2


def test_xi1_is_quarter_gradient_of_squared_gradient_norm():
    """ξ_1 = ½Hg = ¼∇‖∇L‖² (THEORY.md §2), with the right side from plain reverse mode."""
    params = nested_params()
    (xi1,) = jax.jit(lambda p: eom.counter_terms(nested_loss, p, 1))(params)

    def sq_grad_norm(p):
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(jax.grad(nested_loss)(p)))

    want = jax.tree.map(lambda x: 0.25 * x, jax.jit(jax.grad(sq_grad_norm))(params))
    assert rel_err(xi1, want) <= 1e-12


def test_brute_force_weight_decay():
    """counter_terms(weight_decay=λ) are the terms of L + (λ/2)‖θ‖² (brute force on L_λ)."""
    lam = 0.4
    params = nested_params()

    def loss_wd(p):
        return nested_loss(p) + 0.5 * lam * sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    xi1, xi2 = jax.jit(lambda p: eom.counter_terms(nested_loss, p, 2, weight_decay=lam))(params)
    ref1, ref2 = jax.jit(lambda p: brute_xi12(loss_wd, p))(params)
    assert rel_err(xi1, ref1) <= 1e-10
    assert rel_err(xi2, ref2) <= 1e-10


# ---------------------------------------------------------------------------------------------
# Method agreement, pytrees, jit


def test_reference_and_bseries_agree_on_mlp():
    """The fast B-series path reproduces the reference recursion on an MLP, orders 1–4.

    Also: the order-2 call returns exactly the first two terms of the order-4 call.
    """
    key = jax.random.PRNGKey(1)
    loss, params = mlp_loss_fn(key), mlp_params(jax.random.PRNGKey(2))
    # Eager: compiling the order-4 reference recursion costs more than dispatching it.
    ref = eom.counter_terms(loss, params, 4, method="reference")
    fast = jax.jit(lambda p: eom.counter_terms(loss, p, 4, method="bseries"))(params)
    for k in range(4):
        assert float(jnp.linalg.norm(flat(ref[k]))) > 1e-6  # non-trivial terms
        assert rel_err(fast[k], ref[k]) <= 1e-12, k + 1
    low = jax.jit(lambda p: eom.counter_terms(loss, p, 2, method="bseries"))(params)
    for k in range(2):
        assert rel_err(low[k], fast[k]) <= 1e-13


def test_pytree_and_flat_vector_agree():
    """The same loss seen through the nested pytree or its flattened vector gives the same ξ_k."""
    params = nested_params()
    f, v = flat_loss(nested_loss, params)
    tree_terms = jax.jit(lambda p: eom.counter_terms(nested_loss, p, 2))(params)
    flat_terms = jax.jit(lambda p: eom.counter_terms(f, p, 2))(v)
    for a, b in zip(tree_terms, flat_terms, strict=True):
        assert b.shape == v.shape
        # Identical operations up to reshapes: agreement to rounding.
        assert rel_err(a, b) <= 1e-13


def test_jit_gives_the_same_numbers():
    """Eager and jitted calls agree (a 3-parameter loss keeps the eager dispatch cheap)."""
    theta = WAVE_THETA0
    eager = eom.counter_terms(wave_loss, theta, 2)
    jitted = jax.jit(lambda p: eom.counter_terms(wave_loss, p, 2))(theta)
    for a, b in zip(eager, jitted, strict=True):
        assert rel_err(b, a) <= 1e-13  # XLA may fuse/reorder: agreement to rounding
    field = eom.vector_field(wave_loss, 0.05, 2)
    assert rel_err(jax.jit(field)(theta), field(theta)) <= 1e-13


# ---------------------------------------------------------------------------------------------
# Vector field


def test_vector_field_is_minus_gradient_minus_counter_terms():
    params, lr = nested_params(), 0.07
    xi = jax.jit(lambda p: eom.counter_terms(nested_loss, p, 2))(params)
    g = jax.grad(nested_loss)(params)
    want = jax.tree.map(lambda g_, x1, x2: -g_ - lr * x1 - lr**2 * x2, g, *xi)
    got = jax.jit(eom.vector_field(nested_loss, lr, 2))(params)
    assert jax.tree.structure(got) == jax.tree.structure(params)
    assert rel_err(got, want) <= 1e-13
    # order 0 is gradient flow, exactly.
    gf = eom.vector_field(nested_loss, lr, 0)(params)
    np.testing.assert_array_equal(flat(gf), -flat(g))


def test_vector_field_weight_decay():
    """vector_field(weight_decay=λ) is the field of L_λ = L + (λ/2)‖θ‖², including the ξ_k."""
    params, lr, lam = nested_params(), 0.05, 0.3

    def loss_wd(p):
        return nested_loss(p) + 0.5 * lam * sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    got = jax.jit(eom.vector_field(nested_loss, lr, 2, weight_decay=lam))(params)
    want = jax.jit(eom.vector_field(loss_wd, lr, 2))(params)
    assert rel_err(got, want) <= 1e-13
    # ... and differs from the undecayed field by more than rounding (the test can fail).
    plain = jax.jit(eom.vector_field(nested_loss, lr, 2))(params)
    assert rel_err(plain, want) > 1e-3


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("order", "match"),
    [
        (-1, "order must be ≥ 0"),
        (eom.MAX_ORDER + 1, "maximum"),
        (1.5, "integer"),
        (True, "integer"),
    ],
)
def test_bad_order(order, match):
    params = nested_params()
    with pytest.raises(ValueError, match=match):
        eom.counter_terms(nested_loss, params, order)
    with pytest.raises(ValueError, match=match):
        eom.vector_field(nested_loss, 0.1, order)


def test_max_order_is_accepted():
    """MAX_ORDER itself is valid (evaluating order 8 is too slow for the default run)."""
    assert eom.engine.check_order(eom.MAX_ORDER) == eom.MAX_ORDER
    assert eom.engine.check_order(0) == 0


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf"), "fast", None])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="learning rate"):
        eom.vector_field(nested_loss, lr, 1)


def test_int_leaves_rejected_with_path():
    params = {"w": jnp.array([1, 2, 3]), "b": jnp.array(0.5)}
    with pytest.raises(ValueError, match=r"\['w'\].*float") as info:
        eom.counter_terms(lambda p: jnp.sum(p["w"]) + p["b"], params, 1)
    assert "asarray" in str(info.value)  # names the fix


def test_non_scalar_loss_rejected():
    params = nested_params()
    with pytest.raises(ValueError, match="scalar.*mean or sum"):
        eom.counter_terms(lambda p: p["w"] ** 2, params, 1)


def test_non_float_loss_and_non_callable_rejected():
    theta = jnp.array([1.0, 2.0])
    with pytest.raises(ValueError, match="float"):
        eom.counter_terms(lambda p: jnp.sum(p > 0), theta, 1)
    with pytest.raises(ValueError, match="callable"):
        eom.counter_terms("loss", theta, 1)


def test_negative_weight_decay_rejected():
    with pytest.raises(ValueError, match="weight_decay"):
        eom.counter_terms(nested_loss, nested_params(), 1, weight_decay=-0.1)


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="method"):
        eom.counter_terms(nested_loss, nested_params(), 1, method="magic")


def test_order_zero_is_empty():
    assert eom.counter_terms(nested_loss, nested_params(), 0) == ()
