r"""Haiku models: `hk.transform` / `hk.transform_with_state` (with or without an apply rng)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._errors import EomError
from ._common import PyTree, check_x64, library_promotion, require, split_batch, to_float64


def from_haiku(
    transformed: Any,
    params: PyTree,
    loss_fn: Callable[[Any, Any], Any],
    batch: tuple[Any, Any],
    *,
    state: PyTree | None = None,
    rng: Any = None,
    **apply_kwargs: Any,
) -> tuple[Callable[[PyTree], Any], PyTree]:
    r"""`(loss, params0)` for a Haiku model, in float64.

    $$L(\theta) = \texttt{loss\_fn}(\texttt{apply}(\theta, [s,]\, [r,]\, x, \dots), y),
    \qquad \texttt{batch} = (x, y),$$

    where $s$ is `state` (required for `hk.transform_with_state`; the new state that `apply`
    returns is discarded, so e.g. `hk.BatchNorm(is_training=True)` uses the statistics of the
    batch without mutating anything) and $r$ the fixed `rng` (omitted for `hk.without_apply_rng`).
    `apply_kwargs` (e.g. `is_training=True`) are passed to `apply`. `params` and `state` are cast
    to float64.
    """
    hk = require("haiku")
    check_x64()
    args, targets = split_batch(batch, "from_haiku")
    args, targets = to_float64(args), to_float64(targets)
    with_state = isinstance(transformed, hk.TransformedWithState)
    if not with_state and not isinstance(transformed, hk.Transformed):
        raise EomError(
            f"from_haiku: expected the result of hk.transform or hk.transform_with_state, got "
            f"{type(transformed).__name__}."
        )
    if with_state and state is None:
        raise EomError(
            "from_haiku: the model was built with hk.transform_with_state; pass state= (the "
            "second value returned by init)."
        )
    if not with_state and state is not None:
        raise EomError("from_haiku: state= given but the model has no state (hk.transform).")
    takes_rng = "rng" in inspect.signature(transformed.apply).parameters
    lead = (rng,) if takes_rng else ()
    state = to_float64(state)
    params0 = to_float64(params)

    def loss(params):
        with library_promotion():
            if with_state:
                out, _ = transformed.apply(params, state, *lead, *args, **apply_kwargs)
            else:
                out = transformed.apply(params, *lead, *args, **apply_kwargs)
            return loss_fn(out, targets)

    return loss, params0
