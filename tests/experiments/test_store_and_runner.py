"""The run folder and the runner without any JAX work: lock, atomic writes, --overwrite safety,
fingerprints, corruption → EomError, and the state machine's outcomes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from eom._errors import DivergenceError, EomError
from eom.experiments import RunDir, Runner
from eom.experiments._common import _digest, check_stable
from eom.experiments._store import PREVIOUS


def fresh(tmp_path, **settings) -> RunDir:
    rd = RunDir(tmp_path / "r")
    rd.acquire()
    rd.prepare({"steps": 3, **settings}, overwrite=False, command="run",
               fingerprints={"data": "aaaa"})
    return rd


def test_second_process_is_refused_naming_the_holder_and_a_dead_holder_does_not_block(tmp_path):
    rd = fresh(tmp_path)
    rd.release()
    code = (f"import sys; sys.path.insert(0, {str(sys.path[0])!r}); from eom.experiments import "
            f"RunDir; r = RunDir({str(rd.path)!r}); r.acquire(); print('held', flush=True); "
            "import time; time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        other = RunDir(rd.path)
        with pytest.raises(EomError, match=f"in use by another eom process \\(pid {proc.pid}"):
            other.acquire()
        assert other.is_locked_by_other()
    finally:
        proc.kill()  # SIGKILL: the OS drops the lock with the process
        proc.wait()
    other.acquire()  # a stale lock of a killed process does not block
    other.release()


def test_overwrite_keeps_the_old_run_until_the_first_chunk_and_restores_it_on_failure(tmp_path):
    rd = fresh(tmp_path)
    rd.append_rows({"step": np.array([1, 2]), "loss": np.array([0.5, 0.25])})
    rd.write_results({"status": "complete"})
    before = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    rd.prepare({"steps": 9}, overwrite=True, command="run")
    assert (rd.path / PREVIOUS / "metrics.csv").exists() and not rd.metrics_path.exists()

    def fails_before_any_chunk(r):
        raise EomError("no luck")

    with pytest.raises(EomError):
        Runner(rd, lambda status, msg: {"status": status}).execute(fails_before_any_chunk)
    after = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    assert after == before and not (rd.path / PREVIOUS).exists()
    # Once a chunk is written the old run is gone for good.
    rd.prepare({"steps": 9}, overwrite=True, command="run")

    def one_chunk(r):
        rd.append_rows({"step": np.array([1]), "loss": np.array([1.0])})
        r.chunk_done()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Runner(rd, lambda status, msg: {"status": status}).execute(one_chunk)
    assert not (rd.path / PREVIOUS).exists()
    assert json.loads(rd.results_path.read_text())["status"] == "interrupted"


@pytest.mark.parametrize("exc, status", [
    (DivergenceError("x"), "diverged"), (EomError("x"), "failed"),
    (RuntimeError("xla"), "failed"), (KeyboardInterrupt(), "interrupted"), (None, "complete"),
])
def test_every_way_out_is_recorded(tmp_path, exc, status):
    rd = fresh(tmp_path)

    def body(r):
        if exc is not None:
            raise exc

    if exc is None:
        Runner(rd, lambda s, m: {"status": s, "message": m}).execute(body)
    else:
        with pytest.raises(type(exc)):
            Runner(rd, lambda s, m: {"status": s, "message": m}).execute(body)
    assert json.loads(rd.results_path.read_text())["status"] == status


def test_resume_refuses_changed_data_naming_it(tmp_path):
    rd = fresh(tmp_path)
    with pytest.raises(EomError, match="the data \\(X, y\\) changed"):
        rd.prepare({"steps": 3}, overwrite=False, command="run", fingerprints={"data": "bbbb"})
    X = np.zeros((4, 2))
    assert _digest(X, np.arange(4)) != _digest(X + 1e-12, np.arange(4))


@pytest.mark.parametrize("damage, needle", [
    (lambda rd: rd.metrics_path.write_text(rd.metrics_path.read_text() + "garbage\n"),
     "metrics.csv is damaged"),
    (lambda rd: rd.state_path.write_bytes(b"PK\x03\x04trunc"), "checkpoint"),
    (lambda rd: rd.config_path.write_text("{not json"), "cannot read"),
])
def test_damaged_files_are_eom_errors(tmp_path, damage, needle):
    rd = fresh(tmp_path)
    rd.append_rows({"step": np.array([1, 2]), "loss": np.array([0.5, 0.25])})
    rd.save_state({"step": np.asarray(2)})
    damage(rd)
    with pytest.raises(EomError, match=needle):
        rd.load_state()
        rd.truncate_metrics(2)
        rd.prepare({"steps": 3}, overwrite=False, command="run")


def test_out_below_a_file_and_unwritable_targets_are_eom_errors(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(EomError, match="is a file"):
        RunDir(tmp_path / "f" / "run").acquire()
    rd = fresh(tmp_path)
    rd.results_path.mkdir()  # os.replace onto a folder fails with an OSError
    with pytest.raises(EomError, match="cannot write"):
        rd.write_results({"status": "running"})


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    rd = fresh(tmp_path)
    for i in range(3):
        rd.write_results({"i": i})
        rd.save_state({"step": np.asarray(i)})
    assert sorted(p.name for p in rd.path.iterdir() if p.name.endswith(".tmp")) == []
    assert rd.load_state()["step"] == 2


def test_stability_check_names_eta_lambda_and_the_largest_stable_lr():
    t0 = time.perf_counter()
    with pytest.raises(EomError, match=r"η·λ_max\(θ_0\) = 4 ≥ 2.*η < 0.5"):
        check_stable(1.0, 4.0)
    check_stable(0.49, 4.0)  # 1.96 < 2: fine
    check_stable(2.0, 4.0, allow=True)
    assert time.perf_counter() - t0 < 1
