r"""Issue 3 acceptance experiment: how precisely do GF and the EoM of orders 1–3 follow GD on a
real network?

Setup (fixed by the issue, nothing tuned): the built-in tanh MLP 64 → 128 → 128 → 10 (26,122
parameters) with softmax cross-entropy on scikit-learn's digits (1797 samples, full batch),
float64, 1000 GD steps at η = 0.3/λ_max(H(θ_0)) (λ_max by Lanczos on HVPs), `eom.compare` with
orders (0, 1, 2, 3), predict=True, record_every=10, automatic solver tolerances.

THEORY.md §3 expects successive orders to shrink the error by roughly ηλ_eff. To see which λ is
"effective", the script also measures, for each order's final error vector
$e_N = \theta^{(N)}(T) - \theta_T$:

- its Rayleigh quotient $\lambda_{e} = e^\top H(\theta_T) e / \lVert e\rVert^2$ (is the error in
  stiff or in slow directions?), and the share of $\lVert e\rVert^2$ in the top-20 Hessian
  eigenvectors;
- the per-layer split of the error;
- the term ratios $r_k = \eta\lVert\xi_{k+1}\rVert/\lVert\xi_k\rVert$ along the run (diagnostics
  every 100 steps).

On a quadratic, each eigen-direction λ contributes to the order-N error
$\propto \eta^{N+1}\lambda^{N+2}\,t\,e^{-\lambda t}/(N+2)$ at time t, so the ratio of successive
orders in that direction is $\eta\lambda\,(N+2)/(N+3)$: with $\lambda_e$ of $e_N$ in place of λ this
gives a per-order expectation that is printed next to the measured ratio.

Run: `python benchmarks/issue3_digits_mlp.py` (CPU; takes long on a small machine: the order-3
field and the ξ_4 of the prediction cost ~10–30 gradient evaluations each). Writes the per-step
records to `$EOM_BENCH_OUT/issue3_digits_records.csv` and the final parameters to
`issue3_digits_final.npz` (default folder: /tmp).
"""

from __future__ import annotations

import csv
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import eom
from eom.analysis import sharpness, term_ratios
from eom.internal import auto_tolerance, compare_chunks
from eom.problems import make_problem

ORDERS = (0, 1, 2, 3)
NUM_STEPS = 1000
RECORD_EVERY = 10
TARGET_ETA_LAMBDA = 0.3
OUT = os.environ.get("EOM_BENCH_OUT", "/tmp")
#: EOM_BENCH_SMOKE=1: a seconds-long dry run of the script's code paths (tiny net, 40 steps);
#: its numbers mean nothing.
SMOKE = bool(os.environ.get("EOM_BENCH_SMOKE"))
if SMOKE:
    NUM_STEPS = 40


def log(*args):
    print(*args, flush=True)


def hvp_fn(loss):
    grad = jax.grad(loss)

    @jax.jit
    def hvp(p, v):
        return jax.jvp(grad, (p,), (v,))[1]

    return hvp


def _print_tables(cols: dict, steps: np.ndarray, lr: float, tols: dict) -> dict:
    """The trajectory table (every 100 steps) and the final errors; returns them per order."""
    log("\n== trajectory (every 100 steps) ==")
    head = f"{'step':>5} {'loss_gd':>9} " + " ".join(
        f"{'err_' + str(n):>10} {'pred_' + str(n):>10}" for n in ORDERS) + "  ηλ_max   flags"
    log(head)
    for i in range(len(steps)):
        if steps[i] % (10 if SMOKE else 100) and i != len(steps) - 1:
            continue
        flags = "".join(str(int(cols[f"flagged_{n}"][i])) for n in ORDERS)
        eta_lam = cols["eta_lambda_max"][i] if "eta_lambda_max" in cols else np.nan
        log(f"{steps[i]:>5} {cols['loss_gd'][i]:>9.5f} " + " ".join(
            f"{cols[f'error_{n}'][i]:>10.3e} {cols[f'predicted_{n}'][i]:>10.3e}" for n in ORDERS)
            + f"  {eta_lam:6.4f}  {flags}")

    log(f"\n== final (step {steps[-1]}, t = {steps[-1] * lr:.4g}) ==")
    err = {n: float(cols[f"error_{n}"][-1]) for n in ORDERS}
    for n in ORDERS:
        name = "GF" if n == 0 else f"EoM-{n}"
        pred = float(cols[f"predicted_{n}"][-1])
        log(f"{name:>6}: error {err[n]:.4e}  relative {cols[f'relative_error_{n}'][-1]:.3e}  "
            f"predicted {pred:.4e} (pred/meas {pred / err[n]:.4f})  bound "
            f"{cols[f'bound_{n}'][-1]:.3e}  solver_error {cols[f'solver_error_{n}'][-1]:.2e} "
            f"(error/solver {err[n] / cols[f'solver_error_{n}'][-1]:.3g}×)  rtol=atol "
            f"{tols[n]:.2e}  flagged at {int(cols[f'flagged_{n}'].sum())}/{len(steps)} records")
    for a, b in zip(ORDERS, ORDERS[1:], strict=False):
        log(f"ratio error_{b}/error_{a} = {err[b] / err[a]:.4g}")
    for n in ORDERS:
        gap = np.abs(cols[f"predicted_{n}"] - cols[f"error_{n}"]) / cols[f"error_{n}"]
        log(f"predicted vs measured, order {n}: max relative gap over the run {gap.max():.3g} "
            f"(at step {steps[np.argmax(gap)]}), final {gap[-1]:.3g}")
    return err


