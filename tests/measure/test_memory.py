"""Caches without leaks: a loss and the data it closes over are freed once it leaves the bounded
loss cache (`eom.engine._cache.MAX_LOSSES` newer losses), even after ODE solves (diffrax inside
`jax.jit` would otherwise keep the field's closure alive: jax-ml/jax#16226)."""

from __future__ import annotations

import gc
import weakref

import jax.numpy as jnp
import numpy as np
import pytest

from eom.engine import eom_field, gradient_descent
from eom.engine._cache import MAX_LOSSES
from eom.measure import compare

MB = 1 << 20


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")  # pragma: no cover


def _data_loss(seed: int, rows: int):
    """A loss closing over a (rows × 1000) float64 array (rows = 2500: 20 MB)."""
    X = jnp.asarray(np.random.default_rng(seed).standard_normal((rows, 1_000)))

    def loss(p):
        return 0.5 * jnp.mean((X[:4, :2] @ p) ** 2) + 0.5 * jnp.sum(p**2) + 0 * X[-1, -1]

    return loss, X


def _compare_on_fresh_loss():
    # in a helper, so that no frame of the test itself ever holds the loss (pytest may keep a
    # snapshot of a test frame's locals)
    loss, X = _data_loss(0, 10)
    c = compare(loss, jnp.ones(2), 0.1, 3, (0,))
    assert c.error[0].shape == (3,)
    return weakref.ref(loss), weakref.ref(X)


def test_loss_and_its_data_are_freed_after_compare():
    """One full compare (GD chunks, an ODE solve, tolerance, metrics) on a fresh closure; after
    MAX_LOSSES other losses have been used, neither the loss nor its array is alive. Fails on
    a `functools.cache` keyed on the loss (never freed) and on handing diffrax the closure."""
    refs = _compare_on_fresh_loss()
    for i in range(MAX_LOSSES):  # other losses push it out of the cache (no compile needed)
        eom_field(lambda p, i=i: jnp.sum(p) * i, 0)
    gc.collect()
    assert refs[0]() is None and refs[1]() is None


def _run_on_fresh_data(seed, p0):
    loss, X = _data_loss(seed, 2_500)
    assert X.nbytes == 20_000_000
    gradient_descent(loss, p0, 0.1, 3)
    compare(loss, p0, 0.1, 2, (0,), rtol=1e-8, atol=1e-8, solve=False)


@pytest.mark.slow
def test_fifty_losses_over_20mb_each_keep_memory_bounded():
    """50 losses, each over its own 20 MB array, each run through GD and compare (no solve, to
    stay fast). Unbounded caches would hold all 50 arrays (≥ 1 GB); the bounded cache holds at
    most MAX_LOSSES of them. Growth after warm-up is allowed 10 × 20 MB (cache + allocator
    slack + per-compile bookkeeping, measured ≈ 3 MB per new loss without data)."""
    p0 = jnp.ones(2)
    rss = []
    for i in range(50):
        _run_on_fresh_data(i, p0)
        gc.collect()
        rss.append(_rss_mb())
    growth = rss[-1] - rss[MAX_LOSSES + 1]
    assert growth < 10 * 20e6 / MB, rss
