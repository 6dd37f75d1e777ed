r"""Heavy-ball and Nesterov momentum: the discrete methods, their EoM, regimes and starts.

Discrete methods (PyTorch / optax conventions, buffer $b_{-1} = 0$, $g = \nabla L_\lambda$ with
coupled weight decay $L_\lambda = L + \tfrac\lambda2\lVert\theta\rVert^2$):

- heavy ball: $b \leftarrow \beta b + g$, $\theta \leftarrow \theta - \eta b$, i.e.
  $\theta_{k+1} = \theta_k - \eta g(\theta_k) + \beta(\theta_k - \theta_{k-1})$,
  $\theta_{-1} = \theta_0$;
- Nesterov: $b \leftarrow \beta b + g$, $\theta \leftarrow \theta - \eta(g + \beta b)$, i.e. for
  $k \ge 1$ $\theta_{k+1} = \theta_k + \beta(\theta_k - \theta_{k-1}) - \eta(1+\beta)g(\theta_k)
  + \eta\beta g(\theta_{k-1})$ and $\theta_1 = \theta_0 - \eta(1+\beta)g(\theta_0)$.

The EoM $\dot\theta = \sum_{n\le N}\eta^nF_n(\theta)$ in the time $t = k\eta$ (THEORY.md §9,
`eom.engine._momentum_terms`): order 0 is gradient flow with rescaled time,
$\dot\theta = -\nabla L_\lambda/(1-\beta)$; order 1 for heavy ball is
$\dot\theta = -\frac{1}{1-\beta}\nabla\big[L_\lambda
+ \frac{\eta(1+\beta)}{4(1-\beta)^2}\lVert\nabla L_\lambda\rVert^2\big]$ and for Nesterov
the same with $(1+\beta) \to (1-\beta+2\beta^2)$.

Regimes: on $L = \tfrac12\lambda\theta^2$ the iteration has two roots; the EoM is the slow one,
and its series in $\eta$ converges for $|\eta\lambda|$ below the first branch point
(discriminant zero): $(1-\sqrt\beta)^2$ for heavy ball, $((1-\beta)/(1+\beta))^2$ for Nesterov.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from .._errors import EomError
from .._tree import tree_add, tree_scale, tree_sub
from ._cache import loss_cache
from ._counter import check_loss, check_lr, regularized
from ._lie import check_order
from ._momentum_terms import evaluate_terms
from ._optimizer import ContinuousModel, Optimizer
from ._trajectory import (
    CHUNK,
    Trajectory,
    _check_finite,
    _loss_trace,
    _stack,
    chunks,
    default_solver,
    ode_advance,
    save_grid,
)

Start = Literal["manifold", "rest", "settled"]
STARTS = ("manifold", "rest", "settled")


def check_beta(beta) -> float:
    """Validate a momentum coefficient $0 \\le \\beta < 1$."""
    try:
        beta = float(beta)
    except (TypeError, ValueError) as exc:
        raise EomError(f"momentum beta must be a number, got {beta!r}.") from exc
    if not (0.0 <= beta < 1.0) or math.isnan(beta):
        raise EomError(
            f"momentum beta must satisfy 0 ≤ beta < 1, got {beta}: at beta = 1 the velocity never "
            "forgets and there is no slow manifold (typical values: 0.5–0.99)."
        )
    return beta


# ---------------------------------------------------------------------------------------------
# Regimes and the quadratic closed form


def regime_bound(beta: float, nesterov: bool = False) -> float:
    r"""$\eta\lambda$ below which the EoM series converges on every curvature $\lambda$.

    Heavy ball: $(1-\sqrt\beta)^2$; Nesterov: $((1-\beta)/(1+\beta))^2$ — the smallest
    $\eta\lambda > 0$ where the discriminant of the characteristic polynomial vanishes (the
    roots turn complex).
    """
    beta = check_beta(beta)
    if nesterov:
        return ((1.0 - beta) / (1.0 + beta)) ** 2
    return (1.0 - math.sqrt(beta)) ** 2


def stability_limit(beta: float, nesterov: bool = False) -> float:
    r"""$\eta\lambda$ below which the momentum iteration is stable on $L = \tfrac12\lambda\theta^2$.

    Jury's criterion for $\mu^2 - p\mu + q$ (both roots in the open unit disc iff
    $|q| < 1$, $1 - p + q > 0$, $1 + p + q > 0$), with $(p, q)$ from `characteristic`:

    - heavy ball, $p = 1+\beta-x$, $q = \beta$: $1-p+q = x > 0$ and
      $1+p+q = 2(1+\beta) - x > 0$, so $x < 2(1+\beta)$;
    - Nesterov, $p = (1+\beta)(1-x)$, $q = \beta(1-x)$: $1-p+q = x > 0$,
      $1+p+q = 1 + (1+2\beta)(1-x) > 0 \iff x < (2+2\beta)/(1+2\beta)$, and $|q| < 1 \iff
      x < 1 + 1/\beta$, which is larger; so $x < (2+2\beta)/(1+2\beta)$.

    Both are 2 at $\beta = 0$ (GD).

    >>> from eom.engine import stability_limit
    >>> stability_limit(0.9), round(stability_limit(0.9, nesterov=True), 4)
    (3.8, 1.3571)
    """
    beta = check_beta(beta)
    if nesterov:
        return (2.0 + 2.0 * beta) / (1.0 + 2.0 * beta)
    return 2.0 * (1.0 + beta)


def characteristic(x: float, beta: float, nesterov: bool = False) -> tuple[float, float]:
    r"""$(p, q)$ of $\mu^2 - p\mu + q = 0$ on $L = \tfrac12\lambda\theta^2$, $x = \eta\lambda$.

    Heavy ball: $p = 1+\beta-x$, $q = \beta$. Nesterov: $p = (1+\beta)(1-x)$, $q = \beta(1-x)$.
    """
    if nesterov:
        return (1 + beta) * (1 - x), beta * (1 - x)
    return 1 + beta - x, beta


def slow_root(x, beta: float, nesterov: bool = False):
    """The root of the characteristic polynomial that tends to 1 as $x = \\eta\\lambda \\to 0$.

    Complex (numpy complex) once $x$ is above `regime_bound`.
    """
    p, q = characteristic(x, beta, nesterov)
    disc = np.asarray(p * p - 4 * q, dtype=complex)
    return (p + np.sqrt(disc)) / 2


def quadratic_rate(lr: float, lam: float, beta: float, nesterov: bool = False):
    r"""The exact EoM on $L = \tfrac12\lambda\theta^2$: $\dot\theta = (\ln\mu_s/\eta)\,\theta$."""
    return np.log(slow_root(lr * lam, beta, nesterov)) / lr


# ---------------------------------------------------------------------------------------------
# The discrete methods


def _momentum_step(grad_wd: Callable, beta: float, nesterov: bool):
    """One step on `(params, m)` with `m` = β·buffer (the same floating-point ops as optax)."""

    def step(p, m, lr):
        g = grad_wd(p)
        buf = tree_add(m, g)  # g + β b_{k-1}
        upd = tree_add(g, tree_scale(beta, buf)) if nesterov else buf
        p = jax.tree.map(lambda x, u: x + (-lr) * u, p, upd)
        return p, tree_scale(beta, buf)

    return step


def momentum_advance(grad_wd: Callable, beta: float, nesterov: bool, p, m, lr, num):
    """`num` (traced) momentum steps; returns `(params, m)`."""
    step = _momentum_step(grad_wd, beta, nesterov)

    def body(_, carry):
        return step(*carry, lr)

    return jax.lax.fori_loop(0, num, body, (p, m))


def buffer_from_previous(grad_wd, beta: float, nesterov: bool, params0, params_prev, lr):
    r"""The state `m` = β·b before step 0 for which the step before would have come from θ_{-1}.

    Heavy ball: $\theta_0 = \theta_{-1} - \eta b_{-1}$ gives $\beta b_{-1} = \beta(\theta_{-1} -
    \theta_0)/\eta$. Nesterov: $\theta_0 = \theta_{-1} - \eta(g_{-1} + \beta b_{-1})$ gives
    $\beta b_{-1} = (\theta_{-1} - \theta_0)/\eta - g(\theta_{-1})$.
    """
    diff = tree_scale(1.0 / lr, tree_sub(params_prev, params0))
    if nesterov:
        return tree_sub(diff, grad_wd(params_prev))
    return tree_scale(beta, diff)


@loss_cache
def _chunk_fn(loss, beta, nesterov, weight_decay):
    grad_wd = jax.grad(regularized(loss, weight_decay))

    @jax.jit
    def run(p, m, lr, counts):
        def body(carry, n):
            carry = momentum_advance(grad_wd, beta, nesterov, *carry, lr, n)
            return carry, carry[0]

        return jax.lax.scan(body, (p, m), counts)

    return run


@loss_cache
def _advance_fn(loss, beta, nesterov, weight_decay):
    grad_wd = jax.grad(regularized(loss, weight_decay))
    return jax.jit(lambda p, m, lr, n: momentum_advance(grad_wd, beta, nesterov, p, m, lr, n))


def heavy_ball(
    loss: Callable,
    params0: PyTree,
    lr: float,
    beta: float,
    num_steps: int,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    save_every: int = 1,
    params_prev: PyTree | None = None,
) -> Trajectory:
    r"""Run heavy-ball (or Nesterov) momentum from rest, PyTorch/optax conventions.

    $b \leftarrow \beta b + g$, then $\theta \leftarrow \theta - \eta b$ (heavy ball) or
    $\theta \leftarrow \theta - \eta(g + \beta b)$ (Nesterov), with $g = \nabla L_\lambda$ and
    $b = 0$ before the first step. `params_prev` = $\theta_{-1}$ instead starts the two-step
    recurrence from $(\theta_0, \theta_{-1})$ (e.g. on the slow manifold, as
    `HeavyBall(start_kind="manifold")` does).
    Saves every `save_every` steps (and the last); memory is O(saved points), not O(steps).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p: 0.5 * jnp.sum(p**2)
    >>> eom.heavy_ball(loss, jnp.ones(1), lr=0.1, beta=0.5, num_steps=2).params[:, 0].tolist()
    [1.0, 0.9, 0.76]
    """
    check_loss(loss, params0)
    lr = check_lr(lr)
    beta = check_beta(beta)
    grid = save_grid(num_steps, save_every)
    wd = float(weight_decay)
    grad_wd = jax.grad(regularized(loss, wd))
    if params_prev is None:
        m = jax.tree.map(jnp.zeros_like, params0)
    else:
        m = buffer_from_previous(grad_wd, beta, bool(nesterov), params0, params_prev, lr)
    run = _chunk_fn(loss, beta, bool(nesterov), wd)
    p, saved, prev = params0, [jax.tree.map(lambda x: x[None], params0)], 0
    for part, n in chunks(grid, CHUNK):
        counts = np.diff(np.concatenate([[prev], part]))
        (p_end, m_end), ps = run(p, m, lr, jnp.asarray(counts))
        saved.append(jax.tree.map(lambda x: x[:n], ps))
        p, m, prev = p_end, m_end, part[n - 1]
    params = _stack(saved)
    losses = _loss_trace(loss, params)
    what = "Nesterov momentum" if nesterov else "heavy-ball momentum"
    _check_finite(np.asarray(losses), grid, what, lr)
    return Trajectory(jnp.asarray(grid), jnp.asarray(grid * lr), params, losses)


# ---------------------------------------------------------------------------------------------
# The EoM field


@loss_cache
def momentum_terms_fn(loss, beta: float, order: int, nesterov: bool, weight_decay: float):
    r"""`params -> (F_0, …, F_order)` (jitted; cached), $F_0 = -\nabla L_\lambda/(1-\beta)$."""
    grad = jax.grad(regularized(loss, weight_decay))
    f = lambda p: tree_scale(-1.0 / (1.0 - beta), grad(p))  # noqa: E731
    return jax.jit(lambda p: evaluate_terms(f, p, beta, order, nesterov))


def _combine(terms, lr):
    out = terms[0]
    for n, t in enumerate(terms[1:], start=1):
        out = tree_add(out, tree_scale(lr**n, t))
    return out


def momentum_field_fn(loss, beta, order, nesterov=False, weight_decay=0.0) -> Callable:
    """The order-N field as `(params, lr) -> dθ/dt` with `lr` traced (no recompiles in sweeps).

    Cached: the same arguments give the same function object (so jitted callers reuse compiles).
    """
    return _field_fn(
        loss, check_beta(beta), check_order(order), bool(nesterov), float(weight_decay)
    )


@loss_cache
def _field_fn(loss, beta, order, nesterov, weight_decay):
    terms = momentum_terms_fn(loss, beta, order, nesterov, weight_decay)
    return lambda p, lr: _combine(terms(p), lr)


def heavy_ball_field(
    loss: Callable,
    lr: float,
    beta: float,
    order: int,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Callable[[PyTree], PyTree]:
    r"""The order-$N$ momentum EoM field $\theta \mapsto \sum_{n\le N}\eta^nF_n(\theta)$.

    Order 0 is $-\nabla L_\lambda/(1-\beta)$; order 1 (heavy ball) is
    $-\frac{1}{1-\beta}\nabla\big[L_\lambda
    + \frac{\eta(1+\beta)}{4(1-\beta)^2}\lVert\nabla L_\lambda\rVert^2\big]$, in the time
    $t = k\eta$. Terms by the fast path of `eom.engine._momentum_terms`, in one jitted call.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p: 0.5 * jnp.sum(p**2)
    >>> f = eom.heavy_ball_field(loss, lr=0.1, beta=0.5, order=1)
    >>> f(jnp.ones(1)).tolist()   # -(1/(1-β))(1 + 2·η(1+β)/(4(1-β)²)) θ
    [-2.6]
    """
    lr = check_lr(lr)
    fn = momentum_field_fn(loss, beta, order, nesterov, weight_decay)
    return jax.jit(lambda p: fn(p, lr))


#: Step budget of `flow` (a backward start over Kη takes a few solver steps per GD step inside
#: the radius) and of the manifold start's one step back (3–8 Dopri8 steps for order 4 at 0.5–1×
#: the radius, β = 0.5 and 0.9, on the default momentum MLP; at 15× the radius a 100k budget ran
#: > 10 min, 512 ends it in 6 s (order 2) to 23 s (order 4) with the stiffness message).
FLOW_MAX_STEPS = 100_000
MANIFOLD_MAX_STEPS = 512


def truncated_rate(x: float, beta: float, order: int, nesterov: bool = False) -> float:
    r"""$r$ with the order-$N$ field $= r\lambda\theta$ on $L = \tfrac12\lambda\theta^2$ at
    $x = \eta\lambda$: the sharp directions' rate (per unit $t$, per $\lambda$) of the
    truncated EoM. Order 0: $-1/(1-\beta)$. Inside the radius it tends to the exact
    $\ln\mu_s/x$; outside it grows like $(x/\text{radius})^N$ while the discrete method's
    sharp directions decay only like $|\mu| = \sqrt q$ per step: the truncated field is stiff.

    >>> from eom.engine._momentum import truncated_rate
    >>> round(truncated_rate(0.04, 0.9, 1), 2)  # 15× the radius at β = 0.9
    -47.53
    """
    f = heavy_ball_field(lambda p: 0.5 * jnp.sum(p**2), lr=float(x), beta=beta, order=order,
                         nesterov=nesterov)
    return float(f(jnp.ones(1))[0])


def stiffness_note(x: float, beta: float, order: int, nesterov: bool = False) -> str:
    """The order-N field's sharp rate at η·λ_max = x, in a sentence ('' inside the radius)."""
    bound = regime_bound(beta, nesterov)
    if not x >= bound:
        return ""
    r = truncated_rate(x, beta, order, nesterov)
    q = beta * (1 - x) if nesterov else beta
    return (
        f" η·λ_max ≈ {x:.3g} is {x / bound:.3g}× the momentum radius {bound:.3g}: there the "
        f"order-{order} field is stiff outside the radius, its sharp rate ≈ {r:.3g}·λ per unit "
        f"time (gradient flow's {-1 / (1 - beta):.3g}·λ), i.e. a factor e^{{{x * r:.3g}}} per "
        f"step, while the method's sharp directions decay only like |μ| = {math.sqrt(abs(q)):.3g} "
        "per step; an explicit solver needs many substeps per step. Use the settled start "
        "(start_kind='settled', `--start rest`), lower orders, or a learning rate inside the "
        "radius."
    )