def main() -> int:
    t_start = time.perf_counter()
    log(f"eom {eom.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, "
        f"x64 {jax.config.jax_enable_x64}")

    # ---------------------------------------------------------------------------------- setup
    tic = time.perf_counter()
    problem = (make_problem("mlp", "digits", subset=100, width=8) if SMOKE
               else make_problem("mlp", "digits"))
    loss, p0 = problem.loss, problem.params0
    flat0, unravel = ravel_pytree(p0)
    log(f"problem: mlp on digits, {problem.n_params} parameters, "
        f"{problem.dataset.X.shape[0]} samples (full batch), dtype {flat0.dtype}")
    log("leaves: " + ", ".join(
        f"{name} {tuple(x.shape)}" for name, x in zip(eom.tree.leaf_paths(p0),
                                                      jax.tree.leaves(p0), strict=True)))
    s0 = sharpness(loss, p0, k=1)
    lam0 = s0.lambda_max
    lr = TARGET_ETA_LAMBDA / lam0
    log(f"λ_max(θ_0) = {lam0:.6g} (Lanczos, {s0.num_hvps} HVPs, converged {s0.converged}, "
        f"residual {s0.largest_residuals[0]:.1e})")
    log(f"η = 0.3/λ_max = {lr:.6g};  T = {NUM_STEPS}·η = {NUM_STEPS * lr:.6g};  "
        f"L(θ_0) = {float(loss(p0)):.6f}, accuracy {float(problem.accuracy(p0)):.3f}")
    r0 = term_ratios(loss, p0, lr, max(ORDERS))
    log("term ratios at θ_0, r_k = η‖ξ_{k+1}‖/‖ξ_k‖ (ξ_0 = ∇L): "
        + ", ".join(f"r_{k} = {v:.4g}" for k, v in enumerate(r0)))
    t_setup = time.perf_counter() - tic

    # ---------------------------------------------------------------------------------- run
    tic = time.perf_counter()
    records, state = [], None
    gen = compare_chunks(
        loss, p0, lr, NUM_STEPS, ORDERS, record_every=RECORD_EVERY, predict=True,
        diagnose_every=10 if SMOKE else 100,
    )
    for recs, state in gen:
        records.append(recs)
        last = int(recs["step"][-1])
        log(f"  ... chunk done through step {last} "
            f"({time.perf_counter() - tic:.0f} s; errors "
            + ", ".join(f"N={n}: {recs[f'error_{n}'][-1]:.3e}" for n in ORDERS) + ")")
    t_run = time.perf_counter() - tic
    cols = {
        k: np.concatenate([np.asarray(r[k]) for r in records])
        for k in records[0]
        if not k.startswith("_")
    }
    steps = cols["step"]
    with open(os.path.join(OUT, "issue3_digits_records.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        w.writerows(zip(*[c.tolist() for c in cols.values()], strict=True))

    # tolerances actually used (same rule as compare's automatic choice)
    tols = auto_tolerance(loss, p0, lr, ORDERS)

    err = _print_tables(cols, steps, lr, tols)

    # ---------------------------------------------------------------------------------- analysis
    tic = time.perf_counter()
    theta_T = state.theta_gd
    sT = sharpness(loss, theta_T, k=20, v0=None)
    lamT = sT.lambda_max
    log(f"\nλ_max(θ_0) = {lam0:.6g} → ηλ_max = {lr * lam0:.4f};  λ_max(θ_T) = {lamT:.6g} → "
        f"ηλ_max = {lr * lamT:.4f}  (top-20 at θ_T: {np.array2string(sT.largest, precision=3)})")
    if "eta_lambda_max" in cols:
        m = np.isfinite(cols["eta_lambda_max"])
        log("ηλ_max along the run (20-step warm Lanczos): " + ", ".join(
            f"{int(s)}: {v:.4f}" for s, v in zip(steps[m], cols["eta_lambda_max"][m],
                                                 strict=True)))
        for k in range(max(ORDERS) + 1):
            key = f"ratio_{k}"
            if key in cols:
                log(f"  r_{k} along the run: " + ", ".join(
                    f"{v:.3g}" for v in cols[key][m]))
    rT = term_ratios(loss, theta_T, lr, max(ORDERS))
    log("term ratios at θ_T: " + ", ".join(f"r_{k} = {v:.4g}" for k, v in enumerate(rT)))
    log(f"L(θ_T) = {float(loss(theta_T)):.6f}, accuracy {float(problem.accuracy(theta_T)):.3f}")

    hvp = hvp_fn(loss)
    V = np.asarray(sT.largest_vectors)  # (20, d)
    flat_T = np.asarray(ravel_pytree(theta_T)[0])
    names = eom.tree.leaf_paths(p0)
    log("\n== where the final error sits ==")
    log(f"{'order':>5} {'‖e‖':>10} {'λ_e=eᵀHe/‖e‖²':>14} {'ηλ_e':>8} {'top-20 share':>12}")
    lam_e = {}
    e_flat = {}
    for i, n in enumerate(ORDERS):
        e = np.asarray(ravel_pytree(state.theta[i])[0]) - flat_T
        e_flat[n] = e
        ee = float(e @ e)
        He = np.asarray(ravel_pytree(hvp(theta_T, unravel(jnp.asarray(e))))[0])
        lam_e[n] = float(e @ He) / ee
        share = float(np.sum((V @ e) ** 2) / ee)
        log(f"{n:>5} {np.sqrt(ee):>10.3e} {lam_e[n]:>14.4g} {lr * lam_e[n]:>8.4f} {share:>12.3f}")
    log("successive-order ratio, measured vs quadratic-model expectation ηλ_e(N)·(N+2)/(N+3) "
        "(λ_e of the lower order's error) and vs ηλ_max:")
    for a, b in zip(ORDERS, ORDERS[1:], strict=False):
        expect = lr * lam_e[a] * (a + 2) / (a + 3)
        log(f"  {b}/{a}: measured {err[b] / err[a]:.4g};  ηλ_e·(N+2)/(N+3) = {expect:.4g};  "
            f"ηλ_max(θ_T) = {lr * lamT:.4g}")
    log("per-layer error (‖e_leaf‖ / ‖e‖):")
    sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(p0)]
    offs = np.cumsum([0] + sizes)
    for n in ORDERS:
        parts = [np.linalg.norm(e_flat[n][offs[j]:offs[j + 1]]) / np.linalg.norm(e_flat[n])
                 for j in range(len(sizes))]
        log(f"  order {n}: " + ", ".join(f"{nm} {v:.3f}" for nm, v in zip(names, parts,
                                                                           strict=True)))
    cosines = []
    for a, b in zip(ORDERS, ORDERS[1:], strict=False):
        ca = e_flat[a] @ e_flat[b] / np.linalg.norm(e_flat[a]) / np.linalg.norm(e_flat[b])
        cosines.append(f"cos(e_{a}, e_{b}) = {ca:.3f}")
    log("directions: " + ", ".join(cosines))
    np.savez(os.path.join(OUT, "issue3_digits_final.npz"), theta_gd=flat_T, lr=lr,
             **{f"theta_{n}": np.asarray(ravel_pytree(state.theta[i])[0])
                for i, n in enumerate(ORDERS)})
    t_analysis = time.perf_counter() - tic

    log(f"\nwall time: setup {t_setup:.0f} s, compare {t_run:.0f} s "
        f"({sum(r['_wall'] for r in records):.0f} s inside chunks), analysis {t_analysis:.0f} s, "
        f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
