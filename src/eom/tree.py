"""Pytree arithmetic used throughout eom, public for users' own measurements.

Every function takes and returns pytrees of arrays with the same structure (parameters, gradients,
a `Trajectory`'s parameters at one time) and works under `jit`:

>>> import jax.numpy as jnp
>>> from eom.tree import tree_norm, tree_sub
>>> a = {"w": jnp.array([3.0, 4.0]), "b": jnp.array(0.0)}
>>> float(tree_norm(a))
5.0
>>> float(tree_norm(tree_sub(a, a)))
0.0
"""

from ._tree import (
    PyTree as PyTree,
    leaf_paths as leaf_paths,
    tree_add as tree_add,
    tree_axpy as tree_axpy,
    tree_dot as tree_dot,
    tree_norm as tree_norm,
    tree_scale as tree_scale,
    tree_size as tree_size,
    tree_sub as tree_sub,
    tree_zeros_like as tree_zeros_like,
)
