r"""PyTorch models through torchax, which lowers PyTorch operators to JAX.

The module's parameters become a dict of float64 JAX arrays $\theta$ (keys as in
`module.named_parameters()`), buffers (e.g. BatchNorm running averages) are closed over, and
$L(\theta)$ = `loss_fn(module(x), y)` is evaluated by `torch.func.functional_call` inside the
torchax environment: a pure JAX function, so `jax.grad`, nested `jax.jvp` (every counter-term
order) and `jax.jit` go through it.

Works: `nn.Linear`, `nn.Conv1d/2d`, pooling, `nn.Flatten`, element-wise activations, `nn.LayerNorm`,
`nn.BatchNorm*` (train mode: statistics of the batch; the buffer updates land on throw-away copies),
`nn.Embedding`, `F.cross_entropy`, `F.mse_loss`. Does not: layers with data-dependent Python
control flow on tensor values (`if x.sum() > 0`), in-place writes to parameters, custom autograd
`Function`s (their `backward` is ignored: JAX differentiates the forward), operators torchax has
not lowered (it raises `OperatorNotFound`), and Dropout in train mode (a loss must be
deterministic, so the adapter turns Dropout off).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

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

TORCH_PIN = "torch 2.11 with torchax 0.0.13 (pip install 'eom-dnn[torch]')"


def _import_torchax():
    torch = require("torch", "torch")
    try:
        import torchax
    except ImportError as exc:
        raise EomError(
            f"PyTorch models need torchax, which cannot be imported ({exc}); install "
            f"{TORCH_PIN}."
        ) from exc
    except Exception as exc:  # noqa: BLE001 — torchax fails at import with unsupported torch
        raise EomError(
            f"torchax failed at import with torch {torch.__version__} ({type(exc).__name__}: "
            f"{exc}); this pair is not compatible. Install {TORCH_PIN}."
        ) from exc
    return torch, torchax


def _to_jax(x: Any, torch) -> Any:
    if isinstance(x, torch.Tensor):
        return jnp.asarray(x.detach().cpu().numpy())
    if isinstance(x, tuple | list):
        return type(x)(_to_jax(v, torch) for v in x)
    if isinstance(x, dict):
        return {k: _to_jax(v, torch) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return jnp.asarray(x)
    return x


def from_torch(
    module: Any,
    loss_fn: Callable[[Any, Any], Any],
    example_batch: tuple[Any, Any],
    *,
    mode: str | None = "train",
) -> tuple[Callable[[PyTree], Any], PyTree]:
    r"""`(loss, params0)` for a `torch.nn.Module`, as a pure JAX function in float64.

    $$L(\theta) = \texttt{loss\_fn}(\texttt{module}_\theta(x), y), \qquad
    \texttt{example\_batch} = (x, y),$$

    with `loss_fn` a PyTorch function such as `torch.nn.functional.cross_entropy` (it runs on
    torchax tensors). `x`, `y` may be torch tensors, NumPy or JAX arrays; floating ones are cast to
    float64, and a copy of the module is converted with `.double()` (the module passed in is not
    modified). `params0` is a dict `name -> float64 jax.Array` in `named_parameters()` order.
    `mode`: `"train"` (BatchNorm uses batch statistics; Dropout off), `"eval"`, or `None` (the
    module's flags as they are).
    """
    torch, torchax = _import_torchax()
    check_x64()
    mode = check_mode(mode, "from_torch")
    if not isinstance(module, torch.nn.Module):
        raise EomError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}.")
    if not callable(loss_fn):
        raise EomError("from_torch: loss_fn must be callable, e.g. torch.nn.functional.mse_loss.")
    args, targets = split_batch(example_batch, "from_torch")
    args = to_float64(_to_jax(args, torch))
    targets = to_float64(_to_jax(targets, torch))
    module = copy.deepcopy(module).double()
    if mode is not None:
        module.train(mode == "train")
        for sub in module.modules():
            if isinstance(sub, torch.nn.modules.dropout._DropoutNd):
                sub.eval()
    env = torchax.default_env()
    jm = torchax.interop.JittableModule(module, dedup_parameters=True)
    if not jm.params:
        raise EomError("from_torch: the module has no parameters.")
    params0 = to_float64(env.t2j_copy(dict(jm.params)))
    buffers = to_float64(env.t2j_copy(dict(jm.buffers)))

    def loss(params):
        tp, tb, targs, ttargets = env.j2t_iso((params, buffers, args, targets))
        with library_promotion(), env:
            out = jm.functional_call("forward", tp, tb, *targs)
            value = loss_fn(out, ttargets)
        return env.t2j_iso(value)

    return loss, params0


def torch_factory(factory: Callable, spec: str = "torch model") -> Callable:
    """Wrap `factory(dataset, seed, **kw) -> (module, loss_fn, example_batch)` into an eom model
    factory returning `(loss, params0)` (what `eom run --model torch:package.module:factory`
    calls)."""

    def eom_factory(dataset, seed, **kwargs):
        torch, _ = _import_torchax()
        torch.manual_seed(seed)
        result = factory(dataset, seed, **kwargs)
        if not isinstance(result, tuple | list) or len(result) != 3:
            raise EomError(
                f"{spec} must return (module, loss_fn, example_batch), with example_batch a pair "
                f"(inputs, targets); got {type(result).__name__}"
                f"{f' of length {len(result)}' if isinstance(result, tuple | list) else ''}."
            )
        module, loss_fn, batch = result
        return from_torch(module, loss_fn, batch)

    return eom_factory
