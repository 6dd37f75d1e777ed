"""Bounded memoization of compiled functions built from a user's loss.

A function such as `hvp_fn(loss)` is compiled once per loss and reused along a run, so it is
memoized on the loss's identity. The loss closes over its data set, and the compiled program keeps
it too: an unbounded cache (`functools.cache`) would keep every data set a notebook ever built alive
for the life of the process. `loss_cache` keeps the `LOSS_CACHE_SIZE` most recently used entries
per builder: a loop over many losses holds at most that many, and reusing one loss along a run
never recompiles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

#: Entries kept per memoized builder (least recently used evicted first).
LOSS_CACHE_SIZE = 8

F = TypeVar("F", bound=Callable)


def loss_cache(fn: F) -> F:
    """`functools.lru_cache(maxsize=LOSS_CACHE_SIZE)`: memoize on (loss, hashable args).

    >>> calls = []
    >>> @loss_cache
    ... def build(loss, k):
    ...     calls.append(k)
    ...     return k
    >>> f = lambda p: p
    >>> build(f, 1), build(f, 1), len(calls)
    (1, 1, 1)
    """
    return functools.lru_cache(maxsize=LOSS_CACHE_SIZE)(fn)  # type: ignore[return-value]
