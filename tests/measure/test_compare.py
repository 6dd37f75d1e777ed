"""`eom.compare`: GD and GF/EoM in lockstep, the measured error, and everything around it.

Closed forms (THEORY.md §2, quadratic ½θᵀAθ − bᵀθ, with e = θ − θ*):
GD e_k = (I − ηA)^k e_0; GF e(t) = e^{−tA} e_0; order-N EoM ė = −Σ_{k≤N} η^k A^{k+1}/(k+1) e
(since ξ_k = A^k g/(k+1)); weight decay λ replaces A by A + λI (L_λ is again quadratic).
"""

from __future__ import annotations

import csv
import io
import json
import re

import jax
import numpy as np
import pytest

import eom
from eom.measure import CompareState, compare, compare_chunks
from eom.measure._compare import DIVERGENCE_FACTOR

from ._problems import (
    QUAD_A,
    QUAD_B,
    expm_sym,
    flat_stacked,
    mlp_loss,
    mlp_params,
    quad_flat0,
    quad_loss,
    quad_params,
)

ORDERS = (0, 1, 2)


def _quad_closed_forms(lr, steps, weight_decay=0.0, orders=(0,)):
    """GD iterates and order-N EoM solutions at steps k (rows), flat, from the closed forms."""
    A = QUAD_A + weight_decay * np.eye(5)
    star = np.linalg.solve(A, QUAD_B)
    e0 = quad_flat0() - star
    gd = np.stack([np.linalg.matrix_power(np.eye(5) - lr * A, int(k)) @ e0 for k in steps]) + star
    eom_ = {}
    for n in orders:
        M = sum(lr**j * np.linalg.matrix_power(A, j + 1) / (j + 1) for j in range(n + 1))
        eom_[n] = np.stack([expm_sym(-k * lr * M) @ e0 for k in steps]) + star
    return gd, eom_


def _quad_loss_np(th):
    return 0.5 * np.einsum("ki,ij,kj->k", th, QUAD_A, th) - th @ QUAD_B


# --------------------------------------------------------------------------------------------
# Closed forms


def test_quadratic_matches_closed_forms_gd_and_gf():
    """keep_params arrays equal the closed forms: GD to rounding (1e-12), GF to the solver's
    accuracy (auto tolerance: ≤ 1e-6 of the parameters here); the recorded error, relative
    error, per-leaf errors and losses equal those computed from the closed forms."""
    lr, k = 0.5, 40
    c = compare(quad_loss, quad_params(), lr, k, (0,), record_every=4, keep_params=True)
    np.testing.assert_array_equal(c.steps, np.arange(4, k + 1, 4))
    np.testing.assert_allclose(c.times, c.steps * lr, rtol=1e-15)
    gd, gf = _quad_closed_forms(lr, c.steps)
    gf = gf[0]
    np.testing.assert_allclose(flat_stacked(c.params["gd"]), gd, rtol=0, atol=1e-12)
    err = np.linalg.norm(gf - gd, axis=1)
    assert err.min() > 1e-2
    # GF to 1e-4 of the error being measured (the solver's accuracy at rtol = atol = 1e-6,
    # including its interpolation between steps, is ≲ 1e-5 absolute here; see
    # test_solver_error_estimate_covers_every_recorded_point for the estimate of it)
    dev = np.linalg.norm(flat_stacked(c.params[0]) - gf, axis=1)
    assert (dev < 1e-4 * err).all(), (dev, err)
    np.testing.assert_allclose(c.error[0], err, rtol=1e-4)
    disp = np.linalg.norm(gd - quad_flat0(), axis=1)
    np.testing.assert_allclose(c.relative_error[0], err / disp, rtol=1e-4)
    # per-leaf errors: leaves "a" (first 2 entries) and "c" (last 3)
    leaf = np.stack(
        [np.linalg.norm((gf - gd)[:, :2], axis=1), np.linalg.norm((gf - gd)[:, 2:], axis=1)], 1
    )
    assert c.leaf_error[0].shape == (len(c.steps), 2)
    np.testing.assert_allclose(c.leaf_error[0], leaf, rtol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(c.leaf_error[0], axis=1), c.error[0], rtol=1e-12)
    assert len(c.leaf_names) == 2
    np.testing.assert_allclose(c.loss_gd, _quad_loss_np(gd), rtol=1e-12)
    np.testing.assert_allclose(c.loss[0], _quad_loss_np(gf), rtol=1e-5)


