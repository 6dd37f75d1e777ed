"""`gradient_descent`, `integrate` and `Trajectory`: grids, pytrees, closed forms, bad input.

GD is checked against a plain Python loop and the quadratic closed form
θ_k − θ* = (I − ηA)^k (θ_0 − θ*); the order-N EoM on a quadratic is the linear ODE
θ̇ = −M_N(θ − θ*), M_N = Σ_{k≤N} η^k A^{k+1}/(k+1) (THEORY.md §2), solved exactly by expm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import expm

import eom
from eom.engine._trajectory import CHUNK

from ._helpers import (
    QUAD_A,
    QUAD_B,
    QUAD_LOSS,
    QUAD_THETA0,
    flat,
    flat_loss,
    nested_loss,
    nested_params,
    quad_minimizer,
    rel_err,
)

LR = 0.05


def _gd_loop(loss, params, lr, num_steps, weight_decay=0.0):
    """GD written out by hand: the list of all iterates θ_0 … θ_num_steps."""
    grad = jax.jit(jax.grad(loss))
    out = [params]
    for _ in range(num_steps):
        g = grad(params)
        params = jax.tree.map(lambda p, g_: p - lr * (g_ + weight_decay * p), params, g)
        out.append(params)
    return out


def _assert_tree_close(a, b, rtol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(y))))


# ---------------------------------------------------------------------------------------------
# Gradient descent


def test_gd_matches_hand_written_loop_across_chunks():
    """num_steps > CHUNK saved points exercises the chunked loop; every iterate must match."""
    params, n = nested_params(), CHUNK + 11
    traj = eom.gradient_descent(nested_loss, params, LR, n)
    ref = _gd_loop(nested_loss, params, LR, n)
    assert isinstance(traj, eom.Trajectory)
    np.testing.assert_array_equal(traj.steps, np.arange(n + 1))
    assert jnp.issubdtype(traj.steps.dtype, jnp.integer)
    np.testing.assert_allclose(traj.times, np.arange(n + 1) * LR, rtol=1e-15)
    for k in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, n]:
        # Same float operations in the same order: agreement to a few ulps.
        _assert_tree_close(traj.at(k), ref[k], rtol=1e-13)
    # `loss` is the loss at every saved point.
    want_loss = np.array([float(nested_loss(ref[k])) for k in (0, n // 2, n)])
    np.testing.assert_allclose(np.asarray(traj.loss)[[0, n // 2, n]], want_loss, rtol=1e-13)


def test_gd_quadratic_closed_form():
    """θ_k − θ* = (I − ηA)^k (θ_0 − θ*)."""
    lr, n = 0.4, 30
    traj = eom.gradient_descent(QUAD_LOSS, QUAD_THETA0, lr, n, save_every=10)
    star = quad_minimizer()
    M = jnp.eye(5) - lr * QUAD_A
    for i, k in enumerate([0, 10, 20, 30]):
        want = star + jnp.linalg.matrix_power(M, k) @ (QUAD_THETA0 - star)
        assert rel_err(traj.params[i], want) <= 1e-12


def test_gd_weight_decay_and_loss_without_decay():
    """Coupled weight decay: θ ← θ − η(∇L + λθ); the saved `loss` is L itself, without (λ/2)‖θ‖²."""
    params, lam, n = nested_params(), 0.2, 6
    traj = eom.gradient_descent(nested_loss, params, LR, n, weight_decay=lam)
    ref = _gd_loop(nested_loss, params, LR, n, weight_decay=lam)
    _assert_tree_close(traj.at(n), ref[n], rtol=1e-13)
    assert float(traj.loss[n]) == pytest.approx(float(nested_loss(ref[n])), rel=1e-13)
    # ... and decay really changed the path (the check above can fail).
    plain = eom.gradient_descent(nested_loss, params, LR, n)
    assert rel_err(plain.at(n), ref[n]) > 1e-4


# ---------------------------------------------------------------------------------------------
# Grids


@pytest.mark.parametrize(
    ("num_steps", "save_every", "grid"),
    [
        (10, 3, [0, 3, 6, 9, 10]),
        (9, 3, [0, 3, 6, 9]),
        (4, 10, [0, 4]),
        (5, 1, [0, 1, 2, 3, 4, 5]),
        (0, 1, [0]),
    ],
)
def test_save_grid(num_steps, save_every, grid):
    """Steps 0, s, 2s, … and always num_steps itself (the grid both trajectories use)."""
    np.testing.assert_array_equal(eom.engine.save_grid(num_steps, save_every), grid)


@pytest.mark.parametrize(
    ("num_steps", "save_every", "grid"), [(10, 3, [0, 3, 6, 9, 10]), (0, 1, [0])]
)
def test_gd_trajectory_on_save_grid(num_steps, save_every, grid):
    traj = eom.gradient_descent(nested_loss, nested_params(), LR, num_steps, save_every=save_every)
    np.testing.assert_array_equal(traj.steps, grid)
    np.testing.assert_array_equal(traj.times, np.asarray(grid) * LR)
    for leaf, p in zip(jax.tree.leaves(traj.params), jax.tree.leaves(nested_params()), strict=True):
        assert leaf.shape == (len(grid), *p.shape)
    assert traj.loss.shape == (len(grid),)


def test_gd_save_every_is_a_subsample_of_save_every_1():
    params, n, s = nested_params(), 23, 5
    every = eom.gradient_descent(nested_loss, params, LR, n)
    sparse = eom.gradient_descent(nested_loss, params, LR, n, save_every=s)
    idx = [0, 5, 10, 15, 20, 23]
    np.testing.assert_array_equal(sparse.steps, idx)
    np.testing.assert_array_equal(sparse.times, every.times[np.array(idx)])
    for a, b in zip(jax.tree.leaves(sparse.params), jax.tree.leaves(every.params), strict=True):
        # The same GD steps in the same order: bit-for-bit up to XLA's choice of fusion.
        np.testing.assert_allclose(a, b[np.array(idx)], rtol=1e-14, atol=1e-15)


def test_integrate_and_gd_share_the_grid():
    """Same arguments → identical `steps` and `times`, so trajectories subtract leaf by leaf."""
    params, n, s = nested_params(), 12, 5
    gd = eom.gradient_descent(nested_loss, params, LR, n, save_every=s)
    ode = eom.integrate(nested_loss, params, LR, n, 1, save_every=s)
    np.testing.assert_array_equal(ode.steps, gd.steps)
    np.testing.assert_array_equal(ode.times, gd.times)
    np.testing.assert_array_equal(ode.steps, [0, 5, 10, 12])
    diff = jax.tree.map(jnp.subtract, ode.params, gd.params)
    assert jax.tree.structure(diff) == jax.tree.structure(params)
    # Both start at θ_0 exactly; after 12 steps they differ by the small O(η³) EoM error.
    np.testing.assert_array_equal(flat(jax.tree.map(lambda x: x[0], diff)), 0.0)
    assert 0 < float(jnp.linalg.norm(flat(jax.tree.map(lambda x: x[-1], diff)))) < 1e-3
    # The sparse EoM grid samples the same solution as the dense one (adaptive steps differ,
    # so they agree to the solver tolerance, rtol 1e-10, not bit for bit).
    dense = eom.integrate(nested_loss, params, LR, n, 1)
    for a, b in zip(jax.tree.leaves(ode.params), jax.tree.leaves(dense.params), strict=True):
        np.testing.assert_allclose(a, b[np.array([0, 5, 10, 12])], rtol=1e-8, atol=1e-10)


def test_saved_memory_independent_of_num_steps():
    """Saved arrays have len(grid) rows, however many steps are taken between saves."""
    params = nested_params()
    short = eom.gradient_descent(nested_loss, params, 0.01, 400, save_every=100)
    long = eom.gradient_descent(nested_loss, params, 0.01, 10_000, save_every=2_500)
    for traj in (short, long):
        assert traj.steps.shape == (5,) and traj.times.shape == (5,) and traj.loss.shape == (5,)
        for leaf, p in zip(jax.tree.leaves(traj.params), jax.tree.leaves(params), strict=True):
            assert leaf.shape == (5, *p.shape)
    np.testing.assert_array_equal(long.steps, [0, 2500, 5000, 7500, 10_000])
    # GD on this loss decreases it and does not blow up over 10k steps.
    assert float(long.loss[-1]) < float(long.loss[0])


def test_trajectory_at():
    traj = eom.gradient_descent(nested_loss, nested_params(), LR, 3)
    p2 = traj.at(2)
    assert jax.tree.structure(p2) == jax.tree.structure(nested_params())
    np.testing.assert_array_equal(p2["w"], traj.params["w"][2])


# ---------------------------------------------------------------------------------------------
# Pytrees vs flat vectors


def test_pytree_and_flat_vector_trajectories_agree():
    params = nested_params()
    f, v = flat_loss(nested_loss, params)
    _, unravel = ravel_pytree(params)
    n, s = 9, 4
    gd_tree = eom.gradient_descent(nested_loss, params, LR, n, save_every=s)
    gd_flat = eom.gradient_descent(f, v, LR, n, save_every=s)
    ode_tree = eom.integrate(nested_loss, params, LR, n, 1, save_every=s)
    ode_flat = eom.integrate(f, v, LR, n, 1, save_every=s)
    # GD: the same arithmetic up to reshapes, so agreement to rounding (measured: bit-identical).
    # The ODE: the field values are bit-identical too, but the adaptive controller's error norm
    # is summed leaf by leaf vs in one go; after the tiny first step (dt0 = 0.1·lr) that estimate
    # is at rounding level, so the next step size differs (measured: by 2%) and the dense-output
    # samples differ at the solver-tolerance level (measured 1.5e-11 at rtol 1e-10): 1e-9.
    for tree, vec, tol in [(gd_tree, gd_flat, 1e-14), (ode_tree, ode_flat, 1e-9)]:
        np.testing.assert_array_equal(tree.steps, vec.steps)
        np.testing.assert_array_equal(tree.times, vec.times)
        assert vec.params.shape == (len(vec.steps), v.size)
        stacked = jax.vmap(lambda x: ravel_pytree(x)[0])(tree.params)
        np.testing.assert_allclose(stacked, vec.params, rtol=tol, atol=tol)
        np.testing.assert_allclose(tree.loss, vec.loss, rtol=tol)
        assert jax.tree.structure(unravel(vec.params[-1])) == jax.tree.structure(params)


# ---------------------------------------------------------------------------------------------
# integrate against closed forms


def _eom_matrix(lr, order, A):
    """M_N = Σ_{k=0}^{N} η^k A^{k+1}/(k+1): the order-N EoM on a quadratic is θ̇ = −M_N(θ − θ*)."""
    return sum(lr**k * jnp.linalg.matrix_power(A, k + 1) / (k + 1) for k in range(order + 1))


@pytest.mark.parametrize("order", [0, 2])
def test_integrate_quadratic_closed_form(order):
    """Order 0 (gradient flow, e^{−tA}) and order 2, sampled at t = kη; default tolerances
    rtol 1e-10, atol 1e-12 give ≲1e-9 relative over T = 6 (asserted with margin: 1e-8)."""
    lr, n = 0.3, 20
    traj = eom.integrate(QUAD_LOSS, QUAD_THETA0, lr, n, order, save_every=5)
    star, M = quad_minimizer(), _eom_matrix(lr, order, QUAD_A)
    np.testing.assert_array_equal(traj.steps, [0, 5, 10, 15, 20])
    for i, t in enumerate(np.asarray(traj.times)):
        want = star + expm(-t * M) @ (QUAD_THETA0 - star)
        assert rel_err(traj.params[i], want) <= 1e-8, (order, t)
        assert float(traj.loss[i]) == pytest.approx(float(QUAD_LOSS(want)), rel=1e-8)


def test_integrate_weight_decay_quadratic():
    """weight_decay=λ: the EoM of L + (λ/2)‖θ‖², a quadratic with A + λI and the same b."""
    lr, n, lam = 0.3, 10, 0.5
    traj = eom.integrate(QUAD_LOSS, QUAD_THETA0, lr, n, 1, weight_decay=lam, save_every=n)
    A = QUAD_A + lam * jnp.eye(5)
    star = jnp.linalg.solve(A, QUAD_B)
    want = star + expm(-float(traj.times[-1]) * _eom_matrix(lr, 1, A)) @ (QUAD_THETA0 - star)
    assert rel_err(traj.params[-1], want) <= 1e-8
    # The saved loss excludes the decay term.
    assert float(traj.loss[-1]) == pytest.approx(float(QUAD_LOSS(want)), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# Bad input


def _both(**kw):
    """Call gradient_descent and integrate with the given overrides of good arguments."""
    args = dict(loss=nested_loss, params0=nested_params(), lr=LR, num_steps=3)
    args.update(kw)
    order = args.pop("order", 1)
    yield lambda: eom.gradient_descent(**args)
    yield lambda: eom.integrate(**args, order=order)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(lr):
    for call in _both(lr=lr):
        with pytest.raises(ValueError, match="learning rate must be a positive"):
            call()


@pytest.mark.parametrize(("order", "match"), [(-1, "≥ 0"), (eom.MAX_ORDER + 1, "maximum")])
def test_integrate_bad_order(order, match):
    with pytest.raises(ValueError, match=match):
        eom.integrate(nested_loss, nested_params(), LR, 3, order)


def test_bad_steps_and_save_every():
    for call in _both(num_steps=-1):
        with pytest.raises(ValueError, match="num_steps"):
            call()
    for call in _both(save_every=0):
        with pytest.raises(ValueError, match="save_every"):
            call()


def test_int_leaves_and_non_scalar_loss():
    for call in _both(params0={"w": jnp.arange(3)}, loss=lambda p: jnp.sum(p["w"] ** 2)):
        with pytest.raises(ValueError, match="float"):
            call()
    for call in _both(loss=lambda p: p["w"]):
        with pytest.raises(ValueError, match="scalar"):
            call()


def test_divergent_lr_raises_divergence_error():
    """ηλ_max = 5 > 2: GD grows like 4^k and overflows; the error says to lower the lr."""
    lr = 5.0 / float(jnp.max(jnp.linalg.eigvalsh(QUAD_A)))
    with pytest.raises(eom.DivergenceError, match="(?i)lower the learning rate"):
        eom.gradient_descent(QUAD_LOSS, QUAD_THETA0, lr, 800, save_every=100)
    assert issubclass(eom.DivergenceError, ValueError)
