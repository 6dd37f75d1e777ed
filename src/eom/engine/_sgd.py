r"""Minibatch SGD and its three continuous models (THEORY.md §8).

Setting: a per-batch loss `loss(params, batch)` and `batches`, a pytree whose leaves have a
leading axis indexing the $m$ batches (all of equal size). The full loss is
$L = \frac1m\sum_i L_i$ and one SGD step on batch $i$ is

$$\theta \leftarrow \theta - \eta\,\nabla L_{i,\lambda}(\theta), \qquad
  L_{i,\lambda} = L_i + \tfrac\lambda2\lVert\theta\rVert^2$$

(coupled weight decay, as for GD). Step $k$ sits at time $t = k\eta$ and uses batch $i_k$:

- `"cyclic"`: $i_k = k \bmod m$ (the same order every epoch);
- `"random"`: $i_k = \pi_e(k \bmod m)$ with $e = \lfloor k/m\rfloor$ and $\pi_e$ the permutation
  `jax.random.permutation(jax.random.fold_in(PRNGKey(seed), e), m)` — computable from $k$ alone,
  so any stretch of steps can be replayed without the ones before it.

**Remainder policy.** Batches are equal-sized; `make_batches(samples, batch_size)` keeps the first
$m = \lfloor n/B\rfloor$ full batches and *drops the last partial batch* (the $n - mB$ left-over
samples are never used), as `drop_last=True` data loaders do. With `repartition=True` the samples
are reshuffled into fresh batches every epoch and the left-over samples differ per epoch.

**Continuous models** (fields in the run's time $t = k\eta$):

1. gradient flow on the full loss, $\dot\theta = -\nabla L_\lambda$;
2. the *switching* EoM of order $N$: on $[k\eta,(k+1)\eta]$ the order-$N$ GD EoM of batch $i_k$,
   $\dot\theta = -\nabla L_{i_k,\lambda} - \sum_{n\le N}\eta^n\xi_n[L_{i_k,\lambda}]$; it passes
   through every iterate to $O(\eta^{N+1})$ over a fixed time (the solver restarts every step);
3. the *epoch* EoM. Cyclic: the field $F = \sum_{n\le N}h^nF_n$ of the epoch map (the composition
   of $m$ Euler steps of size $h/m$, $h = m\eta$; `eom.modified_terms_of_map`). Its time-$h$ flow
   is one epoch, which also lasts $m\eta = h$ in $t$, so $F$ is already in units of $t$.
   Random: the permutation-averaged field; at first order (derivation in THEORY.md §8)

   $$\dot\theta = -\nabla\Big[L_\lambda + \frac{\eta}{4m}\sum_i\lVert\nabla L_{i,\lambda}\rVert^2
     \Big].$$

   Higher averaged orders raise `UnsupportedOrderError` (not verified here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._errors import EomError, UnsupportedOrderError
from .._tree import check_params, tree_add, tree_scale
from ._counter import check_lr, grad_and_terms_fn, regularized
from ._lie import check_order
from ._map import modified_terms_of_map
from ._optimizer import ContinuousModel, Optimizer
from ._trajectory import Trajectory, _check_finite, _stack, chunks, save_grid

BatchLoss = Callable[[PyTree, PyTree], Float[Array, ""]]
Shuffle = Literal["cyclic", "random"]


# ---------------------------------------------------------------------------------------------
# Batches


def num_batches(batches: PyTree) -> int:
    """$m$, the common leading axis of every leaf of `batches`."""
    leaves = jax.tree.leaves(batches)
    if not leaves:
        raise EomError("batches is empty: give a pytree of arrays with a leading batch axis.")
    sizes = {int(np.shape(v)[0]) if np.ndim(v) else -1 for v in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise EomError(
            "every leaf of batches needs the same leading axis (the batch index i = 0 … m−1), "
            f"got leading sizes {sorted(sizes)}. Batches are equal-sized: make_batches(samples, "
            "batch_size) builds them and drops the last partial batch."
        )
    m = sizes.pop()
    if m < 1:
        raise EomError("batches has no batch (leading axis of size 0).")
    return m


def make_batches(samples: PyTree, batch_size: int) -> PyTree:
    """Split per-sample data (leading axis $n$) into $\\lfloor n/B\\rfloor$ batches of size $B$.

    Remainder policy: the last partial batch is dropped (its $n \\bmod B$ samples are unused).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> eom.make_batches(jnp.arange(5.0), 2).tolist()        # the fifth sample is dropped
    [[0.0, 1.0], [2.0, 3.0]]
    """
    n = num_batches(samples)
    B = int(batch_size)
    if B < 1 or B > n:
        raise EomError(
            f"batch_size must be between 1 and the number of samples {n}, got {batch_size} "
            "(the last partial batch is dropped, so at least one full batch is needed)."
        )
    m = n // B
    return jax.tree.map(lambda v: jnp.reshape(v[: m * B], (m, B, *v.shape[1:])), samples)


def _take(batches: PyTree, i) -> PyTree:
    return jax.tree.map(lambda v: jax.lax.dynamic_index_in_dim(v, i, 0, keepdims=False), batches)


def batch_index(k, m: int, shuffle: str, seed: int):
    """$i_k$: the batch used at step $k$ (traceable; depends on $k$ alone)."""
    k = jnp.asarray(k)
    if shuffle == "cyclic":
        return k % m
    epoch = k // m
    key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
    return jax.random.permutation(key, m)[k % m]


def _check_shuffle(shuffle: Any) -> str:
    if shuffle not in ("cyclic", "random"):
        raise EomError(f"shuffle must be 'cyclic' or 'random', got {shuffle!r}.")
    return shuffle


def _batch_loss_wd(loss: BatchLoss, weight_decay: float) -> BatchLoss:
    weight_decay = float(weight_decay)
    if weight_decay < 0:
        raise EomError(f"weight_decay must be ≥ 0, got {weight_decay}.")

    def loss_wd(params, batch):
        return regularized(lambda p: loss(p, batch), weight_decay)(params)

    return loss_wd


def _full_loss(loss: BatchLoss, batches: PyTree) -> Callable[[PyTree], Any]:
    def full(params):
        return jnp.mean(jax.vmap(lambda b: loss(params, b))(batches))

    return full


def check_batch_loss(loss: Any, params: PyTree, batches: PyTree) -> int:
    """Validate `loss(params, batch)` on the first batch; return $m$."""
    check_params(params)
    m = num_batches(batches)
    if not callable(loss):
        raise EomError(
            f"loss must be a callable loss(params, batch) -> scalar, got {type(loss).__name__}."
        )
    try:
        out = jax.eval_shape(loss, params, _take(batches, 0))
    except Exception as exc:  # noqa: BLE001 — re-raised with context
        raise EomError(
            f"calling loss(params, batch) failed: {type(exc).__name__}: {exc}. A minibatch "
            "loss takes the params and one batch (batches without their leading axis)."
        ) from exc
    if getattr(out, "shape", None) != ():
        raise EomError(f"loss(params, batch) must return a scalar, got shape {out.shape}.")
    return m


# ---------------------------------------------------------------------------------------------
# Fields


def _step_field(loss_wd: BatchLoss, order: int) -> Callable:
    """`(params, batch, lr) -> ` the order-N GD EoM field of one batch's loss."""

    def field(params, batch, lr):
        fn = grad_and_terms_fn(lambda p: loss_wd(p, batch), order)
        g, xi = fn(params)
        out = tree_scale(-1.0, g)
        for n, term in enumerate(xi, start=1):
            out = tree_add(out, tree_scale(-(lr**n), term))
        return out

    if order == 0:
        return lambda params, batch, lr: tree_scale(-1.0, jax.grad(loss_wd)(params, batch))
    return field