def test_weight_decay_matches_closed_forms():
    """compare(..., weight_decay=λ) runs GD, GF and EoM-1 on L_λ = ½θᵀ(A + λI)θ − bᵀθ; the
    recorded loss is L without the decay term (as in `eom.gradient_descent`)."""
    lr, wd, k = 0.5, 0.3, 30
    c = compare(
        quad_loss, quad_params(), lr, k, (0, 1), weight_decay=wd, record_every=5,
        keep_params=True,
    )
    assert c.weight_decay == wd
    gd, ode = _quad_closed_forms(lr, c.steps, wd, (0, 1))
    np.testing.assert_allclose(flat_stacked(c.params["gd"]), gd, rtol=0, atol=1e-12)
    for n in (0, 1):
        assert not c.flagged[n].any()
        got = flat_stacked(c.params[n])
        err = np.linalg.norm(ode[n] - gd, axis=1)
        # the solver's error (≲ 1e-6 absolute) is ≤ 1% of the error being checked; a wrong
        # counter term (or decay left out of ξ_1) changes EoM-1's error by O(1)
        assert (np.linalg.norm(got - ode[n], axis=1) < 1e-2 * err).all()
        np.testing.assert_allclose(c.error[n], err, rtol=1e-2)
    # EoM-1 is much closer to GD than GF is (ηλ_max = 0.65, so by about a factor 4–10)
    assert (c.error[1] < 0.3 * c.error[0]).all()
    np.testing.assert_allclose(c.loss_gd, _quad_loss_np(gd), rtol=1e-12)
    # without decay the answer would differ: the test can tell λ was applied
    gd0, _ = _quad_closed_forms(lr, c.steps)
    assert np.abs(gd0 - gd).max() > 1e-2


# --------------------------------------------------------------------------------------------
# Local error


def test_local_error_scales_as_lr_power_and_matches_xi():
    """‖Φ^{(N)}_η(θ_k) − (θ_k − ηg(θ_k))‖ = η^{N+2}‖ξ_{N+1}(θ_k)‖ (1 + O(η)) (THEORY.md §3),
    measured at θ_1 for η ∈ {0.1, 0.05, 0.025, 0.0125} and N = 0, 1, 2."""
    lrs = np.array([0.1, 0.05, 0.025, 0.0125])
    local = {n: [] for n in ORDERS}
    xi_norm = {n: [] for n in ORDERS}
    for lr in lrs:
        c = compare(
            mlp_loss, mlp_params(), lr, 1, ORDERS, record_every=1, local=True, keep_params=True
        )
        theta1 = jax.tree.map(lambda x: x[-1], c.params["gd"])
        xi = eom.counter_terms(mlp_loss, theta1, max(ORDERS) + 1)
        for n in ORDERS:
            local[n].append(c.local_error[n][-1])
            xi_norm[n].append(float(eom._tree.tree_norm(xi[n])))
    for n in ORDERS:
        loc, xin = np.array(local[n]), np.array(xi_norm[n])
        # raw slope N+2 ± 0.15: θ_1 = θ_0 − ηg moves with η and ‖ξ_{N+1}(θ_1)‖ changes by 15%
        # over this range of η (measured slopes 1.92, 2.89, 3.87); a wrong order is off by 1
        slope = eom.measure.loglog_slope(lrs, loc)[0]
        assert abs(slope - (n + 2)) < 0.15, (n, slope, loc)
        # at the same point, i.e. with ‖ξ_{N+1}(θ_1)‖ divided out, the slope is N+2 ± 0.05
        # (the O(η) relative correction only; measured |slope − (N+2)| ≤ 0.03)
        slope = eom.measure.loglog_slope(lrs, loc / xin)[0]
        assert abs(slope - (n + 2)) < 0.05, (n, slope)
        # leading order: ratio 1 + O(η), within 10% at η = 0.1 (measured 4.5%–7%) and the
        # deviation halves with η (0.75 leaves room for higher-order terms)
        dev = np.abs(loc / (lrs ** (n + 2) * xin) - 1)
        assert dev[0] < 0.1, (n, dev)
        assert (dev[1:] < 0.75 * dev[:-1]).all(), (n, dev)


