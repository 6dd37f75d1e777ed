r"""The terms of the heavy-ball and Nesterov EoM (the slow manifold), to any order.

Heavy ball $\theta_{k+1} = \theta_k - \eta g(\theta_k) + \beta(\theta_k - \theta_{k-1})$ on the slow
manifold $\theta_{k\pm1} = \Phi^{\pm1}(\theta_k)$, $\Phi$ the time-$\eta$ flow of
$\dot\theta = F = \sum_n \eta^n F_n$, with Lie series for $\Phi^{\pm1}$ (THEORY.md §9):

$$\sum_{j\ge1} c_j\,\eta^j\,\mathcal L_F^{j-1}F = -\eta g,\qquad c_j = \frac{1+\beta(-1)^j}{j!},$$

so $F_0 = -g/(1-\beta)$ and, for $n \ge 1$,

$$F_n = -\frac{1}{1-\beta}\sum_{j=2}^{n+1} c_j \sum_{k_1+\dots+k_j=n+1-j}
        \mathcal L_{F_{k_1}}\cdots\mathcal L_{F_{k_{j-1}}}F_{k_j}
        \;\Big[+\frac{\beta}{1-\beta}\sum_{j=1}^{n}\frac{(-1)^j}{j!}\sum_{k_1+\dots+k_j=n-j}
        \mathcal L_{F_{k_1}}\cdots\mathcal L_{F_{k_j}}\,g\Big]_{\text{Nesterov}},$$

the bracket being Nesterov's extra $\eta\beta\,[g(\Phi^{-1}\theta) - g(\theta)]$, a Lie series
of $g$.
$(\mathcal L_X G)(x) = G'(x)X(x)$.

**Fast path.** With $f = F_0 = -\nabla L_\lambda/(1-\beta)$ and $g = -(1-\beta)f$, every Lie word
above is a combination of *elementary differentials* of $f$ (rooted trees $\tau = [\tau_1, \dots,
\tau_m]$, $f(\tau) = f^{(m)}(f(\tau_1), \dots, f(\tau_m))$; THEORY.md §2):
$F_n = \sum_\tau c_n(\tau)\,f(\tau)$ over the trees of GD's modified field, with other
coefficients. The recursion is run once, exactly, on tree combinations (`fractions.Fraction` of
the binary value of β; zero coefficients dropped), and the terms are evaluated by GD's B-series
schedule (`eom.engine._bseries.combination_schedule`: one spine of nested `jvp`s along
$v = f(x)$, one push per child, top-level trees bundled by linearity), traced into one jitted
function. At orders 1, 2 and 4 that is GD's schedule pass for pass; order 3 also holds
$f'''(f,f,f)$, absent from GD's order 3, carried by a fused top spine level. Cost in
gradient-equivalents of XLA FLOPs on the 26.1k digits MLP: 2.77 / 6.89 / 14.25 / 33.89 at
orders 1–4 (GD: 2.77 / 6.89 / 11.99 / 33.89; the former prefix-`linearize` path: 2.77 / 8.04 /
18.11 / 42.83).

The plain recursion (`reference_terms`: nested `jax.jvp` of Python closures, each Lie derivative
re-derived) is the reference the fast path is tested against.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from .._tree import tree_add, tree_scale
from ._bseries import (
    BULLET,
    Schedule,
    Tree,
    combination_schedule,
    evaluate_schedule,
    freeze,
    lie,
    num_nodes,
)
from ._lie import lie_derivative

PyTree = Any
Combination = dict  # Tree -> Fraction


def _add_into(acc: Combination, comb: Combination, scale: Fraction) -> None:
    for t, c in comb.items():
        acc[t] = acc.get(t, Fraction(0)) + scale * c


def _clean(comb: Combination) -> Combination:
    return {t: c for t, c in comb.items() if c != 0}


def _lie_words(F: list[Combination], base_j: int, base: Callable) -> Callable:
    """`words(j, m)` = Σ_{k_1+…+k_{j−base_j}=m'} L_{F_{k_1}}⋯ applied to `base(·)`, memoized: the
    sums of Lie words the recursion needs, each computed once (F grows as terms are found)."""
    memo: dict[tuple[int, int], Combination] = {}

    def words(j: int, m: int) -> Combination:
        if (j, m) not in memo:
            if j == base_j:
                memo[(j, m)] = base(m)
            else:
                acc: Combination = {}
                for a in range(m + 1):
                    _add_into(acc, lie(F[a], words(j - 1, m - a)), Fraction(1))
                memo[(j, m)] = _clean(acc)
        return memo[(j, m)]

    return words


@functools.cache
def momentum_combinations(beta: float, order: int, nesterov: bool) -> tuple[Combination, ...]:
    r"""Exact tree expansions of $(F_0, \dots, F_{order})$ in elementary differentials of $f$.

    $F_0 = f$ is the single node. Coefficients are exact in the binary value of `beta`.
    """
    b = Fraction(beta)
    one = Fraction(1)
    c = [None, None] + [(one + b * (-1) ** j) / math.factorial(j) for j in range(2, order + 2)]
    F: list[Combination] = [{BULLET: one}]
    # Σ_{k_1+…+k_j=m} L_{F_{k_1}}⋯L_{F_{k_{j-1}}} F_{k_j}, and the same words ending in f
    # (g = −(1−β) f) for Nesterov's Lie series of g.
    g_words = _lie_words(F, 1, lambda m: F[m])
    w_words = _lie_words(F, 0, lambda m: {BULLET: one} if m == 0 else {})

    for n in range(1, order + 1):
        acc: Combination = {}
        for j in range(2, n + 2):
            _add_into(acc, g_words(j, n + 1 - j), -c[j] / (one - b))
        if nesterov:
            # (β/(1−β)) Σ_j ((−1)^j/j!) L…L g  with g = −(1−β) f  →  −β Σ_j ((−1)^j/j!) L…L f
            for j in range(1, n + 1):
                _add_into(acc, w_words(j, n - j), -b * Fraction((-1) ** j, math.factorial(j)))
        F.append(_clean(acc))
    return tuple(F)


@dataclasses.dataclass(frozen=True)
class MomentumSchedule:
    """How the terms are evaluated (exact, independent of the loss).

    - `trees`: every elementary differential the terms hold, smallest first (children before
      parents; $f$ itself first).
    - `terms[n]`: `(tree, coefficient)` pairs of $F_n$, `n = 0 … order` (exact `Fraction`s).
    - `bseries`: GD's evaluation schedule of these terms (`eom.engine._bseries.Schedule`: the
      spine, pushes and bundles; `bseries.passes` counts them).
    """

    order: int
    trees: tuple[Tree, ...]
    terms: tuple[tuple[tuple[Tree, Fraction], ...], ...]
    bseries: Schedule


def _all_subtrees(tau: Tree, out: set) -> None:
    out.add(tau)
    for ch in tau:
        _all_subtrees(ch, out)


@functools.cache
def momentum_schedule(beta: float, order: int, nesterov: bool) -> MomentumSchedule:
    """The `MomentumSchedule` of the order-`order` field (cached)."""
    frozen = freeze(momentum_combinations(beta, order, nesterov))
    needed: set[Tree] = set()
    for comb in frozen:
        for tau, _ in comb:
            _all_subtrees(tau, needed)
    trees = tuple(sorted(needed, key=lambda t: (num_nodes(t), t)))
    return MomentumSchedule(order, trees, frozen, combination_schedule(frozen[1:]))


def evaluate_terms(f: Callable, x: PyTree, beta: float, order: int, nesterov: bool):
    r"""$(F_0(x), \dots, F_{order}(x))$, $F_0 = f$, by GD's B-series schedule (module docstring)."""
    sched = momentum_schedule(float(beta), int(order), bool(nesterov))
    if order == 0:
        return (f(x),)
    v, terms = evaluate_schedule(f, x, sched.bseries)
    return (v, *terms)


