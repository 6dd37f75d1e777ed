"""`eom validity` end to end on a tiny configuration, its pure helpers, and the run-time validity
warning of `eom run` when the sharpness crosses 2/η."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eom._errors import EomError
from eom.cli import app
from eom.experiments import best_order, not_better, step_counts, stops_helping

runner = CliRunner()
# Tiny network; orders 0 and 1 only (order 1's term ratios need ξ_2: cheap to compile). --quick
# gives 4 learning rates with η·λ_max ≈ 0.1, 0.76, 1.27, 1.9 and T = 3.8/λ_max(θ_0).
TINY = ["--subset", "64", "--width", "6", "--depth", "1", "--orders", "0,1", "--quick"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def label(x: float) -> str:
    """THEORY.md §6 / issue 6 thresholds, written out independently of eom.analysis.regime."""
    if not x < 2.0:
        return "unstable"
    return "accurate" if x < 0.5 else "marginal" if x < 1.0 else "beyond-series"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("validity") / "tiny"
    result = invoke("validity", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_validity_writes_every_file_with_its_schema(tiny):
    out, output = tiny
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "validity" and cfg["float64"] is True
    assert cfg["settings"]["orders"] == [0, 1] and cfg["settings"]["quick"] is True
    assert cfg["settings"]["points"] == 4 and cfg["settings"]["horizon_steps"] == 2
    res_cfg = cfg["resolved"]
    lam0 = res_cfg["lambda_max_initial"]
    assert lam0 > 0 and res_cfg["num_steps"] == [38, 5, 3, 2]

    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 4 * 2  # one row per (learning rate, order)
    for col in ("point", "lr", "num_steps", "eta_lambda_max", "regime", "eta_lambda_max_final",
                "regime_final", "order", "error", "relative_error", "solver_error", "flagged",
                "status", "reason", "ratio_0", "ratio_1"):
        assert col in rows[0], col

    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "complete" and res["float64"] is True
    assert res["points_done"] == res["points_total"] == 4
    t = res["table"]
    horizon = res["horizon"]
    for lr, k, x in zip(t["lr"], t["num_steps"], t["eta_lambda_max"], strict=True):
        # T is exactly fixed: k·η = T up to rounding of one division (relative 1e-13).
        assert k * lr == pytest.approx(horizon, rel=1e-13)
        assert x == pytest.approx(lr * lam0, rel=1e-13)
    # The sweep spans the regimes: 0.1 (accurate) … 1.9 (beyond-series), never unstable.
    assert t["eta_lambda_max"][0] == pytest.approx(0.1, rel=1e-12)
    assert t["eta_lambda_max"][-1] == pytest.approx(1.9, rel=1e-12)
    assert t["regime"] == [label(x) for x in t["eta_lambda_max"]]
    assert t["regime"] == ["accurate", "marginal", "beyond-series", "beyond-series"]
    assert t["regime_final"] == [label(x) for x in t["eta_lambda_max_final"]]
    for r in rows:  # the CSV's labels agree with its own η·λ_max values too
        assert r["regime"] == label(float(r["eta_lambda_max"]))
        assert r["status"] == "ok" and r["reason"] == ""
    # Term ratios at θ_0 are proportional to η (r_k = η‖ξ_{k+1}‖/‖ξ_k‖ at one point θ_0).
    ratios = np.asarray(t["term_ratios"])
    per_lr = ratios / np.asarray(t["lr"])[:, None]
    np.testing.assert_allclose(per_lr, per_lr[:1].repeat(4, axis=0), rtol=1e-10)
    # Physics: in the accurate regime the order-1 EoM is closer to GD than gradient flow, by
    # roughly a factor 1/(ηλ_eff) ≥ 1/0.1 — ask only for 3× (a tiny net, a short horizon).
    e0, e1 = t["error"]["0"][0], t["error"]["1"][0]
    assert e1 < e0 / 3
    # Best order and where order 1 stops helping are consistent with the table.
    for j in range(4):
        errs = [t["error"][str(n)][j] for n in (0, 1)]
        assert t["best_order"][j] == int(np.argmin(errs))
    sh = res["stops_helping"]["1"]
    assert sh["previous"] == 0
    worse = [x for j, x in enumerate(t["eta_lambda_max"])
             if t["error"]["1"][j] >= t["error"]["0"][j] and not t["flagged"]["1"][j]]
    assert sh["eta_lambda_max"] == (min(worse) if worse else None)

    png = out / "figures" / "validity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "float64" in html and "Reading" in html
    assert "beyond-series" in html
    flat = " ".join(output.split())
    assert "report:" in flat and "ηλ_max" in flat and "order 1 vs order 0" in flat
    assert "beyond-series" in flat and "EoM-1" in flat  # the table is printed, not truncated


def test_report_rebuilds_validity_folder(tiny):
    out, _ = tiny
    (out / "report.html").unlink()
    (out / "figures" / "validity.png").unlink()
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "figures" / "validity.png").exists()


def test_complete_sweep_is_not_recomputed(tiny):
    out, _ = tiny
    before = (out / "metrics.csv").read_text()
    result = invoke("validity", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output
    assert (out / "metrics.csv").read_text() == before


def test_config_file_settings_resume_the_same_sweep(tiny, tmp_path):
    """A TOML file with the fixture's settings names the same sweep (so it is found complete and
    not recomputed); a flag overriding one of them is a different sweep; unknown keys exit 2."""
    out, _ = tiny
    cfg = tmp_path / "validity.toml"
    cfg.write_text('subset = 64\nwidth = 6\ndepth = 1\norders = [0, 1]\nquick = true\n')
    result = invoke("validity", "--config", cfg, "--out", out)
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output
    result = invoke("validity", "--config", cfg, "--points", "3", "--out", out)
    assert result.exit_code == 2 and "points: 4 → 3" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("pointz = 3\n")
    result = invoke("validity", "--config", bad, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "pointz" in result.output


def test_help_shows_the_defaults():
    text = re.sub(r"[\s│]+", " ", invoke("validity", "--help").output)
    for needle in ("[default: 0-3]", "[default: 7; --quick: 4]", "[default: 0.1]",
                   "[default: 1.9]", "[default: 3; --quick: 2]", "[default: 256]"):
        assert needle in text, needle


def test_resume_skips_written_points_and_a_failing_order_does_not_stop_the_sweep(
    tiny, tmp_path, monkeypatch
):
    """Cut the last learning rate (and leave half of the third, as an interrupted append would),
    mark a written row, and make order 1's EoM solve fail at the two largest learning rates. The
    rerun recomputes only the missing points, records the failures as NaN with their reason, and
    completes. (One invocation tests both, to keep the suite fast.)"""
    import eom.measure

    src, _ = tiny
    out = tmp_path / "resume"
    shutil.copytree(src, out)
    rows = read_csv(out / "metrics.csv")
    full = {(r["point"], r["order"]): r for r in rows}
    keep = [r for r in rows if r["point"] in ("0", "1") or (r["point"], r["order"]) == ("2", "0")]
    keep[0] = {**keep[0], "error": "123.0"}  # a sentinel: survives only if point 0 is skipped
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    res = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**res, "status": "interrupted"}))

    real = eom.measure.compare

    def flaky(loss, params0, lr, num_steps, orders, **kw):
        if tuple(orders) == (1,) and num_steps <= 3:  # η·λ_max ≥ 1.27 in the quick sweep
            raise EomError("the ODE solver failed for order 1 (test)")
        return real(loss, params0, lr, num_steps, orders, **kw)

    monkeypatch.setattr(eom.measure, "compare", flaky)
    result = invoke("validity", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "resuming: 2 of 4" in " ".join(result.output.split())
    after = read_csv(out / "metrics.csv")
    assert sorted((r["point"], r["order"]) for r in after) == sorted(full)
    got = {(r["point"], r["order"]): r for r in after}
    assert got[("0", "0")]["error"] == "123.0"
    for key in [("2", "0"), ("3", "0")]:
        # Recomputed points are deterministic: same numbers to rounding (1e-12 relative).
        assert float(got[key]["error"]) == pytest.approx(float(full[key]["error"]), rel=1e-12)
    for key in [("2", "1"), ("3", "1")]:
        assert got[key]["status"] == "failed" and got[key]["error"] == "nan"
        assert "solver failed for order 1 (test)" in got[key]["reason"]
    res = json.loads((out / "results.json").read_text())
    t = res["table"]
    assert res["status"] == "complete" and res["points_done"] == 4
    assert t["error"]["1"][2:] == [None, None]  # NaN is written as null
    assert t["failed"]["0"] == [None] * 4 and t["failed"]["1"][:2] == [None, None]
    assert t["best_order"][2:] == [0, 0]
    # Failing counts as "not better": order 1 stops helping at the first failed point at the
    # latest (earlier only if it was already worse there).
    assert res["stops_helping"]["1"]["eta_lambda_max"] <= t["eta_lambda_max"][2]
    assert "failed" in result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--max-target", "2.5"], "--max-target"),
        (["--min-target", "1.5", "--max-target", "1.0"], "--min-target"),
        (["--points", "1"], "--points"),
        (["--orders", "0,99"], "supported"),
    ],
)
def test_bad_validity_input_exits_2(tmp_path, args, needle):
    result = invoke("validity", *TINY, *args, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert needle in result.output


# -- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize("points, lo, hi, K", [(9, 0.1, 1.9, 8), (4, 0.1, 1.9, 2), (7, 0.1, 1.9, 3),
                                            (6, 0.3, 1.5, 5)])
def test_step_counts_hit_the_targets(points, lo, hi, K):
    ks = step_counts(points, lo, hi, K)
    c = K * hi
    x = c / np.asarray(ks, float)
    assert len(ks) == points and ks == sorted(set(ks), reverse=True)  # distinct, η ascending
    assert ks[-1] == K and x[-1] == pytest.approx(hi, rel=1e-15) and np.all(x < 2)
    assert x[0] == pytest.approx(lo, rel=0.5 / ks[0])  # the smallest target, to half a step
    # Each target is met to within half a step (|c/x_target − k| ≤ 1/2), except where rounding
    # would repeat the previous k, which is then bumped by one: at most one step off.
    targets = np.linspace(lo, hi, points)
    off = np.abs(c / targets - np.asarray(ks))
    assert np.all(off <= 1.0 + 1e-12)
    if K >= 8:  # fine enough resolution: no bumps needed
        assert np.all(off <= 0.5 + 1e-12)


def test_step_counts_default_and_quick():
    assert step_counts(7, 0.1, 1.9, 3) == [57, 14, 8, 6, 5, 4, 3]
    assert step_counts(4, 0.1, 1.9, 2) == [38, 5, 3, 2]


def test_not_better_and_stops_helping():
    nan = math.nan
    assert not_better(1.0, 0.5, False, False) is False
    assert not_better(1.0, 1.5, False, False) is True
    assert not_better(1.0, 1.5, False, True) is None  # an upper bound above: cannot tell
    assert not_better(1.0, nan, False, False) is True  # the higher order failed
    assert not_better(nan, 0.3, False, False) is False
    eta = [0.1, 0.5, 1.0, 1.5]
    error = {0: [1.0, 2.0, 3.0, 4.0], 1: [0.1, 0.8, 3.5, 2.0], 2: [0.01, 0.5, nan, nan]}
    flagged = {n: [False] * 4 for n in error}
    sh = stops_helping(eta, [0, 1, 2], error, flagged)
    assert sh == {"1": {"previous": 0, "eta_lambda_max": 1.0},
                  "2": {"previous": 1, "eta_lambda_max": 1.0}}
    assert best_order([0, 1, 2], [1.0, 0.2, nan]) == 1
    assert best_order([0, 1], [nan, nan]) is None


# -- `eom run` warns when the sharpness crosses 2/η ------------------------------------------------

GROWING = '''
import jax.numpy as jnp


def factory(dataset, seed):
    """L(x, y) = ½ e^y x² − y: GD pushes y up, so the curvature e^y in x grows without bound."""
    def loss(p):
        return 0.5 * jnp.exp(p["y"]) * p["x"] ** 2 - p["y"]

    return loss, {"x": jnp.asarray(0.1), "y": jnp.asarray(0.0)}
'''


def reference_eta_lambda(lr: float, steps: int) -> np.ndarray:
    """η·λ_max(H) along GD on ½e^y x² − y, with the 2×2 Hessian's eigenvalues in closed form."""
    x, y, out = 0.1, 0.0, []
    for _ in range(steps + 1):
        e = math.exp(y)
        out.append(lr * np.linalg.eigvalsh(np.array([[e, e * x], [e * x, 0.5 * e * x * x]]))[-1])
        x, y = x - lr * e * x, y - lr * (0.5 * e * x * x - 1.0)
    return np.asarray(out)


