"""Quadratic closed forms against the engine, and the counter-term series inside/outside its radius.

L = ½θᵀAθ − bᵀθ with a known spectrum. THEORY.md §2: ξ_k = A^k g/(k+1), so the full EoM is
θ̇ = (1/η) log(I − ηA) A⁻¹g, real and convergent iff ηλ < 1 for every eigenvalue.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom import EomError
from eom.analysis import (
    counter_term_closed_form,
    exact_eom_field,
    exact_eom_solution,
    gd_closed_form,
    gf_closed_form,
    quadratic_loss,
    quadratic_minimizer,
    truncated_eom_field,
    truncated_eom_rates,
    truncated_eom_solution,
)
from eom.engine import counter_term_fn

#: The spectrum of A; λ_max = 1 is well separated so the series' rate is cleanly ηλ_max.
LAMS = np.array([0.05, 0.12, 0.3, 1.0])
#: Terms computed once (they do not depend on η) for the convergence tests.
TOP_ORDER = 6


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    d = len(LAMS)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (q * LAMS) @ q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(d)
    theta = rng.standard_normal(d)
    loss = quadratic_loss(A, b)
    xi = jax.jit(counter_term_fn(loss, TOP_ORDER))(jnp.asarray(theta))
    return A, b, theta, loss, [np.asarray(x) for x in xi]


def partial_fields(A, b, theta, xi, lr):
    """The order-N EoM fields −g − Σ_{k≤N} η^k ξ_k for N = 0..TOP_ORDER (engine's terms)."""
    field = -(A @ theta - b)
    out = [field]
    for k, term in enumerate(xi, start=1):
        field = field - lr**k * term
        out.append(field)
    return out


# ---------------------------------------------------------------------------------------------
# Closed forms against the engine


def test_counter_terms_and_vector_field_match_closed_forms(problem):
    A, b, theta, loss, xi = problem
    for k, term in enumerate(xi, start=1):
        # Closed form ξ_k = A^k g/(k+1); the B-series evaluates the same products: rounding only.
        np.testing.assert_allclose(term, counter_term_closed_form(A, b, theta, k), rtol=1e-12,
                                   atol=1e-14)
    lr = 0.7
    for order in (3,):
        got = np.asarray(eom.vector_field(loss, lr, order)(jnp.asarray(theta)))
        np.testing.assert_allclose(got, truncated_eom_field(A, b, theta, lr, order), rtol=1e-12)
    assert quadratic_minimizer(A, b) == pytest.approx(np.linalg.solve(A, b), rel=1e-12)


@pytest.mark.parametrize("lr", [1.5, 1.8])  # ηλ_max = 1.5 (inside GD's stable range, past 1), 1.8
def test_gd_closed_form_matches_gradient_descent(problem, lr):
    A, b, theta, loss, _ = problem
    traj = eom.gradient_descent(loss, jnp.asarray(theta), lr, 30)
    closed = gd_closed_form(A, b, theta, lr, np.arange(31))
    # 30 float64 steps of a contraction: rounding accumulates to ~1e-15; 1e-12 leaves room.
    np.testing.assert_allclose(np.asarray(traj.params), closed, atol=1e-12)
    assert gd_closed_form(A, b, theta, lr, 0) == pytest.approx(theta)


def test_gf_closed_form_matches_integrate_order0(problem):
    A, b, theta, loss, _ = problem
    lr = 0.5
    traj = eom.integrate(loss, jnp.asarray(theta), lr, 20, 0)
    closed = gf_closed_form(A, b, theta, np.asarray(traj.times))
    # Dopri8 at rtol 1e-10, atol 1e-12 over 20 saved points: global error ≲ 1e-9 on O(1) values.
    np.testing.assert_allclose(np.asarray(traj.params), closed, atol=1e-9)


def test_exact_eom_solution_is_gd_at_grid_points(problem):
    A, b, theta, loss, _ = problem
    lr = 0.9  # ηλ_max = 0.9: inside the radius, where the exact EoM is real
    steps = np.arange(41)
    exact = exact_eom_solution(A, b, theta, lr, steps * lr)
    traj = eom.gradient_descent(loss, jnp.asarray(theta), lr, 40)
    # (1 − ηλ)^{t/η} at t = kη is the GD factor (1 − ηλ)^k: only rounding separates them.
    np.testing.assert_allclose(exact, gd_closed_form(A, b, theta, lr, steps), atol=1e-13)
    np.testing.assert_allclose(exact, np.asarray(traj.params), atol=1e-10)
    # It is a flow (semigroup in t) and its velocity is the exact EoM field.
    half = exact_eom_solution(A, b, theta, lr, 0.5 * lr)
    np.testing.assert_allclose(exact_eom_solution(A, b, half, lr, 0.5 * lr), exact[1], atol=1e-13)
    h = 1e-4  # central difference: error O(h²·‖A‖³) ≈ 1e-8, rounding ≈ 1e-12
    deriv = (exact_eom_solution(A, b, theta, lr, h) - exact_eom_solution(A, b, theta, lr, -h)) / (
        2 * h
    )
    np.testing.assert_allclose(deriv, exact_eom_field(A, b, theta, lr), atol=1e-7)


def test_truncated_solution_solves_truncated_field(problem):
    A, b, theta, _, _ = problem
    lr, order, t, h = 0.8, 3, 2.0, 1e-4
    mid = truncated_eom_solution(A, b, theta, lr, order, t)
    fwd = truncated_eom_solution(A, b, theta, lr, order, t + h)
    bwd = truncated_eom_solution(A, b, theta, lr, order, t - h)
    # Central difference of the solution equals the field there (O(h²) ≈ 1e-8 error).
    np.testing.assert_allclose((fwd - bwd) / (2 * h), truncated_eom_field(A, b, mid, lr, order),
                               atol=1e-7)
    # Order 0 is gradient flow; and M_N's eigenvalues are the truncated series of −log(1−x)/η.
    np.testing.assert_allclose(truncated_eom_solution(A, b, theta, lr, 0, t),
                               gf_closed_form(A, b, theta, t), atol=1e-14)
    x = 0.3
    assert truncated_eom_rates(x / lr, lr, 60) == pytest.approx(-np.log1p(-x) / lr, rel=1e-14)


# ---------------------------------------------------------------------------------------------
# The series inside and outside its radius


def test_truncated_fields_converge_inside_radius(problem):
    A, b, theta, _, xi = problem
    lr = 0.6  # ηλ_max = 0.6
    exact = exact_eom_field(A, b, theta, lr)
    fields = partial_fields(A, b, theta, xi, lr)
    err = np.array([np.linalg.norm(f - exact) for f in fields])
    closed = np.array([np.linalg.norm(truncated_eom_field(A, b, theta, lr, n) - exact)
                       for n in range(TOP_ORDER + 1)])
    # The engine's truncated fields reproduce the closed-form truncation errors (errors ≥ 1e-3·‖g‖
    # against rounding ~1e-15).
    np.testing.assert_allclose(err, closed, rtol=1e-9)
    assert np.all(np.diff(err) < 0)
    # Geometric decay at rate → ηλ_max: the top component's tail Σ_{k>N} x^k/(k+1) decays by a
    # factor in [x(N+2)/(N+3), x); the other eigenvalues (≤ 0.3·λ_max) are negligible by N = 4.
    ratios = err[1:] / err[:-1]
    x = lr * LAMS[-1]
    assert np.all(ratios < x)
    assert ratios[-1] > x * (TOP_ORDER + 1) / (TOP_ORDER + 2) * 0.99
    rate = np.exp(np.polyfit(np.arange(4, TOP_ORDER + 1), np.log(err[4:]), 1)[0])
    assert rate == pytest.approx(x, rel=0.15)
    # The flows converge too: one step of the order-N EoM approaches one GD step.
    gd1 = gd_closed_form(A, b, theta, lr, 1)
    flow_err = [np.linalg.norm(truncated_eom_solution(A, b, theta, lr, n, lr) - gd1)
                for n in range(12)]
    assert np.all(np.diff(flow_err) < 0) and flow_err[-1] < 1e-3 * flow_err[0]


def test_truncated_fields_diverge_beyond_radius(problem):
    A, b, theta, _, xi = problem
    lr = 1.5  # ηλ_max = 1.5: GD converges (|1 − ηλ| < 1) but the series does not
    with pytest.raises(EomError, match="not real"):
        exact_eom_field(A, b, theta, lr)
    with pytest.raises(EomError, match="not real"):
        exact_eom_solution(A, b, theta, lr, 1.0)
    fields = partial_fields(A, b, theta, xi, lr)
    increments = np.array([np.linalg.norm(f1 - f0) for f0, f1 in zip(fields, fields[1:])])
    # ‖F_{N+1} − F_N‖ = η^{N+1}‖ξ_{N+1}‖ grows without bound (rate → ηλ_max = 1.5): the partial
    # sums have no limit, so adding orders makes the field worse, not better.
    # On the top eigenvector the ratio of successive increments is x(N+2)/(N+3) → x (the other
    # eigenvalues are ≤ 0.3·λ_max and negligible at N = 6), so the last one lies in (1.2, 1.5).
    assert np.all(np.diff(increments[2:]) > 0)
    assert 1.2 < increments[-1] / increments[-2] < lr * LAMS[-1]
    # No real flow flips a sign: after time η every order's solution misses the GD step by at
    # least (ηλ − 1)·|top component|, however many orders are added.
    lam, V = np.linalg.eigh(A)
    c_top = abs(V[:, -1] @ (theta - quadratic_minimizer(A, b)))
    gd1 = gd_closed_form(A, b, theta, lr, 1)
    for n in range(12):
        miss = np.linalg.norm(truncated_eom_solution(A, b, theta, lr, n, lr) - gd1)
        assert miss >= (lr * lam[-1] - 1.0) * c_top * (1 - 1e-12)


def test_bad_inputs():
    A = np.diag([1.0, 2.0])
    with pytest.raises(EomError, match="symmetric"):
        gf_closed_form(np.array([[1.0, 0.5], [0.0, 1.0]]), None, np.ones(2), 1.0)
    with pytest.raises(EomError, match="positive definite"):
        gd_closed_form(np.diag([1.0, -1.0]), None, np.ones(2), 0.1, 3)
    with pytest.raises(EomError, match="square"):
        gf_closed_form(np.ones((2, 3)), None, np.ones(2), 1.0)
    with pytest.raises(EomError, match="length 2"):
        gf_closed_form(A, None, np.ones(3), 1.0)
    with pytest.raises(EomError, match="non-negative integers"):
        gd_closed_form(A, None, np.ones(2), 0.1, 1.5)
    with pytest.raises(EomError, match="order"):
        truncated_eom_field(A, None, np.ones(2), 0.1, -1)
    with pytest.raises(EomError):
        exact_eom_field(A, None, np.ones(2), -0.1)
    # b = None means b = 0 (θ* = 0).
    assert gf_closed_form(A, None, np.ones(2), 1.0) == pytest.approx(np.exp(-np.array([1.0, 2.0])))
