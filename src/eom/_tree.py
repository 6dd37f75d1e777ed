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
    """Raise a ValueError unless every leaf is a floating-point array."""
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


def leaf_paths(params: PyTree) -> list[str]:
    """Human-readable key paths of the leaves, in flattening order."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [jax.tree_util.keystr(p) or "<root>" for p, _ in flat]
