"""Every experiment runs from Python, in memory or into a folder, on a tiny problem."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from eom._errors import EomError
from eom.experiments import (
    ExperimentResult,
    PaperSettings,
    RunResult,
    RunSettings,
    SweepSettings,
    SymmetrySettings,
    ValiditySettings,
    paper,
    run,
    sweep,
    symmetry,
    validity,
)

TINY = dict(subset=32, width=4, depth=1)


def test_run_in_memory_and_into_a_folder_give_the_same_numbers(tmp_path):
    s = RunSettings(**TINY, steps=4, record_every=2, orders=[0, 1], predict=False,
                    diagnose_every=0, lr=0.1)
    seen = []
    mem = run(s, progress=lambda done, total, what: seen.append((done, total)))
    assert isinstance(mem, RunResult) and mem.status == "complete"
    assert seen[-1] == (4, 4)
    disk = run(s, tmp_path / "r")
    np.testing.assert_array_equal(mem.metrics["error_1"], disk.metrics["error_1"])
    # GD at step 4 vs EoM-1: closer than gradient flow (THEORY.md §3: one order more).
    assert mem.metrics["error_1"][-1] < mem.metrics["error_0"][-1]
    again = ExperimentResult.from_dir(mem.to_dir(tmp_path / "copy"))
    assert isinstance(again, RunResult) and again.results == json.loads(
        json.dumps(mem.results))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 5


# ≈ 43 s; the default run keeps test_paper_collects_the_four_parts_and_writes_one_report (the
# same tiny sweep, symmetry and validity, into a folder) and
# test_run_in_memory_and_into_a_folder_give_the_same_numbers (the in-memory path).
@pytest.mark.slow
def test_sweep_symmetry_validity_in_memory():
    sw = sweep(SweepSettings(**TINY, orders=[0], lrs=[0.2, 0.1], horizon_steps=2))
    assert sw.status == "complete"
    assert abs(sw.results["slope"]["0"] - 1) < 0.3  # order 0: error ∝ η (loose: 2 points)
    sy = symmetry(SymmetrySettings(**TINY, model="mlp-bn", steps=4, lr=0.05,
                                   weight_decays=[0.0]))
    assert sy.status == "complete" and sy.results["weight_decays_done"] == [0.0]
    va = validity(ValiditySettings(**TINY, orders=[0, 1], points=2, horizon_steps=1))
    assert va.status == "complete" and va.results["points_done"] == 2


class TinyPaper(PaperSettings):
    def parts(self):
        base = dict(**TINY, seed=self.seed)
        return {
            "run": RunSettings(**base, steps=4, record_every=2, orders=[0, 1], lr=0.1,
                               diagnose_every=0),
            "sweep": SweepSettings(**base, orders=[0], lrs=[0.2, 0.1], horizon_steps=2),
            "symmetry": SymmetrySettings(**base, model="mlp-bn", steps=4, lr=0.05,
                                         weight_decays=[0.0]),
            "validity": ValiditySettings(**base, orders=[0, 1], points=2, horizon_steps=1),
        }


def test_paper_collects_the_four_parts_and_writes_one_report(tmp_path):
    from eom.report import write_report

    out = tmp_path / "paper"
    res = paper(TinyPaper(), out)
    assert res.status == "complete"
    assert {k: v["status"] for k, v in res.results["parts"].items()} == dict.fromkeys(
        ("run", "sweep", "symmetry", "validity"), "complete")
    html = write_report(out).read_text()
    for claim in ("Order of accuracy", "Scale- and translation-invariant", "stops holding",
                  "predicted against measured"):
        assert claim in html


def test_bad_settings_are_eom_errors_before_anything_is_written(tmp_path):
    with pytest.raises(EomError, match="unknown model"):
        run(RunSettings(model="resnet9000"), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(EomError, match="needs --batch-size"):
        run(RunSettings(optimizer="sgd"), tmp_path / "y")
    assert not (tmp_path / "y").exists()
