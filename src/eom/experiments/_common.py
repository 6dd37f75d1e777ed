"""What every experiment shares: the problem, λ_max(θ_0) and the learning rate derived from it,
the stability check before any ODE solve, input fingerprints, and the store (a folder or a
temporary one for in-memory runs)."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .._errors import EomError
from .._version import __version__
from ._store import RunDir, dtype_in_use

#: A progress callback: `progress(done, total, what)` (units depend on the experiment: GD steps,
#: learning rates, …; `total` None while unknown).
ProgressFn = Callable[[int, "int | None", str], None]
#: GD is stable on a quadratic only while η·λ_max < 2 (THEORY.md §6).
STABILITY_LIMIT = 2.0


def build_problem(s, *, clamp_subset: bool = False):
    """The settings' problem. With `clamp_subset`, a `subset` larger than the data set means
    "all of it" (used where the subset is a default the user did not choose).

    >>> import eom
    >>> problem = eom.experiments.build_problem(eom.experiments.RunSettings("linear", subset=16))
    >>> problem.n_params  # 64 pixels × 10 classes + 10 biases
    650
    """
    from ..problems import make_problem, open_dataset

    subset = getattr(s, "subset", None)
    if clamp_subset and subset is not None:
        data = open_dataset(s.dataset, seed=s.seed)
        subset = None if subset >= data.n_samples else subset
        return make_problem(s.model, data, seed=s.seed, subset=subset, **s.model_kwargs())
    return make_problem(s.model, s.dataset, seed=s.seed, subset=subset, **s.model_kwargs())


def problem_on_devices(s, *, clamp_subset: bool = False):
    """`(problem, devices)`: the settings' problem with its loss split over `s.devices` local
    devices (default all; see `eom.experiments._devices`) and the record of those devices."""
    from ._devices import plan_devices, shard_problem

    problem = build_problem(s, clamp_subset=clamp_subset)
    plan = plan_devices(s, problem)
    return shard_problem(problem, s, plan), plan


def record_devices(rd: RunDir, devices: dict, log) -> None:
    """Write the devices into config.json; a resume on another device count is allowed (the
    results agree to rounding, not bit for bit) and noted in `devices_history`."""
    from ._devices import describe
    from ._store import read_json

    cfg = read_json(rd.config_path)
    old = cfg.get("devices")
    history = list(cfg.get("devices_history") or ([old] if old else []))
    if old and old.get("count") != devices.get("count"):
        log(f"resuming on {describe(devices)}; this run started on {describe(old)}: the "
            "results agree to rounding, not bit for bit.")
    if not history or history[-1] != devices:
        history.append(devices)
    rd.update_config(devices=devices, devices_history=history)


#: Lanczos residual tolerance of λ_max(θ_0) for choosing the learning rate and the stability
#: check: ‖Hy − θy‖ ≤ 1e-3·θ bounds |θ − λ_max| ≤ 1e-3·θ (and ≤ ‖r‖²/gap, far smaller when the
#: top eigenvalue is separated), while the learning rate keeps 2 significant digits. On the
#: 1M-parameter MLP: 29 HVPs instead of 75–80 at 1e-10, same learning rate, λ_max off by 4e-6.
LAMBDA_TOL = 1e-3


def lambda_max(problem, weight_decay: float = 0.0) -> float:
    """λ_max(θ_0): the largest Hessian eigenvalue of L + λ/2‖θ‖² at the start (Lanczos to a
    relative residual `LAMBDA_TOL`, so it is accurate to ≤ 0.1 %).

    >>> import eom
    >>> problem = eom.experiments.build_problem(eom.experiments.RunSettings("linear", subset=16))
    >>> round(eom.experiments.lambda_max(problem), 2)
    2.61
    """
    from ..analysis import sharpness

    return float(sharpness(problem.loss, problem.params0, weight_decay=weight_decay,
                           tol=LAMBDA_TOL).eigenvalues[0])


def lr_for_target(lam: float, target: float) -> float:
    """The learning rate with η·λ_max = `target`, rounded to 2 significant digits.

    >>> import eom
    >>> eom.experiments.lr_for_target(2.5, target=0.2)  # 0.2 / 2.5
    0.08
    """
    if not (np.isfinite(lam) and lam > 0):
        raise EomError(
            f"λ_max(θ_0) = {lam:.3g} ≤ 0, so no learning rate can be derived from it; "
            "pass --lr explicitly."
        )
    return float(f"{target / lam:.2g}")


def choose_lr(problem, target: float, weight_decay: float) -> tuple[float, float]:
    """lr with lr·λ_max(θ_0) = target (2 significant digits), and λ_max(θ_0).

    >>> import eom
    >>> problem = eom.experiments.build_problem(eom.experiments.RunSettings("linear", subset=16))
    >>> lr, lam = eom.experiments.choose_lr(problem, target=0.2, weight_decay=0.0)
    >>> lr, round(lr * lam, 2)
    (0.077, 0.2)
    """
    lam = lambda_max(problem, weight_decay)
    return lr_for_target(lam, target), lam


def check_stable(lr: float, lam: float, *, allow: bool = False, optimizer=None) -> None:
    """Refuse (before any ODE solve) a learning rate with η·λ_max(θ_0) at or above the discrete
    method's stability limit (`optimizer.stability_limit()`; GD, `optimizer=None`: 2): the
    method is unstable there and no continuous model describes it; `allow` lets the caller run
    GD alone instead.

    >>> import eom
    >>> eom.experiments.check_stable(0.1, 2.5)  # η·λ_max = 0.25: fine
    >>> eom.experiments.check_stable(1.0, 2.5)
    Traceback (most recent call last):
    eom._errors.EomError: η·λ_max(θ_0) = 2.5 ≥ 2 ...
    >>> hb = eom.engine.HeavyBall(beta=0.9)  # heavy ball is stable up to 2(1+β) = 3.8
    >>> eom.experiments.check_stable(1.0, 2.5, optimizer=hb)
    """
    limit = STABILITY_LIMIT if optimizer is None else float(optimizer.stability_limit())
    if allow or not np.isfinite(lam) or lr * lam < limit:
        return
    largest = limit / lam
    if optimizer is None or optimizer.name in ("gd", "sgd"):
        what, fix = "gradient descent", (", or pass --allow-unstable to run GD alone and record "
                                         "where it goes")
        if optimizer is not None and optimizer.name == "sgd":
            what, fix = "SGD (per step, on the full loss)", ""
    else:
        beta = float(getattr(optimizer, "beta", 0.0))
        nesterov = bool(getattr(optimizer, "nesterov", False))
        what = (f"Nesterov momentum (β = {beta:g}: stable for η·λ < (2+2β)/(1+2β))" if nesterov
                else f"heavy-ball momentum (β = {beta:g}: stable for η·λ < 2(1+β))")
        fix = ""
    raise EomError(
        f"η·λ_max(θ_0) = {lr * lam:.3g} ≥ {limit:.4g} (η = {lr:.3g}, λ_max(θ_0) = {lam:.3g}): "
        f"{what} is unstable at this learning rate and no EoM describes it. The largest stable "
        f"learning rate is η < {largest:.3g}; use e.g. --lr {float(f'{0.5 * largest:.2g}')}"
        f"{fix}."
    )


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprints(problem, model: str) -> dict:
    """Hashes of the data (X, y) and, for a user model `module:factory`, of its module's source:
    a resumed run must see the same inputs.

    >>> import eom
    >>> problem = eom.experiments.build_problem(eom.experiments.RunSettings("linear", subset=16))
    >>> list(eom.experiments.fingerprints(problem, "linear"))
    ['data']
    """
    out = {"data": _digest(problem.dataset.X, problem.dataset.y)}
    if ":" in model:
        from ..problems import load_factory

        with contextlib.suppress(Exception):
            fn = load_factory(model)
            src = inspect.getsource(inspect.getmodule(fn) or fn)
            out["model"] = hashlib.sha256(src.encode()).hexdigest()[:16]
    return out


@contextlib.contextmanager
def opened(store: str | Path | None) -> Iterator[RunDir]:
    """A locked `RunDir` on `store`, or on a temporary folder (deleted afterwards) when None."""
    if store is None:
        with tempfile.TemporaryDirectory(prefix="eom-") as tmp:
            rd = RunDir(tmp)
            rd.acquire()
            try:
                yield rd
            finally:
                rd.release()
        return
    rd = RunDir(store)
    rd.acquire()
    try:
        yield rd
    finally:
        rd.release()


def stored_resolved(store: str | Path | None, overwrite: bool) -> dict | None:
    """The resolved values (lr, λ_max, …) a folder's run already fixed, if it is to be resumed;
    read before taking the lock, so that a refused fresh run leaves no folder behind."""
    if store is None or overwrite:
        return None
    rd = RunDir(store)
    if not rd.exists():
        return None
    from ._store import read_json

    return read_json(rd.config_path).get("resolved") or None


def header(rd: RunDir, devices: dict | None = None) -> str:
    """The first line of a run: version, folder, the dtype actually used and the devices."""
    from ._devices import describe

    on = f", {describe(devices)}" if devices is not None else ""
    return f"eom {__version__}: writing to {rd.path} ({dtype_in_use()}{on})"


def in_store(store, overwrite: bool, s, command: str, fp: dict, devices: dict, res: dict,
             result_cls, execute: Callable[[RunDir, bool], object], log, *,
             skip_complete: bool = True):
    """Open (or create) the run folder, resume or start it, and run `execute(rd, resuming)`.

    The one path every experiment takes into its folder: `prepare` checks settings and
    fingerprints under the lock; a complete run is returned as it is (`skip_complete`); the
    header, the devices and the resolved values are recorded before any work. Returns
    `result_cls.from_dir(folder)`.
    """
    with opened(store) as rd:
        resuming = rd.prepare(s.as_dict(), overwrite=overwrite, command=command,
                              fingerprints=fp, defaults=type(s)().as_dict())
        if skip_complete and resuming and rd.read_results().get("status") == "complete":
            log(f"{rd.path} is already complete (use --overwrite to rerun).")
            return result_cls.from_dir(rd.path)
        if store is not None:
            log(header(rd, devices))
        record_devices(rd, devices, log)
        rd.update_config(resolved=res)
        execute(rd, resuming)
        return result_cls.from_dir(rd.path)
