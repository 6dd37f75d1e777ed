"""The same tanh MLP in PyTorch and in JAX (weights copied), as `eom run` model factories."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from eom.problems import cross_entropy


def _torch_mlp(n_in, n_out, seed):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 4), torch.nn.Tanh(), torch.nn.Linear(4, n_out))


def torch_factory(dataset, seed):
    """For `--model torch:...`: `(module, loss_fn, example_batch)`."""
    import torch

    X = np.array(dataset.X).reshape(len(dataset.X), -1)  # digits are 8×8 images (a writable copy)
    module = _torch_mlp(X.shape[1], dataset.n_classes, seed)
    batch = (torch.as_tensor(X), torch.as_tensor(np.array(dataset.y)))
    return module, torch.nn.functional.cross_entropy, batch


def jax_params(module):
    """The module's weights as a float64 JAX pytree (torch stores W as (out, in))."""
    return {k: jnp.asarray(v.detach().double().numpy()) for k, v in module.state_dict().items()}


def jax_loss(dataset):
    X, y = jnp.asarray(dataset.X).reshape(len(dataset.X), -1), jnp.asarray(dataset.y)

    def loss(p):
        h = jnp.tanh(X @ p["0.weight"].T + p["0.bias"])
        return cross_entropy(h @ p["2.weight"].T + p["2.bias"], y)

    return loss


def jax_factory(dataset, seed):
    """For `--model module:factory`: the same MLP written in JAX with the PyTorch weights."""
    module = _torch_mlp(int(np.prod(dataset.X.shape[1:])), dataset.n_classes, seed)
    return jax_loss(dataset), jax_params(module)
