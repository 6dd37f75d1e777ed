"""A factory that makes the classic NNX mistake: the loss merges the split state back inside the
loss, so BatchNorm (train mode) writes to variables of the outer trace (used by tests)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from eom.problems import cross_entropy


def factory(dataset, seed):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, n_in, n_out, rngs):
            self.l1 = nnx.Linear(n_in, 3, rngs=rngs, param_dtype=jnp.float64)
            self.bn = nnx.BatchNorm(3, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(3, n_out, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.bn(self.l1(x))))

    X = dataset.X.reshape(len(dataset.X), -1)
    graphdef, params, rest = nnx.split(Net(X.shape[1], dataset.n_classes, nnx.Rngs(seed)),
                                       nnx.Param, ...)

    def loss(p):
        with jax.numpy_dtype_promotion("standard"):  # Flax's BatchNorm promotes with float32
            return cross_entropy(nnx.merge(graphdef, p, rest)(X), dataset.y)

    return loss, params
