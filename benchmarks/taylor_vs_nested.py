"""Taylor mode (`jax.experimental.jet`) against nested `jax.jvp` for F^{(K)}(θ)[v, …, v].

The counter terms' most expensive pieces are derivatives of F = −∇L along one repeated vector
v = F(θ) (the "spine" of `eom.engine._bseries`). Taylor mode is the textbook tool for them; this
script measures whether it beats K nested `jvp`s (whose duplicated sub-expressions XLA merges)
on the digits MLP: XLA FLOP counts (load-independent), compile time and CPU time per call,
all relative to one gradient.

    python benchmarks/taylor_vs_nested.py [--width 128] [--max-order 4]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np
from jax.experimental.jet import jet, zero_term
from jax.flatten_util import ravel_pytree

import eom  # noqa: F401  (float64)
from eom.problems import make_problem


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--max-order", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    problem = make_problem("mlp", "digits", width=args.width)
    x0, unravel = ravel_pytree(problem.params0)
    grad = jax.grad(lambda x: problem.loss(unravel(x)))

    def F(x):
        return -grad(x)

    def by_jet(K):
        def f(x):
            v = F(x)
            series = (v,) + (zero_term,) * (K - 1)
            return jet(F, (x,), (series,), factorial_scaled=False)[1][-1]

        return f

    def by_nested_jvp(K):
        def f(x):
            v = F(x)
            g = F
            for _ in range(K):
                g = functools.partial(lambda g, y: jax.jvp(g, (y,), (v,))[1], g)
            return g(x)

        return f

    def stats(fn):
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(x0).compile()
        secs = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        best = np.inf
        for _ in range(args.repeats):
            c0 = time.process_time()
            jax.block_until_ready(compiled(x0))
            best = min(best, time.process_time() - c0)
        return cost["flops"], secs, best

    f_g, _, c_g = stats(grad)
    print(f"digits MLP width {args.width}: {x0.size} parameters; ratios to one gradient")
    print("| K | jet FLOPs | nested FLOPs | jet cpu | nested cpu | jet compile | nested compile |")
    print("|---|---|---|---|---|---|---|")
    for K in range(1, args.max_order + 1):
        fj, sj, cj = stats(by_jet(K))
        fn, sn, cn = stats(by_nested_jvp(K))
        print(
            f"| {K} | {fj / f_g:.2f} | {fn / f_g:.2f} | {cj / c_g:.2f} | {cn / c_g:.2f} | "
            f"{sj:.1f} | {sn:.1f} |"
        )


if __name__ == "__main__":
    main()
