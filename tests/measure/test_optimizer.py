"""`eom.compare` with an optimizer other than GD, through the `Optimizer` contract only.

The toy optimizer alternates two quadratic "batches" L_b(θ) = ½(θ − c_b)ᵀA_b(θ − c_b), b = k mod 2:
θ_{k+1} = θ_k − η A_b(θ_k − c_b). Its switching gradient flow θ̇ = −A_b(θ − c_b) (b the step's
batch, restarted at every step boundary) has the closed form
θ((k+1)η) = c_b + e^{−ηA_b}(θ(kη) − c_b), so the measured error of that model is known exactly.
The order-1 switching EoM adds
−η ξ_1^b = −(η/2) A_b²(θ − c_b) (ξ_1 = ½Hg of the step's batch): its local error per step is
O(η³) instead of O(η²), so its global error is smaller by about a factor η.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom.engine import ContinuousModel, Optimizer, step_index
from eom.measure import compare

from ._problems import expm_sym

_rng = np.random.default_rng(3)
_A = []
for _eigs in ([0.3, 0.9, 1.5], [0.6, 1.2, 0.2]):
    _q, _ = np.linalg.qr(_rng.standard_normal((3, 3)))
    _A.append((_q * np.array(_eigs)) @ _q.T)
A = np.stack([0.5 * (a + a.T) for a in _A])
C = _rng.standard_normal((2, 3))
THETA0 = _rng.standard_normal(3)
_AJ, _CJ = jnp.asarray(A), jnp.asarray(C)


def batch_loss(p, b):
    e = p - _CJ[b]
    return 0.5 * e @ (_AJ[b] @ e)


def _switch0(t, y, lr):
    b = step_index(t, lr) % 2
    return -_AJ[b] @ (y - _CJ[b])


def _switch1(t, y, lr):
    b = step_index(t, lr) % 2
    g = _AJ[b] @ (y - _CJ[b])
    return -g - 0.5 * lr * (_AJ[b] @ g)


def _averaged0(t, y, lr):
    return -0.5 * (_AJ[0] @ (y - _CJ[0]) + _AJ[1] @ (y - _CJ[1]))


class Alternating(Optimizer):
    """GD that alternates two batches: the smallest optimizer with a switching field."""

    name: ClassVar[str] = "alternating"

    def full_loss(self, loss):
        return lambda p: 0.5 * (loss(p, 0) + loss(p, 1))

    def advance(self, loss, params, state, lr, k0, num):
        def body(j, p):
            return p - lr * jax.grad(loss)(p, (k0 + j) % 2)

        return jax.lax.fori_loop(0, num, body, params), state

    def models(self, loss, lr, orders):
        fields = {0: _switch0, 1: _switch1}
        out = [ContinuousModel(f"switch{n}", "switching", n, fields[n], boundaries="step")
               for n in orders]
        # gradient flow on the mean loss, meaningful only after whole epochs (two steps)
        out.append(ContinuousModel("avg0", "averaged", 0, _averaged0, every=2))
        return tuple(out)


def _closed_forms(lr, steps):
    gd, sw = [THETA0.copy()], [THETA0.copy()]
    E = [expm_sym(-lr * a) for a in A]
    for k in range(steps):
        b = k % 2
        gd.append(gd[-1] - lr * A[b] @ (gd[-1] - C[b]))
        sw.append(C[b] + E[b] @ (sw[-1] - C[b]))
    return np.array(gd), np.array(sw)


def test_switching_models_through_compare_match_closed_forms():
    lr, steps = 0.1, 12
    c = compare(batch_loss, jnp.asarray(THETA0), lr, steps, (0, 1), optimizer=Alternating(),
                keep_params=True, rtol=1e-12, atol=1e-12)
    assert c.orders == ("switch0", "switch1", "avg0") and c.optimizer == "alternating"
    gd, sw = _closed_forms(lr, steps)
    # the discrete side went through advance with the right batch each step (rounding only)
    np.testing.assert_allclose(c.params["gd"], gd[1:], rtol=0, atol=1e-13)
    # the step-restarted solve equals the exact composition of e^{−ηA_b} maps; tolerance 1e-12
    # per step over 12 steps bounds the solver error well below 1e-9
    np.testing.assert_allclose(c.params["switch0"], sw[1:], rtol=0, atol=1e-9)
    want = np.linalg.norm(sw[1:] - gd[1:], axis=1)
    np.testing.assert_allclose(c.error["switch0"], want, rtol=1e-6)
    # the order-1 switching EoM is more accurate by about a factor η (local O(η³) vs O(η²));
    # 0.3 leaves room for the constant
    assert (c.error["switch1"] < 0.3 * c.error["switch0"]).all()
    assert not c.flagged["switch0"].any() and not c.flagged["switch1"].any()
    # every=2: recorded only at even steps, NaN (not flagged) at odd ones
    odd = c.steps % 2 == 1
    assert np.isnan(c.error["avg0"][odd]).all() and np.isfinite(c.error["avg0"][~odd]).all()
    assert not c.flagged["avg0"][odd].any()
    assert "error_switch1" in c.columns() and "error_avg0" in c.columns()
    # the reported loss is the optimizer's full loss (the mean over both batches)
    full = [0.25 * sum((g - C[b]) @ A[b] @ (g - C[b]) for b in (0, 1)) for g in gd[1:]]
    np.testing.assert_allclose(c.loss_gd, np.array(full), rtol=1e-12)


def test_gd_only_features_refuse_other_optimizers():
    for kw in (dict(predict=True), dict(local=True)):
        with pytest.raises(eom.EomError, match="only supported for gradient descent"):
            compare(batch_loss, jnp.asarray(THETA0), 0.1, 4, (0,), optimizer=Alternating(), **kw)