@loss_cache
def _flow_fn(owner, field: Callable, rtol: float, atol: float,
             max_steps: int = FLOW_MAX_STEPS) -> Callable:
    """The jitted solve of `flow`, kept in the bounded cache under `owner` (the loss the field
    was built from, or the field itself when there is none)."""

    @jax.jit
    def run(y0, duration, lr):
        ys, result, _ = ode_advance(
            field, y0, 0.0, jnp.reshape(duration, (1,)), lr, solver=default_solver(),
            rtol=rtol, atol=atol, dt0=duration / 8, max_steps=max_steps,
        )
        return jax.tree.map(lambda x: x[-1], ys), result == diffrax.RESULTS.successful

    return run


def flow(field: Callable, y0: PyTree, duration, lr, *, rtol=1e-12, atol=1e-14) -> PyTree:
    r"""$y(T)$ for $\dot y = $ `field(y, lr)`, $y(0) = y_0$, $T$ = `duration` (negative: backwards).

    Dopri8 with a PID controller (diffrax), jitted once per `field` (`duration`, `lr` traced);
    raises `EomError` if the solver fails. Pass a stable `field` object (e.g. from
    `momentum_field_fn`) to reuse the compile.
    """
    return _flow(field, field, y0, duration, lr, rtol, atol)


