r"""Scale- and translation-invariant parameter groups, found numerically (THEORY.md §4–5).

A group $w \subset \theta$ (one leaf, or one row/column of a leaf) is **scale-invariant** if
$L(\dots, c\,w, \dots) = L(\dots, w, \dots)$ for all $c > 0$; then $w\cdot g_w = 0$ and
$H\hat w = -(g_w, 0)$. A unit direction $u$ is **translation-invariant** if
$L(\theta + c\,u) = L(\theta)$ for all $c$; then $u\cdot g = 0$ and $Hu = 0$. A slice whose gradient
vanishes identically (the bias before a BatchNorm) is reported as kind `"null"`: $L$ does not
depend on it at all, so every direction inside it is translation-invariant.

`detect` tests candidates (every leaf; every row and column of a leaf with ≥ 2 dimensions; for
translations the constant direction of each 1-D leaf and of each row/column) in three stages:

1. **screening** with the gradient identities at $\theta$ and at `num_trials` random
   perturbations of $\theta$ (one gradient per point gives $w\cdot g_w$, $u\cdot g$,
   $\lVert g_w\rVert$ for every candidate at once: vectorized reductions over rows/columns);
2. **joint confirmation**: all survivors of a kind are transformed *at once* with independent random
   factors $c_j$ (scale) or shifts $c_j$ (translation), and the loss is compared with the original
   (composing individually invariant transformations is invariant). Translations also require
   $\lVert H\sum_j b_j u_j\rVert \approx 0$ relative to $\lVert Hv\rVert$ for a random $v$;
3. **bisection** of a failing set down to the offending candidates (group testing), so the cost is a
   few loss evaluations when the survivors are genuine, whatever their number.

Only three functions are compiled (loss, gradient, Hessian-vector product).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._errors import EomError
from .._tree import leaf_paths
from ..engine import check_loss

Kind = Literal["scale", "translation", "null"]
KINDS: tuple[str, ...] = ("null", "scale", "translation")


@dataclasses.dataclass(frozen=True)
class Group:
    r"""One symmetric group of parameters: a whole leaf, or one row / column of a leaf.

    - `kind`: `"scale"` ($L(cw) = L(w)$, $c > 0$), `"translation"` ($L(\theta + cu) = L(\theta)$
      with $u$ the constant unit vector on the slice), or `"null"` ($\nabla_w L \equiv 0$).
    - `path`: the leaf's key path (`jax.tree_util.keystr`), e.g. `".out.bias"`.
    - `leaf`: the leaf's position in `jax.tree.leaves(params)`.
    - `shape`: the leaf's shape.
    - `axis`, `index`: `None, None` for the whole leaf; `0, i` for row `i` (`leaf[i]`, e.g. one
      output unit's incoming weights of an Equinox `Linear`); `1, j` for column `j` (`leaf[:, j]`,
      e.g. one input feature's weights into every logit).

    `take`, `extract` and `sq_norm` accept a single point or params stacked on leading axes (a
    `Trajectory`'s `params`): extra leading axes are carried through. Concrete inputs are handled
    in numpy (no compilation per index); traced inputs (inside `jax.jit`) in jax.
    """

    kind: Kind
    path: str
    leaf: int
    shape: tuple[int, ...]
    axis: int | None = None
    index: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.kind not in KINDS:
            raise EomError(f"Group kind must be one of {KINDS}, got {self.kind!r}.")
        if (self.axis is None) != (self.index is None):
            raise EomError("Group: give both axis and index (a row/column) or neither (a leaf).")
        if self.axis is not None:
            if self.axis not in (0, 1) or len(self.shape) < 2:
                raise EomError(
                    f"Group axis {self.axis} is invalid for a leaf of shape {self.shape}; "
                    "use axis 0 (row) or 1 (column) of a leaf with ≥ 2 dimensions."
                )
            if not 0 <= self.index < self.shape[self.axis]:
                raise EomError(
                    f"Group index {self.index} is out of range for axis {self.axis} of shape "
                    f"{self.shape}."
                )

    # ---- description ------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of parameters in the slice."""
        n = math.prod(self.shape)
        return n if self.axis is None else n // self.shape[self.axis]

    @property
    def where(self) -> str:
        """The slice in index notation: `""` (whole leaf), `"[3, :]"` or `"[:, 5]"`."""
        if self.axis is None:
            return ""
        rest = ", :" * (len(self.shape) - 2)
        if self.axis == 0:
            return f"[{self.index}, :{rest}]"
        return f"[:, {self.index}{rest}]"

    @property
    def label(self) -> str:
        """A readable, unique name such as `"scale .hidden[0].dense.weight[3, :]"`."""
        return f"{self.kind} {self.path}{self.where}"

    def __str__(self) -> str:
        return self.label

    # ---- access -----------------------------------------------------------------------------

    def _leaf_of(self, tree: PyTree, name: str = "params") -> Array:
        leaves = jax.tree.leaves(tree)
        if self.leaf >= len(leaves):
            raise EomError(
                f"group {self.label} refers to leaf {self.leaf} but `{name}` has only "
                f"{len(leaves)} leaves; pass params with the structure `detect` was run on."
            )
        x = leaves[self.leaf]
        # Concrete values are handled in numpy (no per-index compilation); tracers in jax.
        x = x if isinstance(x, jax.core.Tracer) else np.asarray(x)
        nd = len(self.shape)
        if x.ndim < nd or tuple(x.shape[x.ndim - nd :]) != self.shape:
            raise EomError(
                f"group {self.label} expects leaf {self.leaf} of shape {self.shape} (possibly "
                f"with leading axes), got {tuple(x.shape)}; pass params with the structure "
                "`detect` was run on."
            )
        return x

    def take(self, tree: PyTree) -> Float[Array, "*batch size"]:
        """The slice of `tree` (params, a gradient, …), flattened to shape `(*batch, size)`.

        Concrete inputs give numpy arrays; under `jax.jit` the result is traced."""
        x = self._leaf_of(tree, "tree")
        nb = x.ndim - len(self.shape)
        if self.axis is not None:
            x = x[(slice(None),) * (nb + self.axis) + (self.index,)]
        return x.reshape(x.shape[:nb] + (self.size,))

    def extract(self, params: PyTree) -> Array:
        r"""The group's coordinate: $w$ (shape `(*batch, size)`) for scale/null groups,
        $s = u\cdot\theta$ (shape `batch`) for a translation direction."""
        w = self.take(params)
        if self.kind == "translation":
            return w.sum(axis=-1) / math.sqrt(self.size)
        return w

    def sq_norm(self, params: PyTree) -> Array:
        r"""$\lVert w\rVert^2$ of the slice (shape `batch`)."""
        w = self.take(params)
        return (w * w).sum(axis=-1)

    def _embed_values(self, params: PyTree, values: Callable[[Array], Array]) -> PyTree:
        leaves, treedef = jax.tree.flatten(params)
        x = self._leaf_of(params)
        if x.ndim != len(self.shape):
            raise EomError(
                f"group {self.label}: pass a single point (no leading axes) to embed/mask/"
                "direction; index a stacked trajectory first (`trajectory.at(i)`)."
            )
        sl = self._index()
        if isinstance(x, jax.core.Tracer):
            out = [jnp.zeros_like(leaf) for leaf in leaves]
            out[self.leaf] = out[self.leaf].at[sl].set(values(x[sl], jnp))
            return jax.tree.unflatten(treedef, out)
        host = [np.zeros(np.shape(leaf), np.asarray(leaf).dtype) for leaf in leaves]
        host[self.leaf][sl] = values(x[sl], np)
        return jax.tree.unflatten(treedef, [jnp.asarray(h) for h in host])

    def _index(self) -> tuple[Any, ...]:
        if self.axis is None:
            return (Ellipsis,)
        if self.axis == 0:
            return (self.index,)
        return (slice(None), self.index)

    def mask(self, params: PyTree) -> PyTree:
        """A params-shaped pytree: 1 on the slice, 0 elsewhere."""
        return self._embed_values(params, lambda w, xp: xp.ones_like(w))

    def embed(self, params: PyTree) -> PyTree:
        r"""$\hat w = (w, 0)$: the slice of `params` embedded in params space, zeros elsewhere.

        For a translation direction this is the unit vector $u$ (see `direction`)."""
        if self.kind == "translation":
            return self.direction(params)
        return self._embed_values(params, lambda w, xp: w)

    def direction(self, params: PyTree) -> PyTree:
        r"""The group's unit vector in params space: $\hat w/\lVert w\rVert$ for scale/null groups,
        the constant $u = \mathbf 1/\sqrt{n}$ on the slice for a translation direction."""
        if self.kind == "translation":
            c = 1.0 / math.sqrt(self.size)
            return self._embed_values(params, lambda w, xp: xp.full_like(w, c))
        nrm = self.sq_norm(params) ** 0.5
        if not isinstance(nrm, jax.core.Tracer) and not nrm > 0:
            raise EomError(f"group {self.label} is zero at these params; it has no direction.")
        return self._embed_values(params, lambda w, xp: w / nrm)


# ---- vectorized per-group reductions ------------------------------------------------------------


def group_sums(groups: Sequence[Group], leaves: Sequence[Array]) -> Float[Array, "*batch g"]:
    """`Σ` of each group's slice of `leaves` (a flattened params-shaped tree, possibly stacked).

    Vectorized: one reduction per (leaf, axis) followed by a gather, so hundreds of row groups
    cost a handful of array operations. Returns shape `(*batch, len(groups))`; numpy in, numpy out
    (no compilation), otherwise jax (jit-compatible).
    """
    xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp
    by_key: dict[tuple[int, int | None], list[int]] = {}
    for pos, grp in enumerate(groups):
        by_key.setdefault((grp.leaf, grp.axis), []).append(pos)
    parts, order = [], []
    for (leaf, axis), positions in by_key.items():
        shape = groups[positions[0]].shape
        x = leaves[leaf]
        nb = x.ndim - len(shape)
        if axis is None:
            r = x.reshape(x.shape[:nb] + (-1,)).sum(-1)[..., None]
        else:
            x = xp.moveaxis(x, nb + axis, -1)
            r = x.reshape(x.shape[:nb] + (-1, x.shape[-1])).sum(-2)
            r = r[..., np.array([groups[p].index for p in positions])]
        parts.append(r)
        order.extend(positions)
    if not parts:
        return xp.zeros((0,))
    out = xp.concatenate(parts, axis=-1)
    return out[..., np.argsort(np.asarray(order))]


def group_dots(groups: Sequence[Group], a: Sequence[Array], b: Sequence[Array]) -> Array:
    """`⟨a_w, b_w⟩` for every group (leaf lists `a`, `b`; shape `(*batch, len(groups))`)."""
    return group_sums(groups, [x * y for x, y in zip(a, b, strict=True)])


# ---- detection ----------------------------------------------------------------------------------


def _candidates(paths: list[str], leaves: list[Array]) -> list[Group]:
    """Whole leaves, and rows / columns of leaves with ≥ 2 dims (skipping slices == the leaf)."""
    out = []
    for i, (path, x) in enumerate(zip(paths, leaves, strict=True)):
        shape = tuple(int(s) for s in x.shape)
        if math.prod(shape) == 0:
            continue
        out.append(Group("scale", path, i, shape))
        if len(shape) >= 2:
            for axis in (0, 1):
                if shape[axis] > 1:
                    out.extend(Group("scale", path, i, shape, axis, j) for j in range(shape[axis]))
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _numpy_rng(key) -> np.random.Generator:
    """A numpy Generator seeded from a JAX key (raw uint32 or typed), for host-side draws."""
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def _bisect(items: list[int], test: Callable[[list[int]], bool]) -> list[int]:
    """The members of `items` that pass `test` individually, by group testing (halving)."""
    if not items:
        return []
    if test(items):
        return items
    if len(items) == 1:
        return []
    mid = len(items) // 2
    return _bisect(items[:mid], test) + _bisect(items[mid:], test)


def _check_detect_args(rtol, num_trials) -> tuple[float, int]:
    try:
        rtol = float(rtol)
    except (TypeError, ValueError):
        raise EomError(f"rtol must be a number in (0, 1), got {rtol!r}.") from None
    if not 0.0 < rtol < 1.0:
        raise EomError(f"rtol must be in (0, 1), got {rtol}; 1e-8 suits float64, 1e-4 float32.")
    if isinstance(num_trials, bool) or not isinstance(num_trials, int | np.integer):
        raise EomError(f"num_trials must be an integer ≥ 1, got {num_trials!r}.")
    if num_trials < 1:
        raise EomError(f"num_trials must be ≥ 1, got {num_trials}.")
    return rtol, int(num_trials)


def detect(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    *,
    rtol: float = 1e-8,
    num_trials: int = 3,
    key: PRNGKeyArray | None = None,
) -> tuple[Group, ...]:
    r"""Find the scale-invariant groups, translation-invariant directions and null slices of `loss`.

    **Criteria** (each at $\theta$ and at `num_trials` random perturbations of it; tolerances
    relative, `rtol`):

    - `"null"`: $\lVert g_w\rVert \le$ `rtol` $\lVert g\rVert$ at every point (e.g. the bias
      before a BatchNorm; the weights of an input feature that is zero on every sample).
    - `"scale"`: $\lvert w\cdot g_w\rvert \le$ `rtol` $\lVert w\rVert\lVert g_w\rVert$ at every
      point, and $L(\dots, c_j w_j, \dots) = L$ for random $c_j \in [1/4, 2/3] \cup [3/2, 4]$.
    - `"translation"` (constant unit $u$ on a leaf or a row/column): $\lvert u\cdot g\rvert \le$
      `rtol` $\lVert g_w\rVert$ at every point, $L(\theta + \sum_j c_j u_j) = L(\theta)$ for random
      shifts $c_j$, and $\lVert H\sum_j b_j u_j\rVert \le$ `rtol` $\lVert\sum_j b_j u_j\rVert
      \,\lVert Hv\rVert/\lVert v\rVert$ for a random $v$.

    **De-duplication**: a null slice is reported only as null (a whole null leaf hides its rows and
    columns). A whole leaf that is scale-invariant only because each of its rows (or columns) is
    gets its rows (columns) reported, not the leaf: those are the finer, true groups (a BatchNorm
    makes each unit's incoming weights separately invariant); likewise a leaf's constant direction
    is dropped when it is the sum of its rows' (columns') directions. Groups spanning several
    leaves (e.g. a weight *and* its bias before a LayerNorm) are not candidates. Slices that are
    zero at $\theta$ are not scale candidates (scaling zero is trivial).

    **Arguments:**

    - `loss`: scalar `loss(params)`; `params`: the point (pytree of float arrays).
    - `rtol`: relative tolerance (1e-8 suits float64; use ~1e-4 in float32).
    - `num_trials`: random points, factors and shifts per check (≥ 1).
    - `key`: JAX PRNG key seeding the random perturbations (default: a fixed seed, so repeated
      calls agree).

    **Returns** the groups sorted by leaf, kind (null, scale, translation), axis and index.

    >>> import jax, jax.numpy as jnp
    >>> import eom
    >>> def loss(p):  # w only through w/‖w‖; b only through b - mean(b) (softmax logits)
    ...     u = p["w"] / jnp.linalg.norm(p["w"])
    ...     return u @ jnp.array([1.0, 2.0]) - jax.nn.log_softmax(p["b"])[0]
    >>> groups = eom.symmetry.detect(loss, {"b": jnp.array([0.3, -0.2]), "w": jnp.ones(2)})
    >>> [(g.kind, g.path) for g in groups]
    [('translation', "['b']"), ('scale', "['w']")]
    """
    check_loss(loss, params)
    rtol, num_trials = _check_detect_args(rtol, num_trials)
    rng = np.random.default_rng(0) if key is None else _numpy_rng(key)
    cands = _candidates(leaf_paths(params), jax.tree.leaves(params))
    if not cands:
        return ()
    probe = _Probe.build(loss, params, cands, num_trials, rng)
    screen = _screen(probe, rtol)
    scale_set, trans_set = _confirm(probe, screen, rtol, rng)
    found = list(screen.null_groups)
    found += [dataclasses.replace(cands[i], kind="scale") for i in sorted(scale_set)]
    found += [dataclasses.replace(cands[i], kind="translation") for i in sorted(trans_set)]
    return tuple(sorted(found, key=_sort_key))


def _sort_key(g: Group):
    return (g.leaf, KINDS.index(g.kind), -1 if g.axis is None else g.axis, g.index or 0)


@dataclasses.dataclass(frozen=True)
class _Probe:
    """What every stage of `detect` shares: the candidates, the sample points (θ and its random
    perturbations, numpy leaves) and the three compiled functions of the flat leaf list."""

    cands: list[Group]
    base: list[np.ndarray]
    points: list[list[np.ndarray]]
    leaf_scale: list[float]
    eps: float
    loss_affine: Callable  # (leaves, factors, shifts) -> L(leaves * factors + shifts)
    stats: Callable  # leaves -> (⟨g_w,g_w⟩, ⟨w,g_w⟩, ⟨w,w⟩, Σ g_w, ‖g‖²) per candidate
    hvp_norm: Callable  # (leaves, v) -> ‖H v‖

    @property
    def num_trials(self) -> int:
        return len(self.points) - 1

    @classmethod
    def build(cls, loss, params, cands, num_trials, rng) -> _Probe:
        leaves, treedef = jax.tree.flatten(params)

        def f(ls):
            return loss(jax.tree.unflatten(treedef, list(ls)))

        grad_f = jax.grad(f)

        # Only three compiled functions; every host-side norm is numpy (no eager jnp op compiles).
        @jax.jit
        def loss_affine(ls, fac, shift):
            return f([p * a + b for p, a, b in zip(ls, fac, shift, strict=True)])

        @jax.jit
        def stats(ls):
            g = grad_f(ls)
            gsq_all = sum(jnp.vdot(x, x) for x in g)
            dots = (group_dots(cands, g, g), group_dots(cands, ls, g), group_dots(cands, ls, ls))
            return (*dots, group_sums(cands, g), gsq_all)

        @jax.jit
        def hvp_norm(ls, v):
            hv = jax.jvp(grad_f, (ls,), (v,))[1]
            return jnp.sqrt(sum(jnp.vdot(x, x) for x in hv))

        # Points: θ itself and `num_trials` random perturbations (10% of each leaf's rms).
        base = [np.asarray(x) for x in leaves]
        global_rms = _rms(np.concatenate([x.ravel() for x in base])) or 1.0
        leaf_scale = [(_rms(x) or global_rms) for x in base]
        points = [base] + [
            [
                (x + 0.1 * sc * rng.standard_normal(x.shape)).astype(x.dtype)
                for x, sc in zip(base, leaf_scale, strict=True)
            ]
            for _ in range(num_trials)
        ]
        eps = float(np.finfo(base[0].dtype).eps)
        return cls(cands, base, points, leaf_scale, eps, loss_affine, stats, hvp_norm)

    def ones(self) -> list[np.ndarray]:
        return [np.ones(x.shape, x.dtype) for x in self.base]

    def zeros(self) -> list[np.ndarray]:
        return [np.zeros(x.shape, x.dtype) for x in self.base]


@dataclasses.dataclass(frozen=True)
class _Screen:
    """Stage 1's verdicts per candidate (boolean masks) and the null groups it settles."""

    null: np.ndarray
    zero: np.ndarray  # the slice is zero at θ (scaling it is trivial)
    scale_ok: np.ndarray
    trans_ok: np.ndarray
    null_groups: tuple[Group, ...]


def _screen(probe: _Probe, rtol: float) -> _Screen:
    r"""Stage 1: the gradient identities at every point, for every candidate at once.

    Null: $\lVert g_w\rVert \le$ rtol $\lVert g\rVert$; scale: $|w\cdot g_w| \le$ rtol
    $\lVert w\rVert\lVert g_w\rVert$; translation: $|u\cdot g| \le$ rtol $\lVert g_w\rVert$ (each
    with a few ulps of slack). A whole null leaf hides its rows and columns.
    """
    cands, eps = probe.cands, probe.eps
    st = [tuple(np.asarray(a) for a in probe.stats(p)) for p in probe.points]
    sizes = np.array([c.size for c in cands], dtype=float)
    null = np.ones(len(cands), bool)
    scale_ok = np.ones(len(cands), bool)
    trans_ok = sizes >= 2
    for gg, wg, ww, gs, gsq_all in st:
        gn, wn, gall = np.sqrt(gg), np.sqrt(ww), math.sqrt(float(gsq_all))
        null &= gn <= rtol * gall
        scale_ok &= np.abs(wg) <= rtol * wn * gn + 64 * eps * wn * gall
        trans_ok &= np.abs(gs) / np.sqrt(sizes) <= rtol * gn + 64 * eps * gall
    scale_ok &= (st[0][2] > 0) & ~null
    trans_ok &= ~null

    null_leaves = {c.leaf for c, n in zip(cands, null, strict=True) if n and c.axis is None}
    null_groups = tuple(
        dataclasses.replace(c, kind="null")
        for c, n in zip(cands, null, strict=True)
        if n and (c.axis is None or c.leaf not in null_leaves)
    )
    in_null_leaf = np.array([c.leaf in null_leaves for c in cands])
    return _Screen(
        null, st[0][2] <= 0, scale_ok & ~in_null_leaf, trans_ok & ~in_null_leaf, null_groups
    )


def _confirm(
    probe: _Probe, screen: _Screen, rtol: float, rng: np.random.Generator
) -> tuple[set[int], set[int]]:
    """Stages 2 and 3: joint confirmation of each kind's survivors with random factors / shifts,
    bisecting a failing set down to its offenders; then whole leaves implied by their rows
    (columns) are dropped in favour of them."""
    cands, base, points, eps = probe.cands, probe.base, probe.points, probe.eps
    num_trials = probe.num_trials
    ones, zeros = probe.ones(), probe.zeros()
    loss_at = [float(probe.loss_affine(p, ones, zeros)) for p in points[:num_trials]]

    def same_loss(t: int, fac, shift) -> bool:
        a, b = loss_at[t], float(probe.loss_affine(points[t], fac, shift))
        return bool(np.isfinite(b)) and abs(a - b) <= rtol * 0.5 * (abs(a) + abs(b)) + 1e-300

    def scale_test(idx: list[int]) -> bool:
        for t in range(num_trials):
            fac = probe.ones()
            for i in idx:
                c = cands[i]
                mag = math.exp(rng.uniform(math.log(1.5), math.log(4.0)))
                fac[c.leaf][c._index()] *= mag if rng.random() < 0.5 else 1.0 / mag
            if not same_loss(t, fac, zeros):
                return False
        return True

    # ‖Hv‖/‖v‖ for a random v at each point: the scale a translation's ‖H u‖ is compared with.
    ref_h = []
    for t in range(num_trials):
        v = [rng.standard_normal(x.shape).astype(x.dtype) for x in base]
        vn = math.sqrt(sum(float(np.vdot(x, x)) for x in v))
        ref_h.append(float(probe.hvp_norm(points[t], v)) / vn)

    def trans_test(idx: list[int]) -> bool:
        for t in range(num_trials):
            shift, comb = probe.zeros(), probe.zeros()
            for i in idx:
                c = cands[i]
                sign = 1.0 if rng.random() < 0.5 else -1.0
                shift[c.leaf][c._index()] += sign * rng.uniform(0.5, 2.0) * probe.leaf_scale[c.leaf]
                comb[c.leaf][c._index()] += rng.standard_normal() / math.sqrt(c.size)
            if not same_loss(t, ones, shift):
                return False
            vn = math.sqrt(sum(float(np.vdot(m, m)) for m in comb))
            if not float(probe.hvp_norm(points[t], comb)) <= (rtol + 64 * eps) * ref_h[t] * vn:
                return False
        return True

    scale_set = set(_bisect(np.flatnonzero(screen.scale_ok).tolist(), scale_test))
    trans_set = set(_bisect(np.flatnonzero(screen.trans_ok).tolist(), trans_test))
    _drop_implied_leaves(cands, scale_set, screen.null | screen.zero)
    _drop_implied_leaves(cands, trans_set, screen.null)
    return scale_set, trans_set


def _drop_implied_leaves(cands: list[Group], chosen: set[int], trivial: np.ndarray) -> None:
    """Remove from `chosen` each whole leaf all of whose rows (or columns) are chosen or trivial:
    scaling the leaf scales every row; its constant direction is the sum of the rows'."""
    for i in list(chosen):
        c = cands[i]
        if c.axis is not None:
            continue
        for axis in (0, 1):
            fam = [j for j, d in enumerate(cands) if d.leaf == c.leaf and d.axis == axis]
            if fam and all(j in chosen or trivial[j] for j in fam):
                chosen.discard(i)
                break


def largest_groups(
    groups: Sequence[Group], params: PyTree, *, kind: str = "scale", k: int = 4
) -> tuple[Group, ...]:
    r"""The `k` groups of `kind` with the largest $\lVert w\rVert^2$ (scale/null) or
    $\lvert s\rvert$ (translation) at `params` — e.g. the few groups a report plots."""
    if kind not in KINDS:
        raise EomError(f"kind must be one of {KINDS}, got {kind!r}.")
    chosen = [g for g in groups if g.kind == kind]
    if not chosen:
        return ()
    leaves = jax.tree.leaves(params)
    if kind == "translation":
        size = np.abs(np.asarray(group_sums(chosen, leaves)))
    else:
        size = np.asarray(group_dots(chosen, leaves, leaves))
    order = np.argsort(-size, kind="stable")[: max(int(k), 0)]
    return tuple(chosen[i] for i in order)
