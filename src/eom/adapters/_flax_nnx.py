r"""Flax NNX models: `nnx.split` into parameters and other state, merged afresh inside the loss.

NNX variables remember the JAX trace they were created at and refuse to be mutated from another
one. A model created outside `jax.grad`/`jax.jvp` and *called* inside (BatchNorm in train mode
writes its running averages on every call) therefore fails with "Cannot mutate BatchStat from a
different trace level". The adapter merges a fresh copy of the graph inside the loss, so the
writes land on throw-away variables of the current trace and the loss stays a pure function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .._errors import EomError
from ._common import (
    PyTree,
    check_mode,
    check_x64,
    library_promotion,
    require,
    split_batch,
    to_float64,
)

TRACE_HINT = (
    "Flax NNX refused a state update inside a JAX transformation (\"Cannot mutate ... from a "
    "different trace level\"): a module created outside the loss was called inside it, and a "
    "layer such as BatchNorm in train mode wrote its running statistics. Build the loss with "
    "eom.adapters.from_nnx(model, loss_fn, (inputs, targets)), which merges a fresh copy of the "
    "model inside the loss (mode='train' recomputes the batch statistics without mutating "
    "anything, mode='eval' uses the stored running averages), and make loss_fn use the model it "
    "is given, not one captured from outside."
)


def _fresh(tree: PyTree) -> PyTree:
    # Rebuilding the pytree creates new Variable objects owned by the current trace.
    return jax.tree.map(lambda a: a, tree)


def from_nnx(
    model: Any,
    loss_fn: Callable[[Any, Any], Any],
    batch: tuple[Any, Any],
    *,
    mode: str | None = "train",
    wrt: Any = None,
) -> tuple[Callable[[PyTree], Any], PyTree]:
    r"""`(loss, params0)` for a Flax NNX module, in float64.

    `graphdef, θ, rest = nnx.split(model, wrt, ...)` with `wrt = nnx.Param` by default; then

    $$L(\theta) = \texttt{loss\_fn}(\texttt{merge}(\text{graphdef}, \theta, \text{rest})(x), y),
    \qquad \texttt{batch} = (x, y).$$

    - `mode="train"` (default): BatchNorm normalizes with the statistics of the batch (recomputed
      inside every evaluation of the loss; the running averages it writes go to a throw-away copy,
      nothing is mutated) and Dropout is off (a loss must be deterministic).
    - `mode="eval"`: BatchNorm uses its stored running averages; Dropout is off.
    - `mode=None`: the model's flags as they are.

    $\theta$ and `rest` are cast to float64 (NNX layers default to float32 parameters, with which
    counter terms hold to ~1e-7 only). The model passed in is not modified.
    """
    nnx = require("flax.nnx")
    check_x64()
    mode = check_mode(mode, "from_nnx")
    args, targets = split_batch(batch, "from_nnx")
    args, targets = to_float64(args), to_float64(targets)
    if not isinstance(model, nnx.Module):
        raise EomError(f"from_nnx: expected a flax.nnx.Module, got {type(model).__name__}.")
    if mode is not None:
        model = nnx.view(
            model,
            use_running_average=(mode == "eval"),
            deterministic=True,
            raise_if_not_found=False,
        )
    graphdef, params, rest = nnx.split(model, nnx.Param if wrt is None else wrt, ...)
    params0 = to_float64(params)
    rest = to_float64(rest)
    errors = require("flax.errors")

    def loss(params):
        with library_promotion():
            m = nnx.merge(graphdef, _fresh(params), _fresh(rest))
            try:
                return loss_fn(m(*args), targets)
            except errors.TraceContextError as exc:
                raise EomError(TRACE_HINT) from exc

    return loss, params0
