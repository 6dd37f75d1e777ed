"""The fast B-series path (`eom.engine._bseries`) against THEORY.md §2 and the reference recursion.

Three independent checks:

1. the exact tree coefficients of F_1 … F_4 equal THEORY.md's table (Fractions, no tolerance);
2. the evaluation schedule accounts for every tree of every F_n exactly once (pure Python);
3. the numbers equal the reference nested-jvp recursion (`eom.engine._modified`) on a small
   nonlinear pytree loss (orders 1–5) and on a non-gradient field (Lotka–Volterra, orders 1–4),
   and dense-Jacobian brute force for F_1 … F_3.

Tolerance 1e-12 relative: both paths are exact up to rounding; they differ only in the order of
floating-point operations, which costs a few ulps per term (observed ≤ 5e-16), while a wrong or
missing tree changes the result at the 1e-2 level on these O(1)-curvature problems.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import pytest

import eom
from eom.engine import _bseries as bs
from eom.engine._modified import modified_terms

from ._helpers import (
    brute_field_terms,
    check_schedule_accounts,
    flat,
    lotka_volterra,
    nested_loss,
    nested_params,
    rel_err,
)

# Rooted trees as sorted tuples of children; • = ().
B = ()
FpF = (B,)  # F′F
FpFpF = (FpF,)  # F′F′F
FppFF = (B, B)  # F″(F, F)


def _c(*pairs) -> dict:
    return {tree: Fraction(c) for tree, c in pairs}


#: THEORY.md §2, "The same terms as elementary differentials" (exact rationals).
THEORY_TABLE = {
    1: _c((FpF, "-1/2")),
    2: _c((FpFpF, "1/3"), (FppFF, "1/12")),
    3: _c(
        ((FpFpF,), "-1/4"),  # F′F′F′F
        ((FppFF,), "-1/12"),  # F′F″(F, F)
        ((B, FpF), "-1/12"),  # F″(F, F′F)   (and no F‴(F, F, F) term)
    ),
    4: _c(
        (((FpFpF,),), "1/5"),  # F′F′F′F′F
        (((FppFF,),), "3/40"),  # F′F′F″(F, F)
        (((B, FpF),), "1/10"),  # F′F″(F, F′F)
        (((B, B, B),), "1/180"),  # F′F‴(F, F, F)
        ((FpF, FpF), "1/60"),  # F″(F′F, F′F)
        ((B, FpFpF), "1/20"),  # F″(F, F′F′F)
        ((B, FppFF), "1/120"),  # F″(F, F″(F, F))
        ((B, B, FpF), "-1/120"),  # F‴(F, F, F′F)
        ((B, B, B, B), "-1/720"),  # F⁗(F, F, F, F)
    ),
}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_tree_coefficients_equal_theory_table(n):
    assert bs.modified_combinations(4)[n] == THEORY_TABLE[n]


def test_tree_counts_and_sizes():
    """F_n is a combination of trees with exactly n + 1 nodes; F_0 = F (the single node)."""
    combos = bs.modified_combinations(5)
    assert combos[0] == {B: Fraction(1)}
    for n, comb in enumerate(combos[1:], start=1):
        assert comb and all(bs.num_nodes(t) == n + 1 for t in comb)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 6])
def test_schedule_accounts_for_every_tree_once(order):
    """GD's terms; the momentum terms' schedules are checked the same way in test_momentum."""
    check_schedule_accounts(bs.schedule(order), bs.modified_combinations(order)[1:])


def test_order4_schedule_shares_pushes():
    """The order-4 savings (benchmarks/README.md, floor analysis) stay in place: the two k = 1
    top-level trees F″(F, F′F′F) and F″(F, F″(F, F)) share one push (coefficients 1/20 and
    1/120, THEORY.md), the four k = 0 trees one more, and no tree needs a push deeper than k = 2
    (F‴(F, F, F′F))."""
    sched = bs.schedule(4)
    assert sched.fuse is None and sched.push_depth == 2 and sched.spine == 4
    bundles = dict(sched.bundles[3])
    assert dict(bundles[1]) == {FpFpF: Fraction(1, 20), FppFF: Fraction(1, 120)}
    assert len(bundles[0]) == 4 and set(bundles) == {0, 1}


def _tiny_loss(p):
    """Three parameters in a nested pytree, few primitives, every derivative order non-zero.

    The reference recursion's trace grows combinatorially with the order (≈45k equations at
    order 4, ≈300k at order 5, whatever the model), so the model is as small as possible.
    """
    a, b = p["a"], p["inner"]["b"]
    return jnp.sin(a[0] * b + a[1]) + 0.5 * jnp.vdot(a, a) + 0.3 * jnp.cosh(b)


TINY_PARAMS = {"a": jnp.array([0.7, -0.4]), "inner": {"b": jnp.array(0.3)}}


def _compiled(fn, params):
    compiled = jax.jit(fn).lower(params).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return compiled(params), cost["flops"]


@pytest.fixture(scope="module")
def reference4():
    """ξ_1 … ξ_4 of the tiny loss by the reference recursion (compiled once), and its FLOPs."""
    return _compiled(lambda p: eom.counter_terms(_tiny_loss, p, 4, method="reference"), TINY_PARAMS)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_counter_terms_equal_reference(order, reference4):
    ref, _ = reference4
    g, fast = jax.jit(lambda p: bs.grad_and_counter_terms(_tiny_loss, p, order))(TINY_PARAMS)
    assert rel_err(g, jax.grad(_tiny_loss)(TINY_PARAMS)) <= 1e-14
    assert len(fast) == order
    for k in range(order):
        assert jax.tree.structure(fast[k]) == jax.tree.structure(TINY_PARAMS)
        assert float(jnp.linalg.norm(flat(ref[k]))) > 1e-3  # non-trivial terms
        assert rel_err(fast[k], ref[k]) <= 1e-12, k + 1


def test_cheaper_than_reference_in_flops(reference4):
    """XLA's own FLOP count (deterministic, unlike timings on a shared machine): at order 4 the
    schedule does far less work than the plain recursion (measured ≈ 0.35× on the digits MLP,
    ≈ 0.2× here; 0.5 leaves room for backend changes while a lost sharing fails)."""
    _, ref_flops = reference4
    _, fast_flops = _compiled(lambda p: bs.grad_and_counter_terms(_tiny_loss, p, 4), TINY_PARAMS)
    assert fast_flops <= 0.5 * ref_flops


@pytest.mark.slow
def test_counter_terms_equal_reference_order5():
    """Order 5 (slow: the reference trace alone has ≈300k equations, minutes on 2 cores)."""
    ref, _ = _compiled(
        lambda p: eom.counter_terms(_tiny_loss, p, 5, method="reference"), TINY_PARAMS
    )
    _, fast = jax.jit(lambda p: bs.grad_and_counter_terms(_tiny_loss, p, 5))(TINY_PARAMS)
    for k in range(5):
        assert float(jnp.linalg.norm(flat(ref[k]))) > 1e-4
        assert rel_err(fast[k], ref[k]) <= 1e-12, k + 1


def test_pytree_model_with_arrays_matches_reference_order2():
    """Matrix-shaped leaves (nested dict/tuple) at order 2, where every tree is cheap."""
    params = nested_params()
    _, fast = jax.jit(lambda p: bs.grad_and_counter_terms(nested_loss, p, 2))(params)
    ref = jax.jit(lambda p: eom.counter_terms(nested_loss, p, 2, method="reference"))(params)
    for k in range(2):
        assert rel_err(fast[k], ref[k]) <= 1e-12, k + 1


def test_general_field_equals_reference_and_brute_force():
    """Non-gradient field (Lotka–Volterra: F′ not symmetric): orders 1–4 vs the reference,
    F_1 … F_3 vs dense Jacobians."""
    x = jnp.array([1.3, 0.7])
    fast = jax.jit(lambda y: bs.modified_terms_bseries(lotka_volterra, y, 4))(x)
    ref = jax.jit(lambda y: modified_terms(lotka_volterra, y, 4))(x)
    assert rel_err(fast[0], lotka_volterra(x)) <= 1e-15
    for k in range(4):
        assert rel_err(fast[k + 1], ref[k]) <= 1e-12, k + 1
    for k, want in enumerate(brute_field_terms(lotka_volterra, x)):
        # Dense Jacobians contract in a different order: still rounding-level agreement.
        assert rel_err(fast[k + 1], want) <= 1e-12, k + 1


def test_lower_orders_are_prefixes():
    """The order-2 call returns the first two terms of the order-4 call (same schedule logic
    at every order, different fusion choices)."""
    _, low = jax.jit(lambda p: bs.grad_and_counter_terms(_tiny_loss, p, 2))(TINY_PARAMS)
    _, high = jax.jit(lambda p: bs.grad_and_counter_terms(_tiny_loss, p, 4))(TINY_PARAMS)
    for k in range(2):
        assert rel_err(low[k], high[k]) <= 1e-13


def test_order_zero_is_the_field():
    x = jnp.array([0.5, 2.0])
    (f0,) = bs.modified_terms_bseries(lotka_volterra, x, 0)
    assert rel_err(f0, lotka_volterra(x)) == 0.0


def _trees_up_to(nodes: int) -> list:
    """Every rooted tree with at most `nodes` nodes (canonical form), by grafting."""
    trees, frontier = {B}, {B}
    for _ in range(nodes - 1):
        frontier = {t for tau in frontier for t in bs.graft(B, tau)}
        trees |= frontier
    return sorted(trees, key=lambda t: (bs.num_nodes(t), t))


def _elementary(field, x, tau):
    """F(τ)(x) = F^{(m)}(x)[F(τ_1)(x), …, F(τ_m)(x)] by m nested jvps (the definition)."""
    children = [_elementary(field, x, c) for c in tau]
    fn = field
    for u in children:
        fn = (lambda fn, u: lambda y: jax.jvp(fn, (y,), (u,))[1])(fn, u)
    return fn(x)


def _random_terms():
    """Random rational coefficients on all 17 trees with ≤ 5 nodes in F_1 (two of them zero),
    an empty F_2, and only some trees in F_3, F_4."""
    import random

    rng = random.Random(13)
    trees = _trees_up_to(5)
    assert len(trees) == 17
    first = {t: Fraction(rng.randint(1, 9) * rng.choice((-1, 1)), rng.randint(1, 9))
             for t in trees}  # fmt: skip
    first[FpF] = first[(B, B, B, B)] = Fraction(0)
    return (
        first,
        {},  # every coefficient zero: F_2 = 0
        {t: Fraction(rng.randint(1, 9), 7) for t in trees if bs.num_nodes(t) == 4},
        {(B, B, B): Fraction(0), (FpFpF,): Fraction(1, 3), ((B, B, B),): Fraction(-2, 5)},
    )


#: Momentum's shape at order 3 (F‴(F,F,F) present): the top spine level is fused.
FUSED3 = (
    {FpF: Fraction(-3, 4)},
    {FpFpF: Fraction(1, 3), FppFF: Fraction(1, 5)},
    {(B, B, B): Fraction(2, 9), (B, FpF): Fraction(-1, 7), (FpFpF,): Fraction(1, 4),
     (FppFF,): Fraction(3, 11)},
)


@pytest.mark.parametrize("case", ["random", "fused3"])
def test_any_combination_equals_its_definition(case):
    """`combination_schedule` on terms that are not GD's — trees GD never needs (F‴(F,F,F)…),
    trees of several sizes in one term, zero coefficients, an empty term; and momentum's order-3
    shape, where the top spine level is fused — against the elementary differentials evaluated
    one by one from their definition (Lotka–Volterra, F′ not symmetric)."""
    terms = _random_terms() if case == "random" else FUSED3
    x = jnp.array([1.3, 0.7])
    sched = bs.combination_schedule(bs.freeze(terms))
    assert (sched.fuse is not None) == (case == "fused3")
    check_schedule_accounts(sched, terms)
    v, got = jax.jit(lambda y: bs.evaluate_schedule(lotka_volterra, y, sched))(x)
    assert rel_err(v, lotka_volterra(x)) == 0.0
    for n, comb in enumerate(terms):
        want = sum((float(c) * _elementary(lotka_volterra, x, t) for t, c in comb.items()),
                   jnp.zeros(2))  # fmt: skip
        if not any(comb.values()):
            assert float(jnp.max(jnp.abs(got[n]))) == 0.0
        else:
            assert float(jnp.linalg.norm(want)) > 1e-2  # non-trivial
            assert rel_err(got[n], want) <= 1e-12, n + 1