def epoch_step(loss: BatchLoss, batches: PyTree, *, weight_decay: float = 0.0, order=None):
    r"""The cyclic epoch map `(θ, h) ->` $m$ Euler steps of size $h/m$ on batches $0 \dots m-1$.

    `order` (a permutation of range(m), may be traced) replaces the cyclic order.
    """
    m = num_batches(batches)
    grad = jax.grad(_batch_loss_wd(loss, weight_decay))
    idx = jnp.arange(m) if order is None else jnp.asarray(order)

    def step(theta, h):
        for j in range(m):
            g = grad(theta, _take(batches, idx[j]))
            theta = jax.tree.map(lambda x, gi: x - (h / m) * gi, theta, g)
        return theta

    return step


def sgd_epoch_field(
    loss: BatchLoss, batches: PyTree, lr: float, order: int, *, weight_decay: float = 0.0
) -> Callable[[PyTree], PyTree]:
    r"""The cyclic-order epoch EoM field $\theta \mapsto \sum_{n\le N}h^nF_n(\theta)$, $h = m\eta$.

    $F_n$ are the modified-field terms of the epoch map (`epoch_step`, THEORY.md §7–8); the
    field is in units of $t = k\eta$ (comparable with GD's `vector_field`) and its flow over
    $t \in [em\eta, (e+1)m\eta]$ reproduces epoch $e$ to $O(h^{N+2})$. Order 0 is gradient flow on
    the full loss. Pure and jit-compatible.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p, b: 0.5 * jnp.sum((p - b) ** 2)
    >>> batches = jnp.array([[1.0], [3.0]])                  # m = 2 batches of one sample
    >>> eom.sgd_epoch_field(loss, batches, lr=0.5, order=0)(jnp.zeros(1)).tolist()  # -∇L
    [2.0]
    """
    lr = check_lr(lr)
    fn = epoch_field_fn(loss, batches, check_order(order), weight_decay=weight_decay)
    return lambda theta: fn(theta, lr)


