r"""Solver tolerances of `eom.compare`: chosen from the expected error, tightened as it falls.

**Initial tolerance.** The order-$N$ model's local error per step is about
$\eta^{N+2}\lVert\xi_{N+1}(\theta_0)\rVert$. Diffrax's PID controller bounds the RMS of
$\mathrm{err}_i/(\mathrm{atol} + \mathrm{rtol}|y_i|)$ per step, i.e. an L2 error of about
$\sqrt d\,\tau(1 + y_{\rm rms})$ with rtol = atol = τ. We ask for 1/100 of the local error per
step, clipped to [`TOL_FLOOR`, `TOL_CEIL`].

**Tightening.** A recorded error counts as a measurement only if it is at least `SOLVER_MARGIN`
times the estimated solver error. When the measured error falls (training converges, the error
decays with it), a fixed tolerance leaves later points below that margin. So once a model's
last error comes within 100× of that margin, its next chunk is verified (re-solved 100× tighter,
so its solver error is measured rather than extrapolated), and after every verified chunk its
tolerance is scaled so that one chunk adds at most 1/`TIGHTEN_TARGET` of the last measured
error (never looser than the initial tolerance, never below `TOL_FLOOR`, the float64 floor).
Solver error already carried from earlier chunks is never reduced: a point is flagged whenever
the honest estimate says so.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._errors import EomError
from .._tree import tree_norm
from ..engine import GD, grad_and_terms_fn, regularized
from ..engine._cache import loss_cache

#: A recorded error must exceed the solver's own error by this factor to count as measured.
SOLVER_MARGIN = 10.0
#: Tightest tolerance we ask of the solver in float64 (below it rounding dominates).
TOL_FLOOR = 1e-13
TOL_CEIL = 1e-6
#: Aim for one chunk's own solver error at most this fraction (1/x) of the measured error.
TIGHTEN_TARGET = 1000.0


@loss_cache
def _local_scale_fn(loss, optimizer, max_order, method):
    base = (
        regularized(loss, optimizer.weight_decay) if isinstance(optimizer, GD)
        else optimizer.full_loss(loss)
    )
    fn = grad_and_terms_fn(base, max_order + 1, method=method)

    @jax.jit
    def run(theta):
        _, xi = fn(theta)
        return jnp.stack([tree_norm(x) for x in xi])

    return run


def auto_tolerance(loss, params0, lr, orders, weight_decay=0.0, method="auto") -> dict[int, float]:
    r"""Per-order solver tolerance from the expected local error $\eta^{N+2}\lVert\xi_{N+1}\rVert$
    of GD on $L_\lambda$ (see the module docstring)."""
    return optimizer_tolerance(loss, GD(float(weight_decay), method), params0, lr, orders)


def optimizer_tolerance(loss, optimizer, params0, lr, orders) -> dict[int, float]:
    """`auto_tolerance` for any optimizer: GD's counter terms of its reported loss (for GD, of
    $L_\\lambda$) set the scale of each order's local error."""
    orders = tuple(int(n) for n in orders)
    method = getattr(optimizer, "method", "auto")
    norms = np.asarray(_local_scale_fn(loss, optimizer, max(orders), method)(params0))
    flat = np.asarray(ravel_pytree(params0)[0])
    d = flat.size
    y_rms = float(np.sqrt(np.mean(flat**2))) if d else 0.0
    out = {}
    for n in orders:
        local = lr ** (n + 2) * float(norms[n])
        tau = local / (100.0 * math.sqrt(d) * (1.0 + y_rms)) if local > 0 else TOL_FLOOR
        out[n] = float(np.clip(tau, TOL_FLOOR, TOL_CEIL))
    return out


def resolve_tolerances(rtol, atol, keys, orders, auto) -> tuple[dict, dict]:
    """Per-model `(rtol, atol)` dicts keyed like the results (`keys`); a dict given by the user
    may be keyed by those keys or by the model's order. `auto()` gives the default per order."""
    default = auto() if (rtol is None or atol is None) else None

    def pick(given, name):
        if given is None:
            return {k: default[n] for k, n in zip(keys, orders, strict=True)}
        if isinstance(given, dict):
            missing = [k for k, n in zip(keys, orders, strict=True) if k not in given
                       and n not in given]
            if missing:
                raise EomError(f"{name} has no entry for orders {missing}; give one per order.")
            return {k: float(given[k] if k in given else given[n])
                    for k, n in zip(keys, orders, strict=True)}
        return {k: float(given) for k in keys}

    r, a = pick(rtol, "rtol"), pick(atol, "atol")
    for k in keys:
        if not (r[k] > 0 and a[k] > 0):
            raise EomError(f"rtol and atol must be positive, got {r[k]}, {a[k]} for order {k}.")
    return r, a


def tightened(scale: float, tol: float, own_error: float, measured: float) -> float:
    """The next chunk's tolerance scale (≤ 1): the last one, times the factor that brings one
    chunk's own solver error `own_error` to `measured`/`TIGHTEN_TARGET`, floored at `TOL_FLOOR`."""
    if not (own_error > 0 and np.isfinite(own_error) and np.isfinite(measured)):
        return scale
    want = scale * measured / (TIGHTEN_TARGET * own_error)
    return float(np.clip(want, TOL_FLOOR / tol, 1.0))
