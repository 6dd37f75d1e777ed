"""The report of `eom run --optimizer sgd|momentum`: figures and a plain-language reading.

SGD (THEORY.md §8): the decomposition ‖θ_SGD − θ_GF‖ (total) → what the switching EoM leaves →
the switching-vs-epoch (cyclic) / switching-vs-averaged (random) gap at epoch boundaries; the
implicit regularizers (η/4m)Σ‖∇L_i‖² and (η/4)‖∇L‖² along the run; the regimes (per-batch
η·λ_max against 1 for the switching EoM, m·η·λ_max(L) against 1 for the epoch/averaged flows).
Momentum (§9): the error of each order from the transient K on, and η·λ_max against the momentum
radius (1−√β)² (Nesterov ((1−β)/(1+β))²).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..experiments import RunDir
from ._figures import _positive, _save, pyplot
from ._format import number, solver_error_text
from ._html import figure, kv_table, table

STYLE = {"gf": ("black", "-"), "switch": ("tab:blue", "-"), "epoch": ("tab:red", "--"),
         "averaged": ("tab:red", "--"), "eom": ("tab:blue", "-"), "gap": ("tab:green", ":")}


def model_name(key: str) -> str:
    """A reader's name for a model label."""
    if key == "gf":
        return "gradient flow"
    for prefix, name in (("switch", "switching EoM"), ("epoch", "epoch EoM"),
                         ("averaged", "averaged flow"), ("eom", "EoM")):
        if key.startswith(prefix):
            return f"{name}-{key[len(prefix):]}"
    return key


def _keys(m: dict) -> list[str]:
    return [k[len("error_"):] for k in m if k.startswith("error_")]


def _line(ax, x, y, key, **kw):
    y = _positive(y)
    ok = np.isfinite(y)
    kind = next((p for p in STYLE if key.startswith(p)), "gf")
    color, ls = STYLE[kind]
    order = int(key.lstrip("abcdefghijklmnopqrstuvwxyz_") or 0)
    if kind in ("switch", "eom"):  # one colour per order: light (0) to dark (3+)
        color = ("#9ecae1", "#3182bd", "#08519c", "#08306b")[min(order, 3)]
    elif kind in ("epoch", "averaged"):
        color = ("#fc9272", "#de2d26", "#a50f15", "#67000d")[min(order, 3)]
    ax.plot(np.asarray(x)[ok], y[ok], ls, color=color,
            marker="o" if kind in ("epoch", "averaged") else None, ms=3,
            label=kw.pop("label", model_name(key)), **kw)