def epoch_field_fn(
    loss: BatchLoss, batches: PyTree, order: int, *, weight_decay: float = 0.0, perm=None
) -> Callable[[PyTree, Any], PyTree]:
    """`(θ, lr) ->` the epoch EoM field of `sgd_epoch_field` with the rate traced (`perm`: a
    fixed batch order instead of the cyclic one)."""
    m = num_batches(batches)
    step = epoch_step(loss, batches, weight_decay=weight_decay, order=perm)

    def field(theta, lr):
        h = m * lr
        terms = modified_terms_of_map(step, theta, order)
        out = terms[0]
        for n, t in enumerate(terms[1:], start=1):
            out = tree_add(out, tree_scale(h**n, t))
        return out

    return field


def sgd_regularizer(loss: BatchLoss, batches: PyTree, lr: float, params: PyTree):
    r"""$(\frac{\eta}{4m}\sum_i\lVert\nabla L_i\rVert^2,\ \frac\eta4\lVert\nabla L\rVert^2)$.

    SGD's implicit regularizer under random reshuffling (first order, THEORY.md §8) and GD's. Their
    difference is $\frac\eta{4m}\sum_i\lVert\nabla L_i - \nabla L\rVert^2 \ge 0$ (batch variance).
    No weight decay (pass a regularized loss to include it).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p, b: 0.5 * jnp.sum((p - b) ** 2)
    >>> batches = jnp.array([[1.0], [3.0]])                  # m = 2 batches of one sample
    >>> [float(v) for v in eom.sgd_regularizer(loss, batches, 0.5, jnp.zeros(1))]  # η/8·10, η/4·4
    [0.625, 0.5]
    """
    lr = check_lr(lr)
    m = num_batches(batches)
    grads = jax.vmap(lambda b: jax.grad(loss)(params, b))(batches)
    sq = sum(jnp.sum(jnp.reshape(g, (m, -1)) ** 2, axis=1) for g in jax.tree.leaves(grads))
    g_full = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    full_sq = sum(jnp.sum(g**2) for g in jax.tree.leaves(g_full))
    return lr / (4 * m) * jnp.sum(sq), lr / 4 * full_sq


