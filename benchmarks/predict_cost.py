"""`python benchmarks/predict_cost.py [orders] [rounds]` (benchmarks/README.md, million-parameter
run). Per-step cost of the prediction on the default digits MLP (26.1k params), in gradients:
XLA FLOPs of single steps, and wall minima of 10-step chunks interleaved round-robin."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from eom._tree import tree_norm, tree_zeros_like
from eom.engine import GD, grad_and_terms_fn
from eom.experiments import RunSettings
from eom.experiments._common import build_problem
from eom.measure import _kernels as K
from eom.measure._predict import gd_prediction_step, predict_chunk_fn

orders = tuple(int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "0,1").split(","))
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
prob = build_problem(RunSettings())
loss, p0 = prob.loss, prob.params0
lr = 0.18
gw = jax.grad(loss)
tf = grad_and_terms_fn(loss, max(orders) + 1)


def old_step(th, es, b):  # main's gd_prediction_step: terms every step, one jvp per order
    g, xi = tf(th)
    ne, nb = [], []
    for i, n in enumerate(orders):
        hv = jax.jvp(gw, (th,), (es[i],))[1]
        sc = lr ** (n + 2)
        ne.append(jax.tree.map(lambda e, h, x: e - lr * h + sc * x, es[i], hv, xi[n]))
        nb.append(b[i] + sc * tree_norm(xi[n]))
    return jax.tree.map(lambda p, g: p - lr * g, th, g), tuple(ne), jnp.stack(nb)


def old_chunk():
    @jax.jit
    def run(th, es, b, counts):
        def rec(c, n):
            c = jax.lax.fori_loop(0, n, lambda _, c: old_step(*c), c)
            return c, (c[0], jnp.stack([tree_norm(e) for e in c[1]]), c[2])

        return jax.lax.scan(rec, (th, es, b), counts)

    return run


m = len(orders)
z = tree_zeros_like(p0)
E = (jax.tree.map(lambda x: 1e-3 * jnp.ones_like(x), p0),) * m
xi0 = tuple(tf(p0)[1][n] for n in orders)


# --- FLOPs of single pieces
def flops(f, *a):
    c = jax.jit(f).lower(*a).compile().cost_analysis()
    c = c[0] if isinstance(c, list) else c
    return float(c["flops"])


fg = flops(gw, p0)
pieces = {
    "gradient": fg,
    "old step (terms + one HVP per order)": flops(
        lambda th, e: old_step(th, e, jnp.zeros(m)), p0, E
    ),
    "step without ξ (one jvp per order, shared primal)": flops(
        lambda th, e, x: gd_prediction_step(gw, orders, th, e, jnp.zeros(m), lr, x), p0, E, xi0
    ),
    "ξ_{N+1} evaluation (terms to max+1)": flops(lambda th: tf(th), p0),
}
print(f"orders {orders}; XLA FLOPs / gradient:")
for k, v in pieces.items():
    print(f"  {k}: {v / fg:.2f}")
# --- wall: 10-step chunks
counts = jnp.asarray([5, 5])
b0 = jnp.zeros(m)
gd = K.discrete_chunk_fn(loss, GD(0.0))
st = GD(0.0).init(loss, p0, lr)
fns = {
    "grad": (jax.jit(gw), (p0,)),
    "GD 10 steps": (gd, (p0, st, lr, jnp.asarray(0), counts)),
    "old predict 10 steps": (old_chunk(), (p0, (z,) * m, b0, counts)),
}
for r in (1, 2, 5):
    fns[f"new r={r} 10 steps"] = (
        predict_chunk_fn(loss, orders, 0.0, "auto", r),
        (p0, (z,) * m, b0, lr, counts, jnp.asarray(0)),
    )
for k, (f, a) in fns.items():
    jax.block_until_ready(f(*a))
best = {k: np.inf for k in fns}
for _ in range(ROUNDS):
    for k, (f, a) in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(*a))
        best[k] = min(best[k], time.perf_counter() - t)
g = best["grad"]
print("wall minima (s) and per GD step in gradients:")
for k, v in best.items():
    per = v / g if k == "grad" else v / 10 / g
    print(f"  {k}: {v:.4f} s  = {per:.2f} g/step")
gdps = best["GD 10 steps"] / 10 / g
for k in best:
    if "predict" in k or "new" in k:
        print(f"  extra over GD, {k}: {best[k] / 10 / g - gdps:.2f} g/step")