# --------------------------------------------------------------------------------------------
# Memory and result shapes


def _all_arrays(c):
    return list(c.columns().items()) + [(f"leaf_{n}", v) for n, v in c.leaf_error.items()]


def test_memory_does_not_grow_with_num_steps():
    """With 8 recorded points, every array in the Comparison has 8 rows for 200 and for 2000
    steps, and parameters are stored only with keep_params=True."""
    sizes = {}
    for k in (200, 2000):
        c = compare(
            mlp_loss, mlp_params(), 0.05, k, ORDERS, record_every=k // 8, local=True,
            predict=True,
        )
        assert c.params is None
        assert c.num_steps == k and c.steps[-1] == k
        for name, arr in _all_arrays(c):
            assert arr.shape[0] == 8, (k, name, arr.shape)
        sizes[k] = sorted((name, arr.shape) for name, arr in _all_arrays(c))
        assert len(json.dumps(c.to_dict())) < 20_000
    assert sizes[200] == sizes[2000]
    c = compare(mlp_loss, mlp_params(), 0.05, 200, (0,), record_every=25, keep_params=True)
    for key in ("gd", 0):
        for leaf, leaf0 in zip(
            jax.tree.leaves(c.params[key]), jax.tree.leaves(mlp_params()), strict=True
        ):
            assert leaf.shape == (8, *leaf0.shape)


def test_columns_rows_csv_dict_final():
    """The documented schema: step, time, loss_gd, and per order N loss_N, error_N,
    relative_error_N, solver_error_N, flagged_N, local_error_N, predicted_N, bound_N."""
    orders = (0, 1)
    c = compare(mlp_loss, mlp_params(), 0.05, 12, orders, record_every=4, local=True, predict=True)
    per = ["loss", "error", "relative_error", "solver_error", "flagged", "local_error",
           "predicted", "bound"]
    want = ["step", "time", "loss_gd"] + [f"{p}_{n}" for n in orders for p in per]
    assert sorted(c.columns()) == sorted(want)
    rows = c.rows()
    assert len(rows) == 3 and sorted(rows[0]) == sorted(want)
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert rows[1]["error_1"] == c.error[1][1] and rows[2]["predicted_0"] == c.predicted[0][2]
    assert rows[0]["flagged_0"] in (0, 1)
    assert all(isinstance(v, int | float) for r in rows for v in r.values())
    parsed = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert len(parsed) == 3 and sorted(parsed[0]) == sorted(want)
    for r, p in zip(rows, parsed, strict=True):
        for key in want:
            assert float(p[key]) == pytest.approx(r[key], rel=1e-15)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["orders"] == [0, 1] and d["lr"] == 0.05 and d["num_steps"] == 12
    assert sorted(d["columns"]) == sorted(want)
    assert d["columns"]["error_0"] == c.error[0].tolist()
    f = c.final()
    assert f["step"] == 12 and f["loss_gd"] == c.loss_gd[-1]
    assert f["error"] == {0: c.error[0][-1], 1: c.error[1][-1]}
    assert f["ratio"]["1/0"] == pytest.approx(c.error[1][-1] / c.error[0][-1], rel=1e-15)
    assert f["predicted"][1] == c.predicted[1][-1]
    assert set(f["flagged"]) == {0, 1} and set(f["solver_error"]) == {0, 1}
    # optional columns are absent unless asked for
    c2 = compare(mlp_loss, mlp_params(), 0.05, 12, orders, record_every=4)
    assert not any(k.startswith(("local_error", "predicted", "bound")) for k in c2.columns())
    assert c2.local_error is None and c2.predicted is None and "predicted" not in c2.final()


# --------------------------------------------------------------------------------------------
# Solver honesty


