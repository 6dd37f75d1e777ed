"""Timing that survives a loaded machine: cold compiles, XLA's own counts, interleaved minima.

On a shared machine a function timed alone picks up whatever else runs at that moment;
sequential timing gave 13–22× for one order-2 field whose interleaved ratio is ~6×. So every
ratio here is measured *interleaved*: the functions are called round-robin, each call timed, and
each function's minimum (the least-disturbed call) kept; ratios of minima then compare like with
like. XLA's FLOP count does not depend on the load at all and is reported alongside.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax


@contextlib.contextmanager
def no_compilation_cache():
    """Disable JAX's persistent compilation cache inside the block (for cold compile times)."""
    try:
        old = jax.config.jax_enable_compilation_cache
    except AttributeError:  # pragma: no cover - very old jax
        yield
        return
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", old)


def compile_fn(fn: Callable, *args, cold: bool = True) -> tuple[Any, float]:
    """`jax.jit(fn)` lowered and compiled for `args`; returns (compiled, seconds).

    `cold`: clear JAX's in-memory caches and bypass the persistent one first, so the seconds
    are tracing + lowering + XLA compilation from scratch.
    """
    ctx = no_compilation_cache() if cold else contextlib.nullcontext()
    with ctx:
        if cold:
            jax.clear_caches()
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        return compiled, time.perf_counter() - t0


def xla_cost(compiled) -> tuple[float, float]:
    """(FLOPs, temporary buffer bytes) of a compiled program, from XLA's own analyses."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", math.nan))
    except Exception:  # noqa: BLE001 - some backends have no cost model
        flops = math.nan
    try:
        temp = float(getattr(compiled.memory_analysis(), "temp_size_in_bytes", math.nan))
    except Exception:  # noqa: BLE001
        temp = math.nan
    return flops, temp


def call_time(fn: Callable, args: Sequence) -> tuple[float, float]:
    """(wall, CPU) seconds of one call, waiting for the result."""
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, time.process_time() - c0


def interleaved_minima(
    calls: Mapping[str, tuple[Callable, Sequence]], *, repeats: int = 25
) -> dict[str, tuple[float, float]]:
    """Call every `fn(*args)` once per round, `repeats` rounds, round-robin; per name the
    minimum (wall, CPU) seconds over its calls. One warm-up call each first."""
    for fn, args in calls.values():
        call_time(fn, args)
    best = {name: (math.inf, math.inf) for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            w, c = call_time(fn, args)
            bw, bc = best[name]
            best[name] = (min(bw, w), min(bc, c))
    return best


def time_ratio(
    fn: Callable,
    args: Sequence,
    base: Callable,
    base_args: Sequence,
    *,
    budget: float,
    max_rep: int,
    min_rep: int = 3,
) -> tuple[float, float, float, float]:
    """Interleaved timing of `fn(*args)` against `base(*base_args)`.

    Returns `(wall ratio, cpu ratio, fn wall seconds, base wall seconds)`, each time the minimum
    over repeats: at least `min_rep`, then more while the time spent is under `budget` seconds,
    at most `max_rep`.
    """
    call_time(fn, args), call_time(base, base_args)  # warm caches
    best = [math.inf] * 4
    rounds, spent = 0, 0.0
    while rounds < max_rep and (rounds < min_rep or spent < budget):
        w, c = call_time(fn, args)
        bw, bc = call_time(base, base_args)
        best = [min(best[0], w), min(best[1], c), min(best[2], bw), min(best[3], bc)]
        rounds += 1
        spent += w + bw
    return best[0] / best[2], best[1] / max(best[3], 1e-12), best[0], best[2]
