r"""The report of `eom validity`: error against η·λ_max over the regimes, the gain of each
added order, a reading, the table and the settings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..experiments import RunDir
from ._figures import REGIME_BANDS, _positive, _save, order_name, pyplot
from ._format import number
from ._html import figure, kv_table, table


def _num(x) -> str:
    return number(x)



def validity_figure(results: dict, path: Path) -> Path:
    """Left: error at T against η·λ_max(θ_0), log y, one line per order, regime bands behind
    (hollow markers: within the solver's margin; ×: the order failed there; dotted verticals:
    where each added order stops helping). Right: the gain e_{N−1}/e_N of each added order, with
    1 (no gain) and the quadratic-model estimate 1/(η·λ_max) for reference."""
    plt = pyplot()

    t = results["table"]
    orders = results["orders"]
    x = np.asarray(t["eta_lambda_max"], float)
    fig, (ax, ag) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    right = max(2.1, float(np.nanmax(x)) * 1.05) if x.size else 2.1
    for a in (ax, ag):
        for lo, hi, color, label in REGIME_BANDS:
            if lo < right:
                a.axvspan(lo, min(hi, right), color=color, alpha=0.8, lw=0,
                          label=label if a is ax else None)
        a.set_xlim(0, right)
        a.set_xlabel("η·λ_max(θ_0)")
        a.grid(True, which="both", alpha=0.3)
    finite = [v for n in orders for v in t["error"][str(n)]
              if v is not None and np.isfinite(v) and v > 0]
    top = max(finite) * 3 if finite else 1.0
    for i, n in enumerate(orders):
        color = f"C{i}"
        err = _positive([np.nan if v is None else v for v in t["error"][str(n)]])
        ax.semilogy(x, err, "o-", color=color, label=order_name(n))
        flg = np.asarray(t["flagged"][str(n)], bool)
        if flg.any():
            ax.semilogy(x[flg], err[flg], "o", mfc="white", color=color, ms=7)
        failed = np.asarray([f is not None for f in t["failed"][str(n)]], bool)
        if failed.any():
            ax.semilogy(x[failed], np.full(failed.sum(), top), "x", color=color, ms=9, mew=2)
        stop = (results.get("stops_helping") or {}).get(str(n), {}).get("eta_lambda_max")
        if stop is not None:
            ax.axvline(stop, color=color, ls=":", lw=1.5)
        gain = (t.get("gain") or {}).get(str(n))
        if gain is not None:
            g = _positive([np.nan if v is None else v for v in gain])
            prev = orders[i - 1]
            ag.semilogy(x, g, "o-", color=color, label=f"{order_name(n)} vs {order_name(prev)}")
    xs = np.linspace(max(float(np.nanmin(x)) * 0.8, 0.05), right, 100) if x.size else []
    ag.semilogy(xs, 1 / np.asarray(xs), "k--", lw=1, label="1/(η·λ_max)")
    ag.axhline(1.0, color="k", lw=1.5)
    ag.set_ylabel("gain of the added order  e_(N−1)/e_N")
    ag.set_title("Below 1: the added order makes it worse")
    ag.legend(fontsize=8)
    ax.set_ylabel(f"‖θ^(N)(T) − θ_(T/η)‖ at T = {results['horizon']:.3g}")
    ax.set_title("Where adding EoM orders stops paying off")
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    return _save(fig, path)


def table_rows(results: dict, *, short: bool = False) -> tuple[list[str], list[list]]:
    """Header and rows (raw values) of the per-point table (`short`: terminal headers)."""
    t = results.get("table") or {}
    orders = results["orders"]
    top = max(orders)

    def name(n):
        return order_name(n).replace(" (order 0)", "") if short else order_name(n)

    if short:
        header = ["ηλ_max", "regime", "η", "k", *map(name, orders), "best", "ηλ_max(T)",
                  f"r_{top}"]
    else:
        header = ["ηλ_max(θ_0)", "regime", "η", "steps k", *map(name, orders), "best order",
                  "ηλ_max at T", f"r_{top}(θ_0) = η‖ξ_{top + 1}‖/‖ξ_{top}‖"]
    rows = []
    for j in range(len(t.get("point", []))):
        best = t["best_order"][j]
        rows.append(
            [t["eta_lambda_max"][j], t["regime"][j], t["lr"][j], t["num_steps"][j]]
            + [_nan_if_none(t["error"][str(n)][j]) for n in orders]
            + [None if best is None else name(best), t["eta_lambda_max_final"][j],
               t["term_ratios"][j][top]]
        )
    return header, rows


def _nan_if_none(v):
    """A failed order's error is NaN in memory and null in results.json: NaN either way."""
    return math.nan if v is None else v


