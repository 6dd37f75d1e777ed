"""`eom.experiments.paper`: the seed paper's claims end to end, one folder, one report.

1. the counter terms and the EoM on a real network (`run`, with the predicted error of
   THEORY.md §3 against the measured one);
2. order of accuracy: the order-N error at fixed T falls like η^{N+1} (`sweep`);
3. scale- and translation-invariant layers with and without weight decay (`symmetry`);
4. where the EoM stops holding (`validity`).

Each part runs in its own sub-folder (`run/`, `sweep/`, `symmetry/`, `validity/`) and resumes
like every run; the paper folder's results.json collects their summaries. `quick` uses tiny
problems (a few minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import ProgressFn
from ._result import PaperResult
from ._run import run
from ._runner import Runner
from ._settings import RunSettings, check_name
from ._store import RunDir, dtype_in_use
from ._sweep import SweepSettings, sweep
from ._symmetry import SymmetrySettings, symmetry
from ._validity import ValiditySettings, validity

PARTS = ("run", "sweep", "symmetry", "validity")


@dataclass(frozen=True)
class PaperSettings:
    """Settings of `eom paper`: `quick` picks tiny problems; `seed` is shared by every part."""

    quick: bool = False
    seed: int = 0
    devices: int | None = None  # local devices every part splits its batch over (None: all)
    name: str | None = None
    out: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def parts(self) -> dict[str, object]:
        """The settings of each part."""
        common = dict(seed=self.seed, devices=self.devices)
        if not self.quick:
            return {"run": RunSettings(**common), "sweep": SweepSettings(**common),
                    "symmetry": SymmetrySettings(**common),
                    "validity": ValiditySettings(**common)}
        tiny = dict(**common, subset=96, width=8, depth=1)
        return {
            "run": RunSettings(**tiny, steps=40, record_every=4, diagnose_every=20,
                               orders=[0, 1, 2]),
            "sweep": SweepSettings(**tiny, orders=[0, 1], num_lrs=3, horizon_steps=6),
            "symmetry": SymmetrySettings(**tiny, steps=20, quick=True),
            # Up to η·λ_max = 1.5 (beyond the series radius 1): the 1.9 point's EoM-2 solve is
            # stiff enough to take minutes until compare's ODE step budgets land.
            "validity": ValiditySettings(**tiny, orders=[0, 1, 2], points=3, horizon_steps=2,
                                         max_target=1.5, quick=True),
        }


_CALLS = {"run": run, "sweep": sweep, "symmetry": symmetry, "validity": validity}


def paper(settings: PaperSettings | None = None, store: str | Path | None = None, *,
          overwrite: bool = False, progress: ProgressFn | None = None,
          log=None) -> PaperResult:
    """Run every part of the paper (each resumable in its sub-folder) and collect them.

    >>> import eom
    >>> s = eom.experiments.PaperSettings(quick=True)
    >>> sorted(s.parts())
    ['run', 'sweep', 'symmetry', 'validity']
    >>> result = eom.experiments.paper(s, "runs/paper")  # doctest: +SKIP
    >>> [fig.savefig(f"paper-{i}.png") for i, fig in enumerate(result.plot())]  # doctest: +SKIP
    """
    s = settings or PaperSettings()
    check_name(s.name)
    log = log or (lambda msg: None)
    if store is None:
        with tempfile.TemporaryDirectory(prefix="eom-paper-") as tmp:
            return _paper(s, Path(tmp), overwrite, progress, log)
    return _paper(s, Path(store), overwrite, progress, log)


def _paper(s, folder: Path, overwrite, progress, log) -> PaperResult:
    rd = RunDir(folder)
    rd.acquire()
    try:
        rd.prepare(s.as_dict(), overwrite=overwrite, command="paper",
                   defaults=PaperSettings().as_dict())
        t0 = time.perf_counter()
        parts = s.parts()
        done: dict[str, dict] = {}

        def summary(status, message):
            return {"status": status, "message": message, "dtype": dtype_in_use(),
                    "float64": dtype_in_use() == "float64", "quick": s.quick,
                    "parts": {k: {"folder": k, "status": v.get("status")}
                              for k, v in done.items()},
                    "wall_time": {"total": time.perf_counter() - t0}}

        def body(r: Runner) -> None:
            for i, name in enumerate(PARTS):
                if progress is not None:
                    progress(i, len(PARTS), name)
                log(f"paper: {name}")
                res = _CALLS[name](parts[name], folder / name, overwrite=overwrite, log=log)
                done[name] = res.results
                r.chunk_done()
            if progress is not None:
                progress(len(PARTS), len(PARTS), "done")

        Runner(rd, summary).execute(body)
        return PaperResult.from_dir(folder)
    finally:
        rd.release()