def decomposition_figure(m: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in _keys(m):
        _line(ax, m["step"], m[f"error_{key}"], key)
    for col in (c for c in m if c.startswith("gap_")):
        a, b = col[4:].split("_", 1)
        _line(ax, m["step"], m[col], "gap", label=f"‖{model_name(a)} − {model_name(b)}‖")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step k")
    ax.set_ylabel("distance from the SGD iterate")
    ax.set_title("Decomposition: total (GF) → switching EoM → epoch/averaged gap")
    ax.legend(fontsize=8, loc="center right", framealpha=0.7)
    return _save(fig, path)


def regularizer_figure(m: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(m["step"], _positive(m["reg_sgd"]), "-", color="tab:red",
            label="(η/4m) Σ_i ‖∇L_i‖²  (SGD's implicit regularizer)")
    ax.plot(m["step"], _positive(m["reg_gd"]), "-", color="tab:blue",
            label="(η/4) ‖∇L‖²  (GD's)")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step k")
    ax.set_ylabel("size along the SGD run")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sgd_regime_figure(m: dict, batches: int, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.asarray(m["step"])
    for col, scale, label, color in (
        ("eta_lambda_max_batch", 1, "max_i η·λ_max(L_i)  (switching EoM; radius 1)", "tab:blue"),
        ("eta_lambda_max", batches, f"m·η·λ_max(L), m = {batches}  (epoch/averaged; radius 1)",
         "tab:red"),
    ):
        if col in m:
            v = np.asarray(m[col], float) * scale
            ok = np.isfinite(v)
            ax.plot(steps[ok], v[ok], "o-", ms=3, color=color, label=label)
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlabel("SGD step k")
    ax.set_ylabel("regime variable")
    ax.legend(fontsize=8)
    return _save(fig, path)


def momentum_error_figure(m: dict, K: int, path: Path, settled: bool = False) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in _keys(m):
        _line(ax, m["step"], m[f"error_{key}"], key)
    if K and not settled:
        ax.axvspan(0, K, color="#eeeeee", label=f"transient (k < K = {K})")
    if settled:
        ax.set_title(f"from rest, compared from step K = {K} on (every model starts at θ_K)",
                     fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("step k")
    ax.set_ylabel("‖θ^(N)(kη) − θ_k‖")
    ax.legend(fontsize=8)
    return _save(fig, path)


def momentum_regime_figure(m: dict, radius: float, path: Path, initial: float | None = None,
                           K: int = 0) -> Path:
    """η·λ_max at θ_0 (step 0) and along the compared steps, against the radius; the verdict
    in the title is the one results.json's `optimizer_regime` records."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    vals, compared = [], []
    if initial is not None and math.isfinite(initial):
        ax.plot([0], [initial], "s", color="tab:orange", label="η·λ_max(θ_0)")
        vals.append(initial)
    if "eta_lambda_max" in m:
        v = np.asarray(m["eta_lambda_max"], float)
        ok = np.isfinite(v)
        ax.plot(np.asarray(m["step"])[ok], v[ok], "o-", ms=3, label="η·λ_max(L) along the run")
        vals += v[ok].tolist()
        compared = v[ok & (np.asarray(m["step"]) >= K)].tolist()
    ax.axhline(radius, color="tab:red", ls="--", label=f"momentum radius {radius:.3g}")
    if K:
        ax.axvline(K, color="grey", ls=":", lw=1, label=f"K = {K} (transient ends)")
    if vals:
        worst = max(vals)
        title = (f"max η·λ_max = {worst:.3g} = {worst / radius:.3g}× the radius: "
                 f"{'inside' if worst < radius else 'outside'}")
        if compared:
            c = max(compared)
            title += (f"; compared steps ≤ {c / radius:.3g}× "
                      f"({'inside' if c < radius else 'outside'})")
        ax.set_title(title, fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("step k")
    ax.legend(fontsize=8)
    return _save(fig, path)


def seeds_figure(avg: dict, path: Path) -> Path:
    """`SeedAverage.as_dict()`: distance of the mean SGD iterate (random reshuffling, S seeds)
    from gradient flow and from the averaged first-order flow per epoch, with the mean's noise."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    e = np.asarray(avg["epochs"])
    ax.plot(e[1:], _positive(avg["distance_gf"])[1:], "o-", color="black",
            label="‖mean SGD − gradient flow‖")
    ax.plot(e[1:], _positive(avg["distance_averaged"])[1:], "o--", color="tab:red",
            label="‖mean SGD − averaged flow (order 1)‖")
    ax.plot(e[1:], _positive(avg["noise"])[1:], ":", color="grey",
            label=f"noise of the mean over {avg['num_seeds']} seeds")
    ratio = avg["distance_averaged"][-1] / avg["distance_gf"][-1]
    ax.set_title(f"random reshuffling, m = {avg['batches']}: averaged/GF = {ratio:.2g} at the end")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _rows(results: dict) -> list[list[str]]:
    rows = []
    for key, r in ((results.get("final") or {}).get("models") or {}).items():
        rows.append([model_name(key), str(r["step"]), number(r["error"], "e3"),
                     number(r["relative_error"], "e2"), solver_error_text(r["solver_error"]),
                     "< solver" if r["flagged"] else "ok"])
    return rows


HEADER = ["model", "at step", "‖θ_model − θ_k‖", "relative", "solver", "flag"]


def sgd_reading(results: dict) -> str:
    fin = results.get("final") or {}
    mods = fin.get("models") or {}
    reg = (results.get("optimizer_regime") or {})
    parts = []
    gf = mods.get("gf")
    if gf:
        parts.append(f"After {gf['step']} SGD steps ({results.get('epochs')} epochs of "
                     f"{results.get('batches')} batches, {results.get('shuffle')} order), "
                     f"gradient flow on the full loss is {number(gf['error'], 'e2')} from SGD: "
                     "that is the whole SGD-vs-GF gap.")
    for key, r in mods.items():
        if key.startswith("switch") and key != "switch0":
            parts.append(f"The {model_name(key)} (the GD EoM of the current batch, switched "
                         f"each step) leaves {number(r['error'], 'e2')}.")
        if key.startswith(("epoch", "averaged")):
            parts.append(f"At epoch boundaries the {model_name(key)} is "
                         f"{number(r['error'], 'e2')} from SGD.")
            if key.startswith("averaged"):
                parts.append("The averaged flow describes the mean over reshufflings, not one "
                             "run: its distance from this single run includes the reshuffling "
                             "noise (eom.experiments.seed_average measures it against the mean "
                             "over seeds).")
    for col, v in fin.items():
        if col.startswith("gap_"):
            a, b = col[4:].split("_", 1)
            parts.append(f"The {model_name(a)} and the {model_name(b)} differ by "
                         f"{number(v, 'e2')} at the last epoch boundary.")
    if "reg_sgd" in fin:
        parts.append(f"SGD's implicit regularizer (η/4m)Σ‖∇L_i‖² is {number(fin['reg_sgd'])} "
                     f"at the end against GD's (η/4)‖∇L‖² = {number(fin['reg_gd'])}: the batch "
                     "noise adds the difference.")
    sw, ep = reg.get("switching") or {}, reg.get("epoch") or {}
    if sw:
        parts.append(
            f"Regimes: the per-batch η·λ_max reached {number(sw['value_max'])} (the switching "
            f"EoM's series needs it below its radius 1: {'inside' if sw['inside'] else 'outside'}"
            f"); m·η·λ_max(L) reached {number(ep['value_max'])} (the epoch/averaged series, "
            f"step h = mη, needs it below 1: {'inside' if ep['inside'] else 'outside'}).")
        if not ep.get("inside"):
            parts.append("Outside that radius the epoch/averaged flow is not expected to beat "
                         "gradient flow: lower η or the number of batches.")
    return "".join(f"<p>{p}</p>" for p in parts) or "<p>No recorded steps yet.</p>"


def momentum_reading(results: dict) -> str:
    """Whether the momentum EoM held and why: inside the radius each order must beat the
    previous one; outside, the sharp directions oscillate with |μ| = √q and have died out by
    step K, so the EoM can only describe the slow directions (measured ratios per order)."""
    fin = results.get("final") or {}
    mods = fin.get("models") or {}
    reg = (results.get("optimizer_regime") or {}).get("momentum") or {}
    K = int(results.get("transient_steps", 0) or 0)
    kind = results.get("start_kind", results.get("start"))
    how = {
        "settled": f"from rest (v_0 = 0); the first K = {K} steps are the transient, then every "
                   f"model starts at θ_K and is compared from step K on (the settled start)",
        "rest": f"from rest (v_0 = 0), each model started at its effective point (the EoM "
                f"integrated back over the K = {K} transient steps); errors count from step K",
        "manifold": "on the slow manifold (θ_{-1} = Φ^{-1}(θ_0)), errors from the first step",
    }.get(kind, f"start {kind}")
    parts = [f"Momentum β = {results.get('beta')}{' (Nesterov)' if results.get('nesterov') else ''}"
             f", started {how}."]
    keys = sorted((k for k in mods if k == "gf" or k[3:].isdigit()),
                  key=lambda k: 0 if k == "gf" else int(k[3:]))
    rows = []
    for k in keys:
        r = mods[k]
        ratio = r.get("ratio_to_previous")
        extra = "" if ratio is None else f" ({number(ratio)}× the previous order)"
        rows.append(f"{model_name(k)}: {number(r['error'], 'e2')} at step {r['step']}, at most "
                    f"{number(r['max_error_after_transient'], 'e2')} after the transient{extra}")
    if rows:
        parts.append("; ".join(rows) + ".")
    if not reg:
        return "".join(f"<p>{p}</p>" for p in parts)
    v0, v, b = reg.get("value_initial"), reg["value_max"], reg["radius"]
    errs = [mods[k]["error"] for k in keys]
    peaks = [mods[k]["max_error_after_transient"] for k in keys]
    improving = len(errs) > 1 and all(
        e2 < e1 for seq in (errs, peaks) for e1, e2 in zip(seq, seq[1:], strict=False))
    flagged = [model_name(k) for k in keys if mods[k].get("flagged")]
    ratios = ", ".join(f"{model_name(k)} {number(mods[k]['ratio_to_previous'])}×"
                       for k in keys[1:] if mods[k].get("ratio_to_previous") is not None)
    if reg["inside"]:
        verdict = "held" if improving else "did not hold at every order"
        parts.append(
            f"<b>The EoM {verdict}</b>: η·λ_max ≤ {number(v)} stayed inside the momentum "
            f"radius {number(b)} ({number(v / b)}× it), where the EoM series converges, so each "
            f"order should beat the previous one (the series' terms shrink at least like "
            f"η·λ_max/radius per order)"
            + (f"; it did ({ratios})." if improving else
               f"; here it did not at every order ({ratios or 'no ratios'}): "
               + ("the error is at the solver's floor, see the flags." if flagged else
                  "see the figure for where the orders cross.")))
    else:
        compared = reg.get("value_compared_max")
        mu = reg.get("sharp_modulus") or reg.get("sqrt_beta")
        after = ("" if compared is None else
                 f" Along the compared steps η·λ_max reached {number(compared)} "
                 f"({number(compared / b)}× the radius: "
                 f"{'back inside' if compared < b else 'still outside'}).")
        held = ("<b>The EoM held for the slow directions</b>: each order beat the previous one "
                f"({ratios})" if improving else
                "<b>The EoM did not hold at every order</b> "
                f"({ratios or 'no ratios'}): higher orders need not help outside the radius")
        parts.append(
            f"{held}, although η·λ_max(θ_0) = {number(v0 if v0 is not None else v)} is "
            f"{number((v0 if v0 is not None else v) / b)}× the momentum radius {number(b)}. "
            f"Outside the radius the two roots of the characteristic polynomial are complex: "
            f"the sharp directions oscillate with |μ| = {number(mu)} per step (√β for heavy "
            f"ball) and no flow describes them. They had died out by step K = {K} "
            f"(|μ|^K ≤ 1e-12), so from K on the EoM describes the slow (flat) directions, "
            f"whose curvatures are inside the radius; the truncated field's sharp rate grows like "
            f"(η·λ/radius)^N per order, which makes the solve stiff, not wrong.{after}")
    if flagged:
        parts.append(f"Flagged (error below the solver's own): {', '.join(flagged)}.")
    return "".join(f"<p>{p}</p>" for p in parts)


def optimizer_figures(metrics: dict, resolved: dict, optimizer: str, folder: Path | None):
    """[(figure or path, caption)] of an sgd/momentum run (open figures when `folder` is None)."""
    def at(name):
        return None if folder is None else folder / name

    figs = []
    if not metrics or not len(metrics.get("step", [])):
        return figs
    if optimizer == "sgd":
        figs.append((decomposition_figure(metrics, at("decomposition.png")),
                     "Distance from the SGD iterate of gradient flow (the total gap), of the "
                     "switching EoM (what it leaves) and of the epoch/averaged flow (dots: epoch "
                     "boundaries), with the switching-vs-epoch gap."))
        if "reg_sgd" in metrics:
            figs.append((regularizer_figure(metrics, at("regularizer.png")),
                         "The implicit regularizers along the SGD run."))
        figs.append((sgd_regime_figure(metrics, int(resolved.get("batches", 1)),
                                       at("regime.png")),
                     "Regime variables against the series' radius 1."))
    else:
        K = int(resolved.get("transient_steps", 0))
        settled = resolved.get("start_kind") == "settled"
        figs.append((momentum_error_figure(metrics, K, at("error.png"), settled),
                     "Error of gradient flow (rescaled time) and each EoM order"
                     + (", compared from step K on (the transient from rest is not compared)."
                        if settled else "; grey: the transient from rest, which no flow "
                        "describes.")))
        figs.append((momentum_regime_figure(metrics, float(resolved.get("momentum_radius", 1.0)),
                                            at("regime.png"),
                                            resolved.get("eta_lambda_max_initial"), K),
                     "η·λ_max at θ_0 and along the run against the momentum radius."))
    return figs


def optimizer_report(rd: RunDir, cfg: dict, results: dict) -> tuple[str, list]:
    metrics = rd.read_metrics()
    settings = cfg.get("settings", {})
    resolved = cfg.get("resolved", {})
    opt = settings.get("optimizer")
    rd.figures.mkdir(parents=True, exist_ok=True)
    figs = optimizer_figures(metrics, resolved, opt, rd.figures)
    status = results.get("status", "unknown")
    sections = []
    if status != "complete":
        cls = "bad" if status in ("diverged", "failed") else "warn"
        sections.append(("", f"<p class='{cls}'>Run status: <b>{status}</b>. "
                             f"{results.get('message') or ''}</p>"))
    reading = sgd_reading(results) if opt == "sgd" else momentum_reading(results)
    notes = "".join(f"<p class='warn'>{n}</p>" for n in resolved.get("notes", []))
    sections.append(("Reading", reading + notes))
    sections.append(("Summary", table(HEADER, _rows(results))))
    sections.append(("Figures", "".join(figure(p, c) for p, c in figs)))
    info = {k: resolved.get(k) for k in (
        "lr", "lr_source", "lambda_max_initial", "eta_lambda_max_initial", "n_params",
        "n_samples", "steps_total", "batches", "batch_size", "epochs", "shuffle",
        "eta_lambda_max_batch_initial", "m_eta_lambda_max_initial", "beta", "nesterov", "start",
        "start_kind", "transient_steps", "momentum_radius", "eta_lambda_over_radius_initial",
        "stability_limit") if k in resolved}
    info.update({"model": settings.get("model"), "dataset": settings.get("dataset"),
                 "orders": settings.get("orders"), "seed": settings.get("seed"),
                 "wall time (s)": (results.get("wall_time") or {}).get("total")})
    sections.append(("Settings", kv_table(info)))
    title = f"eom run --optimizer {opt} — {settings.get('model')} on {settings.get('dataset')}"
    return title, sections


def summary_rows(results: dict) -> list[list[str]]:
    """Rows (model, step, error, relative, solver, flag) for the CLI's summary table."""
    return _rows(results)


def finite(x) -> bool:
    return x is not None and math.isfinite(float(x))
