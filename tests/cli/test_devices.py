"""`--devices`: the CLI end to end on 4 forced host devices equals the one-device run.

Everything runs in ONE subprocess (XLA_FLAGS must be set before jax starts, and the test
process keeps its single device), which writes a JSON summary that the tests below read:

- A: `eom run --devices 1` (the unsharded computation), B: `eom run` (default: all 4 devices);
- C: a run started on 4 devices, interrupted after its first chunk (Ctrl-C from the progress
  callback), then resumed by `eom run --devices 1` — a resume on another device count is allowed;
- the refusals: more devices than visible, and mlp-bn with a batch 4 does not divide.

62 samples on 4 devices also exercises the zero-weight padding of `data_parallel_mean`.
A persistent compilation cache lets the repeated programs compile once. Cost: ≈ 70 CPU-s
(204 s wall at load 7 on 2 cores), so the module is marked slow (run with -m slow).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ARGS = ["run", "--model", "linear", "--subset", "62", "--steps", "20", "--record-every", "1",
        "--orders", "0,1", "--diagnose-every", "0", "--lr", "0.1"]

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from typer.testing import CliRunner
    from eom.cli import app
    from eom.experiments import RunSettings, run

    tmp, args = Path(sys.argv[1]), json.loads(sys.argv[2])
    cli = CliRunner()
    out = {}
    for name, extra in (("A", ["--devices", "1"]), ("B", [])):
        r = cli.invoke(app, [*args, *extra, "--out", str(tmp / name)])
        out[name] = [r.exit_code, r.output]

    def stop_after_first_chunk(done, total, what):
        if done > 0:
            raise KeyboardInterrupt
    s = RunSettings(model="linear", subset=62, steps=20, record_every=1, orders=[0, 1],
                    diagnose_every=0, lr=0.1, devices=4)
    try:
        run(s, tmp / "C", progress=stop_after_first_chunk)
    except KeyboardInterrupt:
        pass
    r = cli.invoke(app, [*args, "--devices", "1", "--out", str(tmp / "C")])
    out["C"] = [r.exit_code, r.output]
    for name, extra in (("too_many", ["--devices", "5"]),
                        ("bn", ["--model", "mlp-bn", "--devices", "4"])):
        r = cli.invoke(app, [*args, *extra, "--out", str(tmp / name)])
        out[name] = [r.exit_code, r.output]
    (tmp / "out.json").write_text(json.dumps(out))
""")


def _metrics(path: Path) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(path.open()))
    cols = {}
    for k in rows[0]:
        try:
            cols[k] = np.array([float(r[k]) if r[k] else np.nan for r in rows])
        except ValueError:  # text columns (regime labels)
            pass
    return cols


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_COMPILATION_CACHE_DIR=str(tmp / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), json.dumps(ARGS)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, json.loads((tmp / "out.json").read_text())


def _assert_equal_errors(a: dict, b: dict) -> None:
    """Every column equal to 1e-10 except the solver-error estimates: sharding only reorders
    floating-point sums (≈1e-16 relative per evaluation), and the adaptive solves at the
    automatic tolerances amplify that to ≈1e-12 at most on this problem (measured 4e-12)."""
    assert a.keys() == b.keys()
    np.testing.assert_array_equal(a["step"], b["step"])
    for k in a:
        if k.startswith("solver_error"):
            continue
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-10, err_msg=k)


def test_four_devices_equal_one(runs):
    tmp, out = runs
    assert out["A"][0] == 0 and out["B"][0] == 0, out
    assert "4 cpu devices" in out["B"][1] and "1 cpu device" in out["A"][1]
    a, b = _metrics(tmp / "A" / "metrics.csv"), _metrics(tmp / "B" / "metrics.csv")
    assert len(a["step"]) == 20 and "error_1" in a
    _assert_equal_errors(a, b)
    for name, count in (("A", 1), ("B", 4)):
        for file in ("config.json", "results.json"):
            dev = json.loads((tmp / name / file).read_text())["devices"]
            assert (dev["count"], dev["kind"], dev["available"]) == (count, "cpu", 4)
    assert json.loads((tmp / "B" / "config.json").read_text())["devices"]["padding"] == 2


def test_resume_on_another_device_count(runs):
    tmp, out = runs
    assert out["C"][0] == 0, out["C"]
    assert "resuming from step 16" in out["C"][1] and "started on 4 cpu devices" in out["C"][1]
    _assert_equal_errors(_metrics(tmp / "A" / "metrics.csv"), _metrics(tmp / "C" / "metrics.csv"))
    cfg = json.loads((tmp / "C" / "config.json").read_text())
    assert [d["count"] for d in cfg["devices_history"]] == [4, 1]


def test_refusals(runs):
    _, out = runs
    code, text = out["too_many"]
    assert code == 2 and "only 4 cpu device(s)" in text and "Traceback" not in text
    code, text = out["bn"]
    assert code == 2 and "does not divide the batch of 62" in text and "--subset 60" in text
