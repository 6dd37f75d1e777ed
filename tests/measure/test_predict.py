"""The predicted error ê_{k+1} = (I − ηH(θ_k))ê_k + η^{N+2}ξ_{N+1}(θ_k) (THEORY.md §3).

Checked three ways: against the measured EoM error (it is its leading-order term, so they agree
up to a relative O(η) gap), against a dense brute-force run of the same recursion (the
matrix-free HVP/ξ code against plain linear algebra), and the simple bound against the measured
error where the bound is rigorous (gradient flow on a convex quadratic with ηλ_max ≤ 1).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import eom
from eom.measure import compare, predicted_error

from ._problems import mlp_loss, mlp_params, quad_loss, quad_params

ORDERS = (0, 1, 2)


def test_predicted_matches_measured_and_gap_shrinks_with_lr():
    """Up to time T = 10 (≥ 200 steps), ‖ê_k‖ matches ‖θ^{(N)}(kη) − θ_k‖ within 10% for
    N = 0, 1, 2, and the relative gap roughly halves when η halves. The gap is O(η) at a fixed
    time t (the neglected terms are the next local-error term η^{N+3}ξ_{N+2} and the O(η)
    difference between the EoM and GD paths), so both runs are recorded at the same times
    t = 1, 2, …, 10 (at a fixed step index instead, t itself would halve with η)."""
    gaps = {}
    for lr, k in ((0.05, 200), (0.025, 400)):
        c = compare(mlp_loss, mlp_params(), lr, k, ORDERS, record_every=k // 10, predict=True)
        np.testing.assert_allclose(c.times, np.arange(1, 11), rtol=1e-12)
        for n in ORDERS:
            assert not c.flagged[n].any(), (lr, n, c.error[n], c.solver_error[n])
            gap = np.abs(c.predicted[n] - c.error[n]) / c.error[n]
            # 10%: the acceptance criterion of issue 3; measured max gaps are 1%–3.7% at
            # η = 0.05 (ηλ_max ≈ 0.06), so a wrong power of η or a missing HVP fails it.
            assert gap.max() < 0.10, (lr, n, gap)
            gaps[lr, n] = gap.max()
    for n in ORDERS:
        # First-order gap: halving η should halve it (measured ratio ≈ 0.5); 0.75 leaves room
        # for the higher-order terms but fails if the gap does not shrink with η.
        assert gaps[0.025, n] < 0.75 * gaps[0.05, n], (n, gaps)


def _dense_prediction(loss, params0, lr, num_steps):
    """Order-1 prediction with dense tensors: ê ← (I − ηH)ê + η³ξ_2, ξ_2 = ⅓H²g + (1/12)∇³L[g, g].

    Returns ‖ê_k‖ and the bound Σ_{j<k} η³‖ξ_2(θ_j)‖ for k = 1 … num_steps.
    """
    v0, unravel = ravel_pytree(params0)

    def f(v):
        return loss(unravel(v))

    @jax.jit
    def step(v, e):
        g = jax.grad(f)(v)
        H = jax.hessian(f)(v)
        T = jax.jacfwd(jax.hessian(f))(v)
        xi2 = H @ (H @ g) / 3.0 + jnp.einsum("ijk,j,k->i", T, g, g) / 12.0
        return v - lr * g, e - lr * (H @ e) + lr**3 * xi2, lr**3 * jnp.linalg.norm(xi2)

    v, e, b = v0, jnp.zeros_like(v0), 0.0
    norms, bounds = [], []
    for _ in range(num_steps):
        v, e, db = step(v, e)
        b = b + float(db)
        norms.append(float(jnp.linalg.norm(e)))
        bounds.append(b)
    return np.array(norms), np.array(bounds)


def test_predicted_error_matches_dense_recursion():
    """`predicted_error` (one HVP and one B-series ξ_2 per step) equals the same recursion done
    with dense Hessians and third-derivative tensors. Tolerance 1e-9 relative: both are the same
    float64 arithmetic up to summation order, over 30 steps of a contraction."""
    lr, k = 0.1, 30
    p = predicted_error(mlp_loss, mlp_params(), lr, k, 1, record_every=3)
    norms, bounds = _dense_prediction(mlp_loss, mlp_params(), lr, k)
    assert p.order == 1 and p.lr == lr
    np.testing.assert_array_equal(p.steps, np.arange(3, k + 1, 3))
    np.testing.assert_allclose(p.predicted, norms[p.steps - 1], rtol=1e-9)
    np.testing.assert_allclose(p.bound, bounds[p.steps - 1], rtol=1e-9)
    assert p.predicted[-1] > 0


def test_predicted_error_agrees_with_compare():
    """`predicted_error` is `compare(..., predict=True)` without the ODE: same numbers."""
    lr = 0.05
    c = compare(mlp_loss, mlp_params(), lr, 40, ORDERS, record_every=8, predict=True, solve=False)
    p = predicted_error(mlp_loss, mlp_params(), lr, 40, 1, record_every=8)
    np.testing.assert_array_equal(p.steps, c.steps)
    np.testing.assert_allclose(p.predicted, c.predicted[1], rtol=1e-12)
    np.testing.assert_allclose(p.bound, c.bound[1], rtol=1e-12)
    # without solving, the measured columns are empty but the steps are recorded
    np.testing.assert_array_equal(c.steps, [8, 16, 24, 32, 40])
    assert all(c.error[n].size == 0 for n in ORDERS)


def test_bound_holds_for_gradient_flow_on_convex_quadratic():
    """On ½θᵀAθ − bᵀθ with 0 < ηA ≤ I, ‖e^{−ηA}‖ ≤ 1 and the exact GF local error
    (e^{−ηA} − I + ηA)(θ − θ*) has norm ≤ (η²/2)‖A²(θ − θ*)‖ = η²‖ξ_1‖, so the bound
    b_k = Σ_{j<k} η²‖ξ_1(θ_j)‖ is rigorous for the measured error, not just to leading order.
    The factor 1 + 1e-6 covers the solver error (≤ 1e-7 here, flagged otherwise)."""
    c = compare(quad_loss, quad_params(), 0.9, 60, (0,), record_every=6, predict=True)
    assert not c.flagged[0].any()
    assert (c.error[0] <= c.bound[0] * (1 + 1e-6)).all(), (c.error[0], c.bound[0])
    assert (c.predicted[0] <= c.bound[0] * (1 + 1e-12)).all()
    # and the bound is not vacuous: at the first record (before the contraction e^{−tA} has
    # acted) it is within a factor 10 of the error; later it is loose by design
    assert c.bound[0][0] < 10 * c.error[0][0]


def test_predict_needs_next_order():
    """Predicting order N needs ξ_{N+1}: at the maximum supported order that is an error that
    names the order, raised before any work is done."""
    with pytest.raises(eom.UnsupportedOrderError, match="order"):
        compare(mlp_loss, mlp_params(), 0.05, 2, (eom.MAX_ORDER,), predict=True, solve=False)


# --------------------------------------------------------------------------------------------
# predict_every: ξ_{N+1} evaluated every r steps, continued linearly in between


@functools.lru_cache(maxsize=1)
def _reference(lr: float, num_steps: int) -> np.ndarray:
    """`_every_step_prediction` of the tiny MLP for orders 0 and 1 (shared by the tests)."""
    return _every_step_prediction(mlp_loss, mlp_params(), lr, num_steps, (0, 1))


def _every_step_prediction(loss, params0, lr, num_steps, orders):
    """The recursion as it was written before `predict_every` existed: ξ_{N+1} from
    `grad_and_terms_fn` and one HVP `jvp` per order at every step, GD on the terms' gradient."""
    from eom.engine import grad_and_terms_fn

    grad = jax.grad(loss)
    terms = grad_and_terms_fn(loss, max(orders) + 1)

    @jax.jit
    def step(theta, ehat):
        g, xi = terms(theta)
        new = []
        for i, n in enumerate(orders):
            hv = jax.jvp(grad, (theta,), (ehat[i],))[1]
            new.append(jax.tree.map(lambda e, h, x, n=n: e - lr * h + lr ** (n + 2) * x,
                                    ehat[i], hv, xi[n]))
        return jax.tree.map(lambda p, gi: p - lr * gi, theta, g), tuple(new)

    theta = params0
    ehat = tuple(jax.tree.map(jnp.zeros_like, params0) for _ in orders)
    out = []
    for _ in range(num_steps):
        theta, ehat = step(theta, ehat)
        out.append([float(jnp.linalg.norm(ravel_pytree(e)[0])) for e in ehat])
    return np.array(out)


