"""A Flax NNX model with BatchNorm, as a `module:factory` for `eom run --model` (used by tests)."""

from __future__ import annotations

import jax.numpy as jnp

from eom.adapters import from_nnx
from eom.problems import cross_entropy


def factory(dataset, seed):
    """`factory(dataset, seed) -> (loss, params0)`: Linear → BatchNorm → tanh → Linear, width 4."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, n_in, n_out, rngs):
            self.l1 = nnx.Linear(n_in, 4, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.l2 = nnx.Linear(4, n_out, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.bn(self.l1(x))))

    X = dataset.X.reshape(len(dataset.X), -1)  # digits are 8×8 images
    model = Net(X.shape[1], dataset.n_classes, nnx.Rngs(seed))
    return from_nnx(model, cross_entropy, (X, dataset.y), mode="train")
