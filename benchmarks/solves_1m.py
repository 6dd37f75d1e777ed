"""`python benchmarks/solves_1m.py [gd_steps]` (≈ 20 min on one core).

Field evaluations of the two ODE solves of `eom run --width 700 --depth 3 --orders 0,1` per GD
step at the automatic tolerances and at 100x tighter (the verification solve), from diffrax's
`num_steps`; plus a gradient and the order-1 field timed (minimum of 3).
"""

import json
import sys
import time

import diffrax
import jax
import jax.numpy as jnp

from eom.engine import GD
from eom.engine._trajectory import default_solver, detach
from eom.experiments import RunSettings
from eom.experiments._common import build_problem
from eom.measure import auto_tolerance

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
s = RunSettings(width=700, depth=3, orders=[0, 1])
prob = build_problem(s)
lam = 3.319004  # λ_max(θ_0), Lanczos at tol 1e-10 (benchmarks/README.md, earlier session)
lr = 0.2 / lam
print("n_params", prob.n_params, "lr", lr, flush=True)
t = time.time()
tol = auto_tolerance(prob.loss, prob.params0, lr, (0, 1))
print("auto tolerances", tol, "took", round(time.time() - t, 1), "s", flush=True)
models = GD(0.0).models(prob.loss, lr, (0, 1))
grad = jax.jit(jax.grad(prob.loss))
jax.block_until_ready(grad(prob.params0))
out = {
    "n_params": int(prob.n_params),
    "lr": lr,
    "tol": {str(k): v for k, v in tol.items()},
    "steps": STEPS,
}


def solve(model, rtol, tag):
    y0 = prob.params0
    ts = jnp.arange(5, STEPS + 1, 5) * lr
    term = diffrax.ODETerm(detach(model.field, jnp.asarray(0.0), y0, lr))

    @jax.jit
    def run(y0, rtol):
        sol = diffrax.diffeqsolve(
            term,
            default_solver(),
            t0=0.0,
            t1=ts[-1],
            dt0=lr,
            y0=y0,
            args=lr,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol),
            max_steps=4096,
            throw=False,
        )
        return (
            sol.stats["num_steps"],
            sol.stats["num_accepted_steps"],
            sol.stats["num_rejected_steps"],
        )

    t = time.time()
    c = run.lower(y0, rtol).compile()
    tc = time.time() - t
    t = time.time()
    n, a, r = jax.block_until_ready(c(y0, rtol))
    tw = time.time() - t
    # field evaluations: Dopri8 has 14 stages, first-same-as-last: 13 per step + 1 initial
    d = {
        "num_steps": int(n),
        "accepted": int(a),
        "rejected": int(r),
        "evals": 13 * int(n) + 1,
        "evals_per_gd_step": (13 * int(n) + 1) / STEPS,
        "wall_s": tw,
        "compile_s": tc,
    }
    print(tag, model.order, rtol, d, flush=True)
    out[f"{tag}_{model.order}"] = d


for m in models:
    solve(m, tol[m.order], "auto")
# gradient and field timing, interleaved minima of 3
f1 = jax.jit(lambda y: models[1].field(0.0, y, lr))
jax.block_until_ready(f1(prob.params0))
tg, tf = [], []
for _ in range(3):
    t = time.time()
    jax.block_until_ready(grad(prob.params0))
    tg.append(time.time() - t)
    t = time.time()
    jax.block_until_ready(f1(prob.params0))
    tf.append(time.time() - t)
out["grad_s"], out["field1_s"] = min(tg), min(tf)
print("grad", min(tg), "order-1 field", min(tf), flush=True)
for m in models:
    solve(m, tol[m.order] / 100, "verify")
json.dump(out, open("solves_1m.json", "w"), indent=1)