def _flow(owner, field, y0, duration, lr, rtol=1e-12, atol=1e-14, max_steps=FLOW_MAX_STEPS,
          why=""):
    """`flow` with its compile cached under `owner` (a loss: no extra cache slot per field);
    `max_steps` bounds the solve (no hang), `why` is appended to its error."""
    if float(duration) == 0.0:
        return y0
    y, ok = _flow_fn(owner, field, float(rtol), float(atol), int(max_steps))(
        y0, float(duration), lr)
    if not bool(ok):
        raise EomError(
            f"the ODE solver failed integrating the momentum EoM over time {float(duration):g} "
            f"(within {int(max_steps)} steps): the field is stiff or diverging there (lower the "
            f"learning rate).{why}"
        )
    return y


def first_order_start(loss, params0, lr, beta, *, nesterov=False, weight_decay=0.0) -> PyTree:
    r"""Effective EoM start for a run from rest, to first order in $\eta$.

    Heavy ball
    $\tilde\theta_0 = \theta_0 + \frac{\eta\beta}{(1-\beta)^2}\nabla L_\lambda(\theta_0)$,
    Nesterov $\tilde\theta_0 = \theta_0 + \frac{\eta\beta^2}{(1-\beta)^2}\nabla L_\lambda(\theta_0)$
    (for constant $g$ the iterates from rest trail the slow flow by exactly this; THEORY.md §9).
    """
    beta = check_beta(beta)
    g = jax.grad(regularized(loss, float(weight_decay)))(params0)
    shift = lr * beta ** (2 if nesterov else 1) / (1.0 - beta) ** 2
    return tree_add(params0, tree_scale(shift, g))


