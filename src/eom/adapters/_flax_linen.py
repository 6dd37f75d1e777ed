r"""Flax Linen models: `module.apply` with the non-`params` collections mutable and discarded."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._errors import EomError
from ._common import PyTree, check_x64, library_promotion, split_batch, to_float64


def from_linen(
    module: Any,
    variables: Mapping[str, Any],
    loss_fn: Callable[[Any, Any], Any],
    batch: tuple[Any, Any],
    *,
    mutable: bool | Sequence[str] | None = None,
    **apply_kwargs: Any,
) -> tuple[Callable[[PyTree], Any], PyTree]:
    r"""`(loss, params0)` for a Flax Linen module, in float64.

    $\theta$ = `variables["params"]`; the other collections $c$ (e.g. `batch_stats`) are fixed:

    $$L(\theta) = \texttt{loss\_fn}(\texttt{apply}(\{\text{params}: \theta, \dots c\}, x), y),
    \qquad \texttt{batch} = (x, y).$$

    `mutable` defaults to every non-`params` collection, so `nn.BatchNorm` called with
    `use_running_average=False` (pass it in `apply_kwargs`, e.g. `train=True`, as your module
    expects) normalizes with the statistics of the batch; the updated collections `apply` returns
    are discarded, so the loss is a pure function of $\theta$. Everything is cast to float64.
    """
    check_x64()
    args, targets = split_batch(batch, "from_linen")
    args, targets = to_float64(args), to_float64(targets)
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise EomError(
            "from_linen: variables must be the dict returned by module.init (with a 'params' "
            f"collection); got {type(variables).__name__}"
            f"{' with keys ' + ', '.join(variables) if isinstance(variables, Mapping) else ''}."
        )
    rest = to_float64({k: v for k, v in variables.items() if k != "params"})
    params0 = to_float64(variables["params"])
    if mutable is None:
        mutable = list(rest) if rest else False

    def loss(params):
        with library_promotion():
            out = module.apply({"params": params, **rest}, *args, mutable=mutable, **apply_kwargs)
            if mutable:
                out, _ = out
            return loss_fn(out, targets)

    return loss, params0
