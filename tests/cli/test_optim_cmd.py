"""`eom run --optimizer sgd|momentum` end to end on tiny problems (a linear model on 16
teacher-student samples: 17 parameters, so the compiles are the cost, not the solves)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eom.cli import app
from eom.experiments import _run
from eom.experiments._settings import optimizer_settings

runner = CliRunner()
TINY = ["--model", "linear", "--dataset", "teacher-student", "--subset", "16"]
SGD = [*TINY, "--optimizer", "sgd", "--batch-size", "4", "--orders", "0,1",
       "--record-every", "2", "--diagnose-every", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("optim") / "sgd"
    # 7 steps on m = 4 batches: rounded up to 2 epochs = 8 steps (said in the notes).
    r = invoke("run", *SGD, "--shuffle", "cyclic", "--steps", "7", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_sgd_run_records_the_decomposition_and_regimes(sgd_run):
    res, cfg = load(sgd_run, "results.json"), load(sgd_run, "config.json")
    assert res["status"] == "complete" and res["steps_done"] == 8
    assert cfg["resolved"]["batches"] == 4 and cfg["resolved"]["epochs"] == 2
    assert any("rounded up" in n for n in cfg["resolved"]["notes"])
    assert any("--predict is off" in n for n in cfg["resolved"]["notes"])
    models = res["final"]["models"]
    assert set(models) == {"gf", "switch0", "switch1", "epoch1"}
    # The first-order switching EoM must beat gradient flow (its error is O(η²) per unit time,
    # GF's O(η)); at η·λ_max ≈ 0.1 the factor is ~10, so 1/2 leaves ample room yet fails if the
    # models were swapped or the batches misaligned.
    assert models["switch1"]["error"] < 0.5 * models["gf"]["error"]
    # (η/4m)Σ‖∇L_i‖² ≥ (η/4)‖∇L‖² by Jensen (mean of squares ≥ square of the mean): a wrong 1/m
    # or a missing batch breaks it.
    assert res["final"]["reg_sgd"] >= res["final"]["reg_gd"] > 0
    import csv

    rows = list(csv.DictReader(open(sgd_run / "metrics.csv")))
    # Epoch models are defined at epoch boundaries only (m = 4): NaN at step 2 and 6.
    epoch = {int(r["step"]): r["error_epoch1"] for r in rows}
    assert epoch[2] == "nan" and epoch[4] != "nan" and epoch[8] != "nan"
    assert rows[-1]["gap_switch1_epoch1"] != "nan"
    reg = res["optimizer_regime"]
    assert reg["switching"]["radius"] == 1.0 and reg["epoch"]["value_max"] > 0
    for fig in ("decomposition.png", "regularizer.png", "regime.png"):
        assert (sgd_run / "figures" / fig).exists(), fig
    html = (sgd_run / "report.html").read_text()
    assert "switching EoM" in html and "implicit regularizer" in html
    from eom.experiments import RunResult

    r = RunResult.from_dir(sgd_run)  # notebook view: table rows per model, the same figures
    assert "switch1" in r._repr_html_() and len(r.plot()) == 3


def test_sgd_resume_after_an_interruption_is_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(_run, "CHUNK", 1)  # one recorded point per chunk: several checkpoints
    s = optimizer_settings("sgd", model="linear", dataset="teacher-student", subset=16,
                           batch_size=4, steps=8, orders=[0, 1], record_every=2,
                           diagnose_every=2, shuffle="random", predict=False)
    whole = _run.run(s, tmp_path / "whole")
    assert whole.status == "complete"
    calls = []

    def stop(done, total, what):
        calls.append(done)
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run.run(s, tmp_path / "cut", progress=stop)
    assert load(tmp_path / "cut", "results.json")["status"] == "interrupted"
    again = _run.run(s, tmp_path / "cut")
    assert again.status == "complete"
    a = (tmp_path / "whole" / "metrics.csv").read_text()
    b = (tmp_path / "cut" / "metrics.csv").read_text()
    assert a == b  # every digit, every column (errors, regularizers, regimes)


def test_momentum_run_from_rest_starts_settled_after_the_transient(tmp_path):
    out = tmp_path / "mom"
    # β = 0.2, η·λ_max = 0.02: the fast root is q/μ_s ≈ 0.2002, so K = 18 transient steps
    # (0.2002^18 ≤ 1e-12), then the 10 compared ones, recorded as the true steps 20 … 28.
    r = invoke("run", *TINY, "--optimizer", "momentum", "--momentum", "0.2", "--steps", "10",
               "--orders", "0,1", "--record-every", "2", "--target", "0.02", "--out", out)
    assert r.exit_code == 0, r.output
    res, cfg = load(out, "results.json"), load(out, "config.json")
    assert cfg["resolved"]["transient_steps"] == 18 and cfg["resolved"]["start"] == "rest"
    assert res["start_kind"] == "settled" and res["step_offset"] == 18
    assert res["lr_source"] == "auto: η·λ_max(θ_0) = 0.02"
    import csv

    steps = [int(row["step"]) for row in csv.DictReader(open(out / "metrics.csv"))]
    assert steps == [20, 22, 24, 26, 28]
    assert res["steps_done"] == 28 and set(res["final"]["models"]) == {"gf", "eom1"}
    # η·λ_max = 0.02 against the radius (1−√0.2)² ≈ 0.306: inside, so order 1 must gain about a
    # factor 15 over order 0; asking for 3 fails if the model or the start were wrong.
    m = res["final"]["models"]
    assert m["eom1"]["error"] < m["gf"]["error"] / 3
    assert res["optimizer_regime"]["momentum"]["inside"] is True
    html = (out / "report.html").read_text()
    assert "EoM held" in html and (out / "figures" / "error.png").exists()


@pytest.mark.parametrize("args, phrase", [
    (["--batch-size", "64"], "larger than the 16 samples"),
    (["--batch-size", "4", "--shuffle", "random", "--orders", "0,1,2"], "first order only"),
    (["--batch-size", "4", "--shuffle", "sideways"], "cyclic or random"),
])
def test_sgd_bad_input_exits_2(tmp_path, args, phrase):
    r = invoke("run", *TINY, "--optimizer", "sgd", *args, "--out", tmp_path / "x")
    assert r.exit_code == 2, r.output
    assert phrase in " ".join(r.output.split())
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, phrase", [
    (["--momentum", "1.0"], "[0, 1)"),
    (["--momentum", "-0.1"], "[0, 1)"),
    (["--momentum", "0.5", "--start", "moving"], "rest or manifold"),
    # heavy ball is stable below 2(1+β) = 2.4 (not GD's 2); Nesterov below (2+2β)/(1+2β) = 1.71
    (["--momentum", "0.2", "--target", "2.5"], "≥ 2.4"),
    (["--momentum", "0.2", "--nesterov", "--target", "1.8"], "≥ 1.714"),
    # outside the radius (1−√0.5)² ≈ 0.086 there is no slow manifold to start on
    (["--momentum", "0.5", "--start", "manifold", "--target", "0.2"], "no slow manifold"),
])
def test_momentum_bad_input_exits_2(tmp_path, args, phrase):
    r = invoke("run", *TINY, "--optimizer", "momentum", *args, "--out", tmp_path / "x")
    assert r.exit_code == 2, r.output
    assert phrase in " ".join(r.output.split())


def test_old_boolean_shuffle_configs_still_read(tmp_path):
    from eom.experiments._settings import shuffle_kind

    assert shuffle_kind(True) == "random" and shuffle_kind(False) == "cyclic"
    cfg = tmp_path / "old.toml"
    cfg.write_text("optimizer = 'sgd'\nbatch_size = 64\nshuffle = false\n")
    r = invoke("run", *TINY, "--config", cfg, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "larger than the 16 samples" in " ".join(r.output.split())
    assert np.isfinite(1.0)


def test_mean_over_seeds_is_closer_to_the_averaged_flow_than_to_gf(tmp_path):
    from eom.experiments import build_problem, lambda_max, seed_average
    from eom.experiments._optim import build_optimizer
    from eom.report._optim import seeds_figure

    s = optimizer_settings("sgd", model="linear", dataset="teacher-student", subset=16,
                           batch_size=4, shuffle="random")
    p = build_problem(s)
    opt, loss = build_optimizer(s, p)
    lr = 0.1 / lambda_max(p)  # m·η·λ_max = 0.4: inside the epoch series' regime
    avg = seed_average(loss, p.params0, opt.batches, lr, 4, 8)
    # GF misses the O(η) drift (η/4m)∇Σ‖∇L_i‖² that the averaged flow keeps; the mean over 8
    # seeds still carries O(noise) — so require only "closer", and that GF's distance is
    # resolved above that noise (else the comparison would mean nothing).
    assert avg.distance_averaged[-1] < avg.distance_gf[-1]
    assert avg.distance_gf[-1] > avg.noise[-1]
    assert seeds_figure(avg.as_dict(), tmp_path / "seeds.png").exists()


@pytest.mark.slow  # ~25 s of CPU: three runs with a momentum compile each
def test_momentum_resume_restores_the_buffer_bit_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(_run, "CHUNK", 1)
    s = optimizer_settings("momentum", model="linear", dataset="teacher-student", subset=16,
                           momentum=0.2, steps=6, orders=[0, 1], record_every=2, target=0.02,
                           diagnose_every=0, predict=False)
    assert _run.run(s, tmp_path / "whole").status == "complete"

    def stop(done, total, what):
        if done >= 22:  # K = 18 settled transient steps, then the first recorded points
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run.run(s, tmp_path / "cut", progress=stop)
    assert _run.run(s, tmp_path / "cut").status == "complete"
    # The momentum buffer is part of the checkpoint: a lost buffer changes every later digit.
    assert ((tmp_path / "whole" / "metrics.csv").read_text()
            == (tmp_path / "cut" / "metrics.csv").read_text())


def test_momentum_default_lr_is_half_the_radius_and_the_limit_is_its_own(tmp_path):
    # No --lr/--target: η·λ_max(θ_0) = 0.5 × (1−√β)², to lr's 2 significant digits.
    from eom.cli._options import settings_from
    from eom.experiments import RunSettings, auto_target, build_problem, lambda_max
    from eom.experiments._run import resolve

    s = optimizer_settings("momentum", model="linear", dataset="teacher-student", subset=16,
                           momentum=0.9, steps=4, orders=[0])
    assert s.target is None
    # the command line reaches the same settings (its None flags must not fall back to GD's 0.2)
    flags = {"optimizer": "momentum", "momentum": 0.9, "model": "linear", "subset": 16,
             "dataset": "teacher-student", "steps": 4, "orders": [0], "target": None}
    assert settings_from(RunSettings, None, flags) == s
    assert settings_from(RunSettings, None, {**flags, "target": 0.01}).target == 0.01
    assert settings_from(RunSettings, None, {}).target == 0.2
    res = resolve(s, build_problem(s))
    radius = (1 - 0.9**0.5) ** 2
    assert res["lr_source"] == "auto: η·λ_max(θ_0) = 0.5 × momentum radius 0.00263"
    # lr has 2 significant digits: off by ≤ 5 % (half a unit of the 2nd digit, leading digit 1)
    assert abs(res["eta_lambda_max_initial"] / radius - 0.5) < 0.5 * 0.05
    assert res["optimizer_regime_inside"] is True and res["start_kind"] == "settled"
    # Nesterov: its own radius ((1−β)/(1+β))²
    x, source = auto_target(optimizer_settings("momentum", momentum=0.9, nesterov=True))
    assert x == pytest.approx(0.5 * (0.1 / 1.9) ** 2, rel=1e-15) and "0.00277" in source
    # GD keeps its 0.2; heavy ball at η·λ_max = 2.2 ≥ GD's 2 but < 2(1+β) = 3.8 is accepted.
    assert auto_target(RunSettings())[0] == 0.2
    p = build_problem(s)
    lam = lambda_max(p)
    from eom.experiments import check_stable
    from eom.experiments._optim import build_optimizer

    check_stable(2.2 / lam, lam, optimizer=build_optimizer(s, p)[0])
