r"""The report of `eom symmetry`: per-λ tables, a reading, the group figures (‖w‖² of scale
groups, s = u·θ of translation directions, the approach to equilibrium) and the settings."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from ..experiments import RunDir
from ..experiments._symmetry import NAMES, PROCESSES, S_FLOOR, labels_in, split_metrics
from ._figures import _positive, _save, at, pyplot
from ._format import number
from ._html import figure, kv_table, table


def _pct_(x) -> str:
    return number(x, "pct")


def _num_(x) -> str:
    return number(x, "auto")


def _sci_(x) -> str:
    return number(x, "sci")



def summary_rows(results: dict) -> tuple[list[str], list[list]]:
    """Per λ and quantity: groups, GD's change, and median/max of GF's, EoM-1's and EoM-2's
    end-of-run relative error against GD."""
    cont = [p for p in PROCESSES if p != "gd"]
    header = ["λ", "quantity", "groups", "GD change (median)"]
    for p in cont:
        header += [f"{NAMES[p]} median", f"{NAMES[p]} max"]
    rows = []
    for key, r in (results.get("runs") or {}).items():
        for q, label in (("sq_norm", "‖w‖²"), ("s", "s")):
            a = r["aggregate"][q]
            if not a["groups"]:
                continue
            row = [float(key), label, a["groups"], _pct_((a["change"]["gd"] or {}).get("median"))]
            for p in cont:
                e = a["error_vs_gd"].get(p) or {}
                row += [e.get("median"), e.get("max")]
            rows.append(row)
    return header, rows


def prediction_rows(results: dict) -> tuple[list[str], list[list]]:
    """Per λ and quantity: median/max error of each analytic curve against its own run."""
    preds = list(PROCESSES)
    header = ["λ", "quantity"] + [f"{NAMES[p]} analytic (median / max)" for p in preds]
    rows = []
    for key, r in (results.get("runs") or {}).items():
        for q, label in (("sq_norm", "‖w‖²"), ("s", "s")):
            a = r["aggregate"][q]
            if not a["groups"]:
                continue
            row: list = [float(key), label]
            for p in preds:
                e = a["prediction_error"].get(p)
                row.append("–" if not e or e["median"] is None
                           else f"{e['median']:.2e} / {e['max']:.2e}")
            rows.append(row)
    return header, rows


def group_rows(results: dict) -> tuple[list[str], list[list]]:
    """Per λ and group (scale groups and measurable translation directions): the quantity's
    change under GD and GF's, EoM-1's and EoM-2's end-of-run relative error against GD."""
    cont = [p for p in PROCESSES if p != "gd"]
    header = ["λ", "group", "quantity", "GD change"] + [NAMES[p] for p in cont]
    rows = []
    for key, r in (results.get("runs") or {}).items():
        for g in r.get("groups", []):
            if g["kind"] == "null" or g.get("measurable") is False:
                continue
            start, end = g["gd_start"], g["gd_end"]
            change = end / start - 1 if start else None
            rows.append([float(key), g["group"], "‖w‖²" if g["quantity"] == "sq_norm" else "s",
                         _pct_(change)] + [g.get(f"{p}_error_vs_gd") for p in cont])
    return header, rows


