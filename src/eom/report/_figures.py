"""Figures of a run, drawn only from the run folder's files (so `eom report` can redraw them).

Every figure function takes the `path` to write; given None it returns the open figure instead
(what the results' `.plot()` hands the user, see `_plot.py`)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot, chosen here when a figure is drawn (importing eom never touches
    matplotlib's backend): Agg, except inside a Jupyter kernel, whose inline backend draws
    without a display and shows the figures `.plot()` returns."""
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def at(folder: Path | None, name: str) -> Path | None:
    """`folder / name`, or None (draw the figure and return it open) without a folder."""
    return None if folder is None else folder / name


ORDER_NAMES = {0: "GF (order 0)"}
REGIME_BANDS = (
    (0.0, 0.5, "#d8f0d8", "accurate"),
    (0.5, 1.0, "#fff3c4", "marginal"),
    (1.0, 2.0, "#ffd9b0", "beyond-series"),
    (2.0, np.inf, "#f7c1c1", "unstable"),
)


def order_name(n: int) -> str:
    return ORDER_NAMES.get(n, f"EoM-{n}")


def orders_in(metrics: dict) -> list[int]:
    return sorted(int(k.split("_")[1]) for k in metrics if k.startswith("error_"))


def _save(fig, path: Path | None, *, tight: bool = True):
    """Write the figure atomically (PNG in memory, then temp file, fsync, rename), close it and
    return the path; with no path, return the open figure (what `.plot()` hands the user)."""
    from ..experiments import atomic_write

    if tight:
        fig.tight_layout()
    if path is None:
        return fig
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    pyplot().close(fig)
    atomic_write(path, buf.getvalue())
    return path


def _positive(x):
    x = np.asarray(x, float)
    return np.where(x > 0, x, np.nan)


def error_figure(metrics: dict, path: Path, title: str = "") -> Path:
    """‖θ^(N)(kη) − θ_k‖ against the step, log scale, one line per order; hollow markers where the
    value is within 10× of the solver's own error (flagged), dotted lines the solver error."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    step = metrics["step"]
    for i, n in enumerate(orders_in(metrics)):
        color = f"C{i}"
        err = _positive(metrics[f"error_{n}"])
        ax.semilogy(step, err, color=color, label=order_name(n))
        flag = metrics.get(f"flagged_{n}")
        if flag is not None and np.any(flag > 0):
            sel = flag > 0
            ax.semilogy(step[sel], err[sel], "o", mfc="none", color=color, ms=4,
                        label=f"{order_name(n)}: below solver margin")
        if f"solver_error_{n}" in metrics:
            ax.semilogy(step, _positive(metrics[f"solver_error_{n}"]), ":", color=color, lw=1)
    ax.set_xlabel("GD step k")
    ax.set_ylabel("‖θ(kη) − θ_k‖  (distance to GD)")
    ax.set_title(title or "Distance from gradient descent (dotted: solver error)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def loss_figure(metrics: dict, path: Path) -> Path:
    """Loss curves of GD and each continuous model, and their gap to GD's loss."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    step = metrics["step"]
    a1.plot(step, metrics["loss_gd"], "k", lw=2.5, alpha=0.5, label="GD")
    for i, n in enumerate(orders_in(metrics)):
        a1.plot(step, metrics[f"loss_{n}"], "--", color=f"C{i}", label=order_name(n))
        gap = _positive(np.abs(metrics[f"loss_{n}"] - metrics["loss_gd"]))
        a2.semilogy(step, gap, color=f"C{i}", label=order_name(n))
    a1.set_xlabel("GD step k")
    a1.set_ylabel("training loss")
    a1.set_title("Loss")
    a1.legend(fontsize=8)
    a2.set_xlabel("GD step k")
    a2.set_ylabel("|L(θ(kη)) − L(θ_k)|")
    a2.set_title("Loss gap to GD")
    a2.grid(True, which="both", alpha=0.3)
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    return _save(fig, path)


def predicted_figure(metrics: dict, path: Path) -> Path | None:
    """Measured error (solid) against the leading-order prediction ê (dashed) per order."""
    orders = [n for n in orders_in(metrics) if f"predicted_{n}" in metrics]
    if not orders:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    step = metrics["step"]
    for i, n in enumerate(orders):
        ax.semilogy(step, _positive(metrics[f"error_{n}"]), color=f"C{i}",
                    label=f"{order_name(n)} measured")
        ax.semilogy(step, _positive(metrics[f"predicted_{n}"]), "--", color=f"C{i}",
                    label=f"{order_name(n)} predicted")
    ax.set_xlabel("GD step k")
    ax.set_ylabel("error")
    ax.set_title("Measured vs predicted error  ê_{k+1} = (I − ηH)ê_k + η^{N+2} ξ_{N+1}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def regime_figure(metrics: dict, path: Path) -> Path | None:
    """ηλ_max along the run over the regime bands (accurate/marginal/beyond-series/unstable)."""
    if "eta_lambda_max" not in metrics:
        return None
    x = np.asarray(metrics["eta_lambda_max"], float)
    sel = np.isfinite(x)
    if not sel.any():
        return None
    step = metrics["step"][sel]
    x = x[sel]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = max(2.2, float(np.nanmax(x)) * 1.1)
    for lo, hi, color, label in REGIME_BANDS:
        ax.axhspan(lo, min(hi, top), color=color, alpha=0.8, lw=0, label=label)
    ax.plot(step, x, "k.-", label="ηλ_max")
    ax.set_ylim(0, top)
    ax.set_xlabel("GD step k")
    ax.set_ylabel("ηλ_max")
    ax.set_title("Validity regime of the EoM along the run")
    ax.legend(fontsize=8, loc="upper left", ncol=5)
    return _save(fig, path)


def order_accuracy_figure(sweep: dict, path: Path) -> Path:
    """log–log error at a fixed time T against the learning rate, fitted slopes in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    lrs = np.asarray(sweep["lrs"], float)
    for i, n in enumerate(sweep["orders"]):
        err = _positive(sweep["error"][str(n)])
        slope = sweep["slope"][str(n)]
        se = sweep["slope_stderr"][str(n)]
        se_txt = f" ± {se:.2f}" if se is not None and np.isfinite(se) else ""
        ax.loglog(lrs, err, "o-", color=f"C{i}",
                  label=f"{order_name(n)}: slope {slope:.2f}{se_txt} (theory {n + 1})")
        flg = np.asarray(sweep["flagged"][str(n)], bool)
        if flg.any():
            ax.loglog(lrs[flg], err[flg], "x", color="k", ms=8)
    ax.set_xlabel("learning rate η")
    ax.set_ylabel(f"‖θ^(N)(T) − θ_(T/η)‖ at T = {sweep['horizon']:g}")
    ax.set_title("Order of accuracy (x: below solver margin)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def run_figures(metrics: dict, folder: Path | None) -> list:
    """All figures of an `eom run` folder; returns the paths written (no folder: the figures)."""
    out = [error_figure(metrics, at(folder, "error.png")),
           loss_figure(metrics, at(folder, "loss.png"))]
    for fn, name in ((predicted_figure, "predicted.png"), (regime_figure, "regime.png")):
        p = fn(metrics, at(folder, name))
        if p is not None:
            out.append(p)
    return out
