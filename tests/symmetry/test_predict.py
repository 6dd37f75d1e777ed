"""Predictions for symmetric groups (THEORY.md §4–5) against the engine: GD steps, the EoM field,
counter terms and integrated trajectories, on the tiny models of `test_detect`.

Tolerances: exact identities at 1e-12 relative (float64 rounding); ODE trajectories at 1e-8
(`eom.integrate` runs Dopri8 at rtol 1e-10, atol 1e-12 over ~20 steps); slopes within 0.1 of the
predicted power (the next-order term shifts a 4-point fit over one decade of η by < 0.05).
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
import eom.symmetry as S
from eom import EomError, UnsupportedOrderError

from .test_detect import BN_EXPECTED, _angle_problem, bn_detected

LR, WD, STEPS = 0.1, 0.3, 20


@pytest.fixture(scope="module")
def bn():
    loss, p, groups = bn_detected()
    assert {(g.kind, g.path, g.axis, g.index) for g in groups} == BN_EXPECTED
    return loss, p, groups


@pytest.fixture(scope="module")
def runs(bn):
    """GD, GF, EoM-1, EoM-2 on the BN model with weight decay, every step saved."""
    loss, p, _ = bn
    out = {"gd": eom.gradient_descent(loss, p, LR, STEPS, weight_decay=WD)}
    for name, order in (("gf", 0), ("eom1", 1), ("eom2", 2)):
        out[name] = eom.integrate(loss, p, LR, STEPS, order, weight_decay=WD)
    return out


def _slope(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _of_kind(groups, kind):
    idx = [i for i, g in enumerate(groups) if g.kind == kind]
    return idx, [groups[i] for i in idx]


# ---- scale groups -------------------------------------------------------------------------------


@pytest.mark.parametrize("wd", [0.0, WD])
def test_gd_norm_recursion_is_exact(bn, wd):
    loss, p, groups = bn
    idx, _ = _of_kind(groups, "scale")
    gd = eom.gradient_descent(loss, p, LR, STEPS, weight_decay=wd)
    st = S.group_stats(loss, gd.params, groups, weight_decay=wd, hvp=False, stacked=True)
    n = S.measure_groups(gd, groups)[:, idx]
    np.testing.assert_allclose(n, st.sq_norm[:, idx], rtol=1e-14)
    # ‖w_{k+1}‖² = (1 − ηλ)²‖w_k‖² + η²‖g_w(θ_k)‖², step by step.
    step = S.gd_sq_norm_step(n[:-1], st.grad_sq_norm[:-1, idx], LR, wd)
    np.testing.assert_allclose(step, n[1:], rtol=1e-12, atol=0)
    # ... and accumulated over the whole run from ‖w_0‖² alone.
    pred = S.predict(loss, gd, groups, LR, "gd", weight_decay=wd, stats=st)
    np.testing.assert_allclose(pred[:, idx], n, rtol=1e-12)
    if wd == 0:
        assert np.all(np.diff(n, axis=0) > 0)  # without decay the norm only grows under GD


def test_gd_recursion_across_saved_gaps_is_second_order(bn):
    # save_every = m: ‖g_w‖² is interpolated between saved steps; the error shrinks like m².
    loss, p, groups = bn
    idx, _ = _of_kind(groups, "scale")
    errs = []
    for m in (2, 4):
        gd = eom.gradient_descent(loss, p, LR, 16, weight_decay=WD, save_every=m)
        pred = S.predict(loss, gd, groups, LR, "gd", weight_decay=WD)
        errs.append(np.max(np.abs(pred[-1, idx] / S.measure_groups(gd, groups)[-1, idx] - 1)))
    assert errs[0] < 1e-4 and 2.5 < errs[1] / errs[0] < 6  # ratio ≈ 4 for a second-order rule


@pytest.fixture(scope="module")
def terms(bn):
    """A generic point q, ∇L_λ(q) and ξ_1..ξ_3 of L_λ at q from `eom.counter_terms` (λ = WD):
    the order-N EoM field at any η is F = −∇L_λ − Σ_{k≤N} η^k ξ_k (one compilation for all)."""
    loss, p, _ = bn
    q = jax.tree.map(lambda x: 1.1 * x, p)  # not the detection point

    @jax.jit
    def fn(q):
        g = jax.grad(loss)(q)
        return jax.tree.map(lambda a, b: a + WD * b, g, q), eom.counter_terms(
            loss, q, 3, weight_decay=WD
        )

    g_wd, xi = fn(q)
    return q, g_wd, xi


def _field_rates(groups, q, g_wd, xi, lr, order):
    """2 w·F_w (scale/null) and u·F (translation) of the order-N field built from the terms."""
    f = jax.tree.map(
        lambda g, *t: (
            -np.asarray(g) - sum(lr**k * np.asarray(x) for k, x in enumerate(t[:order], start=1))
        ),
        g_wd,
        *xi,
    )
    th, fl = [np.asarray(x) for x in jax.tree.leaves(q)], jax.tree.leaves(f)
    dots = S.group_dots(groups, th, fl)
    sums = S.group_sums(groups, fl) / np.sqrt([g.size for g in groups])
    return np.where([g.kind == "translation" for g in groups], sums, 2 * dots)


def test_scale_rate_closed_forms_equal_two_w_dot_field(bn, terms):
    # With the identities, 2 w·F_w of the order-N field equals the closed form *exactly* (λ > 0).
    loss, _, groups = bn
    q, g_wd, xi = terms
    idx, _ = _of_kind(groups, "scale")
    st = S.group_stats(loss, q, groups, weight_decay=WD)
    n, gg = st.sq_norm[idx], st.grad_sq_norm[idx]
    for order in (0, 1, 2):
        field = _field_rates(groups, q, g_wd, xi, LR, order)
        pred = S.predicted_rates(loss, q, groups, LR, order=order, weight_decay=WD)
        # Scale, translation (ds/dt = r_N s) and null (d‖w‖²/dt = 2 r_N ‖w‖²) alike.
        np.testing.assert_allclose(pred, field, rtol=1e-11)
        if order == 1:  # THEORY.md §4 as printed: −2λ(1 + ηλ/2)‖w‖² + η‖g_w‖²
            theory = -2 * WD * (1 + LR * WD / 2) * n + LR * gg
            np.testing.assert_allclose(theory, field[idx], rtol=1e-11)
    # measured_rates (eom's own EoM field) is the same field.
    measured = S.measured_rates(loss, q, groups, LR, order=1, weight_decay=WD)
    np.testing.assert_allclose(measured, _field_rates(groups, q, g_wd, xi, LR, 1), rtol=1e-12)


def test_scale_rate_without_weight_decay_is_theorys_formula(bn):
    # λ = 0: d‖w‖²/dt = η‖g_w‖² + η² g_w·(Hg)_w (THEORY.md §4), translation/null rates vanish.
    loss, p, groups = bn
    idx, _ = _of_kind(groups, "scale")
    st = S.group_stats(loss, p, groups)
    field = S.measured_rates(loss, p, groups, LR, order=2)
    theory = LR * st.grad_sq_norm[idx] + LR**2 * st.grad_h_grad[idx]
    np.testing.assert_allclose(theory, field[idx], rtol=1e-11)
    pred = S.predicted_rates(loss, p, groups, LR, order=2)
    np.testing.assert_allclose(pred, field, rtol=1e-11, atol=1e-13 * np.abs(field).max())
    assert np.all(pred[[i for i in range(len(groups)) if i not in idx]] == 0)


def test_scale_rate_truncation_error_has_the_next_power_of_lr(bn, terms):
    # Formula of order N minus 2 w·F_w of the order-3 field = O(η^{N+1}): log–log slope N + 1.
    loss, _, groups = bn
    q, g_wd, xi = terms
    idx, _ = _of_kind(groups, "scale")
    st = S.group_stats(loss, q, groups, weight_decay=WD)
    n, gg, ghg = st.sq_norm[idx], st.grad_sq_norm[idx], st.grad_h_grad[idx]
    lrs = np.geomspace(2e-3, 2e-2, 4)
    field = np.array([_field_rates(groups, q, g_wd, xi, lr, 3)[idx] for lr in lrs])
    for order in (0, 1, 2):
        formula = np.array([S.scale_rate(n, gg, ghg, lr, order, WD) for lr in lrs])
        err = np.abs(formula - field).max(axis=1)
        assert abs(_slope(lrs, err) - (order + 1)) < 0.1, (order, err)


def test_eom_rates_accumulated_along_the_gd_path_predict_gds_norm(bn, runs):
    # The EoM-N rate integrated along GD's own saved points predicts GD's ‖w‖² to O(η^{N+1}):
    # each order gains a factor ~ηλ_eff over the previous (GF: e^{−2λt}‖w_0‖², misses the most).
    loss, _, groups = bn
    idx, _ = _of_kind(groups, "scale")
    gd = runs["gd"]
    st = S.group_stats(loss, gd.params, groups, weight_decay=WD, stacked=True)
    n = S.measure_groups(gd, groups)[-1, idx]
    err = {
        name: np.max(
            np.abs(
                S.predict(loss, gd, groups, LR, name, weight_decay=WD, stats=st)[-1, idx] / n - 1
            )
        )
        for name in ("gf", "eom1", "eom2")
    }
    assert err["eom1"] < 0.05 * err["gf"] and err["eom2"] < 0.2 * err["eom1"], err


def test_scale_rate_refuses_orders_without_a_closed_form():
    with pytest.raises(UnsupportedOrderError, match="measured_rates"):
        S.scale_rate(1.0, 1.0, 1.0, LR, 3)


def test_equilibrium_norm_and_angular_update():
    # L = κ·atan2(w1, w0) has ‖ĝ‖ = κ on the whole circle, so GD's norm has a true fixed point:
    # n² = η²κ²/(1 − (1−ηλ)²) = ηκ²/(2λ(1 − ηλ/2)) — THEORY's η‖ĝ‖²/(2λ) up to O(ηλ).
    kappa, lr, wd = 1.0, 0.1, 0.05
    loss, w0 = _angle_problem(kappa)
    (g,) = S.detect(loss, w0)
    gd = eom.gradient_descent(loss, w0, lr, 3000, weight_decay=wd, save_every=100)
    st = S.group_stats(loss, gd.params, [g], hvp=False, stacked=True)
    n, gg = st.sq_norm[:, 0], st.grad_sq_norm[:, 0]
    np.testing.assert_allclose(n * gg, kappa**2, rtol=1e-12)  # ‖ĝ‖² = ‖w‖²‖g_w‖²
    exact = math.sqrt(lr**2 * kappa**2 / (1 - (1 - lr * wd) ** 2))
    assert abs(n[-1] / exact - 1) < 1e-9  # relaxed onto GD's fixed point
    eq = S.equilibrium_sq_norm(n[-1] * gg[-1], lr, wd)
    assert abs(eq / n[-1] - 1) < lr * wd  # THEORY's leading-order value: O(ηλ) away
    angle = S.gd_angular_update(n[-1], gg[-1], lr, wd)
    w_a, w_b = gd.at(-1), gd.at(-1) - lr * (jax.grad(loss)(gd.at(-1)) + wd * gd.at(-1))
    measured = math.acos(float(w_a @ w_b) / float(jnp.linalg.norm(w_a) * jnp.linalg.norm(w_b)))
    assert abs(angle - measured) < 1e-12
    assert abs(angle / S.equilibrium_angular_update(lr, wd) - 1) < lr * wd
    with pytest.raises(EomError, match="weight_decay > 0"):
        S.equilibrium_sq_norm(1.0, lr, 0.0)


# ---- translation directions and null slices -----------------------------------------------------


def test_translation_counter_terms_are_a_quadratic_in_s(bn, terms):
    # u·ξ_k = λ^{k+1} s/(k+1) for translation directions; for a null slice (L does not depend on
    # it) every coordinate is such a direction: ξ_k restricted to it is λ^{k+1} w/(k+1).
    _, _, groups = bn
    q, _, xi = terms
    checked = 0
    for g in (g for g in groups if g.kind != "scale"):
        for k, term in enumerate(xi, start=1):
            c = WD ** (k + 1) / (k + 1)
            np.testing.assert_allclose(g.extract(term), c * g.extract(q), rtol=1e-11)
            checked += 1
    assert checked == 3 * 6  # b2, four columns of w2 (translation) and b1 (null)


def test_translation_s_under_gd_gf_and_eom(bn, runs):
    loss, p, groups = bn
    idx, trans = _of_kind(groups, "translation")
    s = {name: S.measure_groups(tr, trans) for name, tr in runs.items()}
    gd = runs["gd"]
    s0 = s["gd"][0]
    # GD: s_k = (1 − ηλ)^k s_0 exactly; the full EoM series reproduces it at t = kη.
    np.testing.assert_allclose(s["gd"], S.translation_gd(s0, gd.steps, LR, WD), rtol=1e-12)
    full = S.translation_eom(s0, gd.times, LR, WD, order=None)
    np.testing.assert_allclose(full, s["gd"], rtol=1e-12)
    # GF e^{−λt}s_0 and the order-N EoM e^{r_N t}s_0 against eom.integrate (ODE tolerance).
    np.testing.assert_allclose(s["gf"], S.translation_gf(s0, gd.times, WD), rtol=1e-8)
    for name, order in (("eom1", 1), ("eom2", 2)):
        pred = S.translation_eom(s0, gd.times, LR, WD, order=order)
        np.testing.assert_allclose(s[name], pred, rtol=1e-8)
    # GF misses by ≈ (ηλ²t/2)e^{−λt}|s_0| (THEORY §5); each EoM order gains a factor ~ηλ.
    t = gd.times[-1]
    gf_err = np.abs(s["gf"][-1] - s["gd"][-1])
    np.testing.assert_allclose(gf_err, LR * WD**2 * t / 2 * np.exp(-WD * t) * np.abs(s0), rtol=0.1)
    e1, e2 = np.abs(s["eom1"][-1] - s["gd"][-1]), np.abs(s["eom2"][-1] - s["gd"][-1])
    assert np.all(e1 < 0.05 * gf_err) and np.all(e2 < 0.05 * e1)


def test_translation_rates_and_series():
    lr, wd = 0.2, 0.5
    assert S.translation_rate(lr, wd, 0) == -wd
    assert S.translation_rate(lr, wd, 1) == pytest.approx(-(wd + lr * wd**2 / 2), rel=1e-15)
    full = math.log1p(-lr * wd) / lr
    errs = [abs(S.translation_rate(lr, wd, n) - full) for n in range(1, 6)]
    # The truncation error of the series shrinks by ~ηλ = 0.1 per order.
    assert all(0.05 < b / a < 0.1 for a, b in zip(errs, errs[1:], strict=False))
    with pytest.raises(EomError, match="lr·weight_decay < 1"):
        S.translation_rate(1.0, 1.5, None)


# ---- the report ---------------------------------------------------------------------------------


def test_report_with_weight_decay(bn, runs):
    loss, p, groups = bn
    rep = S.symmetry_report(loss, groups, runs, LR, weight_decay=WD)
    assert rep.processes == ("gd", "gf", "eom1", "eom2")
    assert [gr.group for gr in rep.groups] == list(groups)
    for gr in rep.groups:
        pe, ev = gr.prediction_error, gr.error_vs_gd
        # Analytic curves against the measured ones on each process's own trajectory: GD exact,
        # GF and translation/null closed forms to ODE tolerance, scale EoM curves to the quadrature
        # of the forcing term on the saved grid (second order in η; measured ~1e-7 here).
        assert pe["gd"] < 1e-12 and pe["gf"] < 1e-8
        assert max(pe["eom1"], pe["eom2"]) < (1e-8 if gr.group.kind != "scale" else 1e-5)
        # At the end of the run, each order is closer to GD than the one before (ηλ = 0.03).
        assert ev["eom1"] < 0.05 * ev["gf"] and ev["eom2"] < 0.2 * ev["eom1"]
        if gr.group.kind == "scale":
            assert set(gr.extras) == {"equilibrium_sq_norm", "angular_update"}
        else:
            np.testing.assert_allclose(gr.predicted["eom-series"], gr.measured["gd"], rtol=1e-12)
    assert rep.angular_update_limit == pytest.approx(math.sqrt(2 * LR * WD))
    # Outputs are plain: JSON-serializable and flat CSV columns of equal length.
    json.dumps(rep.to_dict())
    cols = rep.columns()
    assert {len(v) for v in cols.values()} == {STEPS + 1}
    row = rep.summary()[0]
    assert {"group", "gf_error_vs_gd", "eom2_prediction_error"} <= set(row)


@pytest.mark.slow  # three more EoM compilations (λ = 0); the λ = 0 rates are tested above
def test_report_without_weight_decay_shows_gf_misses_the_norm_growth(bn):
    # λ = 0: GD's ‖w‖² grows by η²‖g_w‖² per step, GF conserves it, EoM-1 follows GD.
    loss, p, groups = bn
    idx, scale = _of_kind(groups, "scale")
    runs0 = {
        "gd": eom.gradient_descent(loss, p, LR, 10),
        "gf": eom.integrate(loss, p, LR, 10, 0),
        "eom1": eom.integrate(loss, p, LR, 10, 1),
    }
    rep = S.symmetry_report(loss, scale, runs0, LR)
    for gr in rep.groups:
        growth = gr.measured["gd"][-1] - gr.measured["gd"][0]
        assert growth > 0
        np.testing.assert_allclose(gr.measured["gf"], gr.measured["gf"][0], rtol=1e-9)
        assert abs(gr.measured["eom1"][-1] - gr.measured["gd"][-1]) < 0.1 * growth
        assert gr.error_vs_gd["eom1"] < 0.1 * gr.error_vs_gd["gf"]
        assert gr.prediction_error["eom1"] < 1e-6 and gr.prediction_error["gd"] < 1e-12
    assert math.isnan(rep.angular_update_limit)


def test_report_validates_inputs(bn, runs):
    loss, _, groups = bn
    with pytest.raises(EomError, match="'gd'"):
        S.symmetry_report(loss, groups, {"gf": runs["gf"]}, LR)
    with pytest.raises(EomError, match="unknown process"):
        S.symmetry_report(loss, groups, {"gd": runs["gd"], "adam": runs["gf"]}, LR)
    short = eom.Trajectory(
        runs["gf"].steps[:5],
        runs["gf"].times[:5],
        jax.tree.map(lambda x: x[:5], runs["gf"].params),
        runs["gf"].loss[:5],
    )
    with pytest.raises(EomError, match="same num_steps"):
        S.symmetry_report(loss, groups, {"gd": runs["gd"], "gf": short}, LR)
    with pytest.raises(EomError, match="Group"):
        S.symmetry_report(loss, ["w1"], {"gd": runs["gd"]}, LR)
    with pytest.raises(EomError, match="weight_decay"):
        S.symmetry_report(loss, groups, {"gd": runs["gd"]}, LR, weight_decay=-1.0)
