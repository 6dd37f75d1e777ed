r"""Order-of-accuracy sweeps: the error at a fixed time $T$ against the learning rate.

At a fixed horizon $T = K\eta$ the order-$N$ EoM's global error is $O(\eta^{N+1})$ (THEORY.md §3),
so on a log–log plot of error against $\eta$ the fitted slope estimates $N+1$.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Array, Float, PyTree

from .._errors import EomError
from ._compare import compare


@dataclass(frozen=True)
class OrderSweep:
    """Errors at time `horizon` for each order (rows) and learning rate (columns), with fitted
    log–log slopes and their standard errors, and whether any point is below solver precision."""

    horizon: float
    lrs: np.ndarray
    orders: tuple[int, ...]
    num_steps: np.ndarray
    error: dict[int, np.ndarray]
    flagged: dict[int, np.ndarray]
    slope: dict[int, float]
    slope_stderr: dict[int, float]

    def __repr__(self) -> str:
        slopes = ", ".join(f"{n}: {self.slope[n]:.2f}" for n in self.orders)
        return (f"OrderSweep(horizon={self.horizon:g}, lrs={[float(x) for x in self.lrs]}, "
                f"slope {{{slopes}}} (theory N+1))")

    def rows(self) -> list[dict]:
        return [
            {"order": n, "lr": float(lr), "num_steps": int(k), "error": float(e),
             "flagged": bool(f)}
            for n in self.orders
            for lr, k, e, f in zip(self.lrs, self.num_steps, self.error[n], self.flagged[n],
                                   strict=True)
        ]


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log y against log x and its standard error."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2:
        return float("nan"), float("nan")
    if len(lx) == 2:
        return float((ly[1] - ly[0]) / (lx[1] - lx[0])), float("nan")
    coef, cov = np.polyfit(lx, ly, 1, cov=True)
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def steps_for_horizon(horizon: float, lr: float) -> int:
    """The whole number of GD steps K with K·lr = horizon (error if it is not whole)."""
    k = horizon / lr
    kr = int(round(k))
    if kr < 1 or abs(k - kr) > 1e-9 * max(k, 1.0):
        raise EomError(
            f"horizon {horizon:g} is not a whole number of steps of lr {lr:g} ({k:g} steps); "
            "choose learning rates that divide the horizon, e.g. horizon/2**j."
        )
    return kr


def sweep_point(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    lr: float,
    orders: Sequence[int],
    horizon: float,
    *,
    weight_decay: float = 0.0,
    rtol=None,
    atol=None,
    method: str = "auto",
) -> tuple[dict[int, float], dict[int, bool]]:
    """One learning rate of a sweep: the error of each order at time `horizon` and its flag."""
    k = steps_for_horizon(horizon, lr)
    c = compare(loss, params0, lr, k, tuple(orders), weight_decay=weight_decay, record_every=k,
                rtol=rtol, atol=atol, method=method)
    return ({n: float(c.error[n][-1]) for n in c.orders},
            {n: bool(c.flagged[n][-1]) for n in c.orders})


def fit_sweep(horizon, lrs, orders, errors: dict, flagged: dict) -> OrderSweep:
    """Assemble an `OrderSweep` from per-lr results (`errors[n][j]` for lr `lrs[j]`)."""
    lrs = np.asarray(lrs, float)
    idx = np.argsort(lrs)
    lrs = lrs[idx]
    err = {n: np.asarray(errors[n], float)[idx] for n in orders}
    flg = {n: np.asarray(flagged[n], bool)[idx] for n in orders}
    slope, se = {}, {}
    for n in orders:
        slope[n], se[n] = loglog_slope(lrs, err[n])
    ks = np.array([steps_for_horizon(horizon, lr) for lr in lrs])
    return OrderSweep(float(horizon), lrs, tuple(orders), ks, err, flg, slope, se)


def order_sweep(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    lrs: Sequence[float],
    orders: Sequence[int],
    horizon: float,
    *,
    weight_decay: float = 0.0,
    rtol=None,
    atol=None,
    method: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> OrderSweep:
    r"""For each order $N$ and rate $\eta$, the error $\lVert\theta^{(N)}(T)-\theta_{T/\eta}\rVert$
    at $T$ = `horizon`, and the fitted log–log slope (expected $N+1$) with its standard error.

    Each learning rate is one `eom.compare` run recording only the final step.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p: jnp.sum(jnp.cos(p))
    >>> lrs = (0.1, 0.05, 0.025)
    >>> s = eom.order_sweep(loss, jnp.array([0.5]), lrs, orders=(0, 1), horizon=1.0)
    >>> {n: round(v, 1) for n, v in s.slope.items()}  # error ∝ η^(N+1)
    {0: 1.0, 1: 2.0}
    """
    lrs = [float(x) for x in lrs]
    orders = tuple(int(n) for n in orders)
    for lr in lrs:
        steps_for_horizon(horizon, lr)  # fail fast, before any run
    err = {n: [] for n in orders}
    flg = {n: [] for n in orders}
    for j, lr in enumerate(lrs):
        e, f = sweep_point(loss, params0, lr, orders, horizon, weight_decay=weight_decay,
                           rtol=rtol, atol=atol, method=method)
        for n in orders:
            err[n].append(e[n])
            flg[n].append(f[n])
        if progress is not None:
            progress(j + 1, len(lrs))
    return fit_sweep(horizon, lrs, orders, err, flg)
