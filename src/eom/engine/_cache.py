r"""A small, bounded cache for functions built from a user's loss.

Jitted runners are built once per loss function (so repeated `compare` calls and sweeps over the
learning rate do not recompile). Keying an unbounded `functools.cache` on the loss would keep
every loss — and the dataset it closes over — alive for the life of the process. Here at most
`MAX_LOSSES` losses are held, least recently used first out; everything built from an evicted
loss is dropped with it, so a notebook that builds many losses stays bounded in memory.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: How many distinct losses keep their compiled runners alive at once.
MAX_LOSSES = 4

_lock = threading.RLock()
# id(loss) -> (loss, {subkey: value}, [objects kept alive because their key is their id])
_entries: OrderedDict[int, tuple[Any, dict, list]] = OrderedDict()


def _subkey(args: tuple, keep: list) -> tuple:
    out = []
    for a in args:
        try:
            hash(a)
            out.append(a)
        except TypeError:  # an unhashable option (an optimizer holding arrays): key by identity
            keep.append(a)
            out.append(("id", id(a)))
    return tuple(out)


def loss_cache(fn: Callable) -> Callable:
    """Cache `fn(loss, *args)` per loss in the shared bounded LRU (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(loss, *args):
        with _lock:
            entry = _entries.get(id(loss))
            if entry is None or entry[0] is not loss:
                entry = (loss, {}, [])
                _entries[id(loss)] = entry
            _entries.move_to_end(id(loss))
            key = (fn.__qualname__, *_subkey(args, entry[2]))
            if key in entry[1]:
                return entry[1][key]
            value = fn(loss, *args)
            entry[1][key] = value
            _entries.move_to_end(id(loss))
            while len(_entries) > MAX_LOSSES:
                _entries.popitem(last=False)
            return value

    return wrapper


def clear_loss_cache() -> None:
    """Drop every cached runner (frees what they hold; later calls recompile)."""
    with _lock:
        _entries.clear()
