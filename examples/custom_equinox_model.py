r"""A user model written with Equinox: a small tanh MLP, `factory(dataset, seed)`.

Use it from the repository root with

    eom run --model examples.custom_equinox_model:factory --dataset digits --subset 256

or run this file (`python examples/custom_equinox_model.py`) to train it with GD and compare
gradient flow (order 0) and the EoM of orders 1 and 2 against GD.

The contract: `factory(dataset, seed)` returns `(loss_fn, params0)`, where `params0` is a pytree
of float arrays and `loss_fn(params)` the full-batch scalar loss. With Equinox, split the model
with `eqx.partition(model, eqx.is_inexact_array)` and close over the static part and the data.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def factory(dataset, seed: int, width: int = 32):
    """Tanh MLP; softmax cross-entropy for classification, mean squared error for regression."""
    out = dataset.n_classes if dataset.task == "classification" else dataset.y.shape[1]
    model = eqx.nn.MLP(
        in_size=dataset.X_flat.shape[1],
        out_size=out,
        width_size=width,
        depth=2,
        activation=jnp.tanh,  # smooth: the EoM needs derivatives of every order
        key=jax.random.PRNGKey(seed),
        dtype=jnp.float64,
    )
    params0, static = eqx.partition(model, eqx.is_inexact_array)
    X, y = dataset.X_flat, dataset.y

    def loss_fn(params):
        outputs = jax.vmap(eqx.combine(params, static))(X)
        if dataset.task == "classification":
            logp = jax.nn.log_softmax(outputs, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
        return jnp.mean((outputs - y) ** 2)

    return loss_fn, params0


if __name__ == "__main__":
    import eom
    from eom.problems import open_dataset
    from eom.tree import tree_norm, tree_sub

    data = open_dataset("digits", subset=128)
    loss, params0 = factory(data, seed=0)
    lr, steps = 0.05, 50
    gd = eom.gradient_descent(loss, params0, lr, steps, save_every=steps)
    print(f"GD: loss {float(gd.loss[0]):.4f} -> {float(gd.loss[-1]):.4f} in {steps} steps")
    for order in (0, 1, 2):
        ode = eom.integrate(loss, params0, lr, steps, order, save_every=steps)
        err = float(tree_norm(tree_sub(ode.at(-1), gd.at(-1))))
        name = "gradient flow" if order == 0 else f"EoM order {order}"
        print(f"{name:>14}: |theta(T) - theta_GD| = {err:.3e}")