def transient_steps(
    beta: float, tol: float = 1e-12, *, nesterov: bool = False, lr_lambda: float | None = None
) -> int:
    r"""$K$ with $\rho^K \le$ `tol`: the fast part of a run from rest has decayed below `tol`.

    $\rho = \beta$ by default: inside the regime bound the fast root is $\beta + O(\eta)$ for both
    methods (Nesterov's transient is $\beta^{k+1}$ for constant $g$). With `lr_lambda` =
    $\eta\lambda_{\max}$, $\rho = \max(\beta, |\mu_f|)$ for that curvature ($|\mu_f| = \sqrt q$
    above the bound: heavy ball $\sqrt\beta$). 0 for $\beta = 0$.
    """
    beta = check_beta(beta)
    if beta == 0.0:
        return 0
    rho = beta
    if lr_lambda is not None:
        _, q = characteristic(float(lr_lambda), beta, nesterov)
        rho = max(beta, float(abs(q / slow_root(float(lr_lambda), beta, nesterov))))
        if not rho < 1.0:
            raise EomError(
                f"the momentum iteration does not contract at η·λ_max = {lr_lambda:g} (fast root "
                f"{rho:.3g} ≥ 1): the run from rest never settles on a slow manifold."
            )
    return int(math.ceil(math.log(tol) / math.log(rho)))


