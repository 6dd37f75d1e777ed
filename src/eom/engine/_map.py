r"""Modified equations of any near-identity map (THEORY.md §7).

A smooth map `step(x, h)` with `step(x, 0) = x` is, as a formal power series in $h$, the exact
time-$h$ flow of one autonomous field

$$F = F_0 + hF_1 + h^2F_2 + \dots, \qquad \varphi^F_h = \texttt{step}(\cdot, h).$$

Write $\texttt{step}(x, h) = x + \sum_{j\ge1} h^j d_j(x)$ (Taylor coefficients in the scalar $h$).
Matching $\sum_{j\ge1}\frac{h^j}{j!}\mathcal L_F^{j-1}F = \sum_j h^jd_j$ power by power gives
$F_0 = d_1$ and

$$F_n = d_{n+1} - \sum_{j=2}^{n+1}\frac1{j!}\sum_{k_1+\dots+k_j=n+1-j}
        \mathcal L_{F_{k_1}}\cdots\mathcal L_{F_{k_{j-1}}}F_{k_j},
  \qquad (\mathcal L_XG)(x) = G'(x)X(x).$$

`modified_terms_of_map_reference` is this recursion written out with nested `jax.jvp`s of Python
closures (the reference; its cost grows combinatorially with the order).

**Fast path (`modified_terms_of_map`).** The recursion is the logarithm of the map. Let $P$ act on
functions by pull-back, $(Pg)(x) = g(\texttt{step}(x,h))$; the flow property says
$P = \exp(h\,\mathcal D)$ with $\mathcal Dg = g'F$. Hence $h\mathcal D = \log P =
\sum_{k\ge1}\frac{(-1)^{k+1}}k(P-I)^k$, and applied to $g = \mathrm{id}$ (where
$P^i\,\mathrm{id} = \texttt{step}^{\circ i}$, the $i$-fold iterate):

$$hF(x) = \sum_{k\ge1}\frac{(-1)^{k+1}}{k}\,\Delta^k(x),\qquad
  \Delta^k = \sum_{i=0}^{k}\binom ki(-1)^{k-i}\,\texttt{step}^{\circ i}(x, h).$$

Since $(P - I)^k = O(h^k)$, the terms $F_0 \dots F_N$ (the coefficients of $h^1 \dots h^{N+1}$ of
$hF$) need only $k \le N+1$, i.e. the Taylor coefficients in $h$, to degree $N+1$, of the iterates
$\texttt{step}^{\circ i}(x, h)$ for $i = 1 \dots N+1$:

$$F_n(x) = \sum_{i=1}^{N+1} w_i\,[h^{n+1}]\,\texttt{step}^{\circ i}(x,h),\qquad
  w_i = \sum_{k=i}^{N+1}\frac{(-1)^{k+1}}{k}\binom ki(-1)^{k-i}.$$

No Lie derivative in $x$ is ever formed: the whole computation is Taylor-mode differentiation in
the one scalar $h$ (`jax.experimental.jet`, falling back to nested `jax.jvp` where a primitive
has no jet rule) of $N+1$ chained applications of `step` — about $(N+1)$ Taylor evaluations of
the map, against the combinatorial nesting of the recursion. The weights are exact rationals
(`fractions.Fraction`); the alternating sum costs a few digits at order 6 (measured: ≤ 1e-13
relative to the reference on Lotka–Volterra, see tests/engine/test_map.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp

from .._errors import EomError
from .._tree import tree_add, tree_scale
from ._lie import check_order, lie_derivative

PyTree = Any
Step = Callable[[PyTree, Any], PyTree]


# ---------------------------------------------------------------------------------------------
# Taylor coefficients in the scalar h


def _taylor_jet(fn: Callable[[Any], PyTree], degree: int) -> list[PyTree]:
    from jax.experimental.jet import jet

    zero = jnp.zeros((), dtype=jnp.float64)
    series = [jnp.ones((), dtype=jnp.float64)] + [zero] * (degree - 1)
    primal, derivs = jet(fn, (zero,), ((*series,),))
    # jet's output series mirror the output pytree, each leaf a list of derivatives
    # f^{(j)}(0), j = 1..degree; the Taylor coefficient is f^{(j)}(0)/j!.
    leaves, treedef = jax.tree.flatten(primal)
    series_leaves = treedef.flatten_up_to(derivs)
    out = [primal]
    for j in range(1, degree + 1):
        scale = 1.0 / math.factorial(j)
        out.append(treedef.unflatten([s[j - 1] * scale for s in series_leaves]))
    return out


def _taylor_jvp(fn: Callable[[Any], PyTree], degree: int) -> list[PyTree]:
    def derivs(h):
        return (fn(h),)

    for _ in range(degree):
        prev = derivs

        def derivs(h, prev=prev):
            outs, touts = jax.jvp(prev, (h,), (jnp.ones_like(h),))
            return (*outs, touts[-1])

    vals = derivs(jnp.zeros((), dtype=jnp.float64))
    return [tree_scale(1.0 / math.factorial(j), v) for j, v in enumerate(vals)]


def taylor_in_h(fn: Callable[[Any], PyTree], degree: int) -> list[PyTree]:
    r"""$[c_0, \dots, c_{degree}]$ with $fn(h) = \sum_j c_jh^j + O(h^{degree+1})$ at $h = 0$.

    Taylor mode (`jax.experimental.jet`); nested `jax.jvp` in $h$ if some primitive of `fn` has
    no jet rule (same values, more work).
    """
    if degree == 0:
        return [fn(jnp.zeros((), dtype=jnp.float64))]
    try:
        return _taylor_jet(fn, degree)
    except (NotImplementedError, TypeError, KeyError):
        return _taylor_jvp(fn, degree)


def map_coefficients(step: Step, x: PyTree, degree: int) -> list[PyTree]:
    r"""$(d_1, \dots, d_{degree})$ at `x`: $\texttt{step}(x,h) = x + \sum_j h^jd_j(x)$."""
    return taylor_in_h(lambda h: step(x, h), degree)[1:]


# ---------------------------------------------------------------------------------------------
# Fast path: the logarithm of the map from its iterates


@functools.cache
def _log_weights(order: int) -> tuple[Fraction, ...]:
    """$w_1 \\dots w_{N+1}$ of the module docstring (exact)."""
    K = order + 1
    w = []
    for i in range(1, K + 1):
        s = Fraction(0)
        for k in range(i, K + 1):
            s += Fraction((-1) ** (k + 1), k) * math.comb(k, i) * (-1) ** (k - i)
        w.append(s)
    return tuple(w)


def _check_step(step: Any) -> None:
    if not callable(step):
        raise EomError(f"step must be a callable step(x, h) -> x, got {type(step).__name__}.")


def _iterates_jet(step: Step, x: PyTree, count: int, degree: int) -> list[PyTree]:
    """Taylor coefficients of the iterates by one `jet` of `step` inside a `lax.scan`.

    The carry is the truncated series of the current iterate (leaves × coefficients); one jet
    of `step` is traced, so the compiled graph does not grow with the number of iterates.
    """
    from jax.experimental.jet import jet

    leaves, treedef = jax.tree.flatten(x)
    leaves = [jnp.asarray(v) for v in leaves]
    n = len(leaves)
    zero = jnp.zeros((), dtype=jnp.float64)
    h_series = [jnp.ones((), dtype=jnp.float64)] + [zero] * (degree - 1)

    def flat_step(*args):
        y = treedef.unflatten(list(args[:n]))
        return tuple(jax.tree.leaves(step(y, args[n])))

    def body(carry, _):
        prim, ser = carry
        out_p, out_s = jet(
            flat_step,
            (*prim, zero),
            (*[[s[j] for j in range(degree)] for s in ser], h_series),
            factorial_scaled=False,
        )
        new = (tuple(out_p), tuple(jnp.stack(s) for s in out_s))
        return new, new

    ser0 = tuple(jnp.zeros((degree, *v.shape), v.dtype) for v in leaves)
    _, (ps, ss) = jax.lax.scan(body, (tuple(leaves), ser0), None, length=count)
    # ps[l]: (count, *shape); ss[l]: (count, degree, *shape)
    out = [[treedef.unflatten([p[i] for p in ps]) for i in range(count)]]
    for j in range(degree):
        out.append([treedef.unflatten([s[i, j] for s in ss]) for i in range(count)])
    return out


def iterate_coefficients(step: Step, x: PyTree, count: int, degree: int) -> list[list[PyTree]]:
    r"""`c[j][i-1]` $= [h^j]\,\texttt{step}^{\circ i}(x, h)$, $j \le$ `degree`, $i \le$ `count`.

    One jet of `step` in a scan; nested `jax.jvp` in $h$ of the unrolled chain if a primitive
    has no jet rule.
    """
    try:
        return _iterates_jet(step, x, count, degree)
    except (NotImplementedError, TypeError, KeyError):
        pass

    def iterates(h):
        y, out = x, []
        for _ in range(count):
            y = step(y, h)
            out.append(y)
        return tuple(out)

    return [list(c) for c in _taylor_jvp(iterates, degree)]


def modified_terms_of_map(step: Step, x: PyTree, order: int) -> tuple[PyTree, ...]:
    r"""The modified-field terms $(F_0(x), \dots, F_{order}(x))$ of a near-identity map.

    **Arguments:**

    - `step`: a smooth map `step(x, h) -> x` (same pytree structure) with `step(x, 0) = x`;
      `h` is a traced float64 scalar (differentiated in Taylor mode).
    - `x`: the point (a pytree of float arrays).
    - `order`: $N \ge 0$.

    **Returns:** a tuple of `order + 1` pytrees shaped like `x`. The time-$h$ flow of
    $F = \sum_{n\le N} h^nF_n$ equals `step(x, h)` up to $O(h^{N+2})$; $F_0 = d_1$,
    $F_n = d_{n+1} - \sum_{j=2}^{n+1}\frac1{j!}\sum \mathcal L_{F_{k_1}}\cdots F_{k_j}$
    (THEORY.md §7), evaluated as the logarithm of the iterated map (module docstring). Call it
    inside `jax.jit` for speed.

    >>> import jax.numpy as jnp
    >>> import eom
    >>> euler = lambda x, h: x - h * x                       # explicit Euler on ẋ = -x
    >>> [float(t) for t in eom.modified_terms_of_map(euler, jnp.array(1.0), 2)]  # log(1-h)/h
    [-1.0, -0.5, -0.3333333333333333]
    """
    _check_step(step)
    order = check_order(order)
    K = order + 1

    coeffs = iterate_coefficients(step, x, K, K)  # coeffs[j][i-1] = [h^j] step^{∘i}(x, h)
    weights = _log_weights(order)
    terms = []
    for n in range(order + 1):
        acc = None
        for i, w in enumerate(weights):
            if w == 0:
                continue
            term = tree_scale(float(w), coeffs[n + 1][i])
            acc = term if acc is None else tree_add(acc, term)
        terms.append(acc)
    return tuple(terms)


def map_modified_field(step: Step, h: float, order: int) -> Callable[[PyTree], PyTree]:
    r"""The truncated modified field $x \mapsto \sum_{n\le N} h^nF_n(x)$ of `step(·, h)`."""
    order = check_order(order)

    def field(x):
        terms = modified_terms_of_map(step, x, order)
        out = terms[0]
        for n, t in enumerate(terms[1:], start=1):
            out = tree_add(out, tree_scale(h**n, t))
        return out

    return field


# ---------------------------------------------------------------------------------------------
# Reference: the recursion of THEORY.md §7 with nested jvps


def _d_field(step: Step, j: int, degree: int) -> Callable[[PyTree], PyTree]:
    return lambda y: map_coefficients(step, y, degree)[j - 1]


def modified_terms_of_map_reference(step: Step, x: PyTree, order: int) -> tuple[PyTree, ...]:
    r"""$(F_0(x), \dots, F_{order}(x))$ by the plain recursion of THEORY.md §7 (the reference).

    $F_0 = d_1$, $F_n = d_{n+1} - \sum_{j=2}^{n+1}\frac1{j!}\,G^{(n+1-j)}_j$ with
    $G^{(m)}_1 = F_m$, $G^{(m)}_j = \sum_{a=0}^{m}\mathcal L_{F_a}G^{(m-a)}_{j-1}$ (every Lie
    derivative a `jax.jvp` of a closure; cost grows combinatorially — tests and small orders only).
    """
    _check_step(step)
    order = check_order(order)
    degree = order + 1
    F: list[Callable] = [_d_field(step, 1, degree)]
    G: dict[tuple[int, int], Callable] = {}

    def g(j: int, m: int) -> Callable:
        if (j, m) not in G:
            if j == 1:
                G[(j, m)] = F[m]
            else:
                parts = [lie_derivative(F[a], g(j - 1, m - a)) for a in range(m + 1)]

                def summed(y, parts=parts):
                    out = parts[0](y)
                    for p in parts[1:]:
                        out = tree_add(out, p(y))
                    return out

                G[(j, m)] = summed
        return G[(j, m)]

    for n in range(1, order + 1):
        d_next = _d_field(step, n + 1, degree)
        parts = [(g(j, n + 1 - j), -1.0 / math.factorial(j)) for j in range(2, n + 2)]

        def Fn(y, d_next=d_next, parts=parts):
            out = d_next(y)
            for fn, c in parts:
                out = tree_add(out, tree_scale(c, fn(y)))
            return out

        F.append(Fn)
    return tuple(f(x) for f in F)
