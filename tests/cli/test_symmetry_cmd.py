"""End-to-end tests of `eom symmetry` on a tiny configuration (THEORY.md §4–5).

One module-scoped run does the work: `--quick` (40 steps) on a 64-sample digits subset with a
one-hidden-layer mlp-bn of width 6, λ = 0 and the automatic λ > 0, two groups plotted. It is
first interrupted (a KeyboardInterrupt injected into the first λ > 0 solve), then resumed, so
the resume path is tested without extra computation. Everything else reads the files it wrote.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eom.cli import app

runner = CliRunner()
TINY = ["--quick", "--subset", "64", "--width", "6", "--depth", "1", "--groups", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def columns(rows: list[dict], wd: float) -> dict[str, np.ndarray]:
    """The metrics.csv columns of one λ as float arrays."""
    sel = [r for r in rows if float(r["weight_decay"]) == wd]
    return {k: np.array([float(r[k]) for r in sel]) for k in sel[0]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import eom.engine as engine

    out = tmp_path_factory.mktemp("symmetry") / "tiny"
    real = engine.integrate

    def interrupted(*args, weight_decay=0.0, **kwargs):
        if weight_decay > 0:
            raise KeyboardInterrupt
        return real(*args, weight_decay=weight_decay, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(engine, "integrate", interrupted)
    try:
        first = invoke("symmetry", *TINY, "--out", out)
    finally:
        mp.undo()
    snapshot = {
        "results": json.loads((out / "results.json").read_text()),
        "metrics": (out / "metrics.csv").read_text(),
    }
    second = invoke("symmetry", *TINY, "--out", out)
    assert second.exit_code == 0, second.output
    return out, first, snapshot, second


def test_every_file_exists_and_parses(run):
    out, _, _, second = run
    for name in ("config.json", "metrics.csv", "results.json", "report.html"):
        assert (out / name).exists(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "symmetry" and cfg["float64"] is True
    assert cfg["settings"]["model"] == "mlp-bn" and cfg["settings"]["steps"] == 40
    res = cfg["resolved"]
    lr, wds = res["lr"], res["weight_decays"]
    assert lr > 0 and res["lambda_max_initial"] > 0 and res["save_every"] == 1
    assert wds[0] == 0.0 and len(wds) == 2
    # The automatic λ > 0 has ηλ·steps = 0.5, rounded to two significant digits.
    assert 0.45 <= lr * wds[1] * 40 <= 0.55

    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["float64"] is True
    assert results["weight_decays_done"] == wds
    # Width 6, one hidden layer: 6 unit rows before the BatchNorm; the softmax gives the bias
    # and 6 columns of the output layer as translation directions (THEORY.md §4–5).
    assert results["groups"]["count"]["scale"] == 6
    assert results["groups"]["count"]["translation"] == 7
    assert len(results["groups"]["plotted"]["scale"]) == 2
    for wd in wds:
        r = results["runs"][repr(wd)]
        assert r["steps"] == 40 and r["weight_decay"] == wd
        kinds = [g["kind"] for g in r["groups"]]
        assert kinds.count("scale") == 6 and kinds.count("translation") == 7
        for q in ("sq_norm", "s"):
            agg = r["aggregate"][q]
            assert agg["groups"] > 0
            for p in ("gf", "eom1", "eom2"):
                assert math.isfinite(agg["error_vs_gd"][p]["median"])
    assert "equilibrium" not in results["runs"]["0.0"]
    eq = results["runs"][repr(wds[1])]["equilibrium"]
    assert eq["angular_update_limit"] == pytest.approx(math.sqrt(2 * lr * wds[1]), rel=1e-12)

    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 2 * 41
    for wd in wds:
        m = columns(rows, wd)
        assert m["step"].tolist() == list(range(41))
        np.testing.assert_allclose(m["time"], m["step"] * lr, rtol=1e-12)
    for label in results["groups"]["plotted"]["scale"]:
        for p in ("gd", "gf", "eom1", "eom2"):
            assert f"{label}|measured|{p}" in rows[0] and f"{label}|predicted|{p}" in rows[0]
    for label in results["groups"]["plotted"]["translation"]:
        assert f"{label}|predicted|eom-series" in rows[0]

    figs = {p.name for p in (out / "figures").glob("*.png")}
    tag = f"wd{wds[1]:g}"
    assert figs == {"sq_norm_wd0.png", f"sq_norm_{tag}.png", f"s_{tag}.png",
                    f"equilibrium_{tag}.png"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "float64" in html
    assert "conserved" in html and "EoM-1" in html and "Per group" in html
    for needle in ("GF", "EoM-1", "EoM-2", "‖w‖²", "wall time", "report:"):
        assert needle in second.output, needle


def test_eom_norm_error_is_smaller_than_gradient_flows_at_zero_decay(run):
    out, *_ = run
    results = json.loads((out / "results.json").read_text())
    groups = [g for g in results["runs"]["0.0"]["groups"] if g["kind"] == "scale"]
    for g in groups:
        # GF conserves ‖w‖² (to the solver's tolerance); GD grows it by η²Σ‖g_w‖².
        assert abs(g["gf_end"] / g["gd_start"] - 1) < 1e-9
        assert g["gd_end"] / g["gd_start"] - 1 > 1e-3
        # GF's error is the whole growth, O(η); EoM-1's is O(η²). With ηλ_max = 0.2 the ratio
        # is ≲ 0.2 in theory; measured 0.03–0.05 on this configuration, hence the factor 5.
        assert g["eom1_error_vs_gd"] < g["gf_error_vs_gd"] / 5, g["group"]
        assert g["eom2_error_vs_gd"] < g["gf_error_vs_gd"] / 5, g["group"]
    agg = results["runs"]["0.0"]["aggregate"]["sq_norm"]["error_vs_gd"]
    assert agg["eom2"]["median"] < agg["eom1"]["median"] < agg["gf"]["median"]


def test_translation_sums_follow_the_gd_closed_form_with_weight_decay(run):
    out, *_ = run
    cfg = json.loads((out / "config.json").read_text())
    lr, (_, wd) = cfg["resolved"]["lr"], cfg["resolved"]["weight_decays"]
    rows = read_csv(out / "metrics.csv")
    labels = [k[: -len("|measured|gd")] for k in rows[0]
              if k.startswith("translation ") and k.endswith("|measured|gd")]
    assert len(labels) == 2
    m, m0 = columns(rows, wd), columns(rows, 0.0)
    k, t = m["step"], m["time"]
    for lab in labels:
        s_gd, s_gf = m[f"{lab}|measured|gd"], m[f"{lab}|measured|gf"]
        s0 = s_gd[0]
        # GD: s_{k+1} = (1 − ηλ) s_k exactly (u·g = 0), so only round-off over 40 steps.
        np.testing.assert_allclose(s_gd, s0 * (1 - lr * wd) ** k, rtol=1e-12)
        # GF: e^{−λt} s_0 to the ODE solver's tolerance (rtol 1e-10).
        np.testing.assert_allclose(s_gf, s0 * np.exp(-wd * t), rtol=1e-8)
        # ... and the two laws differ by ≈ ηλ²t/2 (≈ 3e-3 here), far above those tolerances,
        # so the first check really tells (1 − ηλ)^k from e^{−λt}.
        gap = abs(s_gf[-1] - s_gd[-1]) / abs(s_gd[-1])
        assert gap == pytest.approx(lr * wd**2 * t[-1] / 2, rel=0.05)
        # EoM-1 and EoM-2 close the gap order by order: by THEORY.md §5 the relative errors are
        # ≈ (ηλ)^{N+1}λt/(N+2), so e1/gap ≈ 2ηλ/3 and e2/e1 ≈ 3ηλ/4, both ≈ 1/100 at ηλ ≈ 0.012;
        # the factor 50 leaves a margin of 2.
        e1 = abs(m[f"{lab}|measured|eom1"][-1] - s_gd[-1]) / abs(s_gd[-1])
        e2 = abs(m[f"{lab}|measured|eom2"][-1] - s_gd[-1]) / abs(s_gd[-1])
        assert e1 < gap / 50 and e2 < e1 / 50
        # Without weight decay s is conserved by every process.
        for p in ("gd", "gf", "eom1", "eom2"):
            s = m0[f"{lab}|measured|{p}"]
            np.testing.assert_allclose(s, s[0], rtol=1e-12)


def test_an_interrupted_run_resumes_with_the_weight_decays_not_done(run):
    out, first, snapshot, second = run
    assert first.exit_code == 130, first.output
    assert snapshot["results"]["status"] == "interrupted"
    assert snapshot["results"]["weight_decays_done"] == [0.0]
    assert list(snapshot["results"]["runs"]) == ["0.0"]
    before = snapshot["metrics"].splitlines()
    assert {line.split(",")[0] for line in before[1:]} == {"0.0"}
    assert "resuming: 1 of 2 weight decays already done" in second.output
    after = (out / "metrics.csv").read_text().splitlines()
    assert after[: len(before)] == before  # λ = 0 rows kept as written, not recomputed
    assert len(after) == 2 * len(before) - 1


def test_rerun_of_a_complete_run_does_not_recompute(run):
    out, *_ = run
    result = invoke("symmetry", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output and "EoM-2" in result.output


def test_report_rebuilds_from_files(run):
    out, *_ = run
    (out / "report.html").unlink()
    for p in (out / "figures").glob("*.png"):
        p.unlink()
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "figures" / "sq_norm_wd0.png").exists()


def test_model_without_symmetry_ends_with_a_clear_message(tmp_path):
    out = tmp_path / "none"
    result = invoke("symmetry", "--model", "mlp", "--dataset", "teacher-student", "--subset",
                    32, "--width", 4, "--depth", 1, "--steps", 5, "--out", out)
    assert result.exit_code == 2, result.output
    assert "no symmetric groups found" in result.output and "--model mlp-bn" in result.output
    assert not out.exists()  # refused before anything was written: no --overwrite needed after


@pytest.mark.parametrize("args, needle", [
    (["--weight-decays", "0,abc"], "not a number"),
    (["--weight-decays", "0,-1"], "≥ 0"),
    (["--lr", "0.5", "--weight-decays", "0,3"], "≥ 1"),
    (["--weight-decay", "0.1", "--weight-decays", "0,0.1"], "not both"),
    (["--groups", "0"], "--groups"),
    (["--save-every", "0"], "--save-every"),
    (["--decay", "0"], "--decay"),
])
def test_bad_options_exit_with_code_2(tmp_path, args, needle):
    result = invoke("symmetry", *TINY, *args, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_config_file_is_read_and_checked(tmp_path):
    # Settings come from the TOML file (λ = 3 with η = 0.5 is refused before any computation).
    cfg = tmp_path / "sym.toml"
    cfg.write_text('weight_decays = "0,3"\nlr = 0.5\n')
    result = invoke("symmetry", "--config", cfg, "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "lr·λ = 1.5 ≥ 1" in result.output
    cfg.write_text("weight_decay = 0.1\n")
    result = invoke("symmetry", "--config", cfg, "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "weight_decays" in result.output