def test_loose_tolerance_is_flagged_and_auto_tolerance_is_honest():
    """A loose solver (rtol = atol = 1e-2) makes the EoM-1/2 errors solver noise: they are
    flagged, and the flags are right (those numbers are far from the true error) while the
    solver-error estimate matches the actual deviation. With the automatic tolerance every
    recorded error is ≥ 10× the solver error and agrees with a much tighter solve."""
    lr, k = 0.05, 100
    kw = dict(record_every=10, keep_params=True)
    auto = compare(mlp_loss, mlp_params(), lr, k, ORDERS, **kw)
    tight = compare(mlp_loss, mlp_params(), lr, k, ORDERS, rtol=1e-13, atol=1e-13, **kw)
    loose = compare(mlp_loss, mlp_params(), lr, k, ORDERS, rtol=1e-2, atol=1e-2, **kw)
    assert loose.rtol == {n: 1e-2 for n in ORDERS}
    for n in ORDERS:
        # auto tolerance: measured ≥ 10× solver error at every recorded step, nothing flagged
        assert (auto.error[n] >= 10 * auto.solver_error[n]).all(), n
        assert not auto.flagged[n].any()
        # ... and the numbers are not solver noise: a 1e-13 solve gives the same errors
        # (to 1%, i.e. the 10× margin with room) and the actual deviation ≤ 10× the estimate
        np.testing.assert_allclose(auto.error[n], tight.error[n], rtol=1e-2)
        # loose: flags follow the 10× rule, and the estimate is honest (within a factor 2 of
        # the actual deviation from the tight solve at the last step)
        np.testing.assert_array_equal(
            loose.flagged[n], ~(loose.error[n] >= 10 * loose.solver_error[n])
        )
        dev = np.linalg.norm(flat_stacked(loose.params[n]) - flat_stacked(tight.params[n]), axis=1)
        assert 0.5 * dev[-1] <= loose.solver_error[n][-1] <= 2 * dev[-1], (n, dev)
    for n in (1, 2):
        assert loose.flagged[n][-1]
        # what was flagged really is wrong: off by more than 50% from the true error
        assert abs(loose.error[n][-1] - tight.error[n][-1]) > 0.5 * tight.error[n][-1]
    # GF at rtol = 1e-2: its recorded errors are off by up to ~16% from the truth while the
    # solver error is ~1e-3 of ~6e-3, so every one of them must be flagged (the estimate is
    # conservative at points where the two solves agree by chance); an unflagged loose number
    # would have to be within ~10% (the margin) of the truth.
    dev0 = np.linalg.norm(flat_stacked(loose.params[0]) - flat_stacked(tight.params[0]), axis=1)
    # (0.9: the estimate compares with a 100× tighter solve, not with the exact flow)
    assert (loose.solver_error[0] >= 0.9 * dev0).all(), (loose.solver_error[0], dev0)
    ok = ~loose.flagged[0]
    rel = np.abs(loose.error[0][ok] - tight.error[0][ok]) / tight.error[0][ok]
    assert (rel < 0.2).all(), rel


def test_solver_error_estimate_covers_every_recorded_point():
    """The reported solver_error must not understate the actual solver error at any recorded
    step (otherwise the 10× flag is meaningless there). Checked against the exact GF of a
    quadratic (every step recorded) and against a 1e-13 solve of the tiny MLP. Factor 3: the
    flag margin is 10×, so an estimate low by up to 3× still separates flagged from real.

    (This once failed: the estimate compared the loose and the 100× tighter solve only at the
    chunk's last point, a true solver step, while the recorded points in between come from
    Dopri8's dense interpolant, ~1000× less accurate at rtol = atol = 1e-6.)"""
    c = compare(quad_loss, quad_params(), 0.5, 40, (0,), record_every=1, keep_params=True)
    _, gf = _quad_closed_forms(0.5, c.steps)
    actual = np.linalg.norm(flat_stacked(c.params[0]) - gf[0], axis=1)
    assert (actual <= 3 * c.solver_error[0] + 1e-13).all(), (actual, c.solver_error[0])
    kw = dict(record_every=10, keep_params=True)
    auto = compare(mlp_loss, mlp_params(), 0.05, 100, ORDERS, **kw)
    tight = compare(mlp_loss, mlp_params(), 0.05, 100, ORDERS, rtol=1e-13, atol=1e-13, **kw)
    for n in ORDERS:
        dev = np.linalg.norm(flat_stacked(auto.params[n]) - flat_stacked(tight.params[n]), axis=1)
        assert (dev <= 3 * auto.solver_error[n] + 1e-13).all(), (n, dev, auto.solver_error[n])


