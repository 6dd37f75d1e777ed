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
    """
    lrs = np.asarray(sorted(float(x) for x in lrs))
    orders = tuple(int(n) for n in orders)
    ks = np.array([steps_for_horizon(horizon, lr) for lr in lrs])
    err = {n: np.zeros(len(lrs)) for n in orders}
    flg = {n: np.zeros(len(lrs), bool) for n in orders}
    for j, (lr, k) in enumerate(zip(lrs, ks, strict=True)):
        c = compare(loss, params0, lr, int(k), orders, weight_decay=weight_decay,
                    record_every=int(k), rtol=rtol, atol=atol, method=method)
        for n in orders:
            err[n][j] = c.error[n][-1]
            flg[n][j] = c.flagged[n][-1]
        if progress is not None:
            progress(j + 1, len(lrs))
    slope, se = {}, {}
    for n in orders:
        slope[n], se[n] = loglog_slope(lrs, err[n])
    return OrderSweep(float(horizon), lrs, orders, ks, err, flg, slope, se)
