"""The machine a benchmark ran on, and the resident memory of this process.

`psutil` is optional (the `bench` extra): without it the resident set size is read from
`/proc/self/statm` (Linux), else the peak from `resource.getrusage` (POSIX), else it is NaN.
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from typing import Any

import jax


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load average, JAX version and devices of this process."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "load_avg_1_5_15": load_average(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else "none",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def load_average() -> tuple[float, float, float]:
    """`os.getloadavg()` rounded (NaNs where the platform has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return (math.nan,) * 3


def _statm_rss() -> float:
    with open("/proc/self/statm") as fh:
        return float(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rusage_peak() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB else


def rss_source() -> str:
    """Which way `rss_bytes` reads memory here: `psutil`, `proc`, `rusage-peak` or `none`."""
    try:
        import psutil  # noqa: F401

        return "psutil"
    except ImportError:
        pass
    try:
        _statm_rss()
        return "proc"
    except (OSError, ValueError, IndexError):
        pass
    try:
        _rusage_peak()
        return "rusage-peak"
    except (ImportError, OSError):
        return "none"


def rss_bytes(source: str | None = None) -> float:
    """Resident set size of this process in bytes (see the module docstring for the fallbacks).

    With `rusage-peak` this is the peak so far (it never falls), which still bounds growth.
    """
    source = source or rss_source()
    if source == "psutil":
        import psutil

        return float(psutil.Process().memory_info().rss)
    if source == "proc":
        return _statm_rss()
    if source == "rusage-peak":
        return _rusage_peak()
    return math.nan


class PeakRSS:
    """Peak resident set size of this process, sampled every 5 ms in a background thread.

    `with PeakRSS() as m: ...` then `m.peak - m.base` is the growth in bytes; `m.source` says how
    memory was read.
    """

    def __init__(self, source: str | None = None, interval: float = 0.005):
        self.source = source or rss_source()
        self.interval = interval
        self.peak = self.base = rss_bytes(self.source)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.source))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.source))
