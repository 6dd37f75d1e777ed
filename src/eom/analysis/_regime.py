r"""Where the EoM holds: the regime label from $\eta\lambda_{\max}$ and the counter-term ratios.

On a quadratic the counter terms are $\xi_k = A^kg/(k+1)$ and the series
$\sum_k \eta^k\xi_k$ converges iff $|\eta\lambda| < 1$ for every eigenvalue (THEORY.md §2, §6).
Between 1 and 2 GD still converges but flips sign along the top eigenvector every step (no real
flow does that); at 2 and beyond GD is unstable (the edge of stability). The labels:

| label | $\eta\lambda_{\max}$ | meaning |
|---|---|---|
| `accurate` | $< 0.5$ | each added order shrinks the error by $\approx\eta\lambda_{\max}$ |
| `marginal` | $[0.5, 1)$ | orders still help, but slowly |
| `beyond-series` | $[1, 2)$ | the series diverges; higher orders stop helping |
| `unstable` | $\ge 2$ (or NaN) | GD past the edge of stability / diverging |

The practical per-point indicator of the same thing is the ratio of successive terms
$r_k = \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k\rVert$ (with $r_0 = \eta\lVert\xi_1\rVert/
\lVert\nabla L\rVert$), which tends to $\eta\lambda_{\max}$ on a quadratic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._errors import EomError
from .._memo import loss_cache
from .._tree import tree_norm
from ..engine import check_loss, check_lr, check_order, grad_and_terms_fn, regularized
from ._sharpness import lambda_max_fn

#: Upper end (exclusive) of the `accurate` regime: η·λ_max < 0.5.
ACCURATE_MAX = 0.5
#: Upper end (exclusive) of the `marginal` regime; the counter-term series' radius, η·λ_max = 1.
SERIES_RADIUS = 1.0
#: GD's stability limit, η·λ_max = 2 (the edge of stability); `unstable` at and above it.
STABILITY_LIMIT = 2.0
#: The labels, from best to worst; the index is a label's severity.
REGIMES = ("accurate", "marginal", "beyond-series", "unstable")
_THRESHOLDS = np.array([ACCURATE_MAX, SERIES_RADIUS, STABILITY_LIMIT])


def regime_levels(eta_lambda_max: ArrayLike) -> np.ndarray:
    """Severity index (0 = accurate … 3 = unstable) of each η·λ_max; NaN counts as unstable."""
    x = np.asarray(eta_lambda_max, dtype=np.float64)
    level = np.searchsorted(_THRESHOLDS, x, side="right")
    return np.where(np.isnan(x), len(REGIMES) - 1, level).astype(int)


def regimes(eta_lambda_max: ArrayLike) -> np.ndarray:
    """Vectorized `regime`: an array of labels with the shape of `eta_lambda_max`."""
    return np.asarray(REGIMES, dtype=object)[regime_levels(eta_lambda_max)]


def regime(eta_lambda_max: float) -> str:
    r"""The regime label of one value of $\eta\lambda_{\max}$ (see the module table).

    `accurate` for $< 0.5$, `marginal` for $[0.5, 1)$, `beyond-series` for $[1, 2)$, `unstable`
    for $\ge 2$ or NaN (a diverged run). Only λ_max enters: negative curvature is a property of
    the loss, not of the discretization (pass $\max(\eta\lambda_{\max}, -\eta\lambda_{\min})$ to
    also flag the series radius along negative-curvature directions).

    >>> import eom
    >>> eom.regime(0.3), eom.regime(1.5), eom.regime(2.5)
    ('accurate', 'beyond-series', 'unstable')
    """
    x = np.asarray(eta_lambda_max, dtype=np.float64)
    if x.shape != ():
        raise EomError(f"regime() takes one value, got shape {x.shape}; use regimes() for arrays.")
    return REGIMES[int(regime_levels(x))]


def severity(label: str) -> int:
    """Index of `label` in `REGIMES` (higher is worse)."""
    try:
        return REGIMES.index(label)
    except ValueError:
        raise EomError(f"unknown regime label {label!r}; expected one of {REGIMES}.") from None


# --------------------------------------------------------------------------------------------
# Term ratios


@loss_cache
def _term_ratios_fn(loss: Callable, order: int, weight_decay: float, method: str) -> Callable:
    fn = grad_and_terms_fn(regularized(loss, weight_decay), order + 1, method=method)

    def ratios(params, lr):
        g, xi = fn(params)
        norms = jnp.stack([tree_norm(g)] + [tree_norm(x) for x in xi])
        num, den = norms[1:], norms[:-1]
        return jnp.where(den > 0, lr * num / jnp.where(den > 0, den, 1.0), jnp.nan)

    return ratios


def term_ratios_fn(
    loss: Callable[[PyTree], Float[Array, ""]],
    order: int,
    *,
    weight_decay: float = 0.0,
    method: str = "auto",
) -> Callable[[PyTree, Any], Float[Array, " order+1"]]:
    r"""A jittable `(params, lr) -> r` with $r_0 = \eta\lVert\xi_1\rVert/\lVert\nabla L\rVert$ and
    $r_k = \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k\rVert$ for $k = 1..$`order` (lr may be traced).

    Uses `order + 1` counter terms of $L_\lambda$, so $r_N$ compares the first term an order-N EoM
    neglects with the last one it keeps. A zero denominator gives NaN. Cached per arguments.
    """
    order = check_order(order)
    check_order(order + 1)  # the next term must be computable too
    return _term_ratios_fn(loss, order, float(weight_decay), method)


def term_ratios(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    lr: float,
    order: int,
    *,
    weight_decay: float = 0.0,
    method: str = "auto",
) -> np.ndarray:
    r"""Ratios of successive counter terms at θ: `r[k]` $= \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k
    \rVert$ for $k = 0..N$ (with $\xi_0 := \nabla L_\lambda$), an array of length `order + 1`.

    On a quadratic $\xi_k = A^kg/(k+1)$, so $r_k = \eta\frac{k+1}{k+2}\lVert A^{k+1}g\rVert/
    \lVert A^kg\rVert \to \eta\lambda_{\max}$: ratios near or above 1 mean higher orders stop
    helping.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p: jnp.sum(p**2)  # a quadratic with λ = 2: r_k = η λ (k+1)/(k+2)
    >>> [round(v, 6) for v in eom.term_ratios(loss, jnp.array([1.0]), 0.1, 1).tolist()]
    [0.1, 0.133333]
    """
    check_loss(loss, params)
    lr = check_lr(lr)
    fn = term_ratios_fn(loss, order, weight_decay=weight_decay, method=method)
    return np.asarray(_jitted(fn)(params, lr))


@loss_cache
def _jitted(fn: Callable) -> Callable:
    return jax.jit(fn)


def diagnostics_fn(
    loss: Callable[[PyTree], Float[Array, ""]],
    order: int,
    *,
    num_iters: int = 20,
    weight_decay: float = 0.0,
    method: str = "auto",
) -> Callable:
    r"""A jittable `(params, lr, v0) -> (ηλ_max, r, v)` for a measurement loop.

    Combines `lambda_max_fn` (fixed `num_iters` Lanczos steps from the warm start `v0`; see its
    accuracy note) and `term_ratios_fn`. Feed `v` back as the next `v0`; label with `regimes`.
    """
    lam_fn = lambda_max_fn(loss, num_iters, weight_decay=weight_decay)
    ratio_fn = term_ratios_fn(loss, order, weight_decay=weight_decay, method=method)

    def diagnose(params, lr, v0=None):
        lam, v = lam_fn(params, v0)
        return lr * lam, ratio_fn(params, lr), v

    return diagnose


# --------------------------------------------------------------------------------------------
# Warnings


def first_worsening(labels: Sequence[str], steps: Sequence[int]) -> int | None:
    """The first step whose regime is worse than the regime at the first step (None if never)."""
    labels, steps = list(labels), list(steps)
    if len(labels) != len(steps):
        raise EomError(f"labels ({len(labels)}) and steps ({len(steps)}) differ in length.")
    if not labels:
        return None
    levels = [severity(str(lab)) for lab in labels]
    for lev, step in zip(levels, steps, strict=True):
        if lev > levels[0]:
            return int(step)
    return None


_ADVICE = {
    "accurate": "The EoM is in its accurate regime (η·λ_max < 0.5).",
    "marginal": (
        "Each added EoM order now gains only a factor ≈ η·λ_max, and the series' radius "
        "(η·λ_max = 1) is near: lower the learning rate for a reliable EoM."
    ),
    "beyond-series": (
        "Beyond the series radius (η·λ_max ≥ 1) the counter-term series diverges: GD flips sign "
        "along the top eigenvector every step, which no real flow does, so higher EoM orders "
        "stop helping and can make the prediction worse. Lower the learning rate."
    ),
    "unstable": (
        "At η·λ_max ≥ 2 GD is past its stability limit (the edge of stability; it diverges on a "
        "quadratic) and no EoM order describes it; higher orders stop helping beyond the series "
        "radius η·λ_max = 1. Lower the learning rate."
    ),
}


def warning_message(
    step: int,
    eta_lambda_max: float,
    *,
    label: str | None = None,
    start_label: str | None = None,
    lr: float | None = None,
) -> str:
    r"""A warning naming the step where the regime worsened, $\eta\lambda_{\max}$ there, and advice.

    `label` defaults to `regime(eta_lambda_max)`. With `lr`, the message also gives the learning
    rates that would keep this point accurate ($< 0.5/\lambda_{\max}$) and inside the series
    radius ($< 1/\lambda_{\max}$).
    """
    x = float(eta_lambda_max)
    label = regime(x) if label is None else label
    severity(label)
    was = f", was {start_label!r} at the start" if start_label is not None else ""
    msg = f"EoM regime worsened at step {int(step)}: η·λ_max = {x:.3g} ({label!r}{was}). "
    msg += _ADVICE[label]
    if lr is not None and np.isfinite(x) and x > 0:
        lam = x / float(lr)
        msg += (
            f" With λ_max ≈ {lam:.3g} here, lr < {ACCURATE_MAX / lam:.3g} keeps η·λ_max < "
            f"{ACCURATE_MAX} and lr < {SERIES_RADIUS / lam:.3g} stays inside the series radius."
        )
    return msg


def regime_warning(
    steps: Sequence[int], eta_lambda_max: ArrayLike, *, lr: float | None = None
) -> str | None:
    """`warning_message` for the first step where the regime worsened, or None if it never did.

    If the run later reached a still worse regime, the message also names the first step of the
    worst one (e.g. where η·λ_max first crossed 2).
    """
    x = np.asarray(eta_lambda_max, dtype=np.float64).reshape(-1)
    steps = [int(s) for s in steps]
    labels = regimes(x)
    step = first_worsening(labels, steps)
    if step is None:
        return None
    i = steps.index(step)
    msg = warning_message(step, x[i], label=labels[i], start_label=labels[0], lr=lr)
    levels = regime_levels(x)
    worst = int(np.argmax(levels))  # the first index of the worst level
    if levels[worst] > levels[i]:
        msg += (
            f" Later the run reached {labels[worst]!r} at step {steps[worst]} "
            f"(η·λ_max = {x[worst]:.3g})."
        )
    return msg
