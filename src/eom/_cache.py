"""JAX's persistent compilation cache for eom's command line and tests.

Compiling the ODE solver around a counter-term field takes seconds; the executables are cached
on disk by the hash of their program, so a second run of the same model (or a test that builds
the same tiny model again) skips compilation. Location: `$EOM_CACHE_DIR`, else
`~/.cache/eom/jax`; `EOM_CACHE_DIR=off` disables it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache (returns the folder, or None if disabled)."""
    where = path or os.environ.get("EOM_CACHE_DIR") or Path.home() / ".cache" / "eom" / "jax"
    if str(where).lower() in ("off", "0", "none", ""):
        return None
    where = Path(where)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where