# --------------------------------------------------------------------------------------------
# Resumability


def test_resume_from_saved_state_is_identical(tmp_path):
    """Stop after the first chunk, round-trip the state through np.savez/np.load, continue:
    the records equal those of an uninterrupted run bit for bit. 150 recorded steps with the
    default 64-point chunks give three chunks (same compiled shapes as the other tests)."""
    lr, k = 0.05, 150
    kw = dict(record_every=1, predict=True)
    full = list(compare_chunks(mlp_loss, mlp_params(), lr, k, ORDERS, **kw))
    assert len(full) == 3

    gen = compare_chunks(mlp_loss, mlp_params(), lr, k, ORDERS, **kw)
    first, state = next(gen)
    gen.close()
    np.savez(tmp_path / "state.npz", **state.to_arrays())
    with np.load(tmp_path / "state.npz") as f:
        loaded = CompareState.from_arrays(dict(f), mlp_params(), len(ORDERS))
    rest = list(compare_chunks(mlp_loss, mlp_params(), lr, k, ORDERS, state=loaded, **kw))
    assert len(rest) == 2
    resumed = [first] + [r for r, _ in rest]
    for (want, _), got in zip(full, resumed, strict=True):
        assert sorted(want) == sorted(got)
        for key in want:
            if key == "_wall":
                continue
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), key)
    steps = np.concatenate([r["step"] for r in resumed])
    np.testing.assert_array_equal(steps, np.arange(1, k + 1))
    # the final states agree too
    a, b = full[-1][1].to_arrays(), rest[-1][1].to_arrays()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], key)


# --------------------------------------------------------------------------------------------
# Divergence and bad input


def test_divergence_names_the_step_and_keeps_earlier_records():
    """ηλ_max = 4.5 > 2: GD on the quadratic blows up like 3.5^k. compare_chunks yields the
    records before the blow-up, then raises DivergenceError naming the first step whose loss is
    non-finite or past DIVERGENCE_FACTOR·(|L(θ_0)| + 1); the kept records match plain numpy GD."""
    lr = 4.5
    gen = compare_chunks(quad_loss, quad_params(), lr, 400, (0,), record_every=1)
    got = []
    with pytest.raises(eom.DivergenceError) as info:
        for recs, _ in gen:
            got.append(recs)
    msg = str(info.value)
    m = re.search(r"step (\d+)", msg)
    assert m, msg
    bad = int(m.group(1))
    assert "learning rate" in msg.lower()
    # numpy GD: the first step whose loss is not finite
    th = quad_flat0()
    losses = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(400):
            th = th - lr * (QUAD_A @ th - QUAD_B)
            losses.append(_quad_loss_np(th[None])[0])
    losses = np.array(losses)
    limit = DIVERGENCE_FACTOR * (abs(float(_quad_loss_np(quad_flat0()[None])[0])) + 1.0)
    first_bad = int(np.argmax(~(np.abs(losses) <= limit))) + 1
    assert bad == first_bad and 1 < bad < 400
    assert len(got) >= 1  # the records before the failing chunk are kept
    steps = np.concatenate([r["step"] for r in got])
    np.testing.assert_array_equal(steps, np.arange(1, bad))
    loss_gd = np.concatenate([r["loss_gd"] for r in got])
    assert np.isfinite(loss_gd).all()
    np.testing.assert_allclose(loss_gd, losses[: bad - 1], rtol=1e-9)
    # and compare() raises the same error
    with pytest.raises(eom.DivergenceError, match=f"step {bad}"):
        compare(quad_loss, quad_params(), lr, 400, (0,), record_every=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(orders=()), "orders"),
        (dict(orders=(1, 1)), "repeat"),
        (dict(orders=(0,), rtol={1: 1e-8}), "rtol"),
        (dict(orders=(0,), rtol=-1.0), "positive"),
    ],
)
def test_bad_input_is_an_eom_error(kwargs, match):
    with pytest.raises(eom.EomError, match=match):
        compare(mlp_loss, mlp_params(), 0.05, 4, **kwargs)
