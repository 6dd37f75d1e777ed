r"""Momentum EoM on a small digits MLP: does each order beat the previous one, and what at β = 0.9?

Setup (nothing tuned): scikit-learn's digits (1797 samples, full batch, features scaled to
[0, 1]), a tanh MLP 64 → 4 → 10 (310 parameters), softmax cross-entropy, float64. λ_max(H(θ_0))
from the dense Hessian. For each case the discrete method runs from θ_0 and the EoM of orders
0…3 (`eom.engine.momentum_field_fn`, Dopri8 rtol 1e-12) is compared on the common grid t = kη:

- start "manifold" (a): θ_{-1} = Φ^{-1}(θ_0) from the order-4 EoM; errors from step 0;
- start "rest" (b): the user's v_0 = 0 run; each EoM starts from its own flow integrated backwards
  over Kη from θ_K (K = `transient_steps`: β^K ≤ 1e-12); errors from step K on.

Cases: β = 0.5 at ηλ_max = bound/4 (inside the radius (1−√β)²); β = 0.9 at the same effective step
η/(1−β) (ηλ_max = 1.6 × its bound 0.0026), and at ηλ_max = bound/4.

Also the field cost per order as a ratio to one gradient (jitted, interleaved, min of 30 calls).

Run: `python benchmarks/momentum_digits.py` (~30 min on 2 shared CPU cores at load ~18, mostly
compiles). Measured (max error over steps K…end; N = 0, 1, 2, 3):

- heavy β = 0.5, ηλ_max = bound/4: 2.65e-2, 1.97e-3, 2.02e-4, 3.07e-5
- heavy β = 0.9, ηλ_max = 1.63 × bound: 1.91e-2, 2.13e-3, 4.20e-4, 1.13e-4
- heavy β = 0.9, ηλ_max = bound/4: 2.58e-2, 1.97e-3, 2.02e-4, 3.07e-5
- Nesterov β = 0.9, ηλ_max = 1.55 × bound: 1.73e-2, 1.84e-3, 3.47e-4, 8.93e-5
- field / gradient (β = 0.9, min of 30, gradient 2.6 ms): heavy ball N = 1…4: 1.7, 3.2, 7.5, 62;
  Nesterov: 2.0, 3.2, 11.7, 39.7 (load ~20 on 2 cores: ratios are indicative; measured before
  the terms moved to GD's B-series schedule, which cut the 26.1k MLP's XLA work per order by
  1.00 / 1.17 / 1.27 / 1.26×: see benchmarks/README.md, "Issues 12 and 13").
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import eom  # noqa: F401  (float64)
from eom.engine import (
    HeavyBall,
    flow,
    heavy_ball,
    momentum_field_fn,
    regime_bound,
    transient_steps,
)
from eom.problems import digits

ORDERS = (0, 1, 2, 3)
HORIZON = 300.0  # effective gradient-flow time t/(1−β) = kη/(1−β) covered by every run


def problem():
    data = digits()
    X = jnp.asarray(np.asarray(data.X, dtype=np.float64))
    X = X / jnp.maximum(jnp.max(jnp.abs(X)), 1.0)
    y = jnp.asarray(np.asarray(data.y))
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "W1": jax.random.normal(k1, (X.shape[1], 4)) / np.sqrt(X.shape[1]),
        "b1": jnp.zeros(4),
        "W2": jax.random.normal(k2, (4, 10)) / 2.0,
        "b2": jnp.zeros(10),
    }

    def loss(p):
        h = jnp.tanh(X @ p["W1"] + p["b1"])
        logits = h @ p["W2"] + p["b2"]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(len(y)), y])

    return loss, params


def lam_max(loss, params):
    flat, unravel = ravel_pytree(params)
    H = jax.hessian(lambda v: loss(unravel(v)))(flat)
    return float(jnp.max(jnp.linalg.eigvalsh(H)))


def eom_path(loss, beta, order, nesterov, y0, ts, lr):
    """The EoM sampled at `ts` (from t = 0), by chained calls of one compiled `flow`."""
    field = momentum_field_fn(loss, beta, order, nesterov)
    out, y, t = [], y0, 0.0
    for t_next in np.asarray(ts):
        y = flow(field, y, float(t_next - t), lr)
        out.append(y)
        t = float(t_next)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *out)


def run_case(loss, params, beta, x, nesterov, start, lmax):
    lr = x / lmax
    steps = int(round(HORIZON * (1 - beta) / lr))
    save = max(steps // 20, 1)
    opt = HeavyBall(beta=beta, nesterov=nesterov, start_kind=start, manifold_order=4)
    prev = opt.previous_on_manifold(loss, params, lr) if start == "manifold" else None
    traj = heavy_ball(loss, params, lr, beta, steps, nesterov=nesterov, save_every=save,
                      params_prev=prev)
    k = opt.transient_steps()
    keep = np.asarray(traj.steps) >= k
    ts = jnp.asarray(np.asarray(traj.steps)[keep] * lr)
    out = {}
    for n in ORDERS:
        (model,) = opt.models(loss, lr, (n,))
        y0 = opt.start(loss, params, lr, model)
        ys = eom_path(loss, beta, n, nesterov, y0, ts, lr)
        err = jax.tree.map(lambda a, b: a - b[keep], ys, traj.params)
        norms = np.sqrt(sum(np.sum(np.asarray(e) ** 2, axis=tuple(range(1, e.ndim)))
                            for e in jax.tree.leaves(err)))
        out[n] = (float(norms.max()), float(norms[-1]))
    return lr, steps, k, out, float(traj.loss[0]), float(traj.loss[-1])


def cost_ratios(loss, params, beta, nesterov, calls=30):
    grad = jax.jit(jax.grad(loss))
    fields = {n: jax.jit(lambda p, f=momentum_field_fn(loss, beta, n, nesterov): f(p, 0.01))
              for n in (1, 2, 3, 4)}
    jax.block_until_ready(grad(params))
    for f in fields.values():
        jax.block_until_ready(f(params))
    best = {n: np.inf for n in ["g", *fields]}
    for _ in range(calls):
        for n, fn in [("g", grad), *fields.items()]:
            tic = time.perf_counter()
            jax.block_until_ready(fn(params))
            best[n] = min(best[n], time.perf_counter() - tic)
    return {n: best[n] / best["g"] for n in fields}, best["g"]


def main():
    loss, params = problem()
    lmax = lam_max(loss, params)
    print(f"digits MLP 64-4-10 (310 params), λ_max(H(θ_0)) = {lmax:.4g}, L(θ_0) = "
          f"{float(loss(params)):.4g}")
    cases = [(0.5, 0.25 * regime_bound(0.5)), (0.9, 0.2 * 0.25 * regime_bound(0.5)),
             (0.9, 0.25 * regime_bound(0.9))]
    runs = [(False, b, x, "rest") for b, x in cases] + [(True, *cases[1], "rest")]
    for nesterov, beta, x, start in runs:
            if True:
                tic = time.perf_counter()
                lr, steps, k, out, l0, l1 = run_case(loss, params, beta, x, nesterov, start, lmax)
                k_lam = transient_steps(beta, nesterov=nesterov, lr_lambda=x)
                bound = regime_bound(beta, nesterov)
                errs = "  ".join(f"N={n}: {mx:.2e}/{fin:.2e}" for n, (mx, fin) in out.items())
                print(f"{'nesterov' if nesterov else 'heavy'} β={beta} ηλmax={x:.4g} "
                      f"(bound {bound:.4g}, ratio {x / bound:.2f}) η={lr:.4g} steps={steps} "
                      f"start={start} K={k} (λ-aware K {k_lam}) loss {l0:.3f}→{l1:.3f} | "
                      f"max/final err {errs} "
                      f"[{time.perf_counter() - tic:.0f}s]", flush=True)
    for nesterov in (False, True):
        ratios, tg = cost_ratios(loss, params, 0.9, nesterov)
        print(f"field cost / gradient ({'nesterov' if nesterov else 'heavy'}, gradient "
              f"{tg * 1e3:.3f} ms): " + ", ".join(f"N={n}: {r:.1f}" for n, r in ratios.items()))
    print("transient K at β = 0.5, 0.9:", transient_steps(0.5), transient_steps(0.9))


if __name__ == "__main__":
    main()
