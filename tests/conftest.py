"""Strict test configuration (in the spirit of equinox's): float64, strict dtype promotion.

Every error measurement needs float64. Strict promotion makes an accidental float32/int mix an
error instead of a silent loss of precision.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import eom  # noqa: E402,F401  (turns on x64)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    """A fresh, seeded numpy Generator for each test (deterministic)."""
    return np.random.default_rng(0)


@pytest.fixture
def getkey():
    """Deterministic JAX PRNG keys: each call returns a new key."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 10_000))
    return lambda: next(keys)
