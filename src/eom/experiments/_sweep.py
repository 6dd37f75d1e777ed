"""`eom.experiments.sweep`: learning rates × orders → the order-of-accuracy figure and table.

Each learning rate η_j = η_0/2^j runs GD and the EoM to the same time T = K·η_0; the error at T
falls like η^{N+1} for order N (THEORY.md §3). Rows are written per learning rate, so an
interrupted sweep resumes with the learning rates it has not done yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import EomError
from ..measure import fit_sweep, sweep_point
from ._common import (
    ProgressFn,
    check_stable,
    fingerprints,
    in_store,
    lambda_max,
    lr_for_target,
    problem_on_devices,
    stored_resolved,
)
from ._result import SweepResult
from ._runner import Runner
from ._settings import ModelSettings, validate
from ._store import dtype_in_use


@dataclass(frozen=True)
class SweepSettings(ModelSettings):
    """Settings of `eom sweep` (also the keys of its `--config` TOML file)."""

    model: str = "mlp"
    dataset: str = "digits"
    lrs: list[float] | None = None  # None: lr_0·2^-j, j = 0..num_lrs-1, lr_0 from --target
    num_lrs: int = 4
    target: float = 0.2
    horizon_steps: int = 20  # T = horizon_steps · max(lrs)
    orders: list[int] = field(default_factory=lambda: [0, 1, 2])
    weight_decay: float = 0.0
    seed: int = 0
    subset: int | None = None
    width: int | None = None
    depth: int | None = None
    devices: int | None = None  # local devices the batch is split over (None: all)
    name: str | None = None
    out: str | None = None


def parse_lrs(text: str | list | None) -> list[float] | None:
    """'0.2,0.1' or [0.2, 0.1] → learning rates, each > 0.

    >>> import eom
    >>> eom.experiments.parse_lrs("0.2,0.1")
    [0.2, 0.1]
    """
    if text is None:
        return None
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    out = []
    for x in items:
        if str(x).strip() == "":
            continue
        try:
            v = float(x)
        except ValueError:
            raise EomError(f"--lrs: {x!r} is not a number; give e.g. --lrs 0.2,0.1,0.05.") from None
        if not v > 0:
            raise EomError(f"--lrs: learning rates must be positive, got {v}.")
        out.append(v)
    if len(out) < 2:
        raise EomError("--lrs needs at least two learning rates to fit a slope.")
    return sorted(set(out), reverse=True)


def resolve(s: SweepSettings, problem) -> dict:
    """The learning rates and the horizon T; the largest η must keep GD stable."""
    lam = lambda_max(problem, s.weight_decay)
    lrs = ([lr_for_target(lam, s.target) / 2**j for j in range(s.num_lrs)] if s.lrs is None
           else list(s.lrs))
    check_stable(max(lrs), lam)
    return {"lrs": lrs, "horizon": s.horizon_steps * max(lrs), "lambda_max_initial": lam,
            "n_params": int(problem.n_params)}


def sweep(settings: SweepSettings | None = None, store: str | Path | None = None, *,
          overwrite: bool = False, progress: ProgressFn | None = None,
          log=None) -> SweepResult:
    """Learning rates × orders: the error at a fixed time T against η, and fitted slopes.

    >>> from eom.experiments import SweepSettings, sweep
    >>> r = sweep(SweepSettings(subset=32, width=4, depth=1, orders=[0], lrs=[0.2, 0.1],
    ...                         horizon_steps=2))
    >>> r.status, round(r.results["slope"]["0"])
    ('complete', 1)
    """
    s = settings or SweepSettings()
    validate(s)
    log = log or (lambda msg: None)
    problem, devices = problem_on_devices(s)
    fp = fingerprints(problem, s.model)
    res = stored_resolved(store, overwrite) or resolve(s, problem)  # may refuse: no folder yet
    return in_store(
        store, overwrite, s, "sweep", fp, devices, res, SweepResult,
        lambda rd, resuming: _execute(s, rd, problem, res, resuming, progress), log,
        skip_complete=False,
    )


def _execute(s, rd, problem, res, resuming, progress) -> dict:
    t0 = time.perf_counter()
    lrs, horizon = res["lrs"], res["horizon"]
    if not resuming:
        rd.keep_rows(lambda r: False)
    done = rd.read_metrics() if resuming else {}
    done_lrs = set(np.round(done.get("lr", np.zeros(0)), 15).tolist())
    n_done = len([x for x in lrs if round(x, 15) in done_lrs])
    if progress is not None:
        progress(n_done, len(lrs), "sweep")

    def body(r: Runner) -> None:
        k_done = n_done
        for lr in lrs:
            if round(lr, 15) in done_lrs:
                continue
            err, flg = sweep_point(problem.loss, problem.params0, lr, s.orders, horizon,
                                   weight_decay=s.weight_decay)
            rd.append_rows({
                "lr": np.full(len(s.orders), lr),
                "num_steps": np.full(len(s.orders), int(round(horizon / lr))),
                "order": np.asarray(s.orders),
                "error": np.asarray([err[n] for n in s.orders]),
                "flagged": np.asarray([int(flg[n]) for n in s.orders]),
            })
            r.chunk_done()
            k_done += 1
            if progress is not None:
                progress(k_done, len(lrs), "sweep")

    runner = Runner(rd, lambda status, msg: sweep_results(
        rd, s, res, status, msg, time.perf_counter() - t0))
    return runner.execute(body)


def sweep_results(rd, s, res, status, message, wall) -> dict:
    m = rd.read_metrics()
    out = {"status": status, "message": message, "model": s.model, "dataset": s.dataset,
           "orders": list(s.orders), "horizon": res["horizon"],
           "dtype": dtype_in_use(), "float64": dtype_in_use() == "float64",
           "lambda_max_initial": res.get("lambda_max_initial"), "wall_time": {"total": wall}}
    if not m:
        return out
    lrs = sorted(set(m["lr"].tolist()))
    if len(lrs) < 2:
        return out
    errors, flags = {}, {}
    for n in s.orders:
        sel = m["order"] == n
        by_lr = dict(zip(m["lr"][sel].tolist(), zip(m["error"][sel], m["flagged"][sel],
                                                      strict=True), strict=True))
        errors[n] = [by_lr[x][0] for x in lrs]
        flags[n] = [bool(by_lr[x][1]) for x in lrs]
    sw = fit_sweep(res["horizon"], lrs, s.orders, errors, flags)
    out.update({
        "lrs": sw.lrs.tolist(),
        "num_steps": sw.num_steps.tolist(),
        "error": {str(n): sw.error[n].tolist() for n in sw.orders},
        "flagged": {str(n): sw.flagged[n].tolist() for n in sw.orders},
        "slope": {str(n): sw.slope[n] for n in sw.orders},
        "slope_stderr": {str(n): sw.slope_stderr[n] for n in sw.orders},
        "expected_slope": {str(n): n + 1 for n in sw.orders},
    })
    return out
