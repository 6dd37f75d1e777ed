"""Helpers shared by the adapters: float64 casting, the `(inputs, targets)` batch convention,
optional imports with an install hint."""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import EomError

PyTree = Any


def require(module: str, extra: str = "adapters"):
    """Import an optional dependency or raise an `EomError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EomError(
            f"this adapter needs the optional package {module.split('.')[0]!r}, which cannot be "
            f"imported ({exc}). Install it with: pip install 'eom-dnn[{extra}]'."
        ) from exc


def check_x64() -> None:
    """Refuse to build a loss when JAX's float64 mode is off (the cast would silently be f32)."""
    if not jax.config.jax_enable_x64:
        raise EomError(
            "JAX float64 mode is off (EOM_NO_X64 is set or jax_enable_x64 was turned off), so the "
            "adapter cannot cast parameters to float64; counter terms would hold to ~1e-7 only. "
            "Unset EOM_NO_X64 or call jax.config.update('jax_enable_x64', True)."
        )


def _cast_leaf(x):
    if isinstance(x, jax.Array | np.ndarray | np.generic | float):
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.floating) and dtype != jnp.float64:
            return jnp.asarray(x, jnp.float64)
        if jnp.issubdtype(dtype, jnp.floating):
            return jnp.asarray(x)
    return x


def to_float64(tree: PyTree) -> PyTree:
    """Cast every floating leaf of `tree` to float64; other leaves (ints, keys, objects) stay."""
    return jax.tree.map(_cast_leaf, tree)


def split_batch(batch: Any, what: str) -> tuple[tuple, Any]:
    """`batch = (inputs, targets)` → `(args, targets)`; a tuple `inputs` becomes several args."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise EomError(
            f"{what}: batch must be a pair (inputs, targets); the model is called as "
            "model(inputs) (model(*inputs) for a tuple) and the loss as loss_fn(outputs, targets). "
            f"Got {type(batch).__name__}"
            f"{f' of length {len(batch)}' if isinstance(batch, tuple | list) else ''}."
        )
    inputs, targets = batch
    args = tuple(inputs) if isinstance(inputs, tuple) else (inputs,)
    return args, targets


def library_promotion():
    """Standard dtype promotion while a third-party library runs (Flax's normalization promotes
    with float32 internally, which `jax_numpy_dtype_promotion="strict"` rejects). Every input is
    float64 already, so promotion can only widen to float64."""
    return jax.numpy_dtype_promotion("standard")


def check_mode(mode: str | None, what: str) -> str | None:
    if mode not in ("train", "eval", None):
        raise EomError(
            f"{what}: mode must be 'train' (batch statistics of the batch), 'eval' (stored running "
            f"averages) or None (the model as it is), got {mode!r}."
        )
    return mode
