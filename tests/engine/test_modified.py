"""`eom.modified_terms` / `eom.modified_field` for general (non-gradient) vector fields.

Explicit Euler x ↦ x + hF(x) is, to O(h^{N+2}) per step, the time-h flow of
F̃ = F + hF_1 + … + h^N F_N (THEORY.md §2). References: dense Jacobians of a 2-D Lotka–Volterra
field (F_1 = −½F′F, F_2 = ⅓F′F′F + (1/12)F″(F,F), F_3 from the tree table), and the exact
linear case F(x) = Mx, where x + hMx = exp(h M̃)x with M̃ = log(I + hM)/h, so
F_n(x) = (−1)^n M^{n+1} x/(n+1) for any square M (here non-normal: not a gradient field).

Tolerances: exact arithmetic up to rounding (≈1e-15 relative); 1e-12 leaves margin while a wrong
coefficient (≥ 1/720 relative) fails by orders of magnitude.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

import eom

from ._helpers import brute_field_terms, loglog_slope, lotka_volterra, rel_err

X0 = jnp.array([1.3, 0.7])

# A non-normal, non-symmetric matrix: F(x) = Mx is not a gradient field.
M = jnp.array([[-0.6, 0.9, 0.0], [-0.2, -0.4, 0.5], [0.3, 0.0, -0.8]])
Y0 = jnp.array([0.4, -1.1, 0.8])


def test_lotka_volterra_brute_force():
    """F_1, F_2, F_3 of a non-gradient field against dense first and second derivatives."""
    terms = jax.jit(lambda x: eom.modified_terms(lotka_volterra, x, 3))(X0)
    want = jax.jit(lambda x: brute_field_terms(lotka_volterra, x))(X0)
    assert len(terms) == 3
    for n, (got, ref) in enumerate(zip(terms, want, strict=True), start=1):
        assert got.shape == X0.shape
        assert rel_err(got, ref) <= 1e-12, n


def test_lotka_volterra_is_not_a_gradient_field():
    """Guard on the test problem: F′ is far from symmetric, so the test above covers a genuinely
    non-gradient field (F″(F, F) and F′F′F would be indistinguishable from ξ's otherwise)."""
    J = jax.jacfwd(lotka_volterra)(X0)
    assert float(jnp.linalg.norm(J - J.T) / jnp.linalg.norm(J)) > 0.1


def test_linear_non_normal_closed_form():
    """F(x) = Mx: F_n = (−1)^n M^{n+1} x/(n+1), n = 1…3 (reference recursion, any field)."""
    terms = jax.jit(lambda y: eom.modified_terms(lambda x: M @ x, y, 3))(Y0)
    v = Y0
    for n in range(1, 4):
        v = M @ v
        want = (-1) ** n * (M @ v) / (n + 1)
        assert rel_err(terms[n - 1], want) <= 1e-12, n


def test_pytree_state_matches_flat_vector():
    """The same field on a dict/tuple state and on its flat vector gives the same terms."""

    def lv_tree(s):
        x = jnp.stack([s["prey"], s["pred"][0]])
        f = lotka_volterra(x)
        return {"prey": f[0], "pred": (f[1],)}

    state = {"prey": X0[0], "pred": (X0[1],)}
    tree_terms = jax.jit(lambda s: eom.modified_terms(lv_tree, s, 2))(state)
    flat_terms = jax.jit(lambda x: eom.modified_terms(lotka_volterra, x, 2))(X0)
    for t, f in zip(tree_terms, flat_terms, strict=True):
        assert jax.tree.structure(t) == jax.tree.structure(state)
        got = jnp.stack([t["prey"], t["pred"][0]])
        np.testing.assert_allclose(got, f, rtol=1e-14, atol=1e-15)


def test_modified_field_is_the_truncated_series():
    h = 0.1
    F1, F2 = eom.modified_terms(lotka_volterra, X0, 2)
    got = eom.modified_field(lotka_volterra, h, 2)(X0)
    want = lotka_volterra(X0) + h * F1 + h**2 * F2
    assert rel_err(got, want) <= 1e-14
    # Order 0 is the field itself.
    np.testing.assert_array_equal(eom.modified_field(lotka_volterra, h, 0)(X0), lotka_volterra(X0))
    assert eom.modified_terms(lotka_volterra, X0, 0) == ()


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_defining_property_linear_field(order):
    """The time-h flow of the truncated modified field misses the Euler step by O(h^{N+2}).

    For the linear field the modified field is linear, x ↦ M̃_N x; its matrix comes from the
    public `modified_field` (a Jacobian, exact for a linear map) and its flow is expm(h M̃_N).
    Slope N+2 ± 0.1 over h ∈ [0.02, 0.08] (next-term correction O(h‖M‖) ≈ 0.05).
    """
    hs = np.geomspace(0.02, 0.08, 4)
    errors = []
    for h in hs:
        h = float(h)
        Mt = jax.jacfwd(eom.modified_field(lambda x: M @ x, h, order))(Y0)
        euler = Y0 + h * (M @ Y0)
        errors.append(float(jnp.linalg.norm(expm(h * Mt) @ Y0 - euler)))
    assert min(errors) > 1e-12  # far above rounding of expm (≈1e-16)
    slope = loglog_slope(hs, errors)
    assert abs(slope - (order + 2)) <= 0.1, (order, slope, errors)


@pytest.mark.parametrize(
    ("order", "match"),
    [(-1, "order must be ≥ 0"), (eom.MAX_ORDER + 1, "maximum"), (2.0, "integer")],
)
def test_bad_order(order, match):
    with pytest.raises(ValueError, match=match):
        eom.modified_terms(lotka_volterra, X0, order)
    with pytest.raises(ValueError, match=match):
        eom.modified_field(lotka_volterra, 0.1, order)
