"""Results in a notebook: one-line reprs, Jupyter's `_repr_html_`, `.plot()` and the tqdm progress
callback. The results are built from hand-written dicts (what results.json holds), so no JAX
solve runs here and every printed number is known exactly."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import eom
from eom.experiments import (
    ExperimentResult,
    PaperResult,
    RunResult,
    SweepResult,
    SymmetryResult,
    ValidityResult,
    tqdm_progress,
)

RUN = {
    "status": "complete", "model": "mlp", "dataset": "digits", "optimizer": "gd", "lr": 0.21,
    "eta_lambda_max_initial": 0.2034, "steps_done": 8, "num_steps": 8, "n_params": 610,
    "final": {"step": 8, "orders": {
        "0": {"error": 0.0625, "relative_error": 0.02, "ratio_to_previous": None,
              "predicted": 0.065, "solver_error": 5e-7, "flagged": False},
        "1": {"error": 0.0027, "relative_error": 8.5e-4, "ratio_to_previous": 0.0432,
              "predicted": 0.0028, "solver_error": 6e-8, "flagged": True},
    }},
    "regime": {"warning": None},
}
STEP = np.array([0.0, 4.0, 8.0])
RUN_METRICS = {"step": STEP, "loss_gd": np.array([2.0, 1.5, 1.2]),
               "loss_0": np.array([2.0, 1.6, 1.3]), "error_0": np.array([0.0, 0.03, 0.0625]),
               "loss_1": np.array([2.0, 1.5, 1.2]), "error_1": np.array([0.0, 0.001, 0.0027]),
               "flagged_1": np.array([0.0, 0.0, 1.0])}
SWEEP = {"status": "complete", "model": "mlp", "dataset": "digits", "orders": [0, 1],
         "horizon": 1.26, "lrs": [0.0525, 0.105, 0.21],
         "error": {"0": [0.008, 0.016, 0.032], "1": [1.6e-4, 6.6e-4, 2.6e-3]},
         "flagged": {"0": [False] * 3, "1": [False] * 3},
         "slope": {"0": 0.986, "1": 1.996}, "slope_stderr": {"0": 0.0017, "1": 0.0026}}
VALIDITY = {"status": "interrupted", "message": "Interrupted; rerun", "model": "mlp",
            "dataset": "digits", "orders": [0, 1], "horizon": 3.1, "points_done": 2,
            "points_total": 3,
            "table": {"point": [0, 1], "eta_lambda_max": [0.1, 1.5],
                      "error": {"0": [0.026, 0.38], "1": [6.6e-4, 0.24]},
                      "flagged": {"0": [False, False], "1": [False, False]},
                      "failed": {"0": [None, None], "1": [None, "stiff"]},
                      "gain": {"1": [39.4, 1.58]}},
            "stops_helping": {"1": {"previous": 0, "eta_lambda_max": None}}}
SYMMETRY = {"status": "complete", "model": "mlp-bn", "dataset": "digits", "lr": 0.24,
            "num_steps": 2, "processes": ["gd", "gf"], "weight_decays_done": [0.0],
            "groups": {"count": {"scale": 1}},
            "runs": {"0.0": {"aggregate": {"sq_norm": {"error_vs_gd": {
                "gf": {"median": 0.0118, "max": 0.02}}}}}}}
SYM_METRICS = {"weight_decay": np.zeros(3), "step": STEP,
               "scale a|measured|gd": np.array([1.0, 0.9, 0.8]),
               "scale a|measured|gf": np.array([1.0, 0.91, 0.82])}


def _result(cls, kind, results, metrics=None, settings=None):
    return cls(kind, {"command": kind, "settings": settings or {}}, results, metrics or {})


def test_run_prints_its_final_errors_and_flags():
    r = _result(RunResult, "run", RUN, RUN_METRICS)
    text = repr(r)
    assert text.startswith("RunResult(status='complete', model=mlp, dataset=digits")
    assert "error: GF 6.250e-02, EoM-1 2.700e-03" in text and "1 flag(s)" in text
    page = r._repr_html_()
    assert "<td>EoM-1</td><td>2.700e-03</td>" in page
    assert "η·λ_max(θ₀) = 0.203" in page and "steps = 8/8" in page
    assert "EoM-1: error within 10× of the solver&#x27;s own error" in page


def test_every_kind_renders_its_table():
    sw = _result(SweepResult, "sweep", SWEEP)
    assert "slope: GF 0.99 ± 0.00, EoM-1 2.00 ± 0.00" in repr(sw)
    assert "<td>EoM-1</td><td>2.00 ± 0.00</td><td>2</td><td>1.600e-04</td>" in sw._repr_html_()
    va = _result(ValidityResult, "validity", VALIDITY)
    page = va._repr_html_()
    # An unfinished run and an order that failed are the flags, the status first.
    assert page.index("status interrupted: Interrupted; rerun") < page.index("EoM-1: failed")
    assert "<th>η·λ=1.5</th>" in page and "points = 2/3" in page
    sy = _result(SymmetryResult, "symmetry", SYMMETRY)
    assert "<td>0</td><td>sq_norm</td><td>1.18e-02</td>" in sy._repr_html_()
    pa = _result(PaperResult, "paper", {"status": "complete", "quick": True, "parts": {
        "run": {"status": "complete"}, "sweep": {"status": "failed"}}})
    assert "parts: run complete, sweep failed" in repr(pa)
    assert "part sweep: failed" in pa._repr_html_()
    # Model names and messages come from the user: escaped, never markup.
    bad = _result(RunResult, "run", {**RUN, "model": "<b>x</b>"})
    assert "<b>x</b>" not in bad._repr_html_() and "&lt;b&gt;x&lt;/b&gt;" in bad._repr_html_()


def test_plot_returns_the_report_figures_with_the_data():
    from matplotlib.figure import Figure

    figs = _result(RunResult, "run", RUN, RUN_METRICS).plot()
    assert len(figs) == 2 and all(isinstance(f, Figure) for f in figs)  # error, loss
    lines = figs[0].axes[0].get_lines()
    np.testing.assert_array_equal(lines[0].get_ydata()[1:], RUN_METRICS["error_0"][1:])
    (fig,) = _result(SweepResult, "sweep", SWEEP).plot()
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), SWEEP["lrs"])
    (fig,) = _result(ValidityResult, "validity", VALIDITY).plot()
    assert len(fig.axes) == 2  # error against η·λ_max, gain of each order
    sym = _result(SymmetryResult, "symmetry", SYMMETRY, SYM_METRICS).plot()
    assert len(sym) == 1  # ‖w‖² of the one scale group (λ = 0: no equilibrium figure)
    assert _result(RunResult, "run", {"status": "running"}).plot() == []
    eom.report.pyplot().close("all")


def test_paper_keeps_its_parts_through_a_folder(tmp_path):
    parts = {"run": _result(RunResult, "run", RUN, RUN_METRICS),
             "sweep": _result(SweepResult, "sweep", SWEEP)}
    pa = PaperResult("paper", {"command": "paper", "settings": {}}, {"status": "complete"}, {},
                     parts)
    back = ExperimentResult.from_dir(pa.to_dir(tmp_path / "p"))
    assert isinstance(back, PaperResult) and set(back.parts) == {"run", "sweep"}
    assert isinstance(back.parts["sweep"], SweepResult)
    assert back.parts["sweep"].results == SWEEP
    assert len(back.plot()) == 3  # run: error + loss; sweep: order of accuracy
    eom.report.pyplot().close("all")


def test_tqdm_progress_moves_one_bar_per_stage():
    pytest.importorskip("tqdm")
    buf = io.StringIO()
    progress = tqdm_progress(file=buf, mininterval=0, ascii=True)
    progress(0, 4, "GD vs EoM")
    progress(3, 4, "GD vs EoM")
    assert progress._bar.n == 3 and progress._bar.total == 4
    progress(4, 4, "GD vs EoM")
    assert progress._bar is None  # closed at the end
    progress(1, 2, "sweep")
    assert progress._bar.desc == "sweep"
    progress.close()
    out = buf.getvalue()
    assert "GD vs EoM" in out and "3/4" in out and "4/4" in out and "1/2" in out


def test_tqdm_progress_is_silent_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # makes `import tqdm.auto` fail
    progress = tqdm_progress()
    assert progress(1, 2, "x") is None


def test_figures_keep_the_notebook_backend(monkeypatch):
    import matplotlib

    def refuse(*args, **kwargs):
        raise AssertionError("the backend was switched inside a Jupyter kernel")

    monkeypatch.setitem(sys.modules, "ipykernel", object())
    monkeypatch.setattr(matplotlib, "use", refuse)
    eom.report.pyplot()


def test_measure_results_print_a_summary():
    sweep = eom.OrderSweep(horizon=0.4, lrs=np.array([0.2, 0.1]), orders=(0, 1),
                           num_steps=np.array([2, 4]), error={}, flagged={},
                           slope={0: 1.004, 1: 1.998}, slope_stderr={0: 0.0, 1: 0.0})
    assert repr(sweep) == ("OrderSweep(horizon=0.4, lrs=[0.2, 0.1], slope {0: 1.00, 1: 2.00} "
                           "(theory N+1))")
    e = {0: np.array([0.0, 0.0125])}
    cmp = eom.Comparison(lr=0.1, weight_decay=0.0, num_steps=2, orders=(0,), steps=STEP[:2],
                         times=STEP[:2] * 0.1, loss_gd=e[0], loss=e, error=e, relative_error=e,
                         leaf_error={}, leaf_names=[], rtol={}, atol={}, solver_error=e,
                         flagged=e)
    assert repr(cmp) == ("Comparison(optimizer='gd', lr=0.1, num_steps=2, orders=(0,), "
                         "final error {0: 1.250e-02})")


def test_labels_name_the_optimizer_and_a_zero_solver_error_is_the_floor():
    # the distance column names the discrete method measured (not always GD), and a solver error
    # of exactly 0 (verification could not be tighter: both solves at the float64 floor) is not
    # printed as a measured 0
    from eom.experiments._settings import distance_label
    from eom.report._format import solver_error_text

    assert distance_label("gd") == "‖θ−θ_GD‖"
    assert distance_label("sgd") == "‖θ−θ_SGD‖"
    assert distance_label("momentum") == "‖θ−θ_HB‖"
    assert solver_error_text(0.0) == "at floor"
    assert solver_error_text(2.2e-7) == "2.2e-07"
