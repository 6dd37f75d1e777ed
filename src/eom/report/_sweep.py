"""The report of `eom sweep`: the order-of-accuracy figure and the fitted slopes."""

from __future__ import annotations

from ..experiments import RunDir
from ._figures import order_accuracy_figure, order_name
from ._html import figure, kv_table, table


def sweep_report(rd: RunDir, cfg: dict, results: dict) -> tuple[str, list]:
    """(title, sections) of an `eom sweep` report."""
    sections = []
    if "slope" in results:
        fig = order_accuracy_figure(results, rd.figures / "order_accuracy.png")
        rows = [[order_name(int(n)), results["slope"][n], results["slope_stderr"][n], int(n) + 1]
                for n in results["slope"]]
        sections.append(("Fitted slopes", table(["model", "slope", "std. error", "theory N+1"],
                                                rows)))
        err_rows = [[lr] + [results["error"][str(n)][j] for n in results["orders"]]
                    for j, lr in enumerate(results["lrs"])]
        sections.append(("Error at T against η", table(
            ["η"] + [order_name(n) for n in results["orders"]], err_rows)))
        sections.append(("Figure", figure(
            fig, "log–log error at the fixed time T against η; the slope of order N should be "
                 "N+1. Crosses mark points within 10× of the solver's own error.")))
    else:
        sections.append(("", f"<p class='warn'>Status: {results.get('status')}. "
                             f"{results.get('message') or ''}</p>"))
    settings = cfg.get("settings", {})
    sections.append(("Settings", kv_table({
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "horizon T": results.get("horizon"), "orders": settings.get("orders"),
        "weight decay": settings.get("weight_decay"),
        "precision": cfg.get("dtype", "float64"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    })))
    return "eom sweep — order of accuracy", sections