def sgd_averaged_field(
    loss: BatchLoss, batches: PyTree, lr: float, order: int, *, weight_decay: float = 0.0
) -> Callable[[PyTree], PyTree]:
    r"""The random-order averaged EoM field (time $t = k\eta$).

    - order 0: gradient flow on the full loss, $-\nabla L_\lambda$;
    - order 1: $-\nabla\big[L_\lambda + \frac{\eta}{4m}\sum_i\lVert\nabla L_{i,\lambda}\rVert^2
      \big]$ (the epoch field's first term averaged over the $m!$ orders, THEORY.md §8);
    - order ≥ 2: `UnsupportedOrderError` (beyond first order the averaged field is that of the
      averaged epoch map; not implemented/verified here).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p, b: 0.5 * jnp.sum((p - b) ** 2)
    >>> batches = jnp.array([[1.0], [3.0]])                  # m = 2 batches of one sample
    >>> eom.sgd_averaged_field(loss, batches, lr=0.5, order=1)(jnp.zeros(1)).tolist()  # 2(1 + η/2)
    [2.5]
    """
    lr = check_lr(lr)
    order = check_order(order)
    num_batches(batches)
    if order >= 2:
        raise UnsupportedOrderError(
            f"the random-order averaged EoM is available at orders 0 and 1, got {order}: beyond "
            "first order it is the field of the permutation-averaged epoch map, which is not "
            "verified here. Use order 1, the cyclic epoch EoM, or the switching EoM."
        )
    fn = averaged_field_fn(loss, batches, order, weight_decay=weight_decay)
    return lambda theta: fn(theta, lr)


def averaged_field_fn(
    loss: BatchLoss, batches: PyTree, order: int, *, weight_decay: float = 0.0
) -> Callable[[PyTree, Any], PyTree]:
    """`(θ, lr) ->` the averaged field (orders 0, 1) of `sgd_averaged_field`, rate traced."""
    m = num_batches(batches)
    loss_wd = _batch_loss_wd(loss, weight_decay)
    grad_b = jax.grad(loss_wd)

    def modified_loss(theta, lr):
        out = jnp.mean(jax.vmap(lambda b: loss_wd(theta, b))(batches))
        if order == 1:
            grads = jax.vmap(lambda b: grad_b(theta, b))(batches)
            sq = sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))
            out = out + lr / (4 * m) * sq
        return out

    g = jax.grad(modified_loss)
    return lambda theta, lr: tree_scale(-1.0, g(theta, lr))


# ---------------------------------------------------------------------------------------------
# The optimizer


class SwitchingModel(ContinuousModel):
    """A `boundaries="step"` model that also gives the field of step $k$ directly.

    `field(t, y, lr)` picks the batch of step $k = \\lfloor t/\\eta + 5\\cdot10^{-10}\\rfloor$:
    right for $t \\in [k\\eta, (k+1-10^{-9})\\eta]$ (clamp $t$ there, as `eom.compare` does),
    wrong at $t = (k+1)\\eta$ itself. `step_field(k, y, lr)` is the field of step $k$ without
    that caveat.
    """

    step_field: Callable = eqx.field(static=True, default=None)


