r"""The optimizer of an `eom run`: SGD and momentum built from the settings and the problem.

**Per-batch loss and data.** SGD needs $L_i(\theta) = \ell(\theta, \text{batch}_i)$ and the batches
(`eom.make_batches`, equal-sized, the last partial batch dropped). For the built-in models the
per-batch loss is the problem's own loss (cross-entropy or MSE) on a batch `(X_b, y_b)` of the
problem's data. **A user factory** (`--model module:factory`) opts in by returning a `loss_fn`
that also accepts a batch: `loss_fn(params, batch)` with `batch = (X_b, y_b)` rows of the
data set, and `loss_fn(params)` the full-batch loss; a factory whose `loss_fn` takes one argument
is refused for `--optimizer sgd` with this convention in the message.

**Steps.** SGD runs whole epochs: `steps` is rounded up to $E\cdot m$ ($m = \lfloor n/B\rfloor$
batches) and `record_every` to a divisor of $m$ so that epoch boundaries are recorded (the
epoch/averaged models are defined there only). Momentum from rest (`--start rest`) uses the
*settled* start (`HeavyBall(start_kind="settled")`): the method runs $K$ steps from rest,
$K$ = `transient_steps(β, 1e-12, lr_lambda=η·λ_max(θ_0))` ($\rho^K \le 10^{-12}$ for the fast
root's modulus $\rho$: $\beta$-ish inside the radius, $\sqrt q$ outside), then every model
starts at $\theta_K$ and `steps` more steps are compared, recorded as $K+1, \dots, K+$`steps`.
That is the flow through $\theta_K$: inside the radius it equals the backward-integrated
effective start from step $K$ on, and it never integrates the EoM backwards, which outside the
radius is exponentially ill-conditioned (the truncated field's sharp rate is many times GF's).
It is used at every η (not only outside the radius) so that `--start rest` means one thing,
costs no backward solves and never fails near the radius. Run folders written before it
(`resolved` without `start_kind`) resume with the backward start they began with.

**Regimes** (THEORY.md §8–9). Switching EoM: per-batch $\eta\lambda_{\max}(L_i) < 1$ (the GD
series' radius). Epoch / averaged flows: the epoch map is an Euler-type map of step $h = m\eta$,
so its series needs $m\eta\lambda_{\max}(L) \lesssim 1$. Momentum: $\eta\lambda_{\max}$ below
`regime_bound()` = $(1-\sqrt\beta)^2$ (Nesterov $((1-\beta)/(1+\beta))^2$), where the two roots
of $\mu^2 - (1+\beta-\eta\lambda)\mu + \beta$ are real and the slow one is analytic in $\eta$.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import EomError
from ._settings import RunSettings, shuffle_kind

#: The per-batch convention a user factory's loss must follow for SGD (quoted in errors/docs).
USER_BATCH_CONVENTION = (
    "for --optimizer sgd a user model's loss_fn must also accept a batch: loss_fn(params, batch) "
    "with batch = (X_b, y_b), rows of the data set, and loss_fn(params) the full-batch loss, e.g. "
    "def loss_fn(params, batch=None): X, y = batch if batch is not None else (data.X, data.y)"
)


def batch_loss(s: RunSettings, problem):
    """The per-batch loss $\\ell(\\theta, (X_b, y_b))$ of the settings' problem."""
    from ..problems import MODELS

    if s.model in MODELS:
        data = problem.dataset
        return _builtin_batch_loss(s.model, tuple(sorted(s.model_kwargs().items())),
                                   data.task, data.n_classes, tuple(data.input_shape),
                                   int(data.X.shape[1]) if data.X.ndim == 2 else -1,
                                   _out_dim(data), problem, s.seed)
    fn = problem.loss
    try:
        sig = inspect.signature(fn)
        ok = len([p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EomError(f"{s.model}: its loss_fn takes only params; {USER_BATCH_CONVENTION}.")
    return lambda params, batch: fn(params, batch)


def _out_dim(data) -> int:
    return int(data.n_classes) if data.task == "classification" else int(data.y.shape[-1])


_BATCH_LOSSES: dict = {}


def _builtin_batch_loss(name, kwargs, task, n_classes, input_shape, inp, out, problem, seed):
    """One function per model structure (the data shapes, not the data or the initial values),
    so that every run of that structure in a process shares the engine's compiled code."""
    key = (name, kwargs, task, n_classes, input_shape, inp, out)
    if key in _BATCH_LOSSES:
        return _BATCH_LOSSES[key]
    import equinox as eqx

    from ..problems import build_model, cross_entropy, mean_squared_error

    model = build_model(name, problem.dataset, seed, **dict(kwargs))
    static = eqx.partition(model, eqx.is_inexact_array)[1]
    classify = task == "classification"

    def loss(params, batch):
        X, y = batch
        out = eqx.combine(params, static)(X)
        return cross_entropy(out, y) if classify else mean_squared_error(out, y)

    _BATCH_LOSSES[key] = loss
    return loss


def sgd_batches(s: RunSettings, problem):
    """`(X_b, y_b)` stacked over the m = ⌊n/B⌋ batches (the last partial batch dropped)."""
    from ..engine import make_batches

    n = int(problem.dataset.X.shape[0])
    if s.batch_size > n:
        raise EomError(
            f"--batch-size {s.batch_size} is larger than the {n} samples of the data set; use "
            f"--batch-size ≤ {n} (e.g. {max(1, n // 4)})."
        )
    return make_batches((problem.dataset.X, problem.dataset.y), s.batch_size)


def momentum_start_kind(s: RunSettings, res: dict | None = None) -> str:
    """`HeavyBall.start_kind` of a run: `--start manifold` → manifold; `--start rest` →
    settled (see the module doc), or the backward "rest" start of a folder resolved before the
    settled start existed (its `resolved` has no `start_kind`)."""
    if res and "start_kind" in res:
        return str(res["start_kind"])
    if res and "start" in res:  # resolved by an older version: keep its meaning on resume
        return str(res["start"])
    return "manifold" if s.start == "manifold" else "settled"


def build_optimizer(s: RunSettings, problem, res: dict | None = None):
    """`(optimizer, loss)` for compare: GD → (None, problem.loss); SGD → (SGD, per-batch loss);
    momentum → (HeavyBall, problem.loss), its start from `momentum_start_kind` and its K from
    `res["eta_lambda_max_initial"]`."""
    from ..engine import SGD, HeavyBall

    if s.optimizer == "gd":
        return None, problem.loss
    if s.optimizer == "sgd":
        opt = SGD(sgd_batches(s, problem), shuffle=shuffle_kind(s.shuffle), seed=s.seed,
                  weight_decay=float(s.weight_decay))
        return opt, batch_loss(s, problem)
    if s.optimizer == "momentum":
        x = (res or {}).get("eta_lambda_max_initial")
        opt = HeavyBall(beta=float(s.momentum), nesterov=bool(s.nesterov),
                        weight_decay=float(s.weight_decay),
                        start_kind=momentum_start_kind(s, res),
                        lr_lambda=None if x is None else float(x))
        return opt, problem.loss
    raise EomError(f"optimizer {s.optimizer!r} is not one of gd, sgd, momentum.")


def resolve_optimizer(s: RunSettings, problem, lr: float, lam: float) -> dict:
    """The optimizer's part of results: steps actually run, m, K, the regimes at θ_0."""
    if s.optimizer == "sgd":
        opt, loss = build_optimizer(s, problem)
        m = opt.m
        epochs = max(1, math.ceil(s.steps / m))
        every = math.gcd(s.record_every, m)
        lam_b = batch_sharpness_fn(opt, loss)(problem.params0)
        notes = []
        if epochs * m != s.steps:
            notes.append(f"--steps {s.steps} rounded up to {epochs} epochs × {m} batches = "
                         f"{epochs * m} SGD steps.")
        if every != s.record_every:
            notes.append(f"--record-every {s.record_every} lowered to {every} (a divisor of "
                         f"m = {m}) so that every epoch boundary is recorded.")
        n = int(problem.dataset.X.shape[0])
        if n % s.batch_size:
            notes.append(f"{n % s.batch_size} left-over samples (n = {n} not a multiple of "
                         f"B = {s.batch_size}) are dropped: the last partial batch is not used.")
        return {
            "steps_total": epochs * m, "record_every_used": every, "batches": m, "epochs": epochs,
            "batch_size": s.batch_size, "shuffle": shuffle_kind(s.shuffle),
            "eta_lambda_max_batch_initial": lr * float(np.max(lam_b)),
            "m_eta_lambda_max_initial": m * lr * lam,
            "switching_radius": 1.0, "epoch_radius": 1.0, "notes": notes,
        }
    if s.optimizer == "momentum":
        from ..engine import slow_root

        kind = momentum_start_kind(s)
        opt, _ = build_optimizer(s, problem, {"start_kind": kind,
                                              "eta_lambda_max_initial": lr * lam})
        K = opt.transient_steps()
        bound = float(opt.regime_bound())
        inside = lr * lam < bound
        if kind == "manifold" and not inside:
            raise EomError(
                f"--start manifold: η·λ_max(θ_0) = {lr * lam:.3g} is {lr * lam / bound:.3g}× the "
                f"momentum radius {bound:.3g}. Outside the radius the sharp directions have no "
                "slow root (the two roots are complex, |μ| = √q), so there is no slow manifold "
                "to start on, and the order-4 EoM integrated back over one step blows up there. "
                "Use --start rest (the settled start: the run from rest, compared from step K "
                "on), or lower --target/--lr to get inside the radius."
            )
        notes = []
        if kind == "settled":
            x, beta, nest = lr * lam, float(s.momentum), bool(s.nesterov)
            rho = max(beta, float(abs(beta * (1 - x if nest else 1) / slow_root(x, beta, nest))))
            where = "inside" if inside else "outside"
            notes.append(
                f"started from rest (v_0 = 0): the first K = {K} steps are the transient (fast "
                f"root |μ_f| ≈ {rho:.3g} at η·λ_max(θ_0), {where} the radius; |μ_f|^K ≤ 1e-12); "
                f"every model starts at θ_K (the settled start) and steps K+1 … K+{s.steps} "
                "are compared.")
        elif K:
            notes.append(f"started from rest (v_0 = 0): {K} transient steps (β^K ≤ 1e-12) are "
                         f"run before the --steps {s.steps}; errors count from step K = {K}.")
        # |μ| of the sharpest direction outside the radius: √q (heavy ball √β)
        q = float(s.momentum) * (1 - lr * lam if s.nesterov else 1.0)
        return {
            "steps_total": K + s.steps, "record_every_used": s.record_every,
            "beta": float(s.momentum), "nesterov": bool(s.nesterov), "start": s.start,
            "start_kind": kind, "step_offset": K if kind == "settled" else 0,
            "transient_steps": K, "momentum_radius": bound,
            "stability_limit": float(opt.stability_limit()),
            "eta_lambda_over_radius_initial": lr * lam / bound if bound > 0 else math.inf,
            "optimizer_regime_inside": inside,
            "sharp_modulus": float(math.sqrt(abs(q))) if not inside else None,
            "notes": notes,
        }
    return {}


def effective(s: RunSettings, res: dict) -> RunSettings:
    """The settings with the steps and record interval actually run (see the module doc)."""
    if "steps_total" not in res:
        return s
    return replace(s, steps=int(res["steps_total"]), record_every=int(res["record_every_used"]))


def state_template(s: RunSettings, problem):
    """A pytree shaped like the optimizer's state (for loading a checkpoint)."""
    if s.optimizer == "momentum":
        return jax.tree.map(jnp.zeros_like, problem.params0)
    return ()


def num_models(s: RunSettings, problem, lr: float) -> int:
    opt, loss = build_optimizer(s, problem)
    if opt is None:
        return len(s.orders)
    return len(opt.models(loss, lr, tuple(s.orders)))


#: Power iterations for the per-batch λ_max (the top eigenvalue is well separated on the small
#: problems these runs use; 100 iterations give it to a few digits, enough for a regime).
POWER_ITERS = 100


def batch_sharpness_fn(opt, loss):
    """θ ↦ [λ_max(∇²L_{i,λ}(θ))]_i for each batch i, by power iteration on Hessian-vector
    products (largest |λ|; jitted once per loss, vmapped over the batches)."""
    run = _sharpness_jit(loss, float(opt.weight_decay))
    return lambda theta: np.asarray(run(theta, opt.batches))


@functools.cache
def _sharpness_jit(loss, wd: float):
    from jax.flatten_util import ravel_pytree

    @jax.jit
    def run(theta, batches):
        flat, unravel = ravel_pytree(theta)

        def one(b):
            g = jax.grad(lambda x: loss(unravel(x), b) + 0.5 * wd * jnp.sum(x * x))

            def hvp(v):
                return jax.jvp(g, (flat,), (v,))[1]

            v0 = jnp.cos(jnp.arange(flat.size, dtype=flat.dtype) + 1.0)
            v0 = v0 / jnp.linalg.norm(v0)

            def body(_, v):
                w = hvp(v)
                return w / (jnp.linalg.norm(w) + 1e-300)

            v = jax.lax.fori_loop(0, POWER_ITERS, body, v0)
            return jnp.dot(v, hvp(v))

        return jax.vmap(one)(batches)

    return run


# -- SGD extras: regularizer sizes and model-vs-model gaps at recorded steps --------------------


def sgd_extra_fn(opt, loss, lr: float):
    r"""θ ↦ ((η/4m)Σ_i‖∇L_i‖², (η/4)‖∇L‖²) with ∇ of the weight-decayed losses, vmapped over
    stacked parameters (jitted once per loss)."""
    run = _extra_jit(loss, float(opt.weight_decay))
    return lambda params: run(params, opt.batches, lr)


@functools.cache
def _extra_jit(loss, wd: float):
    from .._tree import tree_dot

    def sq(a):
        return tree_dot(a, a)

    def reg(p):
        return 0.5 * wd * sq(p)

    @jax.jit
    def run(params, batches, lr):
        def one(theta):
            grads = jax.vmap(lambda b: jax.grad(lambda p: loss(p, b) + reg(p))(theta))(batches)
            per = jax.vmap(sq)(grads)
            mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)  # ∇L = mean of ∇L_i
            m = per.shape[0]
            return lr / (4 * m) * jnp.sum(per), lr / 4 * sq(mean)

        return jax.vmap(one)(params)

    return run


def sgd_extra_columns(recs: dict, fn, keys) -> dict:
    """Regularizer sizes for every recorded SGD iterate, and ‖θ_switchN − θ_{epoch|averaged}N‖."""
    out = {}
    params = recs.get("_params_gd")
    if params is None:
        return out
    sgd_reg, gd_reg = fn(params)
    out["reg_sgd"], out["reg_gd"] = np.asarray(sgd_reg), np.asarray(gd_reg)
    for k in keys:
        if not (isinstance(k, str) and k[:5] in ("epoch", "avera")):
            continue
        n = k.lstrip("epochaveraged")
        sw = recs.get(f"_params_switch{n}")
        other = recs.get(f"_params_{k}")
        if sw is None or other is None:
            continue
        from jax.flatten_util import ravel_pytree

        a = jax.vmap(lambda t: ravel_pytree(t)[0])(sw)
        b = jax.vmap(lambda t: ravel_pytree(t)[0])(other)
        gap = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1)
        err = recs.get(f"error_{k}")
        if err is not None:
            gap = np.where(np.isfinite(err), gap, np.nan)
        out[f"gap_switch{n}_{k}"] = gap
    return out
