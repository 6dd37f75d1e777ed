r"""Benchmark rows of the SGD and momentum EoMs (issues 12, 13; informational, no limit).

Registered in the targets registry after the GD rows, measured the same way: every program
compiled cold, then all of one measure's programs called round-robin `repeats` times and each
one's minimum kept (`interleaved_minima`), with XLA's FLOP ratio alongside.

- `sgd` (issue 12), on the digits model of the settings split into `sgd_batches` equal batches
  $L_i$ (`make_batches`, last partial batch dropped):
  - switching EoM, order $N$: one evaluation of the step field of `SGD(...).models(...)`'s
    `"switching"` model, $-\nabla L_i - \sum_{n\le N}\eta^n\xi_n[L_i]$ (`step_field(k, θ, η)`),
    over one batch gradient $\nabla L_i$;
  - one step's solve (order `sgd_solve_order`): Dopri8 over $[k\eta, (k+1)\eta]$ at rtol
    `sgd_solve_rtol` (atol rtol/100), over one batch gradient (the note gives the solver steps);
  - cyclic epoch field, order $N$ (`sgd_epoch_field`: the modified-field terms of the epoch map
    of $m$ Euler steps) over one full-batch gradient $\nabla L$ (which costs about $m$ batch
    gradients, as does one epoch of SGD).
- `momentum` (issue 13): the order-$N$ heavy-ball and Nesterov EoM field
  $\sum_{n\le N}\eta^nF_n$ (`momentum_field_fn`, β = `momentum_beta`) over one gradient $\nabla L$.
"""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._targets import TargetResult, TargetSettings, _label, _problem, register_target
from ._timing import compile_fn, interleaved_minima, xla_cost

NO_LIMIT = math.inf  # informational row: the issues set no target


def _rows(calls, base: str, flops: dict, names: dict, repeats: int, what: str) -> list:
    """Interleave `calls`, then one row per key of `names` (key -> row name) over `base`."""
    best = interleaved_minima(calls, repeats=repeats)
    bw, bc = best[base]
    out = []
    for key, name in names.items():
        w, c = best[key]
        note = (f"cpu {c / bc:.2f}×, XLA FLOPs {flops[key] / flops[base]:.2f}×; {what} "
                f"{bw * 1e3:.2f} ms; min of {repeats} interleaved calls")  # fmt: skip
        out.append(TargetResult(name, w / bw, NO_LIMIT, "×", note))
    return out


