"""Strict test configuration (in the spirit of equinox's): float64, strict dtype promotion.

Every error measurement needs float64. Strict promotion makes an accidental float32/int mix an
error instead of a silent loss of precision.
"""

import os

# Wide, plain terminal output for CLI tests (typer reads this at import).
os.environ.setdefault("TERMINAL_WIDTH", "200")
# Equinox's run-time checks inside diffrax are host callbacks, which keep compiled ODE solvers
# out of JAX's persistent cache. eom never relies on them (diffeqsolve runs with throw=False and
# eom checks the result), so the tests turn them into NaNs and share compiled solvers.
os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings as _hypothesis_settings  # noqa: E402

import eom  # noqa: E402,F401  (turns on x64)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

# In CI the property-based tests replay a fixed set of examples (a red CI must mean a change
# broke something, not that a new random draw was luckier); locally they explore new inputs.
_hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


def pytest_configure(config):
    """Share compiled executables between tests that build identical programs (and between
    the test process and the `eom` subprocesses it starts)."""
    from eom._cache import enable_compilation_cache

    where = enable_compilation_cache(config.cache.mkdir("jax-compilation-cache"))
    if where is not None:
        os.environ.setdefault("EOM_CACHE_DIR", str(where))


@pytest.fixture
def rng():
    """A fresh, seeded numpy Generator for each test (deterministic)."""
    return np.random.default_rng(0)


@pytest.fixture
def getkey():
    """Deterministic JAX PRNG keys: each call returns a new key."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 10_000))
    return lambda: next(keys)
