r"""What GD, gradient flow and the EoM predict for symmetric groups (THEORY.md §4–5).

**Scale-invariant group** $w$ ($w\cdot g_w = 0$, $H\hat w = -(g_w, 0)$), with coupled weight decay
$\lambda$, $g_w$ the gradient of $L$ *without* the decay term, $g_\lambda = g + \lambda\theta$ and
$n = \lVert w\rVert^2$:

- GD, exactly: $n_{k+1} = (1-\eta\lambda)^2 n_k + \eta^2\lVert g_w\rVert^2$.
- GF: $\dot n = -2\lambda n$.
- EoM of order 1: $\dot n = -2\lambda(1 + \eta\lambda/2)\,n + \eta\lVert g_w\rVert^2$.
- EoM of order 2: add $\eta^2\big(g_w\cdot(Hg_\lambda)_w + \lambda\lVert g_w\rVert^2
  - \tfrac23\lambda^3 n\big)$; for $\lambda = 0$ this is THEORY's $\eta^2 g_w\cdot(Hg)_w$.

These are $2\,w\cdot F_w$ for the order-$N$ EoM field $F$ *exactly* (not only to leading order):
with the identities above, $w\cdot(\xi_1)_w = \tfrac12(\lambda^2 n - \lVert g_w\rVert^2)$ and
$w\cdot(\xi_2)_w = -\tfrac12 g_w\cdot(Hg_\lambda)_w - \tfrac12\lambda\lVert g_w\rVert^2
+ \tfrac13\lambda^3 n$ (using $\nabla^3L[\hat w, u, v] = -u_w\cdot(Hv)_w - (Hu)_w\cdot v_w$).
The pure-decay parts $-2\lambda - \eta\lambda^2 - \tfrac23\eta^2\lambda^3$ are the series of
$(2/\eta)\log(1-\eta\lambda)$.
Equilibrium (order 1): $n^2 \to \eta\lVert\hat g\rVert^2/(2\lambda)$ with $\hat g$ the gradient at
$w/\lVert w\rVert$ ($\lVert\hat g\rVert^2 = n\lVert g_w\rVert^2$); the angle turned per GD step,
exactly $\arctan\big(\eta\lVert g_w\rVert/((1-\eta\lambda)\lVert w\rVert)\big)$, tends to
$\sqrt{2\eta\lambda}$.

**Translation-invariant direction** $u$ ($u\cdot g = 0$, $Hu = 0$), $s = u\cdot\theta$: GD
$s_k = (1-\eta\lambda)^k s_0$; GF $e^{-\lambda t}s_0$; order-$N$ EoM $\dot s = r_N s$ with
$r_N = -(\lambda + \sum_{k=1}^N \eta^k\lambda^{k+1}/(k+1))$; the full series
$r_\infty = \log(1-\eta\lambda)/\eta$ reproduces GD at $t = k\eta$. A **null** slice ($L$
independent of it) is a subspace of such directions: $\lVert w\rVert^2$ evolves with rate $2r_N$.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._errors import EomError, UnsupportedOrderError
from .._memo import loss_cache
from ..engine import check_loss, check_lr, check_order, eom_field
from ._detect import Group, group_dots, group_sums

#: Highest order with a closed-form scale-group rate (THEORY.md §4 gives orders 1 and 2).
MAX_SCALE_ORDER = 2


def _check_wd(weight_decay) -> float:
    try:
        wd = float(weight_decay)
    except (TypeError, ValueError):
        raise EomError(f"weight_decay must be a number ≥ 0, got {weight_decay!r}.") from None
    if not (wd >= 0 and math.isfinite(wd)):
        raise EomError(f"weight_decay must be a finite number ≥ 0, got {weight_decay!r}.")
    return wd


def _check_groups(groups) -> tuple[Group, ...]:
    if isinstance(groups, Group):
        groups = (groups,)
    groups = tuple(groups)
    for g in groups:
        if not isinstance(g, Group):
            raise EomError(
                f"expected eom.symmetry.Group objects (from detect), got {type(g).__name__}."
            )
    return groups


# ---- closed forms (plain arithmetic; numpy or jax arrays) ---------------------------------------


def gd_sq_norm_step(
    sq_norm: ArrayLike, grad_sq_norm: ArrayLike, lr: float, weight_decay: float = 0.0
) -> ArrayLike:
    r"""GD's exact one-step map of a scale group's norm:
    $\lVert w_{k+1}\rVert^2 = (1-\eta\lambda)^2\lVert w_k\rVert^2 + \eta^2\lVert g_w\rVert^2$.

    `grad_sq_norm` is $\lVert g_w\rVert^2$ at step $k$, without the decay term."""
    return (1.0 - lr * weight_decay) ** 2 * sq_norm + lr**2 * grad_sq_norm


def gf_sq_norm(sq_norm0: ArrayLike, times: ArrayLike, weight_decay: float = 0.0) -> ArrayLike:
    r"""Gradient flow: $\lVert w(t)\rVert^2 = e^{-2\lambda t}\lVert w(0)\rVert^2$ (conserved for
    $\lambda = 0$)."""
    return np.multiply.outer(np.exp(-2.0 * weight_decay * np.asarray(times, float)), sq_norm0)


def scale_rate(
    sq_norm: ArrayLike,
    grad_sq_norm: ArrayLike,
    grad_h_grad: ArrayLike,
    lr: float,
    order: int,
    weight_decay: float = 0.0,
) -> ArrayLike:
    r"""$d\lVert w\rVert^2/dt$ of a scale group under the order-$N$ EoM ($N \le 2$; 0 is GF):

    $$-2\lambda n + \eta\big(\lVert g_w\rVert^2 - \lambda^2 n\big)
      + \eta^2\big(g_w\cdot(Hg_\lambda)_w + \lambda\lVert g_w\rVert^2 - \tfrac23\lambda^3 n\big),$$

    truncated after the $\eta^N$ term. `grad_h_grad` is $g_w\cdot(Hg_\lambda)_w$ ($H$ of $L$ without
    decay, $g_\lambda = g + \lambda\theta$); it is only used for order 2."""
    if order > MAX_SCALE_ORDER:
        raise UnsupportedOrderError(
            f"the closed-form scale-group rate exists for order ≤ {MAX_SCALE_ORDER}, got {order}; "
            "use measured_rates (2 w·F_w from the EoM field) for higher orders."
        )
    lam = weight_decay
    rate = -2.0 * lam * sq_norm
    if order >= 1:
        rate = rate + lr * (grad_sq_norm - lam**2 * sq_norm)
    if order >= 2:
        rate = rate + lr**2 * (grad_h_grad + lam * grad_sq_norm - (2.0 / 3.0) * lam**3 * sq_norm)
    return rate


def equilibrium_sq_norm(g_hat_sq_norm: ArrayLike, lr: float, weight_decay: float) -> ArrayLike:
    r"""The equilibrium $\lVert w\rVert^2 = \sqrt{\eta\lVert\hat g\rVert^2/(2\lambda)}$ (order 1,
    leading order in $\eta\lambda$), with $\hat g$ the gradient at $w/\lVert w\rVert$."""
    if not weight_decay > 0:
        raise EomError("the equilibrium norm needs weight_decay > 0 (without it ‖w‖ only grows).")
    return np.sqrt(lr * np.asarray(g_hat_sq_norm) / (2.0 * weight_decay))


def gd_angular_update(
    sq_norm: ArrayLike, grad_sq_norm: ArrayLike, lr: float, weight_decay: float = 0.0
) -> ArrayLike:
    r"""The angle between $w_k$ and $w_{k+1}$ under GD, exactly:
    $\arctan\big(\eta\lVert g_w\rVert / ((1-\eta\lambda)\lVert w\rVert)\big)$ (as $w\perp g_w$)."""
    return np.arctan2(lr * np.sqrt(grad_sq_norm), (1.0 - lr * weight_decay) * np.sqrt(sq_norm))


def equilibrium_angular_update(lr: float, weight_decay: float) -> float:
    r"""The angular update per step at equilibrium, $\sqrt{2\eta\lambda}$."""
    return math.sqrt(2.0 * lr * weight_decay)


def translation_rate(lr: float, weight_decay: float, order: int | None = None) -> float:
    r"""$r$ in $\dot s = r s$ for a translation direction under the order-$N$ EoM:
    $r_N = -\big(\lambda + \sum_{k=1}^N \eta^k\lambda^{k+1}/(k+1)\big)$ (order 0: GF, $-\lambda$);
    `order=None` gives the full series $\log(1-\eta\lambda)/\eta$ (needs $\eta\lambda < 1$)."""
    lam = _check_wd(weight_decay)
    if order is None:
        if lr * lam >= 1.0:
            raise EomError(
                f"the full EoM series for a translation direction needs lr·weight_decay < 1, got "
                f"{lr * lam:g}; GD flips or stalls s there and no real flow matches it."
            )
        return math.log1p(-lr * lam) / lr
    return -(lam + sum(lr**k * lam ** (k + 1) / (k + 1) for k in range(1, int(order) + 1)))


def translation_gd(s0: ArrayLike, steps: ArrayLike, lr: float, weight_decay: float) -> np.ndarray:
    r"""GD: $s_k = (1-\eta\lambda)^k s_0$ (outer product: shape `(*steps.shape, *s0.shape)`)."""
    return np.multiply.outer((1.0 - lr * weight_decay) ** np.asarray(steps, float), s0)


def translation_gf(s0: ArrayLike, times: ArrayLike, weight_decay: float) -> np.ndarray:
    r"""GF: $s(t) = e^{-\lambda t}s_0$."""
    return np.multiply.outer(np.exp(-weight_decay * np.asarray(times, float)), s0)


def translation_eom(
    s0: ArrayLike, times: ArrayLike, lr: float, weight_decay: float, order: int | None = None
) -> np.ndarray:
    r"""Order-$N$ EoM: $s(t) = e^{r_N t}s_0$ (`order=None`: the full series, which equals GD
    at $t = k\eta$)."""
    r = translation_rate(lr, weight_decay, order)
    return np.multiply.outer(np.exp(r * np.asarray(times, float)), s0)


# ---- per-group quantities at points -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupStats:
    r"""Per-group quantities at one point or along points (arrays `(*batch, n_groups)`).

    - `sq_norm`: $\lVert w\rVert^2$; `s`: $u\cdot\theta$ ($\sum w/\sqrt{n}$; meaningful for
      translation directions).
    - `grad_sq_norm`: $\lVert g_w\rVert^2$ ($g$ without weight decay).
    - `grad_h_grad`: $g_w\cdot(Hg_\lambda)_w$, $g_\lambda = g + \lambda\theta$ (NaN if not
      computed).
    """

    sq_norm: np.ndarray
    s: np.ndarray
    grad_sq_norm: np.ndarray
    grad_h_grad: np.ndarray


#: Points per compiled batch when computing group statistics along a trajectory.
STATS_CHUNK = 16


@loss_cache
def _stats_fn(loss: Callable, groups: tuple[Group, ...], hvp: bool):
    """Jitted `(params, λ) -> stats` and its vmap over a fixed-size chunk of points (λ traced)."""
    grad = jax.grad(loss)
    inv_sqrt = np.array([1.0 / math.sqrt(g.size) for g in groups])

    def one(p, weight_decay):
        g = grad(p)
        th, gl = jax.tree.leaves(p), jax.tree.leaves(g)
        sq = group_dots(groups, th, th)
        s = group_sums(groups, th) * jnp.asarray(inv_sqrt, sq.dtype)
        gg = group_dots(groups, gl, gl)
        if hvp:
            g_wd = jax.tree.map(lambda a, b: a + weight_decay * b, g, p)
            hg = jax.jvp(grad, (p,), (g_wd,))[1]
            ghg = group_dots(groups, gl, jax.tree.leaves(hg))
        else:
            ghg = jnp.full_like(gg, jnp.nan)
        return sq, s, gg, ghg

    return jax.jit(one), jax.jit(jax.vmap(one, in_axes=(0, None)))


def group_stats(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    groups: Sequence[Group],
    *,
    weight_decay: float = 0.0,
    hvp: bool = True,
    stacked: bool = False,
) -> GroupStats:
    r"""$\lVert w\rVert^2$, $s$, $\lVert g_w\rVert^2$ and $g_w\cdot(Hg_\lambda)_w$ of every group.

    One gradient and (if `hvp`) one Hessian-vector product per point, then vectorized reductions.
    `stacked=True`: `params` has a leading axis over points (a `Trajectory`'s `params`); they are
    processed in chunks of `STATS_CHUNK` points (one compilation for any number of points, memory
    O(chunk × params)). The compiled function is cached per (loss, groups, hvp): pass the same
    `groups` tuple to share it."""
    groups = _check_groups(groups)
    wd = _check_wd(weight_decay)
    if not groups:
        shape = (len(jax.tree.leaves(params)[0]), 0) if stacked else (0,)
        return GroupStats(*(np.zeros(shape) for _ in range(4)))
    single, chunk = _stats_fn(loss, groups, bool(hvp))
    if not stacked:
        return GroupStats(*(np.asarray(x) for x in single(params, wd)))
    n = len(jax.tree.leaves(params)[0])
    parts = []
    for start in range(0, n, STATS_CHUNK):
        idx = np.minimum(np.arange(start, start + STATS_CHUNK), n - 1)  # pad with the last point
        out = chunk(jax.tree.map(lambda x, idx=idx: np.asarray(x)[idx], params), wd)
        parts.append([np.asarray(x)[: min(STATS_CHUNK, n - start)] for x in out])
    return GroupStats(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def predicted_rates(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    groups: Sequence[Group],
    lr: float,
    *,
    order: int,
    weight_decay: float = 0.0,
) -> Float[np.ndarray, " g"]:
    r"""The closed-form rate of each group at `params` under the order-$N$ EoM (0 = GF):
    $d\lVert w\rVert^2/dt$ from `scale_rate` for scale groups ($N \le 2$), $ds/dt = r_N s$ for
    translation directions, $d\lVert w\rVert^2/dt = 2r_N\lVert w\rVert^2$ for null slices."""
    groups = _check_groups(groups)
    lr, order, wd = check_lr(lr), check_order(order), _check_wd(weight_decay)
    st = group_stats(loss, params, groups, weight_decay=wd, hvp=order >= 2)
    return _rates(st, groups, lr, order, wd)


def _rates(st: GroupStats, groups, lr, order, wd) -> np.ndarray:
    kinds = np.array([g.kind for g in groups])
    r = translation_rate(lr, wd, order)
    out = np.where(kinds == "translation", r * st.s, 2.0 * r * st.sq_norm)
    if (kinds == "scale").any():
        rate = scale_rate(st.sq_norm, st.grad_sq_norm, st.grad_h_grad, lr, order, wd)
        out = np.where(kinds == "scale", rate, out)
    return out


@loss_cache
def _field_rates_fn(loss: Callable, groups: tuple[Group, ...], order: int, wd: float, method: str):
    field = eom_field(loss, order, wd, method)  # lr traced: one compile for every lr
    sizes = np.array([g.size for g in groups], float)
    is_t = np.array([g.kind == "translation" for g in groups])

    @jax.jit
    def rates(params, lr):
        f = field(params, lr)
        th, fl = jax.tree.leaves(params), jax.tree.leaves(f)
        dots = group_dots(groups, th, fl)
        sums = group_sums(groups, fl) / jnp.asarray(np.sqrt(sizes), dots.dtype)
        return jnp.where(jnp.asarray(is_t), sums, 2.0 * dots)

    return rates


def measured_rates(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    groups: Sequence[Group],
    lr: float,
    *,
    order: int,
    weight_decay: float = 0.0,
    method: str = "auto",
) -> Float[np.ndarray, " g"]:
    r"""The same rates evaluated directly from the order-$N$ EoM field $F$ (the field of
    `eom.vector_field`, with the learning rate traced so sweeps over it compile once):
    $2\,w\cdot F_w$ for scale/null groups, $u\cdot F$ for translation directions — the reference
    the closed forms are checked against (any order)."""
    groups = _check_groups(groups)
    check_loss(loss, params)
    lr, order, wd = check_lr(lr), check_order(order), _check_wd(weight_decay)
    if not groups:
        return np.zeros((0,))
    for g in groups:
        g._leaf_of(params)
    return np.asarray(_field_rates_fn(loss, groups, order, wd, method)(params, lr))


# ---- along trajectories -------------------------------------------------------------------------


def _traj_parts(traj: Any, name: str) -> tuple[np.ndarray, np.ndarray, PyTree]:
    for attr in ("steps", "times", "params"):
        if not hasattr(traj, attr):
            raise EomError(
                f"trajectory {name!r} has no `{attr}`; pass an eom.Trajectory (from "
                "eom.gradient_descent or eom.integrate)."
            )
    return np.asarray(traj.steps), np.asarray(traj.times, float), traj.params


def measure_groups(trajectory: Any, groups: Sequence[Group]) -> Float[np.ndarray, "n g"]:
    r"""The measured coordinate of each group along a trajectory: $\lVert w\rVert^2$ for scale/null
    groups, $s = u\cdot\theta$ for translation directions (shape `(n_points, n_groups)`)."""
    groups = _check_groups(groups)
    steps, _, params = _traj_parts(trajectory, "trajectory")
    if not groups:
        return np.zeros((len(steps), 0))
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    for g in groups:
        g._leaf_of(params)  # validates structure and shapes
    sq = group_dots(groups, leaves, leaves)
    s = group_sums(groups, leaves) / np.sqrt([g.size for g in groups])
    is_t = np.array([g.kind == "translation" for g in groups])
    return np.where(is_t, s, sq)


def _process_order(name: str) -> int | None:
    """`"gd"` → None; `"gf"` → 0; `"eom1"`, `"eom-2"`, `"eom_3"` → N."""
    key = name.lower()
    if key == "gd":
        return None
    if key == "gf":
        return 0
    m = re.fullmatch(r"eom[-_ ]?(\d+)", key)
    if m:
        return int(m.group(1))
    raise EomError(
        f"unknown process {name!r}; name trajectories 'gd', 'gf' or 'eomN' (e.g. 'eom1', 'eom2')."
    )


def _linear_forced(times: np.ndarray, n0: np.ndarray, a: float, b: np.ndarray) -> np.ndarray:
    r"""Integrate $\dot n = -a n + b(t)$ on the saved grid: exactly in the decay $a$
    ($e^{-a\,\Delta t}$), the trapezoid rule on the forcing $e^{a s}b(s)$ (second order in the save
    spacing, and only in the variation of $b$, which is small: $b = O(\eta)$)."""
    out = np.empty_like(b)
    out[0] = n0
    for i in range(1, len(times)):
        h = times[i] - times[i - 1]
        e = math.exp(-a * h)
        out[i] = e * out[i - 1] + 0.5 * h * (e * b[i - 1] + b[i])
    return out


def _gd_recursion(steps, sq0, gg, lr, wd) -> np.ndarray:
    r"""Accumulate $n_{k+1} = a n_k + \eta^2 G_k$, $a = (1-\eta\lambda)^2$, over the saved steps.

    Exact when consecutive steps are saved; across a gap of m steps $G$ is interpolated linearly."""
    a = (1.0 - lr * wd) ** 2
    out = np.empty_like(gg)
    out[0] = sq0
    for i in range(1, len(steps)):
        m = int(steps[i] - steps[i - 1])
        if m == 1:
            out[i] = a * out[i - 1] + lr**2 * gg[i - 1]
        else:
            j = np.arange(m)[:, None]
            g_j = gg[i - 1] + (gg[i] - gg[i - 1]) * j / m
            out[i] = a**m * out[i - 1] + lr**2 * np.sum(a ** (m - 1 - j) * g_j, axis=0)
    return out


def predict(
    loss: Callable[[PyTree], Float[Array, ""]],
    trajectory: Any,
    groups: Sequence[Group],
    lr: float,
    process: str,
    *,
    weight_decay: float = 0.0,
    stats: GroupStats | None = None,
) -> Float[np.ndarray, "n g"]:
    r"""The analytic curve of each group for `process` ∈ {`"gd"`, `"gf"`, `"eomN"`} on the
    trajectory's time grid, starting from its first point (shape `(n_points, n_groups)`).

    - translation / null: closed forms ($s$, resp. $\lVert w\rVert^2 = $ the square law).
    - scale, `"gd"`: the exact recursion accumulated with $\lVert g_w\rVert^2$ measured along
      `trajectory` (exact if every step is saved; across gaps $\lVert g_w\rVert^2$ is interpolated).
    - scale, `"gf"`: $e^{-2\lambda t}\lVert w_0\rVert^2$.
    - scale, `"eomN"` ($N \le 2$): $\dot n = $ `scale_rate` $= -a_N n + b(\theta)$ integrated along
      the points of `trajectory`: the decay $a_N = -2r_N$ exactly, the gradient-driven part $b$
      (e.g. $\eta\lVert g_w\rVert^2$) by the trapezoid rule on the saved grid (second order in the
      save spacing).
    """
    groups = _check_groups(groups)
    lr, wd = check_lr(lr), _check_wd(weight_decay)
    order = _process_order(process)
    steps, times, params = _traj_parts(trajectory, process)
    kinds = np.array([g.kind for g in groups])
    if stats is None:
        stats = group_stats(
            loss,
            params,
            groups,
            weight_decay=wd,
            hvp=order is not None and order >= 2,
            stacked=True,
        )
    sq, s = stats.sq_norm, stats.s
    t = times - times[0]
    k = steps - steps[0]
    if order is None:
        s_curve = translation_gd(s[0], k, lr, wd)
        n_curve = (1.0 - lr * wd) ** (2.0 * k.astype(float))[:, None] * sq[0]
        scale_curve = (
            _gd_recursion(steps, sq[0], stats.grad_sq_norm, lr, wd)
            if (kinds == "scale").any()
            else n_curve
        )
    else:
        r = translation_rate(lr, wd, order)
        s_curve = np.exp(r * t)[:, None] * s[0]
        n_curve = np.exp(2.0 * r * t)[:, None] * sq[0]
        if not (kinds == "scale").any():
            scale_curve = n_curve
        elif order == 0:
            scale_curve = gf_sq_norm(sq[0], t, wd)
        else:
            # rate = -a n + b: the pure-decay part a = -2 r_N exactly, the gradient part b along
            # the trajectory (b = rate + a n, from the same closed form).
            a = -2.0 * r
            rates = scale_rate(sq, stats.grad_sq_norm, stats.grad_h_grad, lr, order, wd)
            scale_curve = _linear_forced(t, sq[0], a, rates + a * sq)
    return np.where(
        kinds == "translation", s_curve, np.where(kinds == "scale", scale_curve, n_curve)
    )


# ---- the report ---------------------------------------------------------------------------------


def _rel(a: float, b: float) -> float:
    """|a − b| / |b| (NaN when b = 0)."""
    return abs(a - b) / abs(b) if b != 0 else (0.0 if a == b else math.nan)


@dataclasses.dataclass(frozen=True)
class GroupReport:
    r"""Curves and end-of-run errors of one group.

    - `quantity`: `"sq_norm"` ($\lVert w\rVert^2$; scale and null) or `"s"` ($u\cdot\theta$).
    - `measured[p]`: the quantity on process `p`'s trajectory; `predicted[p]`: its analytic curve
      (`predict`); for translation/null groups also `predicted["eom-series"]` (the full series,
      equal to GD's curve at $t = k\eta$).
    - `error_vs_gd[p]`: $\lvert x_p(T) - x_{GD}(T)\rvert / \lvert x_{GD}(T)\rvert$ (measured).
    - `prediction_error[p]`: $\lvert \hat x_p(T) - x_p(T)\rvert / \lvert x_p(T)\rvert$.
    - `extras`: for scale groups with weight decay, along the GD trajectory:
      `"equilibrium_sq_norm"` ($\sqrt{\eta n\lVert g_w\rVert^2/(2\lambda)}$) and `"angular_update"`
      (GD's exact per-step angle), to compare with `SymmetryReport.angular_update_limit`.
    """

    group: Group
    quantity: str
    measured: dict[str, np.ndarray]
    predicted: dict[str, np.ndarray]
    error_vs_gd: dict[str, float]
    prediction_error: dict[str, float]
    extras: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SymmetryReport:
    """Per-group measured and analytic curves for GD, GF and the EoM (see `symmetry_report`)."""

    lr: float
    weight_decay: float
    steps: np.ndarray
    times: np.ndarray
    processes: tuple[str, ...]
    groups: tuple[GroupReport, ...]
    angular_update_limit: float

    def summary(self) -> list[dict[str, Any]]:
        """One row per group: label, kind, quantity, start/end values on GD, and each process's
        end-of-run relative error against GD and of its prediction."""
        rows = []
        for gr in self.groups:
            row: dict[str, Any] = {
                "group": gr.group.label,
                "kind": gr.group.kind,
                "quantity": gr.quantity,
                "gd_start": float(gr.measured["gd"][0]),
                "gd_end": float(gr.measured["gd"][-1]),
            }
            for p in self.processes:
                if p != "gd":
                    row[f"{p}_error_vs_gd"] = gr.error_vs_gd[p]
            for p, e in gr.prediction_error.items():
                row[f"{p}_prediction_error"] = e
            rows.append(row)
        return rows

    def columns(self) -> dict[str, np.ndarray]:
        """Flat CSV columns: `step`, `time`, and `"<label>|measured|<p>"`,
        `"<label>|predicted|<p>"`, `"<label>|<extra>"` per group."""
        cols: dict[str, np.ndarray] = {"step": self.steps, "time": self.times}
        for gr in self.groups:
            lab = gr.group.label
            for p, v in gr.measured.items():
                cols[f"{lab}|measured|{p}"] = v
            for p, v in gr.predicted.items():
                cols[f"{lab}|predicted|{p}"] = v
            for name, v in gr.extras.items():
                cols[f"{lab}|{name}"] = v
        return cols

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists and floats; NaN stays NaN)."""
        return {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "processes": list(self.processes),
            "angular_update_limit": self.angular_update_limit,
            "steps": self.steps.tolist(),
            "times": self.times.tolist(),
            "summary": self.summary(),
            "groups": [
                {
                    "group": gr.group.label,
                    "kind": gr.group.kind,
                    "path": gr.group.path,
                    "axis": gr.group.axis,
                    "index": gr.group.index,
                    "quantity": gr.quantity,
                    "measured": {p: v.tolist() for p, v in gr.measured.items()},
                    "predicted": {p: v.tolist() for p, v in gr.predicted.items()},
                    "error_vs_gd": gr.error_vs_gd,
                    "prediction_error": gr.prediction_error,
                    "extras": {k: v.tolist() for k, v in gr.extras.items()},
                }
                for gr in self.groups
            ],
        }


def symmetry_report(
    loss: Callable[[PyTree], Float[Array, ""]],
    groups: Sequence[Group],
    trajectories: Mapping[str, Any],
    lr: float,
    *,
    weight_decay: float = 0.0,
) -> SymmetryReport:
    r"""Measured and predicted $\lVert w\rVert^2$ / $s$ of every group for every process.

    **Arguments:**

    - `loss`: the loss *without* weight decay; `groups`: from `detect`.
    - `trajectories`: `{"gd": …, "gf": …, "eom1": …, "eom2": …}` — `eom.Trajectory` objects from
      `eom.gradient_descent` / `eom.integrate` with the same `lr`, `weight_decay` and save grid;
      `"gd"` is required (the reference), the others are optional (`"eomN"` for any order N; scale
      predictions exist for N ≤ 2).
    - `lr`, `weight_decay`: those of the runs.

    Per group and process: the measured curve, the analytic curve (`predict` along that process's
    own trajectory), the end-of-run error against GD, and the end-of-run error of the prediction.
    """
    groups = _check_groups(groups)
    lr, wd = check_lr(lr), _check_wd(weight_decay)
    if "gd" not in trajectories:
        raise EomError("symmetry_report needs the GD trajectory under key 'gd' (the reference).")
    names = ["gd"] + [p for p in trajectories if p != "gd"]
    orders = {p: _process_order(p) for p in names}
    steps, times, _ = _traj_parts(trajectories["gd"], "gd")
    for p in names[1:]:
        st_p, _, _ = _traj_parts(trajectories[p], p)
        if st_p.shape != steps.shape or not np.array_equal(st_p, steps):
            raise EomError(
                f"trajectory {p!r} is saved at different steps than 'gd'; run every process with "
                "the same num_steps and save_every."
            )
    measured, predicted, stats = {}, {}, {}
    for p in names:
        traj = trajectories[p]
        o = orders[p]
        stats[p] = group_stats(
            loss, traj.params, groups, weight_decay=wd, hvp=o is not None and o >= 2, stacked=True
        )
        measured[p] = measure_groups(traj, groups)
        predicted[p] = predict(loss, traj, groups, lr, p, weight_decay=wd, stats=stats[p])
    series = None
    if wd * lr < 1.0:
        s0, n0 = stats["gd"].s[0], stats["gd"].sq_norm[0]
        r = translation_rate(lr, wd, None)
        series = np.where(
            np.array([g.kind == "translation" for g in groups]),
            np.exp(r * (times - times[0]))[:, None] * s0,
            np.exp(2 * r * (times - times[0]))[:, None] * n0,
        )
    reports = []
    for j, g in enumerate(groups):
        meas = {p: measured[p][:, j] for p in names}
        pred = {p: predicted[p][:, j] for p in names}
        if series is not None and g.kind != "scale":
            pred["eom-series"] = series[:, j]
        extras: dict[str, np.ndarray] = {}
        if g.kind == "scale" and wd > 0:
            st = stats["gd"]
            n, gg = st.sq_norm[:, j], st.grad_sq_norm[:, j]
            extras["equilibrium_sq_norm"] = equilibrium_sq_norm(n * gg, lr, wd)
            extras["angular_update"] = gd_angular_update(n, gg, lr, wd)
        reports.append(
            GroupReport(
                group=g,
                quantity="s" if g.kind == "translation" else "sq_norm",
                measured=meas,
                predicted=pred,
                error_vs_gd={
                    p: _rel(float(meas[p][-1]), float(meas["gd"][-1])) for p in names if p != "gd"
                },
                prediction_error={p: _rel(float(pred[p][-1]), float(meas[p][-1])) for p in names},
                extras=extras,
            )
        )
    return SymmetryReport(
        lr=lr,
        weight_decay=wd,
        steps=steps,
        times=times,
        processes=tuple(names),
        groups=tuple(reports),
        angular_update_limit=equilibrium_angular_update(lr, wd) if wd > 0 else math.nan,
    )
