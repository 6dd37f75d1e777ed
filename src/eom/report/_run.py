"""The report of `eom run`: error, loss, predicted-error and regime figures, a reading, a
summary table and the settings."""

from __future__ import annotations

from ..experiments import RunDir
from ._figures import order_name, run_figures
from ._format import number, solver_error_text
from ._html import SUMMARY_HEADER, figure, kv_table, reading, summary_rows, table


def run_report(rd: RunDir, cfg: dict, results: dict) -> tuple[str, list]:
    """(title, sections) of report.html from the folder's files (SGD/momentum runs: `_optim`)."""
    if (cfg.get("settings") or {}).get("optimizer", "gd") != "gd":
        from ._optim import optimizer_report

        return optimizer_report(rd, cfg, results)
    metrics = rd.read_metrics()
    figs = run_figures(metrics, rd.figures) if metrics and len(metrics.get("step", [])) else []
    settings = cfg.get("settings", {})
    resolved = cfg.get("resolved", {})
    status = results.get("status", "unknown")
    sections = []
    if status != "complete":
        cls = "bad" if status in ("diverged", "failed") else "warn"
        msg = results.get("message") or ""
        sections.append(("", f"<p class='{cls}'>Run status: <b>{status}</b>. {msg}</p>"))
    sections.append(("Reading", reading(results)))
    summary = table(SUMMARY_HEADER, summary_rows(results))
    sections.append(("Summary at the last recorded step", summary))
    captions = {
        "error": "Distance ‖θ^(N)(kη) − θ_k‖ of gradient flow (order 0) and the EoM of each order "
                 "from GD, log scale. Dotted: the ODE solver's own error; hollow markers: within "
                 "10× of it.",
        "loss": "Training loss along GD and along each continuous model, and the loss gap.",
        "predicted": "Measured error against the leading-order prediction of THEORY.md §3.",
        "regime": "ηλ_max along the run over the EoM's validity regimes.",
    }
    sections.append(("Figures", "".join(figure(p, captions.get(p.stem, "")) for p in figs)))
    info = {
        "model": settings.get("model"), "dataset": settings.get("dataset"),
        "parameters": resolved.get("n_params"), "samples (full batch)": resolved.get("n_samples"),
        "learning rate η": resolved.get("lr"), "η chosen": resolved.get("lr_source"),
        "λ_max(θ_0)": resolved.get("lambda_max_initial"),
        "ηλ_max(θ_0)": resolved.get("eta_lambda_max_initial"),
        "steps": settings.get("steps"), "weight decay": settings.get("weight_decay"),
        "orders": settings.get("orders"), "seed": settings.get("seed"),
        "solver": "diffrax Dopri8, adaptive (PID); tolerances per order "
                  + str(resolved.get("tolerance")),
        "precision": cfg.get("dtype", "float64"), "eom version": cfg.get("eom_version"),
        "git commit": cfg.get("git_commit"),
        "wall time (s)": (results.get("wall_time") or {}).get("total"),
    }
    sections.append(("Settings", kv_table(info)))
    if resolved.get("gd_only"):
        sections.insert(1, ("", "<p class='warn'>η·λ_max(θ_0) ≥ 2: GD alone was run "
                                "(--allow-unstable); no continuous model is compared.</p>"))
    return f"eom run — {settings.get('model')} on {settings.get('dataset')}", sections


def summary_table_rows(results: dict) -> list[list[str]]:
    if "models" in (results.get("final") or {}):  # sgd / momentum: one row per model
        from ._optim import summary_rows

        return [[r[0], r[2], r[3], "", "", r[4], r[5]] for r in summary_rows(results)]
    rows = []
    for key, r in (results.get("final") or {}).get("orders", {}).items():
        ratio = r.get("ratio_to_previous")
        rows.append([
            order_name(int(key)).replace(" (order 0)", ""),
            number(r["error"], "e3"),
            number(r["relative_error"], "e2"),
            number(ratio),
            number(r.get("predicted"), "e3"),
            solver_error_text(r["solver_error"]),
            "< solver" if r["flagged"] else "ok",
        ])
    return rows
