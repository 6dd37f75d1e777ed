"""A run folder: settings, metrics written as the run goes, a resumable checkpoint, results.

Layout of `runs/<name>/`:

- `config.json`: every setting, package versions, the eom version and git commit;
- `metrics.csv`: one row per recorded step, appended after every chunk;
- `state.npz`: the checkpoint to resume from (flat float64 arrays, no pickle);
- `results.json`: the summary (status `running` → `complete`, or `diverged`/`failed`);
- `figures/*.png` and `report.html`.

Rows are written before the checkpoint; on resume, rows past the checkpoint are dropped, so an
interruption at any moment loses nothing that cannot be recomputed identically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from .._errors import EomError
from .._version import __version__

FILES = ("config.json", "metrics.csv", "state.npz", "results.json", "report.html")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EomError(f"cannot read {path}: {exc}. Is this a complete eom run folder?") from None


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "eom": __version__}
    names = ("jax", "jaxlib", "diffrax", "equinox", "numpy", "optax", "scikit-learn", "mnist1d")
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_name() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class RunDir:
    """One run folder (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.figures = self.path / "figures"

    # -- files -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def state_path(self) -> Path:
        return self.path / "state.npz"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    def exists(self) -> bool:
        return self.config_path.exists()

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self, settings: dict, *, overwrite: bool, command: str) -> bool:
        """Create the folder or check it for resuming. Returns True when resuming."""
        if self.path.exists() and not self.path.is_dir():
            raise EomError(f"--out {self.path} is a file; give a folder path.")
        if overwrite and self.path.exists():
            for name in FILES:
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.figures, ignore_errors=True)
        if self.exists():
            old = read_json(self.config_path)
            if old.get("command") != command:
                raise EomError(
                    f"{self.path} holds an `eom {old.get('command')}` run, not `eom {command}`; "
                    "choose another --out, or pass --overwrite to replace it."
                )
            diff = {
                k: (old["settings"].get(k), v)
                for k, v in _jsonable(settings).items()
                if k not in ("name", "out", "overwrite") and old["settings"].get(k) != v
            }
            if diff:
                lines = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
                raise EomError(
                    f"{self.path} already holds a run with different settings ({lines}). Rerun "
                    "with the same settings to resume it, pass --overwrite to start afresh, or "
                    "choose another --out."
                )
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(
            self.config_path,
            {
                "command": command,
                "settings": settings,
                "versions": package_versions(),
                "eom_version": __version__,
                "git_commit": git_commit(),
                "created": _dt.datetime.now().isoformat(timespec="seconds"),
                "float64": True,
            },
        )
        return False

    def update_config(self, **extra) -> None:
        cfg = read_json(self.config_path)
        cfg.update(extra)
        write_json(self.config_path, cfg)

    # -- metrics -----------------------------------------------------------------------------
    def append_rows(self, columns: dict[str, np.ndarray]) -> None:
        """Append one row per recorded step (the header is written with the first rows)."""
        keys = list(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        new = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(keys)
            for i in range(n):
                w.writerow([_fmt(columns[k][i]) for k in keys])
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> dict[str, np.ndarray]:
        if not self.metrics_path.exists():
            return {}
        with open(self.metrics_path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return {}
        header, body = rows[0], rows[1:]
        out = {}
        for j, k in enumerate(header):
            col = [r[j] if j < len(r) else "" for r in body]
            try:
                out[k] = np.array([float(x) if x != "" else np.nan for x in col])
            except ValueError:
                out[k] = np.array(col)
        return out

    def truncate_metrics(self, last_step: int) -> None:
        """Drop rows recorded after `last_step` (written before a checkpoint that never came)."""
        if not self.metrics_path.exists():
            return
        with open(self.metrics_path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and float(r[0]) <= last_step]
        tmp = self.metrics_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, self.metrics_path)

    # -- checkpoint --------------------------------------------------------------------------
    def save_state(self, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.path / "state.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.state_path)

    def load_state(self) -> dict[str, np.ndarray] | None:
        if not self.state_path.exists():
            return None
        with np.load(self.state_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # -- results -----------------------------------------------------------------------------
    def write_results(self, results: dict) -> None:
        write_json(self.results_path, results)

    def read_results(self) -> dict:
        return read_json(self.results_path) if self.results_path.exists() else {}


def _fmt(x) -> str:
    x = np.asarray(x).item()
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, float):
        return repr(x)
    return str(x)