def reading(results: dict) -> str:
    """Plain-language reading, one paragraph per λ (HTML)."""
    runs = results.get("runs") or {}
    if not runs:
        return "<p>No weight decay finished yet.</p>"
    paras = []
    for key, r in runs.items():
        wd, k, horizon = r["weight_decay"], r["steps"], r["horizon"]
        sq, s = r["aggregate"]["sq_norm"], r["aggregate"]["s"]
        parts = []
        if sq["groups"]:
            ch, pch, err = sq["change"], sq["predicted_change"], sq["error_vs_gd"]
            gd = ch["gd"]
            if wd == 0:
                parts.append(
                    f"Without weight decay, gradient flow says the norm of every scale-invariant "
                    f"group is conserved (GF's ‖w‖² changes by {_pct_(ch['gf']['median'])}), but "
                    f"GD grows it: over {k} steps by {_pct_(gd['median'])} (median of "
                    f"{sq['groups']} groups; from {_pct_(gd['min'])} to {_pct_(gd['max'])})."
                )
            else:
                parts.append(
                    f"With weight decay λ = {wd:g} (ηλ·steps = {r['eta_lambda_steps']:.2g}), "
                    f"gradient flow shrinks ‖w‖² of the scale groups as e^(−2λt): by "
                    f"{_pct_(ch['gf']['median'])}; GD's changes by {_pct_(gd['median'])} "
                    f"(median of {sq['groups']} groups), since the gradient keeps pushing the "
                    "norm out."
                )
            for p in ("eom1", "eom2"):
                if p in ch and ch[p]["median"] is not None:
                    pred = (pch.get(p) or {}).get("median")
                    pred_txt = (f" (its rate equation, integrated along the run, predicts "
                                f"{_pct_(pred)})") if pred is not None else ""
                    parts.append(f"{NAMES[p]} changes it by {_pct_(ch[p]['median'])}{pred_txt}.")
            gf_e, e1 = err["gf"]["median"], (err.get("eom1") or {}).get("median")
            if gf_e is not None and e1:
                e2 = (err.get("eom2") or {}).get("median")
                parts.append(
                    f"At the end the relative error in ‖w‖² against GD is {_num_(gf_e)} for GF, "
                    f"{_num_(e1)} for EoM-1 ({_num_(gf_e / e1)}× smaller)"
                    + (f" and {_num_(e2)} for EoM-2." if e2 is not None else ".")
                )
        if s["groups"] and wd > 0:
            f = r["s_factor"]
            err = s["error_vs_gd"]
            parts.append(
                f"The translation sums s = u·θ ({s['groups']} softmax-logit directions) decay "
                f"under GD as (1−ηλ)^k = {f['gd']:.6g} after {k} steps; gradient flow predicts "
                f"e^(−λT) = {f['gf']:.6g} (relative error {_num_(err['gf']['median'])}), EoM-1 "
                f"{f['eom1']:.6g} ({_num_(err['eom1']['median'])}), EoM-2 {f['eom2']:.6g} "
                f"({_num_(err['eom2']['median'])}); the full series ṡ = log(1−ηλ)/η · s is GD "
                f"exactly (relative difference {_num_((s.get('series_vs_gd') or {}).get('max'))})."
            )
        elif s["groups"]:
            parts.append(
                f"The translation sums s = u·θ of {s['groups']} softmax-logit directions are "
                f"conserved by all four processes without weight decay (largest relative change "
                f"under GD {_num_(max(abs(s['change']['gd']['min'] or 0), abs(s['change']['gd']['max'] or 0)))})."  # noqa: E501
            )
        eq = r.get("equilibrium")
        if eq:
            parts.append(
                f"Equilibrium: the angle GD turns each scale group per step ends at "
                f"{_num_(eq['angular_update_final']['median'])} rad (median), "
                f"{_num_(eq['angular_update_final_over_limit']['median'])}× the equilibrium value "
                f"√(2ηλ) = {_num_(eq['angular_update_limit'])}; ‖w‖² ends at "
                f"{_num_(eq['sq_norm_final_over_equilibrium']['median'])}× its equilibrium value "
                f"√(η‖ĝ‖²/(2λ)). Both ratios approach 1 only after several relaxation times "
                f"1/(2ηλ) = {_num_(eq['relaxation_steps'])} steps (the run has {k})."
            )
        paras.append(f"<p><b>λ = {wd:g}, T = {horizon:.4g}.</b> " + html.escape(" ".join(parts))
                     + "</p>")
    return "".join(paras)


# --------------------------------------------------------------------------------------------
# Figures (drawn from metrics.csv and results.json only, so `eom report` redraws them)

STYLE: dict[str, dict] = {
    "gd": dict(color="k", lw=2.6, alpha=0.55, ls="-"),
    "gf": dict(color="C0", lw=1.6, ls="--"),
    "eom1": dict(color="C1", lw=1.6, ls="-", marker="o", ms=3.5),
    "eom2": dict(color="C2", lw=1.6, ls="-.", marker="s", ms=3.5, mfc="none"),
    "eom-series": dict(color="C3", lw=1.2, ls=(0, (1, 1))),
}


def _short(label: str) -> str:
    return label.split(" ", 1)[1] if " " in label else label