class SGD(Optimizer):
    r"""Minibatch SGD $\theta \leftarrow \theta - \eta\nabla L_{i_k,\lambda}(\theta)$ (module doc).

    - `batches`: pytree, leading axis $m$ (equal-sized batches; see `make_batches`, which drops
      the last partial batch). With `repartition=True` it holds per-sample data instead
      (leading axis $n$) and every epoch draws a fresh partition into $\lfloor n/B\rfloor$
      batches of `batch_size` (the left-over samples — different ones each epoch — dropped).
    - `shuffle`: `"cyclic"` or `"random"`; `seed` for `"random"` (and repartitioning).
    - `weight_decay`: coupled, λ.
    """

    name: ClassVar[str] = "sgd"
    batches: PyTree
    shuffle: str = eqx.field(static=True, default="cyclic")
    seed: Any = 0  # an int, or a traced integer array (one compile for many seeds)
    weight_decay: float = eqx.field(static=True, default=0.0)
    repartition: bool = eqx.field(static=True, default=False)
    batch_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_shuffle(self.shuffle)
        if float(self.weight_decay) < 0:
            raise EomError(f"weight_decay must be ≥ 0, got {self.weight_decay}.")
        if self.repartition:
            n = num_batches(self.batches)
            if self.batch_size is None or not 1 <= int(self.batch_size) <= n:
                raise EomError(
                    "repartition=True needs per-sample batches and a batch_size between 1 and "
                    f"the number of samples {n}, got {self.batch_size}."
                )
        else:
            num_batches(self.batches)

    # -- batches -------------------------------------------------------------------------------

    @property
    def m(self) -> int:
        """Batches per epoch (the last partial batch dropped)."""
        n = num_batches(self.batches)
        return n // int(self.batch_size) if self.repartition else n

    def batch(self, k):
        """The batch used at step `k` (traceable)."""
        m = self.m
        if not self.repartition:
            return _take(self.batches, batch_index(k, m, self.shuffle, self.seed))
        n, B = num_batches(self.batches), int(self.batch_size)
        k = jnp.asarray(k)
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), k // m)
        perm = jax.random.permutation(jax.random.fold_in(key, 1), n)
        idx = jax.lax.dynamic_slice_in_dim(perm, (k % m) * B, B)
        return jax.tree.map(lambda v: v[idx], self.batches)

    def epoch_batches(self) -> PyTree:
        """The batches as a stacked pytree with leading axis $m$ (fixed partition)."""
        if self.repartition:
            return make_batches(self.batches, int(self.batch_size))
        return self.batches

    # -- contract ------------------------------------------------------------------------------

    def full_loss(self, loss: BatchLoss) -> Callable[[PyTree], Any]:
        """$L = \\frac1m\\sum_i L_i$ (repartition: the mean over all samples' fixed batches)."""
        return _full_loss(loss, self.epoch_batches())

    def advance(self, loss: BatchLoss, params, state, lr, k0, num):
        grad = jax.grad(_batch_loss_wd(loss, self.weight_decay))

        def body(k, p):
            g = grad(p, self.batch(k))
            return jax.tree.map(lambda x, gi: x - lr * gi, p, g)

        return jax.lax.fori_loop(k0, k0 + num, body, params), state

    def models(self, loss: BatchLoss, lr, orders: tuple[int, ...]) -> tuple[ContinuousModel, ...]:
        """GF; switching EoM of each order; cyclic epoch EoM / random averaged EoM (order ≥ 1).

        The averaged model is included for orders 0–1 only (higher: not verified); with
        `repartition=True` only GF and the switching EoMs (the epoch map changes every epoch).
        """
        wd = float(self.weight_decay)
        loss_wd = _batch_loss_wd(loss, wd)
        gf_grad = jax.grad(regularized(self.full_loss(loss), wd))
        out: list[ContinuousModel] = []
        for N in sorted(set(int(o) for o in orders)):
            check_order(N)
            if N == 0:
                out.append(
                    ContinuousModel(
                        "gf", "gf", 0, lambda t, y, lr: tree_scale(-1.0, gf_grad(y))
                    )
                )
            sf = _step_field(loss_wd, N)

            def step_field(k, y, lr, sf=sf):
                return sf(y, self.batch(k), lr)

            def switch_field(t, y, lr, step_field=step_field):
                # k = ⌊t/η + 5e-10⌋: exact for t in [kη, (k+1−1e-9)η] despite rounding of kη
                # (eom.compare clamps t into that interval on each restarted step), k ≲ 1e6.
                k = jnp.floor(t / lr + 5e-10).astype(jnp.int32)
                return step_field(k, y, lr)

            out.append(
                SwitchingModel(
                    f"switch{N}", "switching", N, switch_field, "step", 1, step_field
                )
            )
            if N == 0:
                continue
            if self.shuffle == "cyclic" and not self.repartition:
                ef = epoch_field_fn(loss, self.batches, N, weight_decay=wd)
                out.append(
                    ContinuousModel(
                        f"epoch{N}", "epoch", N, lambda t, y, lr, ef=ef: ef(y, lr), "none", self.m
                    )
                )
            elif N == 1 and not self.repartition:
                af = averaged_field_fn(loss, self.batches, 1, weight_decay=wd)
                out.append(
                    ContinuousModel(
                        "averaged1", "averaged", 1, lambda t, y, lr, af=af: af(y, lr), "none",
                        self.m,
                    )
                )
        return tuple(out)

    def regime_bound(self) -> float:
        """Per-batch η·λ_max(L_i) < 1 for the switching EoM (the epoch series needs mη·λ_max
        small, see THEORY.md §8)."""
        return 1.0


