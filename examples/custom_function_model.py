r"""A user model written as a plain function of a dict of arrays: `factory(dataset, seed)`.

One hidden layer, $f(x) = W_2\tanh(W_1x + b_1) + b_2$, with parameters in a dict. Use it with

    eom run --model examples.custom_function_model:factory --dataset teacher-student

or run this file to compare gradient flow and the EoM (orders 1, 2) against GD.

No framework is needed: any pytree of float arrays works as parameters, and any smooth
function `loss_fn(params) -> scalar` written with `jax.numpy` works as the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def factory(dataset, seed: int, width: int = 16):
    """One tanh hidden layer; cross-entropy (classification) or mean squared error (regression)."""
    X, y = dataset.X_flat, dataset.y
    d = X.shape[1]
    k = dataset.n_classes if dataset.task == "classification" else y.shape[1]
    rng = np.random.default_rng(seed)
    params0 = {
        "W1": jnp.asarray(rng.standard_normal((d, width)) / np.sqrt(d)),
        "b1": jnp.zeros(width),
        "W2": jnp.asarray(0.5 * rng.standard_normal((width, k)) / np.sqrt(width)),
        "b2": jnp.zeros(k),
    }

    def predict(p):
        return jnp.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]

    def loss_fn(p):
        out = predict(p)
        if dataset.task == "classification":
            logp = jax.nn.log_softmax(out, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
        return jnp.mean((out - y) ** 2)

    return loss_fn, params0


if __name__ == "__main__":
    import eom
    from eom.problems import open_dataset
    from eom.tree import tree_norm, tree_sub

    data = open_dataset("teacher-student", subset=128)
    loss, params0 = factory(data, seed=0)
    lr, steps = 0.1, 50
    gd = eom.gradient_descent(loss, params0, lr, steps, save_every=steps)
    print(f"GD: loss {float(gd.loss[0]):.4f} -> {float(gd.loss[-1]):.4f} in {steps} steps")
    for order in (0, 1, 2):
        ode = eom.integrate(loss, params0, lr, steps, order, save_every=steps)
        err = float(tree_norm(tree_sub(ode.at(-1), gd.at(-1))))
        name = "gradient flow" if order == 0 else f"EoM order {order}"
        print(f"{name:>14}: |theta(T) - theta_GD| = {err:.3e}")