def test_predict_every_one_is_the_every_step_recursion():
    """r = 1 (the default) is the recursion as written before `predict_every`: same ξ, same
    HVPs, same GD step. 1e-13 relative: the same float64 operations, fused differently inside
    the chunk's loops (measured 2e-16)."""
    lr, k = 0.1, 40
    ref = _reference(lr, 200)[:k]
    c = compare(mlp_loss, mlp_params(), lr, k, (0, 1), predict=True, solve=False)
    for i, n in enumerate((0, 1)):
        np.testing.assert_allclose(c.predicted[n], ref[:, i], rtol=1e-13)


def test_predict_every_stays_close_to_every_step():
    """r = 2 and r = 4 against r = 1 over 200 steps of the tiny MLP at η = 0.1 (ηλ_max ≈ 0.11).

    The source is continued linearly through the last two evaluations, so it is off by
    O((rηλ)²) relative (its sharp components decay by ≈ 1 − ηλ per step). r = 2 must stay
    within 4 % of r = 1 (measured 1.1 % for order 0, 2.2 % for order 1): below the 5–6 % by
    which the r = 1 prediction itself differs from the measured error on this run, so it does
    not change what the prediction says. The difference must grow with r at least like r²
    (measured 2.2 % → 13 %, ×5.9, from r = 2 to r = 4; a constant hold would grow like r, a wrong
    continuation not at all)."""
    lr, k = 0.1, 200
    ref = _reference(lr, k)[:, 1]
    diff = {}
    for r in (2, 4):
        p = predicted_error(mlp_loss, mlp_params(), lr, k, 1, predict_every=r)
        np.testing.assert_array_equal(p.steps, np.arange(1, k + 1))
        diff[r] = np.max(np.abs(p.predicted - ref) / ref)
    assert 0 < diff[2] < 0.04, diff
    assert diff[4] > 3.5 * diff[2], diff