def group_figure(m: dict, labels: list[str], quantity: str, path: Path, title: str) -> Path:
    """Per group: top, the quantity relative to its start for each process (thick: measured;
    dotted: its analytic curve); bottom, the relative gap |x_p − x_GD|/|x_GD| on a log scale."""
    plt = pyplot()


    n = len(labels)
    ncol = min(n, 4)
    blocks = math.ceil(n / ncol)
    height = 5.0 * blocks + 0.9
    fig, axes = plt.subplots(2 * blocks, ncol, figsize=(3.7 * ncol + 0.7, height),
                             squeeze=False, sharex=True)
    x = m["step"]
    every = max(1, len(x) // 12)
    sym = "‖w‖²" if quantity == "sq_norm" else "s"
    for i, lab in enumerate(labels):
        top, bot = axes[2 * (i // ncol), i % ncol], axes[2 * (i // ncol) + 1, i % ncol]
        ref = m[f"{lab}|measured|gd"]
        x0 = ref[0] if ref[0] != 0 else 1.0
        floor = []  # smallest gap of the measured runs, to keep the log axis readable
        for p in (*PROCESSES, "eom-series"):
            st = dict(STYLE[p])
            meas = m.get(f"{lab}|measured|{p}")
            pred = m.get(f"{lab}|predicted|{p}")
            if meas is not None:
                top.plot(x, meas / x0, label=NAMES[p], markevery=every, **st)
                if p != "gd":
                    gap = _positive(np.abs(meas - ref) / np.abs(ref))
                    bot.semilogy(x, gap, label=NAMES[p], markevery=every, **st)
                    floor.append(0.03 * np.nanmin(gap) if np.isfinite(gap).any() else np.nan)
            if pred is not None and np.isfinite(pred).any():
                if p == "eom-series":
                    kw, name = dict(STYLE[p]), NAMES[p]
                else:
                    kw, name = dict(color=st["color"], lw=1.0, ls=":"), f"{NAMES[p]} analytic"
                top.plot(x, pred / x0, label=name, **kw)
                if p != "gd":
                    gap = _positive(np.abs(pred - ref) / np.abs(ref))
                    bot.semilogy(x, gap, label=name, **kw)
                    if p == "eom-series" and np.isfinite(gap).any():
                        floor.append(float(np.nanmedian(gap)))  # round-off: show it
        lo = np.nanmin(floor) if np.isfinite(floor).any() else np.nan
        if np.isfinite(lo):
            bot.set_ylim(bottom=max(lo, 1e-17))
        top.set_title(_short(lab), fontsize=8)
        top.ticklabel_format(axis="y", useOffset=False)
        top.grid(True, alpha=0.3)
        bot.grid(True, which="both", alpha=0.3)
        bot.set_xlabel("GD step k")
        if i % ncol == 0:
            top.set_ylabel(f"{sym} / {sym}(0)")
            bot.set_ylabel(f"|{sym} − {sym}_GD| / |{sym}_GD|")
    for j in range(n, blocks * ncol):
        axes[2 * (j // ncol), j % ncol].set_visible(False)
        axes[2 * (j // ncol) + 1, j % ncol].set_visible(False)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    # Fixed margins: tight_layout costs seconds per figure on a busy machine.
    fig.subplots_adjust(left=0.85 / fig.get_figwidth(), right=0.99, top=1 - 0.55 / height,
                        bottom=1.05 / height, hspace=0.25, wspace=0.3)
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8,
               frameon=False)
    return _save(fig, path, tight=False)


def equilibrium_figure(m: dict, labels: list[str], lr: float, wd: float, path: Path) -> Path:
    """λ > 0: left, ‖w‖² along GD against the equilibrium value √(η n‖g_w‖²/(2λ)) at each
    point; right, GD's angular update per step against √(2ηλ)."""
    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = m["step"]
    for i, lab in enumerate(labels):
        c = f"C{i}"
        a1.plot(x, m[f"{lab}|measured|gd"], color=c, label=_short(lab))
        eq = m.get(f"{lab}|equilibrium_sq_norm")
        if eq is not None:
            a1.plot(x, eq, color=c, ls="--", lw=1)
        ang = m.get(f"{lab}|angular_update")
        if ang is not None:
            a2.plot(x, ang, color=c, label=_short(lab))
    a2.axhline(math.sqrt(2 * lr * wd), color="k", ls=":", label="√(2ηλ)")
    a1.set_title("‖w‖² under GD (solid) and its equilibrium value (dashed)", fontsize=9)
    a1.set_xlabel("GD step k")
    a1.set_ylabel("‖w‖²")
    a2.set_title("angle turned per GD step", fontsize=9)
    a2.set_xlabel("GD step k")
    a2.set_ylabel("radians")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"Approach to equilibrium with weight decay λ = {wd:g}", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.86, bottom=0.13, wspace=0.22)
    return _save(fig, path, tight=False)


def wd_tag(wd: float) -> str:
    return f"wd{wd:g}"


def symmetry_figures(metrics: dict, results: dict, folder: Path | None) -> list[tuple]:
    """All figures with their captions; returns (path, caption) pairs (no folder: (figure,
    caption) pairs)."""
    out = []
    lr = results.get("lr")
    for wd, m in split_metrics(metrics).items():
        scale, trans = labels_in(m, "scale"), labels_in(m, "translation")
        if scale:
            p = group_figure(m, scale, "sq_norm", at(folder, f"sq_norm_{wd_tag(wd)}.png"),
                             f"‖w‖² of the {len(scale)} largest scale-invariant groups, λ = {wd:g}")
            out.append((p, (
                f"λ = {wd:g}. Top: ‖w‖² of each scale group relative to its start, for GD (thick "
                "grey), gradient flow (blue dashed), EoM-1 (orange, circles) and EoM-2 (green, "
                "squares); dotted lines are each process's analytic curve (GD: the exact "
                "recursion; GF: e^(−2λt); EoM: the rate equation of THEORY.md §4 integrated "
                "along the run). Bottom: relative distance from GD's ‖w‖², log scale."
            )))
        if trans and wd > 0:
            p = group_figure(m, trans, "s", at(folder, f"s_{wd_tag(wd)}.png"),
                             f"s = u·θ of {len(trans)} translation directions, λ = {wd:g}")
            out.append((p, (
                f"λ = {wd:g}. Top: s = u·θ of softmax-logit directions relative to its start: "
                "GD (1−ηλ)^k, GF e^(−λt), EoM-1 and EoM-2 e^(r_N t), dotted their closed forms, "
                "red dots the full series (= GD). Bottom: relative distance from GD's s."
            )))
        if scale and wd > 0 and lr:
            p = equilibrium_figure(m, scale, lr, wd, at(folder, f"equilibrium_{wd_tag(wd)}.png"))
            out.append((p, (
                f"λ = {wd:g}. Left: ‖w‖² along GD (solid) and the equilibrium value "
                "√(η‖ĝ‖²/(2λ)) at each point (dashed). Right: the angle GD turns each group per "
                "step, against the equilibrium angular update √(2ηλ)."
            )))
    return out


def symmetry_report(rd: RunDir, cfg: dict, results: dict) -> tuple[str, list]:
    """figures/*.png and report.html from metrics.csv and results.json (`eom report` too)."""
    sections = []
    status = results.get("status")
    if status != "complete":
        cls = "bad" if status in ("failed", "diverged") else "warn"
        sections.append(("", f"<p class='{cls}'>Status: <b>{html.escape(str(status))}</b>. "
                             f"{html.escape(results.get('message') or '')}</p>"))
    if results.get("runs"):
        sections.append(("Reading", reading(results)))
        header, rows = summary_rows(results)
        sections.append((
            "End-of-run relative error against GD (median and max over groups)",
            table(header, rows)
            + "<p class='note'>‖w‖²: scale-invariant groups; s: translation directions "
              f"(|s_0| > {S_FLOOR:g}·max|s_0|). GD change: x(T)/x(0) − 1.</p>",
        ))
        header, rows = group_rows(results)
        sections.append((
            "Per group",
            f"<details><summary>End-of-run relative error against GD for each of the "
            f"{len(rows)} (λ, group) pairs</summary>{table(header, rows)}</details>",
        ))
        header, rows = prediction_rows(results)
        sections.append((
            "Analytic curves against their own runs (relative error at the end)",
            table(header, rows)
            + "<p class='note'>Each process's closed-form or rate-equation curve (THEORY.md "
              "§4–5) against the value measured on that process's trajectory. For translation "
              "directions the closed forms are exact, so these numbers are the ODE solver's "
              "error; for scale groups the EoM's rate equation is integrated by the trapezoid "
              "rule on the saved grid (second order in the save spacing).</p>",
        ))
    g = results.get("groups") or {}
    if g.get("count"):
        c = g["count"]
        plotted = g.get("plotted") or {}
        sections.append(("Symmetric groups found at θ_0", kv_table({
            "scale-invariant groups": c.get("scale"),
            "translation-invariant directions": c.get("translation"),
            "null slices (no gradient)": c.get("null"),
            "plotted scale groups": ", ".join(plotted.get("scale", [])) or None,
            "plotted translation directions": ", ".join(plotted.get("translation", [])) or None,
        })))
    metrics = rd.read_metrics()
    if metrics and results.get("runs"):
        figs = symmetry_figures(metrics, results, rd.figures)
        sections.append(("Figures", "".join(figure(p, cap) for p, cap in figs)))
    settings = cfg.get("settings", {})
    resolved = cfg.get("resolved", {})
    sections.append(("Settings", kv_table({
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "model options": resolved.get("model_kwargs"),
        "parameters": resolved.get("n_params"), "samples (full batch)": resolved.get("n_samples"),
        "learning rate η": resolved.get("lr"), "η chosen": resolved.get("lr_source"),
        "λ_max(θ_0)": resolved.get("lambda_max_initial"),
        "ηλ_max(θ_0)": resolved.get("eta_lambda_max_initial"),
        "steps": settings.get("steps"), "saved every": resolved.get("save_every"),
        "weight decays": resolved.get("weight_decays"),
        "weight decays chosen": resolved.get("weight_decays_source"),
        "seed": settings.get("seed"),
        "solver": "diffrax Dopri8, adaptive (PID), rtol 1e-10, atol 1e-12",
        "precision": cfg.get("dtype", "float64"), "eom version": cfg.get("eom_version"),
        "git commit": cfg.get("git_commit"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    })))
    return f"eom symmetry — {settings.get('model')} on {settings.get('dataset')}", sections


