"""`eom.bench`: the targets table and the SGD / momentum rows (smoke runs at toy size), their
pass/fail logic, the registry, memory sampling without psutil, and `benchmarks/gpu.sh --tiny`
end to end (slow)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eom import bench
from eom.bench import _machine

ROOT = Path(__file__).resolve().parents[2]


def test_targets_smoke_tiny():
    """The registered field measure at toy size: one row per order plus the compile row, with
    finite positive values, the issue's limits and a verdict consistent with them."""
    rows = bench.run_targets(bench.TargetSettings.tiny(), only=["fields"])
    names = [r.name for r in rows]
    assert names[0].startswith("order-1 field / gradient") and "compile order-1" in names[1]
    assert len(rows) == 2
    assert rows[0].limit == bench.FIELD_LIMITS[1] and rows[1].limit == bench.COMPILE_LIMIT
    for r in rows:
        assert math.isfinite(r.value) and r.value > 0
        assert r.passed == (r.value <= r.limit)
    # An order-1 field is one HVP: XLA must count more work than for the gradient alone
    # (it is ≥ 2 forward/backward passes), and not an order of magnitude more.
    flops = float(rows[0].note.split("XLA FLOPs ")[1].split("×")[0])
    assert 1.5 < flops < 4.0
    table = bench.format_targets(rows)
    assert table.count("\n") == len(rows) + 1 and ("PASS" in table or "FAIL" in table)


def _flops(row) -> float:
    return float(row.note.split("XLA FLOPs ")[1].split("×")[0])


def test_optimizer_rows_tiny():
    """The SGD (issue 12) and momentum (issue 13) rows at toy size: informational (no limit,
    verdict `info`), finite positive ratios, and XLA work counts that fit what each program is."""
    rows = bench.run_targets(bench.TargetSettings.tiny(), only=["sgd", "momentum"])
    names = [r.name for r in rows]
    assert [n.split(" (")[0] for n in names] == [
        "switching EoM-1 step field / batch gradient",
        "cyclic epoch EoM-1 field / full-batch gradient",
        "heavy-ball EoM-1 field",
        "Nesterov EoM-1 field",
    ]
    assert "m=4" in names[0] and "β=0.9" in names[2]
    for r in rows:
        assert math.isfinite(r.value) and r.value > 0
        assert r.passed is None and math.isinf(r.limit)
    switch, epoch, hb, nag = (_flops(r) for r in rows)
    # Order-1 switching and momentum fields are a gradient plus one HVP (∇L_i + η/2 H_i∇L_i;
    # ∇[L + c‖∇L‖²]): like GD's order-1 field, 2–3 gradients of XLA work, never 1 or 10.
    for f in (switch, hb, nag):
        assert 1.5 < f < 4.0
    # The order-1 epoch field differentiates the m = 4 step map in h (a Taylor pass through 4
    # sequential batch gradients, ≈ the full gradient's work each order): more than one full
    # gradient, not an order of magnitude more than the 2–3 of a one-step field per batch.
    assert 1.5 < epoch < 20.0
    lines = bench.format_targets(rows).splitlines()[2:]
    assert all("| — | info |" in line for line in lines)


def test_verdicts_and_format():
    ok = bench.TargetResult("a", 1.5, 2.0, "×")
    bad = bench.TargetResult("b", 2.5, 2.0, "×")
    missing = bench.TargetResult("c", math.nan, 2.0, "×")
    info = bench.TargetResult("d", 3.25, math.inf, "×")
    assert (ok.passed, bad.passed, missing.passed, info.passed) == (True, False, None, None)
    lines = bench.format_targets([ok, bad, missing, info]).splitlines()
    assert "| PASS |" in lines[2] and "| FAIL |" in lines[3] and "| — |" in lines[4]
    assert "| d | 3.25× | — | info |" in lines[5]
    assert "1.50×" in lines[2] and "≤ 2×" in lines[2]


def test_registry_adds_rows_in_order():
    """A measure registered later (e.g. the switching-SGD step) appears after the built-ins."""

    def sgd_step(settings):
        return [bench.TargetResult("SGD step / GD step", 1.0, 2.0, "×", settings.model)]

    bench.register_target("sgd-test", sgd_step)
    try:
        assert bench.registered_targets()[:4] == ("fields", "trajectories", "sgd", "momentum")
        assert bench.registered_targets()[-1] == "sgd-test"
        rows = bench.run_targets(bench.TargetSettings.tiny(), only=["sgd-test"])
        assert [(r.name, r.note, r.passed) for r in rows] == [("SGD step / GD step", "mlp", True)]
    finally:
        bench._targets._REGISTRY.pop("sgd-test")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_rss_without_psutil_sees_an_allocation():
    """/proc fallback: touching 64 MiB must show ≥ 48 MiB of growth (pages may be shared or
    lazily mapped, hence not exactly 64; a sampler that reads nothing shows 0)."""
    with bench.PeakRSS(source="proc") as mem:
        block = np.ones(64 * 2**20 // 8)
        block[::512] += 1.0
    del block
    assert (mem.peak - mem.base) / 2**20 >= 48
    assert _machine.rss_bytes("rusage-peak") >= _machine.rss_bytes("proc") * 0.5 > 0
    assert math.isnan(_machine.rss_bytes("none"))


@pytest.mark.slow
def test_gpu_script_tiny(tmp_path):
    """`benchmarks/gpu.sh --tiny` on the CPU: targets, two toy `eom run`s, one Markdown table."""
    env = dict(os.environ, PYTHON=sys.executable, EOM_CACHE_DIR="off")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "gpu-bench.md").read_text()
    assert "| mlp-1m |" in table and "| cnn-resnet18-size |" in table
    assert table.count("complete (rc 0)") == 2
    assert "order-1 field / gradient" in table
