"""Regime labels, term ratios and breakdown warnings (THEORY.md §6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom import EomError
from eom.analysis import (
    ACCURATE_MAX,
    REGIMES,
    SERIES_RADIUS,
    STABILITY_LIMIT,
    diagnostics_fn,
    first_worsening,
    regime,
    regime_levels,
    regime_warning,
    regimes,
    sharpness,
    term_ratios,
    term_ratios_fn,
    warning_message,
)

# ---------------------------------------------------------------------------------------------
# Labels


def test_threshold_constants_and_exact_switches():
    assert (ACCURATE_MAX, SERIES_RADIUS, STABILITY_LIMIT) == (0.5, 1.0, 2.0)
    assert REGIMES == ("accurate", "marginal", "beyond-series", "unstable")
    for i, edge in enumerate([ACCURATE_MAX, SERIES_RADIUS, STABILITY_LIMIT]):
        # Each band is closed below and open above: the switch happens exactly at the threshold.
        assert regime(np.nextafter(edge, 0.0)) == REGIMES[i]
        assert regime(edge) == REGIMES[i + 1]
    assert regime(0.0) == "accurate" and regime(np.inf) == "unstable"
    assert regime(np.nan) == "unstable"  # a diverged run
    x = np.array([[0.1, 0.7], [1.5, 3.0]])
    np.testing.assert_array_equal(regimes(x), [["accurate", "marginal"],
                                               ["beyond-series", "unstable"]])
    np.testing.assert_array_equal(regime_levels(x), [[0, 1], [2, 3]])
    with pytest.raises(EomError, match="regimes"):
        regime(x)


#: A = diag(DIAG): the spectrum is known, λ_max = 2.5.
DIAG = (0.2, 0.9, 1.7, 2.5)


def _diag_loss(theta):
    return 0.5 * jnp.sum(jnp.asarray(DIAG) * theta**2)


@pytest.mark.parametrize(
    "target, label",
    [(0.49, "accurate"), (0.51, "marginal"), (0.99, "marginal"), (1.01, "beyond-series"),
     (1.99, "beyond-series"), (2.01, "unstable")],
)
def test_regime_on_quadratic_with_known_spectrum(target, label):
    """ηλ_max from a matrix-free sharpness estimate on A = diag(λ) gives the expected label."""
    lr = target / max(DIAG)
    s = sharpness(_diag_loss, jnp.array([1.0, -0.5, 0.3, 0.8]))
    # λ_max is exact to ~1e-10 relative, far inside the 0.01 margin around each threshold.
    assert s.lambda_max == pytest.approx(max(DIAG), rel=1e-10)
    assert regime(lr * s.lambda_max) == label


# ---------------------------------------------------------------------------------------------
# Term ratios


def _closed_form_ratios(A, g, lr, order):
    """r_k = η (k+1)/(k+2) ‖A^{k+1}g‖/‖A^k g‖ from ξ_k = A^k g/(k+1), ξ_0 := g."""
    norms = [np.linalg.norm(np.linalg.matrix_power(A, k) @ g) / (k + 1) for k in range(order + 2)]
    return lr * np.array(norms[1:]) / np.array(norms[:-1])


def test_term_ratios_match_quadratic_closed_form(rng):
    d = 5
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = (q * np.array([0.1, 0.3, 0.5, 1.2, 2.0])) @ q.T
    A = 0.5 * (A + A.T)
    b, theta = rng.standard_normal(d), rng.standard_normal(d)
    A_, b_ = jnp.asarray(A), jnp.asarray(b)

    def loss(t):
        return 0.5 * t @ (A_ @ t) - b_ @ t

    lr, order = 0.3, 3
    r = term_ratios(loss, jnp.asarray(theta), lr, order)
    # Same products as the closed form, evaluated by the B-series: rounding-level agreement.
    np.testing.assert_allclose(r, _closed_form_ratios(A, A @ theta - b, lr, order), rtol=1e-11)
    assert r.shape == (order + 1,)
    # Jittable variant with a traced lr: one compile serves every learning rate.
    fn = jax.jit(term_ratios_fn(loss, order))
    for lr2 in (0.2, 0.45):
        np.testing.assert_allclose(np.asarray(fn(jnp.asarray(theta), lr2)),
                                   _closed_form_ratios(A, A @ theta - b, lr2, order), rtol=1e-11)
    assert fn._cache_size() == 1
    # Weight decay: the terms are those of L + (λ/2)‖θ‖², i.e. A → A + λI.
    wd = 0.25
    r_wd = term_ratios(loss, jnp.asarray(theta), lr, 1, weight_decay=wd)
    A_wd = A + wd * np.eye(d)
    np.testing.assert_allclose(r_wd, _closed_form_ratios(A_wd, A_wd @ theta - b, lr, 1),
                               rtol=1e-11)


def test_term_ratio_bad_order():
    with pytest.raises(eom.UnsupportedOrderError):
        term_ratios_fn(_diag_loss, eom.MAX_ORDER)  # needs order + 1 terms


# ---------------------------------------------------------------------------------------------
# First worsening and the warning


def test_first_worsening():
    steps = [0, 10, 20, 30, 40]
    assert first_worsening(["accurate"] * 5, steps) is None
    assert first_worsening(["accurate", "accurate", "marginal", "unstable", "unstable"],
                           steps) == 20
    # Worse than at the *start*: a dip and recovery to the starting regime is not a worsening.
    assert first_worsening(["marginal", "accurate", "marginal", "beyond-series", "marginal"],
                           steps) == 30
    assert first_worsening(["unstable", "accurate", "marginal", "unstable", "unstable"],
                           steps) is None
    assert first_worsening([], []) is None
    with pytest.raises(EomError, match="length"):
        first_worsening(["accurate"], [0, 1])
    with pytest.raises(EomError, match="unknown regime"):
        first_worsening(["accurate", "fine"], [0, 1])


def test_warning_message_content():
    msg = warning_message(120, 1.234, start_label="accurate", lr=0.1)
    assert "step 120" in msg and "1.23" in msg and "'beyond-series'" in msg
    assert "higher EoM orders stop helping" in msg and "Lower the learning rate" in msg
    assert "lr < 0.0405" in msg  # 0.5 / λ_max with λ_max = 1.234 / 0.1
    unstable = warning_message(7, 2.5)
    assert "step 7" in unstable and "2.5" in unstable and "edge of stability" in unstable
    assert "lower the learning rate" in warning_message(3, 0.7).lower()


def _sharpening_loss(p):
    """L = ½ e^y x² − y: GD drives y up at rate ≈ η, so the curvature e^y along x grows and
    η·λ_max sweeps through every regime, crossing 2 near step 30 for η = 0.1."""
    return 0.5 * jnp.exp(p["y"]) * p["x"] ** 2 - p["y"]


def _brute_lambda_max(x, y):
    """Largest eigenvalue of the analytic Hessian [[e^y, e^y x], [e^y x, e^y x²/2]]."""
    H = np.exp(y)[:, None, None] * np.stack(
        [np.stack([np.ones_like(x), x], -1), np.stack([x, 0.5 * x**2], -1)], -2
    )
    return np.linalg.eigvalsh(H)[:, -1]


def test_warning_on_run_crossing_edge_of_stability():
    lr, p0 = 0.1, {"x": jnp.asarray(0.01), "y": jnp.asarray(0.0)}
    traj = eom.gradient_descent(_sharpening_loss, p0, lr, 40)
    steps = np.asarray(traj.steps)
    diagnose = jax.jit(jax.vmap(diagnostics_fn(_sharpening_loss, 1, num_iters=2),
                                in_axes=(0, None, None)))
    eta_lam, ratios, _ = diagnose(traj.params, lr, None)
    eta_lam = np.asarray(eta_lam)
    brute = lr * _brute_lambda_max(np.asarray(traj.params["x"]), np.asarray(traj.params["y"]))
    # d = 2 = num_iters: the Lanczos space is all of R², so λ_max is exact up to rounding.
    np.testing.assert_allclose(eta_lam, brute, rtol=1e-12)
    assert ratios.shape == (len(steps), 2) and np.all(np.isfinite(np.asarray(ratios)))
    labels = regimes(eta_lam)
    # The run passes through every regime in order and ends past 2/η.
    assert list(dict.fromkeys(labels)) == list(REGIMES)
    first = int(steps[np.argmax(brute >= 0.5)])
    crossing = int(steps[np.argmax(brute >= 2.0)])
    assert first_worsening(labels, steps) == first
    msg = regime_warning(steps, eta_lam, lr=lr)
    assert f"step {first}:" in msg and f"{eta_lam[first]:.3g}" in msg
    assert f"'unstable' at step {crossing}" in msg and f"{eta_lam[crossing]:.3g}" in msg
    # A run that stays accurate gets no warning.
    assert regime_warning(steps[:5], eta_lam[:5]) is None
