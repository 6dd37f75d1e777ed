"""A run folder: settings, metrics written as the run goes, a resumable checkpoint, results.

Layout of `runs/<name>/`:

- `config.json`: every setting, package versions, the eom version, git commit, dtype and
  fingerprints of the data and of a user model's factory;
- `metrics.csv`: one row per recorded step, appended after every chunk;
- `state.npz`: the checkpoint to resume from (flat arrays, no pickle);
- `results.json`: the summary (status `running` → `complete`, or `diverged`/`failed`/
  `interrupted`);
- `figures/*.png` and `report.html` (written by `eom.report`);
- `.eom.lock`: held (an OS file lock, released when the process dies) while a process writes.

Rows are written before the checkpoint; on resume, rows past the checkpoint are dropped, so an
interruption at any moment loses nothing that cannot be recomputed identically. Every other
file is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import filelock
import numpy as np

from .._errors import EomError
from .._version import __version__

FILES = ("config.json", "metrics.csv", "state.npz", "results.json", "report.html")
#: Where `--overwrite` keeps the previous run until the new one has written its first chunk.
PREVIOUS = ".previous"
LOCK = ".eom.lock"


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


def _io_error(path: Path, exc: OSError) -> EomError:
    return EomError(
        f"cannot write {path}: {exc.strerror or exc}. Check that the folder is writable (and that "
        "no part of its path is a regular file), or choose another --out."
    )


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` all at once: a temporary file beside it, fsync, rename.

    >>> import pathlib, tempfile
    >>> import eom
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> eom.experiments.atomic_write(path, "all or nothing")
    >>> path.read_text()
    'all or nothing'
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _io_error(path, exc) from None


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EomError(
            f"cannot read {path}: {exc}. The run folder is damaged; pass --overwrite to start "
            "afresh, or choose another --out."
        ) from None
    if not isinstance(data, dict):
        raise EomError(f"{path} does not hold a JSON object; pass --overwrite to start afresh.")
    return data


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


def dtype_in_use() -> str:
    """'float64' when JAX's x64 mode is on, else 'float32' (e.g. with EOM_NO_X64=1).

    >>> import eom
    >>> eom.experiments.dtype_in_use()  # importing eom turns on float64
    'float64'
    """
    import jax

    return "float64" if jax.config.read("jax_enable_x64") else "float32"


def _settings_diff(old: dict, new: dict, defaults: dict) -> dict:
    """Settings that differ; a key the old run did not record counts as its default."""
    diff = {}
    for k, v in _jsonable(new).items():
        if k in ("name", "out", "overwrite", "devices"):  # devices: equal to rounding
            continue
        before = old.get(k, _jsonable(defaults.get(k)))
        if before != v:
            diff[k] = (before, v)
    return diff


class RunDir:
    """One run folder (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.figures = self.path / "figures"
        self._lock: filelock.BaseFileLock | None = None

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
        return self.config_path.is_file()

    # -- lock --------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the folder's lock (exit 2 naming the holder if another process has it).

        The lock is an OS lock (fcntl/msvcrt via `filelock`): the OS releases it when the holder
        dies, so a killed run never leaves a stale lock behind."""
        self._check_folder()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error(self.path, exc) from None
        lock = filelock.FileLock(self.path / LOCK, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise EomError(
                f"{self.path} is in use by another eom process ({self._holder()}); wait for it "
                "to finish (or stop it), or choose another --out."
            ) from None
        except OSError as exc:
            raise _io_error(self.path / LOCK, exc) from None
        self._lock = lock
        owner = f"pid {os.getpid()} on {socket.gethostname()}, started {_dt.datetime.now():%c}"
        atomic_write(self.path / (LOCK + ".owner"), owner)

    def _holder(self) -> str:
        try:
            return (self.path / (LOCK + ".owner")).read_text().strip()
        except OSError:
            return "holder unknown"

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def is_locked_by_other(self) -> bool:
        """True when some other live process holds this folder's lock."""
        if self._lock is not None or not (self.path / LOCK).exists():
            return False
        probe = filelock.FileLock(self.path / LOCK, timeout=0)
        try:
            probe.acquire()
        except (filelock.Timeout, OSError):
            return True
        probe.release()
        return False

    def _check_folder(self) -> None:
        for p in (self.path, *self.path.parents):
            if p.exists() and not p.is_dir():
                raise EomError(f"--out {self.path}: {p} is a file, not a folder; give a folder "
                               "path.")

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self, settings: dict, *, overwrite: bool, command: str,
                fingerprints: dict | None = None, defaults: dict | None = None) -> bool:
        """Create the folder or check it for resuming (hold the lock first). Returns True when
        resuming. With `overwrite`, the old run is moved aside (see `commit`/`restore`)."""
        self._check_folder()
        if (self.path / PREVIOUS).is_dir():
            self.restore()  # an earlier --overwrite never got to its first chunk
        if overwrite and self.exists():
            self._set_aside()
        if self.exists():
            old = read_json(self.config_path)
            self._check_resume(old, settings, command, fingerprints or {}, defaults or {})
            return True
        for name in FILES:  # debris of a run that never wrote its config
            (self.path / name).unlink(missing_ok=True)
        write_json(self.config_path, {
            "command": command, "settings": settings, "versions": package_versions(),
            "eom_version": __version__, "git_commit": git_commit(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "dtype": dtype_in_use(), "float64": dtype_in_use() == "float64",
            "fingerprints": fingerprints or {},
        })
        return False

    def _check_resume(self, old, settings, command, fingerprints, defaults) -> None:
        if old.get("command") != command:
            raise EomError(
                f"{self.path} holds an `eom {old.get('command')}` run, not `eom {command}`; "
                "choose another --out, or pass --overwrite to replace it."
            )
        diff = _settings_diff(old.get("settings") or {}, settings, defaults)
        if diff:
            lines = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise EomError(
                f"{self.path} already holds a run with different settings ({lines}). Rerun "
                "with the same settings to resume it, pass --overwrite to start afresh, or "
                "choose another --out."
            )
        old_fp = old.get("fingerprints") or {}
        changed = [k for k, v in fingerprints.items() if k in old_fp and old_fp[k] != v]
        if changed:
            what = " and ".join({"data": "the data (X, y)", "model": "the model factory's source"}
                                .get(k, k) for k in changed)
            raise EomError(
                f"{self.path} was started on different inputs: {what} changed since. Resuming "
                "would splice two different runs; restore the original, pass --overwrite to "
                "start afresh, or choose another --out."
            )
        if old.get("dtype", "float64") != dtype_in_use():
            raise EomError(
                f"{self.path} was computed in {old.get('dtype', 'float64')} but this process "
                f"uses {dtype_in_use()} (EOM_NO_X64); resume it with the same precision."
            )

    def _set_aside(self) -> None:
        prev = self.path / PREVIOUS
        prev.mkdir()
        for name in (*FILES, "figures"):
            if (self.path / name).exists():
                os.replace(self.path / name, prev / name)

    def restore(self) -> None:
        """Put the run set aside by `--overwrite` back (the new one never wrote a chunk)."""
        prev = self.path / PREVIOUS
        if not prev.is_dir():
            return
        for name in (*FILES, "figures"):
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
            if (prev / name).exists():
                os.replace(prev / name, p)
        shutil.rmtree(prev, ignore_errors=True)

    def commit(self) -> None:
        """The new run has written its first chunk: the run set aside is deleted now."""
        shutil.rmtree(self.path / PREVIOUS, ignore_errors=True)

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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        if new:
            w.writerow(keys)
        for i in range(n):
            w.writerow([_fmt(columns[k][i]) for k in keys])
        try:
            with open(self.metrics_path, "a", newline="") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _io_error(self.metrics_path, exc) from None

    def read_rows(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of metrics.csv; a damaged file is an `EomError`."""
        if not self.metrics_path.exists():
            return [], []
        try:
            text = self.metrics_path.read_text()
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise self._corrupt(f"it cannot be read ({exc})") from None
        if rows and text and not text.endswith("\n"):
            rows.pop()  # the partial last line of an append cut short by a kill
        if not rows:
            return [], []
        header, body = rows[0], [r for r in rows[1:] if r]
        for i, r in enumerate(body):
            if len(r) != len(header):
                raise self._corrupt(f"row {i + 2} has {len(r)} fields, the header {len(header)}")
        return header, body

    def _corrupt(self, what: str) -> EomError:
        return EomError(
            f"{self.metrics_path} is damaged: {what}. Pass --overwrite to start the run afresh "
            "(or restore the file from a backup)."
        )

    def write_rows(self, header: list[str], rows: list[list[str]]) -> None:
        """Replace metrics.csv by these rows (atomically); no rows: remove it."""
        if not rows:
            self.metrics_path.unlink(missing_ok=True)
            return
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerows([header, *rows])
        atomic_write(self.metrics_path, buf.getvalue())

    def read_metrics(self) -> dict[str, np.ndarray]:
        header, body = self.read_rows()
        out = {}
        for j, k in enumerate(header):
            col = [r[j] for r in body]
            try:
                out[k] = np.array([float(x) if x != "" else np.nan for x in col])
            except ValueError:
                out[k] = np.array(col)
        return out

    def keep_rows(self, keep) -> None:
        """Keep only the rows `keep(row: dict) -> bool` accepts (used to truncate to a
        checkpoint on resume)."""
        header, body = self.read_rows()
        if not header:
            return
        try:
            kept = [r for r in body if keep(dict(zip(header, r, strict=True)))]
        except (KeyError, ValueError) as exc:
            raise self._corrupt(f"a row does not parse ({exc})") from None
        if len(kept) != len(body):
            self.write_rows(header, kept)

    def truncate_metrics(self, last_step: int) -> None:
        """Drop rows recorded after `last_step` (written before a checkpoint that never came)."""
        self.keep_rows(lambda r: float(r["step"]) <= last_step)

    # -- checkpoint --------------------------------------------------------------------------
    def save_state(self, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(self.state_path, buf.getvalue())

    def load_state(self) -> dict[str, np.ndarray] | None:
        if not self.state_path.exists():
            return None
        try:
            with np.load(self.state_path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise EomError(
                f"{self.state_path} (the checkpoint) is damaged: {type(exc).__name__}: {exc}. "
                "Pass --overwrite to start the run afresh."
            ) from None

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
