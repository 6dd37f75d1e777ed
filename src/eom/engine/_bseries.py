r"""Counter terms as B-series: shared elementary differentials of rooted trees (the fast path).

Every modified-equation term is a fixed rational combination of *elementary differentials*
(THEORY.md §2): for a rooted tree $\tau = [\tau_1, \dots, \tau_m]$,

$$F(\bullet) = F, \qquad F(\tau) = F^{(m)}\big(F(\tau_1), \dots, F(\tau_m)\big),$$

and $F_n = \sum_{|\tau| = n+1} c_\tau F(\tau)$. The coefficients $c_\tau$ are derived here exactly
(`fractions.Fraction`) from the same recursion as `eom.engine._modified`, using
$\mathcal L_{F(\sigma)}F(\tau) = \sum_{u \in \tau} F(\tau\text{ with }\sigma\text{ grafted at }u)$
(Leibniz).

**Evaluation schedule.** Write $v = F(x)$ and split every tree as
$\tau = [\bullet^k, \sigma_1, \dots, \sigma_r]$ ($k$ children that are single nodes, $r$ others).
All the work is organised around the *spine* $\Psi_K(y) = \big(F^{(j)}(y)[v^j]\big)_{j\le K}$
(the $v$ held fixed), computed by $K$ nested `jax.jvp`s along the same vector:

- $r = 0$: $F(\tau) = F^{(k)}[v^k]$ is a component of $\Psi_K(x)$ itself;
- $r = 1$: $F^{(k+1)}(v^k, u) = \big(\Psi_K'(x)\,u\big)_k$ — one `jax.jvp` of the spine $\Psi_K$
  along $u = F(\sigma)$ (a *push*, $K$ the largest $k$ needed for that $\sigma$) gives every $k$
  at once; $F''(u, u)$, when needed, rides on the same push (order 4: $F''(F'F, F'F)$);
- $r \ge 2$ otherwise: nested `jax.jvp`s of the spine component along the $\sigma_i$.

Each tree that is a *child* somewhere is evaluated once (children are shared). Top-level trees
with $r = 1$ and the same $k$ are bundled by linearity,
$\sum_\sigma c_\sigma F^{(k+1)}(v^k, F(\sigma)) = F^{(k+1)}(v^k, \sum_\sigma c_\sigma F(\sigma))$:
one push for the whole bundle (order 4: $F''(F, F'F'F)/20 + F''(F, F''(F,F))/120$ in one); a
bundle of one whose child is pushed anyway deepens that push instead. Plain `jax.jvp`s throughout
(no `jax.linearize`), so XLA merges the primal and first-order work the passes share.

**Any coefficients.** Nothing in the schedule depends on the coefficients being GD's:
`combination_schedule` takes the terms as any per-order combinations of trees (`Fraction`s or
floats; zero coefficients dropped, an empty term is zero) and `evaluate_schedule` evaluates
them. GD's `schedule(order)` is that of `modified_combinations(order)`; the momentum EoM
(`eom.engine._momentum_terms`) passes its own. Where a term holds $F^{(N)}[v^N]$ and
$F^{(N-1)}(v^{N-2}, F'F)$ only, the top spine level carries both (`_fused_top`) when the
latter would otherwise need a push of its own (order 2) or deepen the push of $F'F$ from
component 0 to 1 (momentum's order 3, which holds $F'''(F,F,F)$; GD's does not).

**Cost (the floor).** Counted in gradient-equivalents of XLA FLOPs on the digits MLP (26k,
`benchmarks/README.md`): the spine $\Psi_K$, then one tangent per push ($\approx 1.8$ for
component 0, $\approx 3.8$ up to component 1). Order 2 is $\Psi_2$'s top plus one push
(6.9, the schedule's floor); order 4 is $\Psi_4$ (13.3) plus five pushes and $F''(u,u)$ (33.9).

Nested `jvp`s along one repeated vector beat `jax.experimental.jet` here: XLA merges the
duplicated sub-expressions, leaving the $(K+1)(K+2)/2$ products per bilinear operation of
Taylor mode, without jet's extra work on non-linear primitives (measured: a depth-4 spine
costs 9.5 gradients with nested jvps, 12.6 with `jet`, on the 26k-parameter digits MLP; see
`benchmarks/README.md`). This reproduces the reference recursion to rounding (tested for orders
1–5) at a fraction of its cost and compile time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import jax

from .._tree import tree_add, tree_scale, tree_zeros_like

Tree = tuple  # a rooted tree: the sorted tuple of its children; the single node is ()
Combination = dict  # Tree -> Fraction
PyTree = Any

#: The single-node tree $\bullet$ (its elementary differential is F itself).
BULLET: Tree = ()


# ---------------------------------------------------------------------------------------------
# Exact tree algebra


def num_nodes(tree: Tree) -> int:
    return 1 + sum(num_nodes(c) for c in tree)


def _canon(children) -> Tree:
    return tuple(sorted(children))


def graft(sigma: Tree, tau: Tree) -> list[Tree]:
    """All trees obtained by attaching `sigma` as a new child of each node of `tau`."""
    out = [_canon(tau + (sigma,))]
    for i, child in enumerate(tau):
        for new_child in graft(sigma, child):
            out.append(_canon(tau[:i] + (new_child,) + tau[i + 1 :]))
    return out


def lie(X: Combination, G: Combination) -> Combination:
    r"""$\mathcal L_X G$ for combinations of elementary differentials."""
    out: Combination = {}
    for sigma, a in X.items():
        for tau, b in G.items():
            for t in graft(sigma, tau):
                out[t] = out.get(t, Fraction(0)) + a * b
    return {t: c for t, c in out.items() if c != 0}


def _add_into(acc: Combination, comb: Combination, scale: Fraction) -> None:
    for t, c in comb.items():
        acc[t] = acc.get(t, Fraction(0)) + scale * c


@functools.cache
def modified_combinations(order: int) -> tuple[Combination, ...]:
    """Exact tree expansions $(F_0, \\dots, F_{order})$ of the explicit-Euler modified field."""
    F: list[Combination] = [{(): Fraction(1)}]
    G: dict[tuple[int, int], Combination] = {}

    def g(j: int, m: int) -> Combination:
        if (j, m) not in G:
            if j == 1:
                G[(j, m)] = F[m]
            else:
                acc: Combination = {}
                for a in range(m + 1):
                    _add_into(acc, lie(F[a], g(j - 1, m - a)), Fraction(1))
                G[(j, m)] = acc
        return G[(j, m)]

    for n in range(1, order + 1):
        acc: Combination = {}
        for j in range(2, n + 2):
            _add_into(acc, g(j, n + 1 - j), Fraction(-1, math.factorial(j)))
        F.append({t: c for t, c in acc.items() if c != 0})
    return tuple(F)


def split_tree(tau: Tree) -> tuple[int, Tree]:
    """$\\tau = [\\bullet^k, \\sigma_1, \\dots, \\sigma_r]$ → `(k, (σ_1, …, σ_r))`."""
    k = sum(1 for c in tau if c == BULLET)
    return k, tuple(c for c in tau if c != BULLET)


# ---------------------------------------------------------------------------------------------
# The evaluation schedule (pure Python, exact, cached per order)


@dataclasses.dataclass(frozen=True)
class Schedule:
    r"""How the terms $F_1, \dots, F_N$ are evaluated (see the module docstring).

    - `spine`: depth $K$ of the spine $\Psi_K$.
    - `vectors`: trees evaluated one by one (children, and top-level trees that come for free
      or have $r \ge 2$), smallest first.
    - `terms[n-1]`: `(tree, c)` pairs of $F_n$ taken from `vectors` or the spine.
    - `bundles[n-1]`: `(k, ((σ, c), …))`: $F_n$ also holds $F^{(k+1)}(v^k, \sum c\,F(\sigma))$.
    - `fuse`: `None`, or $b$ such that the top spine value $S_N = F^{(N)}[v^N]$ stands for
      $S_N + F^{(N-1)}(v^{N-2}, b\,F'F)$ (both trees only occur in $F_N$; one nested `jvp`
      whose innermost direction is perturbed computes the sum — see `_fused_top`).
    """

    order: int
    spine: int
    vectors: tuple[Tree, ...]
    terms: tuple[tuple[tuple[Tree, Fraction], ...], ...]
    bundles: tuple[tuple[tuple[int, tuple[tuple[Tree, Fraction], ...]], ...], ...]
    fuse: Fraction | None = None

    @property
    def push_depth(self) -> int:
        """Largest $k$ of any $F^{(k+1)}(v^k, u)$ needed (-1: no push is used)."""
        ks = [split_tree(t)[0] for t in self.vectors if len(split_tree(t)[1]) == 1]
        ks += [k for b in self.bundles for k, _ in b]
        return max(ks, default=-1)

    @functools.cached_property
    def pushes(self) -> tuple[dict, frozenset]:
        r"""What each push of a child $\sigma$ must deliver: `(depth, square)` with `depth[σ]` the
        largest spine component $k$ of any $F^{(k+1)}(v^k, F(\sigma))$ needed, and `square` the
        children whose $F''(F(\sigma), F(\sigma))$ rides along (a tree $[\sigma, \sigma]$)."""
        depth: dict[Tree, int] = {}
        for tau in self.vectors + tuple(t for terms in self.terms for t, _ in terms):
            k, sig = split_tree(tau)
            if len(sig) == 1:
                depth[sig[0]] = max(depth.get(sig[0], -1), k)
        square = frozenset(
            sig[0]
            for tau in self.vectors
            for k, sig in [split_tree(tau)]
            if k == 0 and len(sig) == 2 and sig[0] == sig[1] and sig[0] in depth
        )
        return depth, square

    @property
    def passes(self) -> dict[str, Any]:
        r"""The forward-mode work, pass by pass (what the cost depends on; the field is not
        counted): the spine's depth and whether its top is fused, the depth of every push
        (a child's, or a bundle's) with `+sq` where $F''(u, u)$ rides on it, and the number of
        nested mixed derivatives ($r \ge 2$, other than a square)."""
        depth, square = self.pushes
        pushes = [f"{d}+sq" if s in square else str(d) for s, d in depth.items()]
        pushes += [str(k) for b in self.bundles for k, _ in b]
        mixed = 0
        for tau in self.vectors:
            k, sig = split_tree(tau)
            if len(sig) >= 2 and not (k == 0 and len(sig) == 2 and sig[0] in square
                                      and sig[0] == sig[1]):
                mixed += 1
        return {"spine": self.spine, "fused": self.fuse is not None,
                "pushes": tuple(sorted(pushes)), "mixed": mixed}


def _subtrees(tau: Tree, out: set) -> None:
    for c in tau:
        if c != BULLET and c not in out:
            out.add(c)
            _subtrees(c, out)


Frozen = tuple  # ((tree, coefficient), …) per term: the hashable form of a combination


def freeze(combinations) -> tuple[Frozen, ...]:
    """Hashable, canonical form of per-order combinations (zero coefficients dropped)."""
    return tuple(
        tuple(sorted(((t, c) for t, c in comb.items() if c != 0), key=lambda tc: tc[0]))
        for comb in combinations
    )


@functools.cache
def schedule(order: int) -> Schedule:
    """The `Schedule` of the explicit-Euler modified field up to `order` (GD's terms)."""
    return combination_schedule(freeze(modified_combinations(order)[1:]))


@functools.cache
def combination_schedule(terms: tuple[Frozen, ...]) -> Schedule:
    r"""The `Schedule` of any terms $F_n = \sum_\tau c_n(\tau) F(\tau)$, $n = 1 \dots N$.

    `terms[n-1]` is $F_n$ as `freeze`d `(tree, c)` pairs, `c` a `Fraction` or a float (exact,
    independent of the field; cached). GD's `schedule(order)` is this schedule of
    `modified_combinations(order)[1:]`; the momentum EoM (`eom.engine._momentum_terms`) uses it
    with its own coefficients. Trees absent from every term cost nothing; a term with no tree
    evaluates to zero.
    """
    order = len(terms)
    combos = [dict(t) for t in terms]
    vectors: set[Tree] = set()
    for comb in combos:
        for tau in comb:
            _subtrees(tau, vectors)
    # Children σ that are pushed through the linearized spine anyway, with the largest spine
    # component k each push needs (a push computes components 0…k; the rest is dropped by XLA).
    pushed: dict[Tree, int] = {}
    for t in vectors:
        k, sig = split_tree(t)
        if len(sig) == 1:
            pushed[sig[0]] = max(pushed.get(sig[0], -1), k)
    # Fuse F^{(N)}[v^N] with F^{(N-1)}(v^{N-2}, F'F) in the last term when both occur only there
    # (never as a child, never in a lower term) and the partner would otherwise cost a push of
    # its own (F'F not pushed: GD and momentum at order 2) or deepen F'F's push from component 0
    # to 1 (momentum at order 3, whose F‴(F,F,F) GD lacks: 15.3 → 14.2 gradient-FLOPs on the
    # digits MLP). Deepening it from 1 to 2 (order 4) is cheaper than the fused top (33.9 vs 34.4).
    fuse = None
    top, partner = (BULLET,) * order, (BULLET,) * (order - 2) + ((BULLET,),)
    if (
        order >= 2
        and pushed.get((BULLET,), -1) < 1
        and combos[-1].get(top)
        and combos[-1].get(partner)
        and not {top, partner} & (vectors | {t for comb in combos[:-1] for t in comb})
    ):
        fuse = combos[-1].pop(partner) / combos[-1][top]
    terms_out, bundles, extra = [], [], set()
    for comb in combos:
        individual: list[tuple[Tree, Fraction]] = []
        grouped: dict[int, list[tuple[Tree, Fraction]]] = {}
        for tau, c in sorted(comb.items(), key=lambda tc: (num_nodes(tc[0]), tc[0])):
            k, sig = split_tree(tau)
            if tau in vectors or len(sig) != 1 or k <= pushed.get(sig[0], -1):
                individual.append((tau, c))  # needed anyway, or free from a push
                extra.add(tau)
            else:
                grouped.setdefault(k, []).append((sig[0], c))
        # A lone bundle member whose child is pushed anyway: deepen that push by a component
        # (shares its lower components) rather than pay for a separate application.
        for k in list(grouped):
            if len(grouped[k]) == 1 and grouped[k][0][0] in pushed:
                sig, c = grouped.pop(k)[0]
                tau = _canon((BULLET,) * k + (sig,))
                individual.append((tau, c))
                extra.add(tau)
        terms_out.append(tuple(individual))
        bundles.append(tuple((k, tuple(g)) for k, g in sorted(grouped.items())))
    every = vectors | extra
    spine = max([split_tree(t)[0] for t in every if not split_tree(t)[1]] + [0])
    ordered = tuple(sorted(every, key=lambda t: (num_nodes(t), t)))
    return Schedule(order, spine, ordered, tuple(terms_out), tuple(bundles), fuse)




# ---------------------------------------------------------------------------------------------
# Numerics


def _spine_fn(field: Callable, v: PyTree, depth: int) -> Callable:
    r"""$y \mapsto \big(F(y), F'(y)v, \dots, F^{(depth)}(y)[v^{depth}]\big)$ by nested `jax.jvp`."""

    def psi(y):
        return (field(y),)

    for _ in range(depth):
        psi = functools.partial(_extend, psi, v)
    return psi


def _extend(psi: Callable, v: PyTree, y: PyTree) -> tuple:
    primal, tangent = jax.jvp(psi, (y,), (v,))
    return primal + (tangent[-1],)


def _fused_top(field: Callable, x: PyTree, v: PyTree, depth: int, b: PyTree) -> PyTree:
    r"""$F^{(K)}(x)[v^K] + F^{(K-1)}(x)[v^{K-2}, b]$ for $K$ = `depth` ≥ 2, in one nested `jvp`.

    With $G(y, u) = F^{(K-1)}(y)[v^{K-2}, u]$ (outermost direction $u$), the derivative of $G$ at
    $(x, v)$ along $(v, b)$ is exactly this sum: the extra term rides on the last spine level
    for the price of one more product per bilinear operation (a Taylor coefficient along the
    curve $x + tv + t^2b/2$, computed without `jet`).
    """

    def G(y, u):
        return _extend(_spine_fn(field, v, depth - 2), u, y)[-1]

    return jax.jvp(G, (x, v), (v, b))[1]


def _mixed(field: Callable, x: PyTree, v: PyTree, k: int, directions: list) -> PyTree:
    """$F^{(k+r)}(x)[v^k, u_1, \\dots, u_r]$: nested `jax.jvp`s of the spine component $k$."""

    def f(y):
        return _spine_fn(field, v, k)(y)[k]

    for u in directions[:-1]:
        f = functools.partial(lambda f, u, y: jax.jvp(f, (y,), (u,))[1], f, u)
    return jax.jvp(f, (x,), (directions[-1],))[1]


def _push(field: Callable, x: PyTree, v: PyTree, depth: int, u: PyTree, square: bool) -> tuple:
    r"""$\big(F'(x)u, F''(x)[v, u], \dots, F^{(K+1)}(x)[v^K, u]\big)$ ($K$ = `depth`) by one
    `jax.jvp` of the spine along $u$; with `square`, $F''(x)[u, u]$ appended (the tangent of
    $y \mapsto F'(y)u$ along $u$, which shares the primal and $F'u$ with the rest)."""
    spine = _spine_fn(field, v, depth)
    if square:

        def fn(y):
            return spine(y) + (jax.jvp(field, (y,), (u,))[1],)

    else:
        fn = spine
    return jax.jvp(fn, (x,), (u,))[1]


def _combine(pairs) -> PyTree:
    out = None
    for c, vec in pairs:
        piece = tree_scale(float(c), vec)
        out = piece if out is None else tree_add(out, piece)
    return out


def _evaluate(field: Callable, x: PyTree, order: int) -> tuple[PyTree, list[PyTree]]:
    """`(F(x), [F_1(x), …, F_N(x)])` of the modified field, following `schedule(order)`."""
    return evaluate_schedule(field, x, schedule(order))


def evaluate_schedule(field: Callable, x: PyTree, sched: Schedule) -> tuple[PyTree, list[PyTree]]:
    """`(F(x), [F_1(x), …, F_N(x)])` for the terms `sched` was built from (`combination_schedule`).

    An empty term (every coefficient zero) is zero.
    """
    v = field(x)
    if sched.fuse is None:
        spine = _spine_fn(field, v, sched.spine)(x)
    else:
        spine = _spine_fn(field, v, sched.spine - 1)(x)
        b = tree_scale(float(sched.fuse), spine[1])
        spine = spine + (_fused_top(field, x, v, sched.spine, b),)
    depth, square = sched.pushes
    memo: dict[Tree, PyTree] = {BULLET: v}
    passes: dict[Tree, tuple] = {}

    def pushed(sigma: Tree) -> tuple:
        # (F'u, F''(v,u), …, F^{(K+1)}(v^K, u)[, F''(u,u)]) for u = F(σ): one jvp of the spine
        # of depth K along u (plus, when asked, of F'(y)u: its second-order tangent). Plain
        # nested jvps, so that XLA merges the primal and F'u with the other passes.
        if sigma not in passes:
            passes[sigma] = _push(field, x, v, depth[sigma], memo[sigma], sigma in square)
        return passes[sigma]

    for tau in sched.vectors:
        k, sig = split_tree(tau)
        if not sig:
            memo[tau] = spine[k]
        elif len(sig) == 1:
            memo[tau] = pushed(sig[0])[k]
        elif k == 0 and len(sig) == 2 and sig[0] in square and sig[0] == sig[1]:
            memo[tau] = pushed(sig[0])[-1]
        else:
            memo[tau] = _mixed(field, x, v, k, [memo[s] for s in sig])

    out = []
    for n in range(1, sched.order + 1):
        pairs = [(c, memo[tau]) for tau, c in sched.terms[n - 1]]
        for k, group in sched.bundles[n - 1]:
            u = _combine([(c, memo[s]) for s, c in group])
            pairs.append((1, _push(field, x, v, k, u, False)[k]))
        out.append(_combine(pairs) if pairs else tree_zeros_like(v))
    return v, out


def modified_terms_bseries(field: Callable, x: PyTree, order: int) -> tuple[PyTree, ...]:
    """$(F(x), F_1(x), \\dots, F_{order}(x))$ from the tree expansion."""
    if order == 0:
        return (field(x),)
    v, terms = _evaluate(field, x, order)
    return (v, *terms)


def _neg_grad(loss: Callable) -> Callable:
    grad = jax.grad(loss)
    return lambda p: tree_scale(-1.0, grad(p))


def grad_and_counter_terms(loss: Callable, params: PyTree, order: int):
    r"""$(\nabla L, (\xi_1, \dots, \xi_{order}))$ with $\xi_n = -F_n$ for $F = -\nabla L$."""
    terms = modified_terms_bseries(_neg_grad(loss), params, order)
    return tree_scale(-1.0, terms[0]), tuple(tree_scale(-1.0, t) for t in terms[1:])