def reading(results: dict) -> str:
    """A plain-language reading of the sweep (HTML paragraph)."""
    import html


    t = results.get("table") or {}
    if not t.get("point"):
        return "<p>No learning rate finished yet.</p>"
    orders = results["orders"]
    parts = [
        f"Each point runs GD and the EoM of orders {', '.join(map(str, orders))} to the same time "
        f"T = {_num(results.get('horizon'))} (T·λ_max(θ_0) = {_num(results.get('horizon_lambda'))})"
        f" at a learning rate with η·λ_max(θ_0) between {_num(min(t['eta_lambda_max']))} and "
        f"{_num(max(t['eta_lambda_max']))}."
    ]
    gains = {k: v for k, v in (results.get("gain_accurate") or {}).items() if v is not None}
    if gains:
        txt = ", ".join(f"order {k}: {_num(v)}×" for k, v in gains.items())
        parts.append(f"In the accurate regime (η·λ_max < 0.5) each added order brings the EoM "
                     f"closer to GD by a factor of (geometric mean) {txt}.")
    sh = results.get("stops_helping") or {}
    stops = [(k, v) for k, v in sh.items() if v["eta_lambda_max"] is not None]
    never = [k for k, v in sh.items() if v["eta_lambda_max"] is None]
    if stops:
        txt = "; ".join(f"order {k} is no better than order {v['previous']} from η·λ_max ≈ "
                        f"{_num(v['eta_lambda_max'])}" for k, v in stops)
        parts.append(f"Adding orders stops paying off: {txt}. Theory (THEORY.md §6) puts the "
                     "limit at the counter-term series' radius η·λ_max = 1 on a quadratic.")
    if never:
        parts.append(f"Order(s) {', '.join(never)} helped at every measured point, with gains "
                     "that shrink toward 1 as η·λ_max grows.")
    top = max(orders)
    above = [x for x, r in zip(t["eta_lambda_max"], t["term_ratios"], strict=True)
             if r[top] is not None and math.isfinite(r[top]) and r[top] >= 1]
    if above:
        parts.append(f"The term ratio r_{top} = η‖ξ_{top + 1}‖/‖ξ_{top}‖ at θ_0 reaches 1 at "
                     f"η·λ_max = {_num(min(above))}: from there the counter-term series no longer "
                     "shrinks, and higher orders cannot be expected to help (THEORY.md §6).")
    last = len(t["point"]) - 1
    gain_last = {k: v[last] for k, v in (t.get("gain") or {}).items()
                 if v[last] is not None and math.isfinite(v[last])}
    if gain_last:
        txt = ", ".join(f"order {k}: {_num(v)}×" for k, v in gain_last.items())
        parts.append(f"At the largest η·λ_max the factors are {txt} (a factor near or below 1 "
                     "means the added order no longer pays off).")
    best = t["best_order"][last]
    parts.append(f"At the largest η·λ_max = {_num(t['eta_lambda_max'][last])} the closest model "
                 f"to GD is {order_name(best) if best is not None else 'none (all failed)'}.")
    failed = sorted({(t["eta_lambda_max"][j], n) for n in orders
                     for j, f in enumerate(t["failed"][str(n)]) if f})
    if failed:
        txt = ", ".join(f"order {n} at {_num(x)}" for x, n in failed)
        parts.append(f"The EoM solve failed (recorded as missing): {txt}.")
    moved = [(t["eta_lambda_max"][j], t["eta_lambda_max_final"][j]) for j in range(last + 1)
             if t["regime_final"][j] != t["regime"][j]]
    if moved:
        txt = ", ".join(f"{_num(a)} → {_num(b)}" for a, b in moved)
        parts.append(f"The sharpness changed the regime along some runs (η·λ_max at θ_0 → at T): "
                     f"{txt}.")
    return "<p>" + html.escape(" ".join(parts)) + "</p>"


def validity_report(rd: RunDir, cfg: dict, results: dict) -> tuple[str, list]:
    """figures/validity.png and report.html from results.json (used by `eom report` too)."""
    sections = []
    status = results.get("status")
    if status != "complete":
        cls = "bad" if status == "failed" else "warn"
        sections.append(("", f"<p class='{cls}'>Status: <b>{status}</b>. "
                             f"{results.get('message') or ''}</p>"))
    if (results.get("table") or {}).get("point"):
        sections.append(("Reading", reading(results)))
        header, rows = table_rows(results)
        sections.append(("Error at the fixed time T against η·λ_max", table(header, rows)))
        fig = validity_figure(results, rd.figures / "validity.png")
        sections.append(("Figure", figure(
            fig, "Left: error of each order at the fixed time T against η·λ_max(θ_0), log "
                 "scale, over the EoM's regimes (accurate < 0.5 ≤ marginal < 1 ≤ beyond-series "
                 "< 2 ≤ unstable). Hollow markers: within 10× of the solver's own error (an "
                 "upper bound); ×: the EoM solve failed; dotted verticals: where each added "
                 "order stops being better than the one below. Right: the factor by which each "
                 "added order reduces the error; 1 means no gain, and the dashed line 1/(ηλ_max) "
                 "is what a quadratic's top direction alone would give.")))
    settings = cfg.get("settings", {})
    sections.append(("Settings", kv_table({
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "parameters": results.get("n_params"), "samples (full batch)": results.get("n_samples"),
        "λ_max(θ_0)": results.get("lambda_max_initial"), "horizon T": results.get("horizon"),
        "T·λ_max(θ_0)": results.get("horizon_lambda"), "orders": settings.get("orders"),
        "weight decay": settings.get("weight_decay"), "seed": settings.get("seed"),
        "precision": cfg.get("dtype", "float64"), "eom version": cfg.get("eom_version"),
        "git commit": cfg.get("git_commit"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    })))
    return f"eom validity — {settings.get('model')} on {settings.get('dataset')}", sections


