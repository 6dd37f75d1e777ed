"""Reliability of `eom.compare` (issue 11): no hang on a stiff EoM, blame where it belongs,
float64 enforced. Each test fails on the code before this change (noted per test)."""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom.engine import step_budget
from eom.measure import compare

# Logistic regression on 6 non-separable points in 2-d: the loss stays bounded (it grows at most
# linearly in θ), so GD with a huge lr never trips the divergence check; gradient flow over
# t = kη with η = 1e4 needs ~t·λ_max/5 ≫ 4096 explicit steps per chunk (stability, not accuracy).
_X = jnp.asarray(np.random.default_rng(5).standard_normal((6, 2)))
_Y = jnp.asarray([1.0, -1.0, 1.0, -1.0, 1.0, 1.0])


def logistic_loss(p):
    return jnp.mean(jnp.logaddexp(0.0, -_Y * (_X @ p)))


def sqrt_loss(p):
    return jnp.sum(jnp.sqrt(p))


def test_stiff_eom_fails_fast_with_a_specific_message():
    """Before: max_steps = 1e6 per chunk, minutes of solving, then 'the ODE solver failed …
    lr·λ_max near 1'. Now: the budget (4096 steps for a first chunk) runs out in well under a
    second of solving and the error names the order, the step and η·λ_max."""
    tic = time.perf_counter()
    with pytest.raises(eom.EomError) as info:
        compare(logistic_loss, jnp.zeros(2), 1e4, 64, (0,), rtol=1e-10, atol=1e-10)
    msg = str(info.value)
    assert "order-0" in msg and "too stiff at step 0" in msg, msg
    assert "η·λ_max ≈" in msg and "budget of 4096" in msg, msg
    assert "discrete iterates are fine" in msg
    # compile (~10 s on a loaded 2-core machine) plus 4096 cheap steps; the old code took minutes
    assert time.perf_counter() - tic < 90


def test_step_budget_grows_with_the_previous_chunk():
    assert step_budget(None) == 4096 and step_budget(0) == 4096
    assert step_budget(1000) == 16384  # 16 × 1000 rounded up to a power of two
    assert step_budget(3, floor=256) == 256


def test_nan_loss_is_blamed_on_the_discrete_method_not_the_solver():
    """sqrt loss, lr 5: GD jumps from θ = 1 to −1.5 and the loss is NaN at step 1. Before: the
    gradient-flow solve ran first and failed near θ = 0, blamed on 'the ODE solver … lr·λ_max
    near 1'. Now GD is advanced and checked first; no ODE of that chunk is solved."""
    with pytest.raises(eom.DivergenceError) as info:
        compare(sqrt_loss, jnp.asarray([1.0, 2.0]), 5.0, 10, (0,), rtol=1e-8, atol=1e-8)
    msg = str(info.value)
    assert "gradient descent diverged" in msg and "not finite at step 1" in msg, msg
    assert "not the solver" in msg


def test_non_finite_loss_at_start_is_an_input_error():
    with pytest.raises(eom.EomError, match="starting parameters"):
        compare(sqrt_loss, jnp.asarray([-1.0, 2.0]), 0.1, 4, (0,), rtol=1e-8, atol=1e-8)


def test_float32_params_with_x64_on_name_the_fix():
    """Before: accepted silently (counter terms accurate to ~1e-7 only)."""
    p32 = {"w": jnp.ones(2, dtype=jnp.float32)}
    with pytest.raises(eom.EomError) as info:
        compare(lambda p: jnp.sum(p["w"] ** 2), p32, 0.1, 4, (0,))
    msg = str(info.value)
    assert "float32" in msg and "['w']" in msg
    assert "param_dtype=jnp.float64" in msg and "x.astype(jnp.float64)" in msg
    with pytest.raises(eom.EomError, match="float32"):
        eom.counter_terms(lambda p: jnp.sum(p**2), jnp.ones(2, jnp.float32), 1)
