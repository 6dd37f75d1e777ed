"""Issue 11 at the command line: every bad input or damaged folder exits 2 with one paragraph
(no traceback), nothing the user had is lost, and nothing wrong is reported as right."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from eom.cli import app
from eom.experiments import RunDir

runner = CliRunner()
TINY = ["--subset", "32", "--width", "4", "--depth", "1", "--steps", "4", "--record-every",
        "2", "--orders", "0", "--no-predict", "--diagnose-every", "0", "--lr", "0.1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def no_traceback(result):
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "done"
    result = invoke("run", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def copy_of(done, tmp_path, status="interrupted"):
    out = tmp_path / "copy"
    shutil.copytree(done, out)
    res = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**res, "status": status}))
    return out


def test_unstable_lr_fails_fast_naming_eta_lambda(tmp_path):
    t0 = time.perf_counter()
    result = invoke("run", "--model", "linear", "--subset", "64", "--lr", "20", "--steps", "20",
                    "--out", tmp_path / "x")
    assert result.exit_code == 2, result.output
    assert "η·λ_max(θ_0) =" in result.output and "largest stable" in result.output
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "x").exists()


def test_bad_model_with_overwrite_destroys_nothing_and_needs_no_overwrite(done, tmp_path):
    out = copy_of(done, tmp_path, status="complete")
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = invoke("run", *TINY, "--model", "typo", "--overwrite", "--out", out)
    assert result.exit_code == 2 and "unknown model" in result.output
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    fresh = tmp_path / "fresh"
    assert invoke("run", *TINY, "--model", "typo", "--out", fresh).exit_code == 2
    assert not fresh.exists()  # nothing was written, so fixing the typo needs no --overwrite


@pytest.mark.parametrize("damage, needle", [
    (lambda p: (p / "metrics.csv").write_text((p / "metrics.csv").read_text() + "1,2\n"),
     "metrics.csv is damaged"),
    (lambda p: (p / "state.npz").write_bytes((p / "state.npz").read_bytes()[:100]),
     "checkpoint"),
    (lambda p: (p / "config.json").write_text("{"), "cannot read"),
])
def test_damaged_run_folders_exit_2_with_one_paragraph(done, tmp_path, damage, needle):
    out = copy_of(done, tmp_path)
    damage(out)
    result = invoke("run", *TINY, "--out", out)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "--overwrite" in result.output


def test_out_under_a_file_exits_2(tmp_path):
    (tmp_path / "file").write_text("x")
    result = invoke("run", *TINY, "--out", tmp_path / "file" / "run")
    no_traceback(result)
    assert result.exit_code == 2 and "is a file" in result.output


def test_a_second_process_on_the_folder_exits_2_naming_the_holder(done, tmp_path):
    out = copy_of(done, tmp_path)
    holder = RunDir(out)
    holder.acquire()
    try:
        result = invoke("run", *TINY, "--out", out)
    finally:
        holder.release()
    assert result.exit_code == 2 and "in use by another eom process (pid" in result.output


@pytest.mark.parametrize("damage", [
    lambda p: (p / "metrics.csv").write_text("garbage\n1,2,3\n"),
    lambda p: (p / "metrics.csv").write_text((p / "metrics.csv").read_text().splitlines()[0]),
    lambda p: (p / "metrics.csv").write_text(""),
    lambda p: (p / "metrics.csv").unlink(),
    lambda p: (p / "metrics.csv").write_text(
        (p / "metrics.csv").read_text().replace("step", "stepz", 1)),
])
def test_report_never_replaces_a_good_report_with_a_worse_one(done, tmp_path, damage):
    out = copy_of(done, tmp_path, status="complete")
    before = (out / "report.html").read_bytes()
    damage(out)
    result = invoke("report", out)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert (out / "report.html").read_bytes() == before


def test_a_killed_runs_report_says_interrupted(done, tmp_path):
    out = copy_of(done, tmp_path, status="running")
    assert invoke("report", out).exit_code == 0
    html = (out / "report.html").read_text()
    assert "interrupted" in html and "status: <b>running" not in html


def test_precision_is_stated_truthfully():
    """EOM_NO_X64=1: what the header, config.json and results.json record is float32."""
    import os
    from pathlib import Path

    import eom

    code = ("from eom.experiments import dtype_in_use; import jax.numpy as jnp; "
            "print(dtype_in_use(), jnp.zeros(1).dtype)")
    src = str(Path(eom.__file__).resolve().parents[1])
    env = {**os.environ, "EOM_NO_X64": "1", "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", "import eom; " + code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["float32", "float32"], out.stderr


@pytest.mark.parametrize("args, needle", [
    (["run", "--name", "../../x"], "plain folder name"),
    (["run", "--orders", "3-1"], "a range goes up"),
    (["bench", "--eta-lambda", "-1"], "--eta-lambda"),
    (["run", "--model", "nofile.py:factory:"], ".py:factory:"),
    (["run", "--optimizer", "adam"], "--optimizer"),
])
def test_small_ones_exit_2_with_the_right_message(tmp_path, args, needle):
    result = invoke(*args, "--out", tmp_path / "o") if args[0] == "run" else invoke(*args)
    no_traceback(result)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_a_text_file_named_npz_is_called_what_it_is(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("x,y\n1,2\n")
    result = invoke("run", *TINY, "--dataset", path, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "not an .npz archive" in result.output and "pickle" not in result.output
