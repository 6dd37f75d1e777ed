"""`.plot()` of every `eom.experiments` result: the figures of its report, drawn by the same
functions and returned open instead of written (`path=None`)."""

from __future__ import annotations

from ..experiments._result import PLOTTERS
from ._figures import order_accuracy_figure, run_figures
from ._symmetry import symmetry_figures
from ._validity import validity_figure


def plot_run(result) -> list:
    """Error, loss, predicted-error and regime figures of a `run`."""
    m = result.metrics
    opt = result.settings.get("optimizer", "gd")
    if opt != "gd":  # sgd / momentum: their own figures
        from ._optim import optimizer_figures

        return [f for f, _ in optimizer_figures(m, result.config.get("resolved", {}), opt, None)]
    return run_figures(m, None) if m and len(m.get("step", [])) else []


def plot_sweep(result) -> list:
    """The order-of-accuracy figure of a `sweep`."""
    return [order_accuracy_figure(result.results, None)] if "slope" in result.results else []


def plot_symmetry(result) -> list:
    """‖w‖², s and equilibrium figures per weight decay of a `symmetry` run."""
    if not result.results.get("runs") or not result.metrics:
        return []
    return [fig for fig, _ in symmetry_figures(result.metrics, result.results, None)]


def plot_validity(result) -> list:
    """Error against η·λ_max and the gain of each added order, of a `validity` run."""
    if not (result.results.get("table") or {}).get("point"):
        return []
    return [validity_figure(result.results, None)]


PLOTTERS.update({"run": plot_run, "sweep": plot_sweep, "symmetry": plot_symmetry,
                 "validity": plot_validity})