# ---------------------------------------------------------------------------------------------
# The optimizer abstraction


@loss_cache
def _model_field(loss, beta, order, nesterov, weight_decay):
    fn = momentum_field_fn(loss, beta, order, nesterov, weight_decay)
    return lambda t, y, lr: fn(y, lr)


@loss_cache
def _autonomous(loss, field: Callable) -> Callable:
    """`(y, lr) -> field(0, y, lr)`, cached under `loss` so `flow` compiles once per model
    field."""
    return lambda y, lr: field(0.0, y, lr)


class HeavyBall(Optimizer):
    r"""Heavy-ball / Nesterov momentum as an `Optimizer` (see `eom.engine._optimizer`).

    - `beta`, `nesterov`, `weight_decay`: the method (coupled weight decay, PyTorch/optax).
    - `start_kind`: `"manifold"` starts the discrete run on the slow manifold,
      $\theta_{-1} = \Phi^{-1}(\theta_0)$ from the order-`manifold_order` EoM, so the order-$N$
      error is $O(\eta^{N+1})$ from the first step (for $N \le$ `manifold_order`). `"rest"` runs
      the user's $v_0 = 0$ method and starts each model from its effective point (`start`): the
      EoM integrated backwards over $K\eta$ from the iterate $\theta_K$, $K$ =
      `transient_steps()`; errors are meaningful from step $K$ on. `"settled"` runs the same
      $v_0 = 0$ method but begins the comparison at step $K$ (`begin`): every model starts at
      $\theta_K$ at time $K\eta$ and the discrete run continues from $(\theta_K, b_K)$. That is
      the flow through $\theta_K$, i.e. the `"rest"` comparison from step $K$ on whenever the
      backward integration exists; it never integrates backwards, so it also works outside the
      radius, where the truncated field's sharp rate makes the backward solve blow up.
    - `lr_lambda`: the $\eta\lambda_{\max}$ the settled start sizes $K$ with (outside the radius
      the fast root has modulus $\sqrt q$, $\sqrt\beta$ for heavy ball, so $K$ about doubles);
      None: the fast root is taken as $\beta$.
    - state: $m = \beta b$ (β times the momentum buffer).
    """

    name: ClassVar[str] = "momentum"

    beta: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    start_kind: Start = "rest"
    manifold_order: int = 4
    transient_tol: float = 1e-12
    lr_lambda: float | None = None

    def __check_init__(self):
        check_beta(self.beta)
        check_order(self.manifold_order)
        if self.start_kind not in STARTS:
            raise EomError(f"start must be one of {', '.join(STARTS)}, got {self.start_kind!r}.")
        if float(self.weight_decay) < 0:
            raise EomError(f"weight_decay must be ≥ 0, got {self.weight_decay}.")

    def _grad(self, loss):
        return jax.grad(regularized(loss, float(self.weight_decay)))

    def init(self, loss, params0, lr):
        """m = 0 (rest, settled), or the buffer for $\\theta_{-1} = \\Phi^{-1}(\\theta_0)$
        (manifold)."""
        if self.start_kind != "manifold":
            return jax.tree.map(jnp.zeros_like, params0)
        prev = self.previous_on_manifold(loss, params0, lr)
        return buffer_from_previous(self._grad(loss), self.beta, self.nesterov, params0, prev, lr)

    def previous_on_manifold(self, loss, params0, lr):
        r"""$\theta_{-1} = \Phi^{-1}(\theta_0)$: the order-`manifold_order` EoM, back for time η."""
        field = momentum_field_fn(
            loss, self.beta, self.manifold_order, self.nesterov, self.weight_decay
        )
        note = ("" if self.lr_lambda is None else
                stiffness_note(float(self.lr_lambda), self.beta, self.manifold_order,
                               self.nesterov))
        return _flow(loss, field, params0, -float(lr), lr, max_steps=MANIFOLD_MAX_STEPS, why=note)

    def advance(self, loss, params, state, lr, k0, num):
        return momentum_advance(self._grad(loss), self.beta, self.nesterov, params, state, lr, num)

    def models(self, loss, lr, orders):
        """Order 0 (`"gf"`: gradient flow in the rescaled time) and `"eom{N}"` for N ≥ 1."""
        out = []
        for n in orders:
            n = check_order(n)
            out.append(
                ContinuousModel(
                    label="gf" if n == 0 else f"eom{n}",
                    kind="gf" if n == 0 else "eom",
                    order=n,
                    field=_model_field(loss, self.beta, n, self.nesterov, float(self.weight_decay)),
                )
            )
        return tuple(out)

    def transient_steps(self) -> int:
        """$K$: steps after which a run from rest is on the slow manifold to `transient_tol`
        (settled: with the fast root at `lr_lambda`)."""
        if self.start_kind == "manifold":
            return 0
        if self.start_kind == "settled":
            return transient_steps(self.beta, self.transient_tol, nesterov=self.nesterov,
                                   lr_lambda=self.lr_lambda)
        return transient_steps(self.beta, self.transient_tol)

    def begin(self, loss, params0, lr):
        r"""Settled: `(K, θ_K, m_K)`, the run from rest advanced $K$ steps (deterministic, so a
        resumed run recomputes it bit for bit). Otherwise step 0."""
        if self.start_kind != "settled":
            return super().begin(loss, params0, lr)
        k = self.transient_steps()
        return (k, *self.advanced(loss, params0, lr, k))

    def start(self, loss, params0, lr, model):
        r"""Manifold: $\theta_0$. Rest: the model's flow backwards over $K\eta$ from $\theta_K$.
        Settled: $\theta_K$, at time $K\eta$ (`compare` takes it from `begin`)."""
        if self.start_kind == "manifold":
            return params0
        if self.start_kind == "settled":
            return self.begin(loss, params0, lr)[1]
        k = self.transient_steps()
        if k == 0:
            return params0
        theta_k = self.iterate(loss, params0, lr, k)
        return _flow(loss, _autonomous(loss, model.field), theta_k, -k * float(lr), lr)

    def advanced(self, loss, params0, lr, k: int):
        """$(\\theta_k, m_k)$: the discrete run from this optimizer's `init`, $k$ steps on."""
        m0 = self.init(loss, params0, lr)
        run = _advance_fn(loss, self.beta, self.nesterov, float(self.weight_decay))
        return run(params0, m0, lr, k)

    def iterate(self, loss, params0, lr, k: int):
        """The discrete iterate $\\theta_k$ (from this optimizer's `init`)."""
        return self.advanced(loss, params0, lr, k)[0]

    def regime_bound(self) -> float:
        """$(1-\\sqrt\\beta)^2$ (heavy ball) or $((1-\\beta)/(1+\\beta))^2$ (Nesterov)."""
        return regime_bound(self.beta, self.nesterov)

    def stability_limit(self) -> float:
        """$2(1+\\beta)$ (heavy ball), $(2+2\\beta)/(1+2\\beta)$ (Nesterov): `stability_limit`."""
        return stability_limit(self.beta, self.nesterov)

    def stiffness_note(self, order: int, lr_lambda: float) -> str:
        """Why the order-N field is stiff at η·λ_max = `lr_lambda` ('' inside the radius)."""
        return stiffness_note(float(lr_lambda), self.beta, order, self.nesterov)
