"""The shared pieces: one build_problem (a defaulted subset never blames the user), the lr from
λ_max, fingerprints of the inputs."""

from __future__ import annotations

import numpy as np
import pytest

from eom._errors import EomError
from eom.experiments import (
    RunSettings,
    SymmetrySettings,
    build_problem,
    fingerprints,
    lr_for_target,
)


@pytest.fixture
def npz120(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.npz"
    np.savez(path, X=rng.normal(size=(120, 3)), y=rng.integers(0, 2, 120))
    return path


def test_quick_subset_default_on_a_small_data_set_uses_all_of_it(npz120):
    """`eom symmetry --quick` defaults subset to 256; on 120 samples that means all 120 (it used
    to fail blaming a --subset the user never gave)."""
    s = SymmetrySettings(model="linear", dataset=str(npz120), quick=True, subset=256)
    assert build_problem(s, clamp_subset=True).dataset.X.shape[0] == 120
    with pytest.raises(EomError, match="subset"):  # an explicit --subset out of range is an error
        build_problem(RunSettings(model="linear", dataset=str(npz120), subset=256))


def test_lr_for_target_and_fingerprints(npz120, tmp_path):
    assert lr_for_target(4.0, 0.2) == 0.05
    with pytest.raises(EomError, match="λ_max"):
        lr_for_target(-1.0, 0.2)
    p = build_problem(RunSettings(model="linear", dataset=str(npz120)))
    a = fingerprints(p, "linear")
    other = tmp_path / "other.npz"
    with np.load(npz120) as z:
        np.savez(other, X=z["X"] * 2, y=z["y"])
    b = fingerprints(build_problem(RunSettings(model="linear", dataset=str(other))), "linear")
    assert set(a) == {"data"} and a["data"] != b["data"]
