"""Convergence orders of the EoM against gradient descent (THEORY.md §3).

- Local: the time-η flow of the order-N EoM misses one GD step by η^{N+2} ξ_{N+1} + O(η^{N+3}).
- Global, at a fixed horizon T = Kη: O(η^{N+1}).
- Quadratic with ηλ_max < 1: every extra order shrinks the error by about ηλ.

Slopes are least-squares fits of log error against log η. The tolerance ±0.15 covers the O(η)
relative correction of the next term (measured: slopes within 0.01 of N+2 / N+1 on these ranges:
1.990, 2.992, 3.993, 4.994, 5.995 locally; 1.005, 2.001, 3.002 globally). A wrong coefficient in
ξ_N leaves an O(η^{N+1}) local error, a slope 1 lower, which fails by far. The ODE solver's own
error is checked to be ≪ the measured error, so the slopes are not solver noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom

from ._helpers import (
    QUAD_LOSS,
    QUAD_THETA0,
    WAVE_THETA0,
    loglog_slope,
    wave_loss,
)

# Tight tolerances: the smallest measured error (order 4, smallest η) is ≈1e-12, while Dopri8 at
# these tolerances is accurate to ≈1e-17 over one step of length η ≤ 0.06 (checked below).
RTOL, ATOL = 1e-13, 1e-15
LOOSE = dict(rtol=1e-11, atol=1e-13)  # same compiled solver (tolerances are traced)


def _gd_step(theta, lr):
    return theta - lr * jax.grad(wave_loss)(theta)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_local_error_order(order):
    """‖Φ_η^{(N)}(θ) − (θ − η∇L(θ))‖ ∝ η^{N+2}: slope N+2 ± 0.15 over η ∈ [0.015, 0.06]."""
    theta = WAVE_THETA0
    etas = np.geomspace(0.015, 0.06, 4)
    errors, noise = [], []
    for lr in etas:
        lr = float(lr)
        end = eom.integrate(wave_loss, theta, lr, 1, order, rtol=RTOL, atol=ATOL).params[-1]
        loose = eom.integrate(wave_loss, theta, lr, 1, order, **LOOSE).params[-1]
        errors.append(float(jnp.linalg.norm(end - _gd_step(theta, lr))))
        noise.append(float(jnp.linalg.norm(end - loose)))
    errors, noise = np.array(errors), np.array(noise)
    # Errors stay far above float64 rounding of θ − ηg (≈1e-16), so the fit sees the EoM.
    assert errors.min() > 1e-13
    # The solver at 100× looser tolerances moves the endpoint by < 1% of the error: the
    # tight solve is far more accurate still, so the slope is not solver noise.
    assert np.all(noise < 1e-2 * errors), noise / errors
    slope = loglog_slope(etas, errors)
    assert abs(slope - (order + 2)) <= 0.15, (order, slope, errors)


@pytest.mark.parametrize("order", [0, 1])
def test_local_error_leading_term(order):
    """The local error *vector* is η^{N+2} ξ_{N+1}(θ) up to a relative O(η) gap."""
    theta, lr = WAVE_THETA0, 0.015
    xi = jax.jit(lambda p: eom.counter_terms(wave_loss, p, order + 1))(theta)[-1]
    end = eom.integrate(wave_loss, theta, lr, 1, order, rtol=RTOL, atol=ATOL).params[-1]
    err = end - _gd_step(theta, lr)
    want = lr ** (order + 2) * xi
    gap = float(jnp.linalg.norm(err - want) / jnp.linalg.norm(want))
    # Next term is η^{N+3} ξ_{N+2} + (flow corrections): relative size ≈ ηλ ≈ 0.03 here.
    assert gap < 0.1, gap


@pytest.mark.parametrize("order", [0, 1, 2])
def test_global_error_order_at_fixed_horizon(order):
    """‖θ^{(N)}(T) − θ_K‖ with T = Kη = 1 fixed falls like η^{N+1} (slope N+1 ± 0.15)."""
    horizon, steps = 1.0, [25, 50, 100, 200]
    etas = horizon / np.array(steps)
    errors = []
    for k in steps:
        lr = horizon / k
        eom_end = eom.integrate(
            wave_loss, WAVE_THETA0, lr, k, order, save_every=k, rtol=RTOL, atol=ATOL
        )
        gd_end = eom.gradient_descent(wave_loss, WAVE_THETA0, lr, k, save_every=k)
        assert float(eom_end.times[-1]) == pytest.approx(horizon, rel=1e-14)
        errors.append(float(jnp.linalg.norm(eom_end.params[-1] - gd_end.params[-1])))
    # Smallest error (order 2, η = 0.005) ≈ 9e-9, far above the solver's ≈1e-13 over T.
    assert min(errors) > 1e-9
    slope = loglog_slope(etas, errors)
    assert abs(slope - (order + 1)) <= 0.15, (order, slope, errors)


def test_quadratic_error_falls_geometrically_with_order():
    """Quadratic, ηλ_max = 0.3 < 1: each order 0 → 1 → 2 → 3 cuts the EoM-vs-GD error by a factor
    ≤ ηλ_max = 0.3. Along eigenvalue λ the order-N error is ∝ (ηλ)^{N+1}/(N+2), so the ratio is a
    weighted mean of ηλ (N+2)/(N+3) < ηλ_max (measured: 0.12, 0.15, 0.18).
    Orders 0 and 2 share their compiled solvers with test_trajectory's closed-form test."""
    lr, steps = 0.3, 20
    gd = eom.gradient_descent(QUAD_LOSS, QUAD_THETA0, lr, steps)
    errors = []
    for order in range(4):
        traj = eom.integrate(QUAD_LOSS, QUAD_THETA0, lr, steps, order, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(traj.steps, gd.steps)
        errors.append(float(jnp.max(jnp.linalg.norm(traj.params - gd.params, axis=-1))))
    errors = np.array(errors)
    # Order 3's error is far above the solver's (rtol 1e-12 over T = 6: ≲1e-10).
    assert errors[-1] > 1e-8
    ratios = errors[1:] / errors[:-1]
    assert np.all(ratios <= 0.3), (errors, ratios)
