r"""Modified-equation terms of explicit Euler for a general vector field (the reference).

For a field $F$ and step $h$, explicit Euler $x_{k+1} = x_k + hF(x_k)$ is, to order $h^{N+1}$ per
step, the exact time-$h$ flow of the *modified field*

$$\tilde F = F + hF_1 + h^2F_2 + \dots + h^NF_N ,$$

with $F_0 = F$ and, for $n \ge 1$ (THEORY.md §2),

$$F_n = -\sum_{j=2}^{n+1}\frac{1}{j!}\sum_{k_1+\dots+k_j=n+1-j}
        \mathcal L_{F_{k_1}}\cdots\mathcal L_{F_{k_{j-1}}}F_{k_j},\qquad
  (\mathcal L_XG)(x) = G'(x)\,X(x).$$

This module is the plain recursion: each Lie derivative is a `jax.jvp` of a Python closure. It is
the reference every faster path (`eom.engine._bseries`) is tested against. The inner sums are
organised as $G^{(m)}_j = \sum_{k_1+\dots+k_j=m}\mathcal L_{F_{k_1}}\cdots F_{k_j}$ with
$G^{(m)}_1 = F_m$ and $G^{(m)}_j = \sum_{a=0}^{m}\mathcal L_{F_a}G^{(m-a)}_{j-1}$, which is the same
sum regrouped (no approximation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._tree import tree_add, tree_scale
from ._lie import (
    MAX_ORDER as MAX_ORDER,
    check_order as check_order,
    lie_derivative as lie_derivative,
)
from ._map import map_modified_field, modified_terms_of_map

PyTree = Any
Field = Callable[[PyTree], PyTree]

def _sum_fields(fields: list[Field], coeffs: list[float]) -> Field:
    def summed(x):
        out = None
        for f, c in zip(fields, coeffs, strict=True):
            term = tree_scale(c, f(x))
            out = term if out is None else tree_add(out, term)
        return out

    return summed


def modified_field_terms(field: Field, order: int) -> tuple[Field, ...]:
    """The fields $(F_0 = F, F_1, \\dots, F_{order})$ as Python callables (reference recursion)."""
    order = check_order(order)
    F: list[Field] = [field]
    G: dict[tuple[int, int], Field] = {}

    def g(j: int, m: int) -> Field:
        # G_j^{(m)}: sum over compositions of m into j non-negative parts.
        if (j, m) not in G:
            if j == 1:
                G[(j, m)] = F[m]
            else:
                parts = [lie_derivative(F[a], g(j - 1, m - a)) for a in range(m + 1)]
                G[(j, m)] = _sum_fields(parts, [1.0] * len(parts))
        return G[(j, m)]

    for n in range(1, order + 1):
        parts = [g(j, n + 1 - j) for j in range(2, n + 2)]
        coeffs = [-1.0 / math.factorial(j) for j in range(2, n + 2)]
        F.append(_sum_fields(parts, coeffs))
    return tuple(F)


def euler_step(field: Field) -> Callable[[PyTree, Any], PyTree]:
    """The explicit Euler map `(x, h) -> x + h F(x)` of `field`."""
    return lambda x, h: tree_add(x, tree_scale(h, field(x)))


def modified_terms_reference(field: Field, x: PyTree, order: int) -> tuple[PyTree, ...]:
    r"""$(F_1(x), \dots, F_{order}(x))$ by the plain recursion (the reference for tests)."""
    terms = modified_field_terms(field, order)
    return tuple(f(x) for f in terms[1:])


def modified_terms(field: Field, x: PyTree, order: int) -> tuple[PyTree, ...]:
    r"""Evaluate the explicit-Euler modified-equation terms $(F_1(x), \dots, F_{order}(x))$.

    **Arguments:**

    - `field`: a vector field `x -> F(x)` returning a pytree of the same structure as `x`.
    - `x`: the point (a pytree of float arrays).
    - `order`: how many terms, $N \ge 0$; `order=0` returns `()`.

    **Returns:** a tuple of `order` pytrees shaped like `x`. With step $h$, the time-$h$ flow of
    $F + \sum_{n\le N} h^nF_n$ equals $x + hF(x)$ up to $O(h^{N+2})$.

    Computed on the fast path of `eom.engine._map` (the logarithm of the iterated Euler map,
    Taylor mode in $h$; THEORY.md §7), which equals the plain recursion
    (`modified_terms_reference`) to rounding; call it inside `jax.jit`.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> F = lambda x: -x  # Euler on ẋ = -x; the modified field is log(1-h)/h · x
    >>> [round(float(t), 6) for t in eom.modified_terms(F, jnp.array(1.0), 2)]  # F₁, F₂
    [-0.5, -0.333333]
    """
    order = check_order(order)
    if order == 0:
        return ()

    return tuple(modified_terms_of_map(euler_step(field), x, order)[1:])


def modified_field(field: Field, h: float, order: int) -> Field:
    r"""The truncated modified field $x \mapsto F(x) + hF_1(x) + \dots + h^{N}F_N(x)$.

    Fast path as `modified_terms` (the plain recursion is `modified_field_terms`).

    >>> import jax.numpy as jnp
    >>> import eom
    >>> G = eom.modified_field(lambda x: -x, 0.1, 2)  # -(1 + h/2 + h²/3) x
    >>> round(float(G(jnp.array(1.0))), 6)
    -1.053333
    """
    order = check_order(order)
    if order == 0:
        return field

    return map_modified_field(euler_step(field), h, order)
