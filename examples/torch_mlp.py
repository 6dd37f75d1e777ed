r"""A PyTorch model in eom: a small tanh MLP, `factory(dataset, seed)` for `--model torch:...`.

Needs the optional extra (`pip install 'eom-dnn[torch]'`: torch 2.11 and torchax 0.0.13). Use it
from the repository root with

    eom run --model torch:examples.torch_mlp:factory --dataset digits --subset 256

or run this file (`python examples/torch_mlp.py`) to compare gradient flow and the EoM of orders 1
and 2 against GD on the PyTorch model.

The contract for `torch:` models: `factory(dataset, seed)` returns `(module, loss_fn,
example_batch)` — a `torch.nn.Module`, a PyTorch loss `loss_fn(outputs, targets)` and the full
batch `(inputs, targets)`. eom runs the module through torchax as a pure JAX function of its
parameters (float64), so every counter term is exact automatic differentiation of the PyTorch
forward pass. Keep the network smooth (tanh, GELU…, not ReLU) and deterministic (no Dropout).
"""

from __future__ import annotations

import numpy as np


def factory(dataset, seed: int, width: int = 32):
    """Tanh MLP; cross-entropy for classification, mean squared error for regression."""
    import torch

    torch.manual_seed(seed)
    X = torch.as_tensor(np.array(dataset.X_flat))
    classify = dataset.task == "classification"
    out = dataset.n_classes if classify else dataset.y.shape[1]
    module = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, out),
    )
    y = torch.as_tensor(np.array(dataset.y))
    loss_fn = torch.nn.functional.cross_entropy if classify else torch.nn.functional.mse_loss
    return module, loss_fn, (X, y)


if __name__ == "__main__":
    import jax
    from jax.flatten_util import ravel_pytree

    import eom
    from eom.adapters import from_torch
    from eom.problems import open_dataset

    data = open_dataset("digits", subset=128)
    loss, params0 = from_torch(*factory(data, seed=0, width=16))
    print({name: tuple(p.shape) for name, p in params0.items()})
    lr, steps = 0.05, 50
    gd = eom.gradient_descent(loss, params0, lr, steps, save_every=steps)
    print(f"GD: loss {float(gd.loss[0]):.4f} -> {float(gd.loss[-1]):.4f} in {steps} steps")
    last_gd = ravel_pytree(jax.tree.map(lambda x: x[-1], gd.params))[0]
    for order in (0, 1, 2):
        ode = eom.integrate(loss, params0, lr, steps, order, save_every=steps)
        err = float(jax.numpy.linalg.norm(
            ravel_pytree(jax.tree.map(lambda x: x[-1], ode.params))[0] - last_gd))
        name = "gradient flow" if order == 0 else f"EoM order {order}"
        print(f"{name:>14}: |theta(T) - theta_GD| = {err:.3e}")