def reference_terms(f: Callable, x: PyTree, beta: float, order: int, nesterov: bool):
    r"""$(F_0(x), \dots, F_{order}(x))$ by the plain recursion (nested Lie derivatives; slow)."""
    beta = float(beta)
    c = [None, None] + [(1 + beta * (-1) ** j) / math.factorial(j) for j in range(2, order + 2)]
    g = lambda y: tree_scale(-(1 - beta), f(y))  # noqa: E731
    F: list[Callable] = [f]
    G: dict[tuple[int, int], Callable] = {}
    W: dict[tuple[int, int], Callable | None] = {}

    def summed(parts):
        def fn(y):
            acc = None
            for cf, p in parts:
                piece = tree_scale(cf, p(y))
                acc = piece if acc is None else tree_add(acc, piece)
            return acc

        return fn

    def gw(j, m):
        if (j, m) not in G:
            G[(j, m)] = F[m] if j == 1 else summed(
                [(1.0, lie_derivative(F[a], gw(j - 1, m - a))) for a in range(m + 1)]
            )
        return G[(j, m)]

    def ww(j, m):
        if (j, m) not in W:
            if j == 0:
                W[(j, m)] = g if m == 0 else None
            else:
                parts = [(1.0, lie_derivative(F[a], ww(j - 1, m - a)))
                         for a in range(m + 1) if ww(j - 1, m - a) is not None]
                W[(j, m)] = summed(parts) if parts else None
        return W[(j, m)]

    for n in range(1, order + 1):
        parts = [(-c[j] / (1 - beta), gw(j, n + 1 - j)) for j in range(2, n + 2)]
        if nesterov:
            parts += [(beta / (1 - beta) * (-1) ** j / math.factorial(j), ww(j, n - j))
                      for j in range(1, n + 1) if ww(j, n - j) is not None]
        F.append(summed(parts))
    return tuple(fn(x) for fn in F)