# ---------------------------------------------------------------------------------------------
# Running SGD


@eqx.filter_jit
def _sgd_chunk(opt: SGD, loss: BatchLoss, p, lr, k0, counts):
    """Saved iterates after each of `counts` runs of steps, starting at step `k0`."""

    def body(carry, n):
        p, k = carry
        p, _ = opt.advance(loss, p, (), lr, k, n)
        return (p, k + n), p

    _, ps = jax.lax.scan(body, (p, k0), counts)
    return ps


@eqx.filter_jit
def _loss_trace(opt: SGD, loss: BatchLoss, params):
    return jax.vmap(opt.full_loss(loss))(params)


def sgd(
    loss: BatchLoss,
    params0: PyTree,
    batches: PyTree,
    lr: float,
    num_epochs: int,
    *,
    shuffle: Shuffle = "cyclic",
    seed: int = 0,
    weight_decay: float = 0.0,
    save_every: int = 1,
) -> Trajectory:
    r"""Run minibatch SGD for `num_epochs` epochs of $m$ steps: $\theta \leftarrow \theta -
    \eta\nabla L_{i_k,\lambda}(\theta)$, $i_k$ by `shuffle` (module docstring).

    `batches`: leading axis $m$ over equal-sized batches (use `make_batches`, which drops the
    last partial batch). Returns a per-step `Trajectory` (steps $0 \dots m\cdot$`num_epochs`,
    every `save_every`-th and the last) whose `loss` is the full loss $\frac1m\sum_iL_i$.
    Raises `DivergenceError` if the loss becomes non-finite.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> loss = lambda p, b: 0.5 * jnp.sum((p - b) ** 2)
    >>> batches = jnp.array([[1.0], [3.0]])                  # m = 2 batches of one sample
    >>> eom.sgd(loss, jnp.zeros(1), batches, lr=0.5, num_epochs=1).params[:, 0].tolist()
    [0.0, 0.5, 1.75]
    """
    m = check_batch_loss(loss, params0, batches)
    lr = check_lr(lr)
    shuffle = _check_shuffle(shuffle)
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int | np.integer):
        raise EomError(f"num_epochs must be an integer ≥ 0, got {num_epochs!r}.")
    seed = jnp.asarray(int(seed))  # traced: one compile serves every seed
    opt = SGD(batches, shuffle=shuffle, seed=seed, weight_decay=float(weight_decay))
    grid = save_grid(int(num_epochs) * m, save_every)
    p, saved, prev = params0, [jax.tree.map(lambda x: x[None], params0)], 0
    for part, n in chunks(grid):
        counts = np.diff(np.concatenate([[prev], part]))
        ps = _sgd_chunk(opt, loss, p, jnp.asarray(lr), jnp.asarray(prev), jnp.asarray(counts))
        saved.append(jax.tree.map(lambda x: x[:n], ps))
        p, prev = jax.tree.map(lambda x: x[n - 1], ps), part[n - 1]
    params = _stack(saved)
    losses = _loss_trace(opt, loss, params)
    _check_finite(np.asarray(losses), grid, "SGD", lr)
    return Trajectory(jnp.asarray(grid), jnp.asarray(grid * lr), params, losses)

