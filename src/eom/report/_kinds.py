"""The registry's table (kind → reporter) and how a folder's status is read, apart from the
reporters so that a reporter (the paper's) can use them without an import cycle."""

from __future__ import annotations

from collections.abc import Callable

from ..experiments import RunDir
from ..experiments._runner import INTERRUPTED

Reporter = Callable[[RunDir, dict, dict], tuple[str, list]]
#: Filled by `_registry` (and `register`).
REPORTERS: dict[str, Reporter] = {}


def effective_results(rd: RunDir) -> dict:
    """results.json, with `running` read as `interrupted` when no process holds the lock."""
    results = rd.read_results()
    if results.get("status") == "running" and not rd.is_locked_by_other() and rd._lock is None:
        results = {**results, "status": "interrupted",
                   "message": "The process writing this run stopped without finishing (killed?). "
                              + INTERRUPTED}
    return results