def test_predict_every_across_chunks():
    """Each chunk restarts the continuation (no ξ is carried between chunks): ξ at the chunk's
    first step, and a look-ahead of plain GD steps to the next multiple of r gives the second
    point, so the first block is interpolated. With 3-point chunks (a restart every 6 steps)
    and r = 2 the result must keep the r = 2 accuracy against r = 1 (4 %, as above; measured
    1.6 %), which fails if the chunk's step index `start` is wrong (ξ then evaluated at the
    wrong steps, or the look-ahead overshooting)."""
    lr, k, r = 0.1, 60, 2
    ref = _reference(lr, 200)[:k, 1]
    recs = list(eom.measure.compare_chunks(
        mlp_loss, mlp_params(), lr, k, (1,), predict=True, solve=False, record_every=r,
        chunk_size=3, predict_every=r))
    steps = np.concatenate([rc["step"] for rc, _ in recs])
    pred = np.concatenate([rc["predicted_1"] for rc, _ in recs])
    np.testing.assert_array_equal(steps, np.arange(r, k + 1, r))
    rel = np.abs(pred - ref[steps - 1]) / ref[steps - 1]
    assert rel.max() < 0.04, rel


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_predict_every_rejects_bad_values(bad):
    with pytest.raises(eom.EomError, match="predict_every"):
        compare(mlp_loss, mlp_params(), 0.05, 4, (0,), predict=True, solve=False,
                predict_every=bad)
