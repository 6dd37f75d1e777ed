r"""The jitted pieces of `eom.compare`, built once per loss in the bounded loss cache.

- `discrete_chunk_fn`: the optimizer's iterates over one chunk, $\theta_{k}$ at each recorded
  step, and the reported loss $L(\theta_k)$ there (checked before any ODE of the chunk is solved);
- `smooth_chunk_fn`: one adaptive solve of a model with a smooth field, sampled at $t = k\eta$;
- `stepwise_chunk_fn`: one solve per step $[k\eta, (k+1)\eta]$ for a field that switches at every
  step boundary, recorded at the chunk's steps;
- `metrics_fn`, `local_fn`, `deviation`, `lambda_max_fn`: errors, losses, one-step errors, solver
  deviations and the sharpness named in error messages.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from .._tree import tree_dot, tree_norm, tree_scale, tree_sub
from ..engine._cache import loss_cache
from ..engine._optimizer import STEP_MARGIN
from ..engine._trajectory import chunk_solve_fn, detach, solve_at, solve_status


@loss_cache
def discrete_chunk_fn(loss, optimizer):
    """`run(params, state, lr, k0, counts) -> (params, state, stacked params, losses)`."""
    full = optimizer.full_loss(loss)

    @jax.jit
    def run(params, state, lr, k0, counts):
        def body(carry, n):
            p, s, k = carry
            p, s = optimizer.advance(loss, p, s, lr, k, n)
            return (p, s, k + n), p

        (p, s, _), ps = jax.lax.scan(body, (params, state, k0), counts)
        return p, s, ps, jax.vmap(full)(ps)

    return run


@loss_cache
def loss_values_fn(loss, optimizer):
    """`run(stacked params) -> L at each` (the reported loss, no weight decay)."""
    return jax.jit(jax.vmap(optimizer.full_loss(loss)))


@loss_cache
def smooth_chunk_fn(loss, field, solver, max_steps):
    """`run(y0, t0, ts, lr, dt0, rtol, atol) -> (ys at ts, status, accepted steps)`."""
    del loss  # the cache key only: what is built here is dropped with the loss
    return chunk_solve_fn(field, solver, max_steps)


@loss_cache
def stepwise_chunk_fn(loss, field, solver, max_steps, step_field=None):
    r"""`run(y0, k0, counts, lr, dt0, rtol, atol) -> (ys, status, accepted steps)`.

    Step $k$ is its own solve on $[k\eta, (k+1)\eta]$ (restarted at every boundary, where the
    field switches); the field sees $t$ clamped into $[k\eta, (k+1-10^{-9})\eta]$ so that it
    can tell the step from $t$ at every solver stage. A model that gives `step_field(k, y, lr)`
    (the field of step $k$, e.g. SGD's `SwitchingModel`) is evaluated through it instead.
    `max_steps` is the budget of one step.
    """
    del loss

    def one_step(k, carry, lr, rtol, atol):
        y, dt, status, total = carry
        t0 = k * lr
        hi = t0 + lr * (1.0 - STEP_MARGIN)
        if step_field is not None:
            term = detach(lambda t, y_, a: step_field(k, y_, a), t0, y, lr)
        else:
            term = detach(lambda t, y_, a: field(jnp.clip(t, t0, hi), y_, a), t0, y, lr)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(term),
            solver, t0=t0, t1=t0 + lr, dt0=jnp.minimum(dt, lr), y0=y, args=lr,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps, throw=False,
        )
        n = sol.stats["num_accepted_steps"]
        y1 = jax.tree.map(lambda x: x[0], sol.ys)
        status = jnp.maximum(status, solve_status(sol.result))
        return y1, lr / jnp.maximum(n, 1), status, total + n

    @jax.jit
    def run(y0, k0, counts, lr, dt0, rtol, atol):
        def record(carry, n):
            y, dt, status, total, k = carry
            y, dt, status, total = jax.lax.fori_loop(
                k, k + n, lambda j, c: one_step(j, c, lr, rtol, atol), (y, dt, status, total)
            )
            return (y, dt, status, total, k + n), y

        init = (y0, jnp.asarray(dt0, float), jnp.asarray(0), jnp.asarray(0), k0)
        (_, _, status, total, _), ys = jax.lax.scan(record, init, counts)
        return ys, status, total

    return run


@loss_cache
def metrics_fn(loss, optimizer, num_models):
    """`run(thetas, ys, theta0) -> (‖θ_k − θ_0‖, model losses, per-leaf squared errors)`."""
    full = optimizer.full_loss(loss)

    def leaf_sq(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return jnp.stack([jnp.sum((x - y) ** 2) for x, y in pairs])

    @jax.jit
    def run(thetas, ys, theta0):
        disp = jax.vmap(lambda th: tree_norm(tree_sub(th, theta0)))(thetas)
        losses = [jax.vmap(full)(ys[i]) for i in range(num_models)]
        leaf = [jax.vmap(leaf_sq)(ys[i], thetas) for i in range(num_models)]
        return disp, losses, leaf

    return run


@loss_cache
def local_fn(loss, optimizer, field, solver, max_steps):
    r"""`run(thetas, lr, rtol, atol)`: $\lVert\Phi_\eta(\theta_k) - \theta_{k+1}\rVert$ for a
    stateless optimizer and a smooth field (one discrete step against one solve of length η)."""

    @jax.jit
    def run(thetas, lr, rtol, atol):
        def one(theta):
            step1, _ = optimizer.advance(loss, theta, (), lr, 0, 1)
            ys, result, _ = solve_at(
                field, theta, 0.0, jnp.reshape(lr, (1,)), lr, solver=solver, rtol=rtol,
                atol=atol, dt0=lr / 4, max_steps=max_steps,
            )
            err = tree_norm(tree_sub(jax.tree.map(lambda y: y[0], ys), step1))
            # A failed one-step solve is reported as NaN, never as a number.
            return jnp.where(result == diffrax.RESULTS.successful, err, jnp.nan)

        return jax.lax.map(one, thetas)

    return run


@jax.jit
def deviation(a, b):
    """‖a_i − b_i‖ for each point i along the leading axis."""
    return jax.vmap(lambda x, y: tree_norm(tree_sub(x, y)))(a, b)


@loss_cache
def lambda_max_fn(loss, optimizer, iterations=30):
    r"""`run(theta) -> λ_max` of the reported loss by power iteration on Hessian–vector products
    (an estimate for error messages: |λ| of largest magnitude after `iterations` steps)."""
    grad = jax.grad(optimizer.full_loss(loss))

    @jax.jit
    def run(theta):
        def hvp(v):
            return jax.jvp(grad, (theta,), (v,))[1]

        v = jax.tree.map(lambda x: jnp.ones_like(x) / jnp.sqrt(x.size + 0.0), theta)

        def body(_, v):
            w = hvp(v)
            return tree_scale(1.0 / jnp.maximum(tree_norm(w), 1e-300), w)

        v = jax.lax.fori_loop(0, iterations, body, tree_scale(1.0 / tree_norm(v), v))
        return tree_dot(v, hvp(v))

    return run
