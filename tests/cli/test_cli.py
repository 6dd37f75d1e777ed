"""End-to-end tests of the `eom` command on tiny configurations (seconds each)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eom.cli import app

runner = CliRunner()
TINY = ["--subset", "64", "--width", "6", "--depth", "1", "--steps", "12", "--record-every", "3"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = invoke("run", *TINY, "--orders", "0,1", "--diagnose-every", "6", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_run_writes_every_file_with_its_schema(tiny_run):
    out, output = tiny_run
    for name in ("config.json", "metrics.csv", "results.json", "report.html", "state.npz"):
        assert (out / name).exists(), name
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"error.png", "loss.png", "predicted.png", "regime.png"} <= set(figs)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "run" and cfg["float64"] is True
    assert {"jax", "diffrax", "equinox", "eom"} <= set(cfg["versions"])
    assert cfg["settings"]["steps"] == 12 and cfg["settings"]["orders"] == [0, 1]
    assert cfg["resolved"]["lr"] > 0 and cfg["resolved"]["lambda_max_initial"] > 0
    rows = read_csv(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    for col in ("time", "loss_gd", "loss_0", "error_0", "relative_error_0", "solver_error_0",
                "flagged_0", "predicted_0", "bound_0", "error_1", "eta_lambda_max", "regime"):
        assert col in rows[0], col
    assert all(r["flagged_0"] in ("0", "1") for r in rows)
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "complete" and res["steps_done"] == 12 and res["float64"] is True
    fin = res["final"]["orders"]
    assert fin["1"]["error"] < fin["0"]["error"]  # EoM-1 is closer to GD than gradient flow
    assert fin["1"]["ratio_to_previous"] == pytest.approx(fin["1"]["error"] / fin["0"]["error"])
    assert res["regime"]["initial"] == "accurate"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "float64" in html
    assert "report:" in output and "GF" in output


def test_report_rebuilds_from_files(tiny_run):
    out, _ = tiny_run
    (out / "report.html").unlink()
    for p in (out / "figures").glob("*.png"):
        p.unlink()
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "figures" / "error.png").exists()


def test_rerun_of_complete_run_does_not_recompute(tiny_run):
    out, _ = tiny_run
    before = (out / "metrics.csv").read_text()
    result = invoke("run", *TINY, "--orders", "0,1", "--diagnose-every", "6", "--out", out)
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output
    assert (out / "metrics.csv").read_text() == before


def test_different_settings_refuse_to_resume(tiny_run):
    out, _ = tiny_run
    result = invoke("run", *TINY, "--orders", "0,2", "--out", out)
    assert result.exit_code == 2
    assert "different settings" in result.output and "--overwrite" in result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "resnet9000"], "unknown model"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--dataset", "missing.npz"], "missing.npz"),
        (["--orders", "0,99"], "supported"),
        (["--lr", "abc"], "Invalid value for '--lr'"),
        (["--steps", "-3"], "--steps"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, args, needle):
    result = invoke("run", *TINY, *args, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_bad_npz_exits_2(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((5, 3)))  # no y
    result = invoke("run", *TINY, "--dataset", path, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "y" in result.output


def test_unstable_lr_is_refused_before_any_solve_and_allow_unstable_runs_gd_alone(tmp_path):
    """η·λ_max(θ_0) ≥ 2: exit 2 naming η·λ_max and the largest stable lr, nothing written;
    --allow-unstable runs GD alone, which diverges, and keeps the rows before the blow-up."""
    out = tmp_path / "div"
    args = ["run", "--dataset", "teacher-student", "--subset", "64", "--width", "6", "--depth",
            "1", "--steps", "60", "--record-every", "2", "--orders", "0", "--lr", "20",
            "--no-predict", "--diagnose-every", "0", "--out", out]
    t0 = time.perf_counter()
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "η·λ_max(θ_0) =" in result.output and "largest stable" in result.output
    assert time.perf_counter() - t0 < 60
    assert not (out / "config.json").exists()  # refused before the folder was touched
    result = invoke(*args, "--allow-unstable")
    assert result.exit_code == 2, result.output
    assert "diverged" in result.output and "Lower the learning rate" in result.output
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "diverged" and res["gd_only"] is True
    assert 0 < res["steps_done"] < 60  # the rows before the blow-up are kept
    assert (out / "report.html").exists()
    assert res["regime"]["initial"] == "unstable"  # η·λ_max(θ_0) ≥ 2 is labelled as such
    assert "step 0" in res["regime"]["warning"]


def test_config_file_and_flags_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('steps = 6\nrecord-every = 3\norders = [0]\nsubset = 64\nwidth = 6\n'
                   'depth = 1\npredict = false\ndiagnose_every = 0\nlr = 0.1\n')
    out = tmp_path / "cfg"
    result = invoke("run", "--config", cfg, "--steps", "9", "--out", out)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["steps"] == 9 and settings["record_every"] == 3 and settings["lr"] == 0.1
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    result = invoke("run", "--config", bad, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "stepz" in result.output


def test_same_seed_same_numbers(tmp_path):
    args = [*TINY, "--orders", "0", "--no-predict", "--diagnose-every", "0", "--lr", "0.2"]
    a = invoke("run", *args, "--out", tmp_path / "a")
    b = invoke("run", *args, "--out", tmp_path / "b")
    assert a.exit_code == 0 and b.exit_code == 0
    text_a = (tmp_path / "a" / "metrics.csv").read_text()
    assert text_a == (tmp_path / "b" / "metrics.csv").read_text()


def test_sweep_writes_figure_and_slopes(tmp_path):
    out = tmp_path / "sweep"
    result = invoke("sweep", "--subset", "64", "--width", "6", "--depth", "1", "--orders", "0,1",
                    "--lrs", "0.4,0.2,0.1", "--horizon-steps", "4", "--out", out)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "complete"
    # Order of accuracy: slope N+1 (loose: 3 coarse learning rates on a tiny network).
    assert abs(res["slope"]["0"] - 1) < 0.3 and abs(res["slope"]["1"] - 2) < 0.3
    assert (out / "figures" / "order_accuracy.png").exists()


# ≈ 20 s; the default run keeps tests/cli/test_kill_storm.py (five random SIGKILLs, then a
# byte-identical resume), which covers this single kill.
@pytest.mark.slow
def test_kill_mid_run_then_resume(tmp_path):
    """A real SIGKILL mid-run: rerunning the same command continues from the last checkpoint and
    ends with exactly the rows of an uninterrupted run."""
    args = ["run", "--subset", "64", "--width", "6", "--depth", "1", "--steps", "160",
            "--record-every", "2", "--orders", "0,1", "--no-predict", "--diagnose-every", "0",
            "--lr", "0.2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "eom", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    metrics = killed / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) > 20:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(read_csv(metrics))
    assert 0 < n_before < 80, "the run should have been killed part-way"
    result = invoke(*args, "--out", killed)
    assert result.exit_code == 0, result.output
    assert "resuming from step" in result.output
    full = tmp_path / "full"
    assert invoke(*args, "--out", full).exit_code == 0
    a, b = read_csv(killed / "metrics.csv"), read_csv(full / "metrics.csv")
    assert [r["step"] for r in a] == [str(k) for k in range(2, 161, 2)]
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss_gd", "error_0", "error_1"):
            expected = pytest.approx(float(rb[k]), rel=1e-12, abs=1e-300)
            assert float(ra[k]) == expected, (ra["step"], k)
