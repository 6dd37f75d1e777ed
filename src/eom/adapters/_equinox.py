r"""Equinox models: $\theta$ = the inexact-array leaves of the model (`eqx.partition`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx

from ._common import PyTree, check_x64, library_promotion, split_batch, to_float64


def from_equinox(
    model: eqx.Module,
    loss_fn: Callable[[Any, Any], Any],
    batch: tuple[Any, Any],
    *,
    filter_spec: Callable[[Any], bool] = eqx.is_inexact_array,
) -> tuple[Callable[[PyTree], Any], PyTree]:
    r"""`(loss, params0)` for an Equinox model, in float64.

    $\theta$ = `eqx.partition(model, filter_spec)[0]` cast to float64 (Equinox layers default to
    float32 weights, with which counter terms hold to ~1e-7 only); the rest of the model and the
    batch are closed over:

    $$L(\theta) = \texttt{loss\_fn}(\texttt{combine}(\theta, \text{static})(x), y),
    \qquad \texttt{batch} = (x, y).$$

    A tuple `x` is passed as several positional arguments.
    """
    check_x64()
    args, targets = split_batch(batch, "from_equinox")
    args, targets = to_float64(args), to_float64(targets)
    params, static = eqx.partition(model, filter_spec)
    params0 = to_float64(params)

    def loss(params):
        with library_promotion():
            return loss_fn(eqx.combine(params, static)(*args), targets)

    return loss, params0
