"""Small pytree helpers shared by every layer (pure functions, jit-compatible)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import EomError

PyTree = Any


def tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    """Euclidean inner product ⟨a, b⟩ summed over all leaves."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves, jnp.zeros(()))


def tree_norm(a: PyTree) -> jax.Array:
    """Global L2 norm over all leaves."""
    return jnp.sqrt(tree_dot(a, a))


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def tree_scale(c, a: PyTree) -> PyTree:
    return jax.tree.map(lambda x: c * x, a)


def tree_axpy(c, x: PyTree, y: PyTree) -> PyTree:
    """c·x + y, leaf by leaf."""
    return jax.tree.map(lambda xi, yi: c * xi + yi, x, y)


def tree_zeros_like(a: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, a)


def tree_size(a: PyTree) -> int:
    """Number of scalar parameters in the pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(a)))


def check_params(params: PyTree, name: str = "params") -> None:
    """Raise `EomError` unless every leaf is a floating-point array."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise EomError(f"`{name}` has no array leaves; pass a pytree of float arrays.")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            where = jax.tree_util.keystr(path) or "<root>"
            raise EomError(
                f"`{name}{where}` has dtype {dtype}; every leaf must be a float array "
                "(cast it with jnp.asarray(x, jnp.float64), or close over non-float data "
                "inside the loss instead of passing it as a parameter)."
            )


def check_precision(params: PyTree, name: str = "params") -> None:
    """Raise `EomError` if a leaf is below float64 while JAX's x64 mode is on: float32
    parameters (Flax's and Equinox's default) would silently cap every measured error near
    1e-7."""
    if not jax.config.jax_enable_x64:
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and (
            jnp.finfo(dtype).bits < 64
        ):
            where = jax.tree_util.keystr(path) or "<root>"
            raise EomError(
                f"`{name}{where}` is {jnp.dtype(dtype).name} while float64 is on: the counter "
                "terms and measured errors would be accurate to ~1e-7 only. Create the "
                "parameters in float64 (e.g. `param_dtype=jnp.float64` in Flax, or "
                "`dtype=jnp.float64`) or cast them: "
                "`params = jax.tree.map(lambda x: x.astype(jnp.float64), params)`."
            )


def leaf_paths(params: PyTree) -> list[str]:
    """Human-readable key paths of the leaves, in flattening order."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [jax.tree_util.keystr(p) or "<root>" for p, _ in flat]