def batch_problem(s: TargetSettings):
    """`(loss(params, batch), params0, batches, full loss, label)` of the settings' digits model
    split into `s.sgd_batches` equal batches (the same model and initial point as `_problem`)."""
    from ..engine import make_batches
    from ..problems._models import build_model
    from ..problems._problem import cross_entropy, mean_squared_error

    problem = _problem(s)
    data = problem.dataset
    model = build_model(s.model, data, 0, **dict(s.options))
    params0, static = eqx.partition(model, eqx.is_inexact_array)
    classify = data.task == "classification"

    def loss(params, batch):
        X, y = batch
        out = eqx.combine(params, static)(X)
        return cross_entropy(out, y) if classify else mean_squared_error(out, y)

    n = int(data.X.shape[0])
    batches = make_batches((data.X, data.y), n // s.sgd_batches)
    return loss, params0, batches, problem.loss, _label(s, problem)


def measure_sgd(s: TargetSettings) -> list[TargetResult]:
    """Rows: switching step field / batch gradient per order, one step's solve / batch gradient,
    epoch field / full-batch gradient per order (see the module docstring)."""
    from ..engine import SGD
    from ..engine._sgd import epoch_field_fn
    from ..engine._trajectory import ode_advance

    loss, x, batches, full_loss, label = batch_problem(s)
    m = int(jax.tree.leaves(batches)[0].shape[0])
    label = f"{label}, m={m}"
    lr = 0.05  # the cost does not depend on the value (the solve's step count does, a little)
    opt = SGD(batches)
    batch0 = jax.tree.map(lambda v: v[0], batches)
    models = {md.order: md for md in opt.models(loss, lr, tuple(s.orders))
              if md.kind == "switching"}  # fmt: skip
    calls, flops = {}, {}

    def add(key, fn, *args):
        compiled, _ = compile_fn(fn, *args)
        calls[key] = (compiled, args)
        flops[key] = xla_cost(compiled)[0]

    add("bgrad", jax.grad(loss), x, batch0)
    add("grad", jax.grad(full_loss), x)
    k0 = jnp.asarray(0, jnp.int32)
    for n in s.orders:
        add(("switch", n), models[n].step_field, k0, x, lr)
    nsteps = {}
    if s.sgd_solve_order in models:
        step_field = models[s.sgd_solve_order].step_field
        rtol = s.sgd_solve_rtol

        def solve(y0, lr, k):
            ys, _, steps = ode_advance(
                lambda y, lr_: step_field(k, y, lr_), y0, k * lr, jnp.array([(k + 1) * lr]),
                lr, solver=diffrax.Dopri8(), rtol=rtol, atol=rtol * 1e-2, dt0=0.5 * lr,
            )  # fmt: skip
            return jax.tree.map(lambda v: v[-1], ys), steps

        add("solve", solve, x, lr, k0)
        nsteps["solve"] = int(calls["solve"][0](x, lr, k0)[1])
    for n in s.epoch_orders:
        add(("epoch", n), epoch_field_fn(loss, batches, n), x, lr)
    switch_names = {("switch", n): f"switching EoM-{n} step field / batch gradient ({label})"
                    for n in s.orders}  # fmt: skip
    if "solve" in calls:
        switch_names["solve"] = (f"switching EoM-{s.sgd_solve_order} one step's solve / batch "
                                 f"gradient ({label})")  # fmt: skip
    rows = _rows({k: calls[k] for k in ["bgrad", *switch_names]}, "bgrad", flops, switch_names,
                 s.repeats, "batch grad")  # fmt: skip
    for r_i, r in enumerate(rows):
        if r.name.startswith(f"switching EoM-{s.sgd_solve_order} one step"):
            rows[r_i] = TargetResult(r.name, r.value, r.limit, r.unit,
                                     f"Dopri8, rtol {s.sgd_solve_rtol:g}, {nsteps['solve']} "
                                     f"solver steps; {r.note}")  # fmt: skip
    epoch_names = {("epoch", n): f"cyclic epoch EoM-{n} field / full-batch gradient ({label})"
                   for n in s.epoch_orders}  # fmt: skip
    if epoch_names:
        rows += _rows({k: calls[k] for k in ["grad", *epoch_names]}, "grad", flops, epoch_names,
                      s.repeats, "full grad")  # fmt: skip
    return rows


def measure_momentum(s: TargetSettings) -> list[TargetResult]:
    """Rows: heavy-ball and Nesterov order-N field / gradient (see the module docstring)."""
    from ..engine import momentum_field_fn

    problem = _problem(s)
    loss, x = problem.loss, problem.params0
    label = _label(s, problem)
    lr, beta = 0.05, s.momentum_beta  # lr traced: the cost does not depend on its value
    calls, flops = {}, {}
    compiled, _ = compile_fn(jax.grad(loss), x)
    calls["grad"], flops["grad"] = (compiled, (x,)), xla_cost(compiled)[0]
    names = {}
    for nesterov in (False, True):
        for n in s.orders:
            key = (nesterov, n)
            compiled, _ = compile_fn(momentum_field_fn(loss, beta, n, nesterov), x, lr)
            calls[key], flops[key] = (compiled, (x, lr)), xla_cost(compiled)[0]
            kind = "Nesterov" if nesterov else "heavy-ball"
            names[key] = f"{kind} EoM-{n} field (β={beta:g}) / gradient ({label})"
    return _rows(calls, "grad", flops, names, s.repeats, "grad")


register_target("sgd", measure_sgd)
register_target("momentum", measure_momentum)