def test_run_warns_at_the_first_worsening_step_when_sharpness_crosses_2_over_eta(tmp_path):
    model = tmp_path / "growing.py"
    model.write_text(GROWING)
    lr, steps, every = 0.2, 16, 2
    ref = reference_eta_lambda(lr, steps)
    diagnosed = list(range(0, steps + 1, every))
    labels = [label(ref[k]) for k in diagnosed]
    order = ["accurate", "marginal", "beyond-series", "unstable"]
    first = next(k for k, lab in zip(diagnosed, labels, strict=True)
                 if order.index(lab) > order.index(labels[0]))
    unstable = next(k for k in diagnosed if ref[k] >= 2)
    # The configuration does what the test needs: starts accurate, crosses 2/η, loss finite.
    assert labels[0] == "accurate" and first < unstable < steps
    result = invoke("run", "--model", f"{model}:factory", "--subset", "64", "--lr", lr,
                    "--steps", steps, "--record-every", every, "--diagnose-every", every,
                    "--orders", "0", "--no-predict", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)
    assert "EoM validity" in result.output
    m = re.search(r"EoM regime worsened at step (\d+): η·λ_max = ([0-9.]+) '?\(?'?([a-z-]+)", text)
    assert m, text
    assert int(m.group(1)) == first
    # The diagnostic's Lanczos is exact in 2 dimensions: the value matches to its 3 digits.
    assert float(m.group(2)) == pytest.approx(ref[first], rel=5e-3)
    assert m.group(3) == labels[diagnosed.index(first)]
    assert f"reached 'unstable' at step {unstable}" in text
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["regime"]["initial"] == "accurate" and res["regime"]["final"] == "unstable"
