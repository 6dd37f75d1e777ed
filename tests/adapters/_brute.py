"""Brute-force reference: ξ_1 = ½ H ∇L with the Hessian formed by jax.hessian (small dims only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import eom


def assert_float64(params) -> None:
    leaves = jax.tree.leaves(params)
    assert leaves and all(jnp.asarray(x).dtype == jnp.float64 for x in leaves)


def check_xi1_against_hessian(loss, params0) -> float:
    """Return the relative error of eom's matrix-free ξ_1 against ½ H g from the dense Hessian.

    Both are float64 evaluations of the same ~30-dimensional quadratic form; they differ only by
    rounding, a few ulps of ‖H‖‖g‖, so 1e-12 relative leaves a margin of ~1e3 over 2e-16 while a
    wrong term (a missing ½, a float32 cast, stale BatchNorm statistics) is off by ≥ 1e-7.
    """
    assert_float64(params0)
    flat, unravel = ravel_pytree(params0)

    def f(v):
        return loss(unravel(v))

    g = jax.grad(f)(flat)
    expected = 0.5 * jax.hessian(f)(flat) @ g
    got = ravel_pytree(eom.counter_terms(loss, params0, 1)[0])[0]
    assert got.dtype == jnp.float64
    scale = float(jnp.linalg.norm(expected))
    assert scale > 1e-6  # a vanishing ξ_1 would make the comparison empty
    err = float(jnp.linalg.norm(got - expected)) / scale
    np.testing.assert_array_less(err, 1e-12)
    return err
