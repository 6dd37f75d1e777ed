"""Notebook friendliness: how results print (`__repr__`, Jupyter's `_repr_html_`) and a progress
bar for the `progress(done, total, what)` callback of every experiment.

A result prints as one line (kind, status, model, final errors) and renders in Jupyter as a short
table: the settings that matter, the final error of each model, and the flags (status other than
`complete`, points below the solver's margin, a regime warning). Numbers are shown to 3
significant digits; the full values stay in `result.results`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from ._common import ProgressFn
from ._settings import distance_label


def _g(x, spec: str = ".3g") -> str:
    """A number to `spec`; None → '—' (absent), bools and strings as they are."""
    if x is None:
        return "—"
    if isinstance(x, bool | str):
        return str(x)
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "nan" if math.isnan(x) else format(x, spec)


def _model(n) -> str:
    n = int(n)
    return "GF" if n == 0 else f"EoM-{n}"


# -------------------------------------------------------------------------------------------
# Per kind: (settings shown, table header, table rows, flags)

Summary = tuple[dict, list[str], list[list[str]], list[str]]


def _run(res: dict, cfg: dict) -> Summary:
    s = cfg.get("settings", {})
    items = {"model": res.get("model", s.get("model")), "dataset": res.get("dataset"),
             "optimizer": res.get("optimizer", s.get("optimizer")), "η": _g(res.get("lr")),
             "η·λ_max(θ₀)": _g(res.get("eta_lambda_max_initial")),
             "steps": f"{res.get('steps_done', 0)}/{res.get('num_steps', s.get('steps'))}",
             "parameters": res.get("n_params")}
    final = res.get("final") or {}
    rows, flags = [], []
    for key, r in (final.get("orders") or final.get("models") or {}).items():  # gd | sgd, momentum
        label = _model(key) if str(key).isdigit() else str(key)
        solver = r.get("solver_error")
        rows.append([label, _g(r.get("error"), ".3e"), _g(r.get("relative_error"), ".2e"),
                     _g(r.get("ratio_to_previous")), _g(r.get("predicted"), ".3e"),
                     "at floor" if solver == 0 else _g(solver, ".1e")])
        if r.get("flagged"):
            flags.append(f"{label}: error within 10× of the solver's own error")
    warning = (res.get("regime") or {}).get("warning")
    if warning:
        flags.append(str(warning))
    if res.get("gd_only"):
        flags.append("η·λ_max(θ₀) ≥ 2: GD alone was run")
    header = [f"model (step {final.get('step', '—')})", distance_label(res.get("optimizer")),
              "relative", "ratio to prev.",
              "predicted", "solver error"]
    return items, header, rows, flags


def _sweep(res: dict, cfg: dict) -> Summary:
    items = {"model": res.get("model"), "dataset": res.get("dataset"),
             "horizon T": _g(res.get("horizon")),
             "η": ", ".join(_g(x) for x in res.get("lrs") or []) or "—"}
    rows, flags = [], []
    for n in res.get("orders") or []:
        k = str(n)
        errors = (res.get("error") or {}).get(k) or []
        se = (res.get("slope_stderr") or {}).get(k)
        slope = _g((res.get("slope") or {}).get(k), ".2f")
        if se is not None and math.isfinite(se):
            slope += f" ± {se:.2f}"
        rows.append([_model(n), slope, str(int(n) + 1),
                     _g(errors[0] if errors else None, ".3e")])
        if any((res.get("flagged") or {}).get(k) or []):
            flags.append(f"{_model(n)}: some points within 10× of the solver's own error")
    return items, ["model", "slope", "theory N+1", "error at smallest η"], rows, flags


def _validity(res: dict, cfg: dict) -> Summary:
    t = res.get("table") or {}
    x = t.get("eta_lambda_max") or []
    items = {"model": res.get("model"), "dataset": res.get("dataset"),
             "η·λ_max(θ₀)": ", ".join(_g(v) for v in x) or "—",
             "points": f"{res.get('points_done', 0)}/{res.get('points_total', '—')}",
             "first order that stops helping at η·λ_max": _g(res.get("stops_helping_first"))}
    rows, flags = [], []
    for n in res.get("orders") or []:
        k = str(n)
        errs = (t.get("error") or {}).get(k) or []
        stop = ((res.get("stops_helping") or {}).get(k) or {}).get("eta_lambda_max")
        rows.append([_model(n)] + [_g(e, ".2e") for e in errs] + [_g(stop)])
        if any(f is not None for f in (t.get("failed") or {}).get(k) or []):
            flags.append(f"{_model(n)}: failed at some point")
        if any((t.get("flagged") or {}).get(k) or []):
            flags.append(f"{_model(n)}: some points within 10× of the solver's own error")
    header = ["model"] + [f"η·λ={_g(v, '.2g')}" for v in x] + ["stops helping at"]
    return items, header, rows, flags


def _symmetry(res: dict, cfg: dict) -> Summary:
    count = (res.get("groups") or {}).get("count") or {}
    items = {"model": res.get("model"), "dataset": res.get("dataset"), "η": _g(res.get("lr")),
             "steps": res.get("num_steps"),
             "groups": ", ".join(f"{v} {k}" for k, v in count.items()) or "—",
             "weight decays": ", ".join(_g(w) for w in res.get("weight_decays_done") or [])}
    procs = [p for p in res.get("processes") or [] if p != "gd"]
    rows = []
    for wd, run in (res.get("runs") or {}).items():
        for quantity, agg in ((run.get("aggregate") or {}).items()):
            err = (agg or {}).get("error_vs_gd") or {}
            if not err:
                continue
            rows.append([_g(float(wd)), quantity]
                        + [_g((err.get(p) or {}).get("median"), ".2e") for p in procs])
    header = ["λ", "quantity"] + [f"{p} median rel. error vs GD" for p in procs]
    return items, header, rows, []


def _paper(res: dict, cfg: dict) -> Summary:
    items = {"quick": res.get("quick"),
             "wall time (s)": _g((res.get("wall_time") or {}).get("total"), ".0f")}
    rows = [[k, str(v.get("status"))] for k, v in (res.get("parts") or {}).items()]
    flags = [f"part {k}: {v.get('status')}" for k, v in (res.get("parts") or {}).items()
             if v.get("status") != "complete"]
    return items, ["part", "status"], rows, flags


SUMMARIES: dict[str, Callable[[dict, dict], Summary]] = {
    "run": _run, "sweep": _sweep, "validity": _validity, "symmetry": _symmetry, "paper": _paper}


def summarize(kind: str, config: dict, results: dict) -> Summary:
    """(settings shown, header, rows, flags) of a result; a status other than `complete` is the
    first flag."""
    fn = SUMMARIES.get(kind)
    items, header, rows, flags = fn(results, config) if fn else ({}, [], [], [])
    items = {k: v for k, v in items.items() if v is not None}
    status = results.get("status", "unknown")
    if status != "complete":
        flags = [f"status {status}" + (f": {results['message']}" if results.get("message")
                                       else "")] + flags
    return items, header, rows, flags


def text(kind: str, name: str, config: dict, results: dict) -> str:
    """One line: `RunResult(status='complete', model='linear', …, final: GF 2.5e-02, …)`."""
    items, header, rows, flags = summarize(kind, config, results)
    parts = [f"status={results.get('status', 'unknown')!r}"]
    parts += [f"{k}={v}" for k, v in list(items.items())[:3]]
    if kind == "paper" and rows:
        parts.append("parts: " + ", ".join(f"{r[0]} {r[1]}" for r in rows))
    elif kind == "run" and rows:
        parts.append("error: " + ", ".join(f"{r[0]} {r[1]}" for r in rows))
    elif kind == "sweep" and rows:
        parts.append("slope: " + ", ".join(f"{r[0]} {r[1]}" for r in rows))
    elif rows:
        parts.append(f"{len(rows)} rows")
    if flags:
        parts.append(f"{len(flags)} flag(s)")
    return f"{name}({', '.join(parts)})"


def html_table(kind: str, name: str, config: dict, results: dict) -> str:
    """A short HTML table for Jupyter: settings, the per-model rows, the flags."""
    items, header, rows, flags = summarize(kind, config, results)
    e = html.escape
    status = results.get("status", "unknown")
    color = "#2a7d2a" if status == "complete" else "#b03030"
    out = [f"<div><b>{e(name)}</b> <span style='color:{color}'>{e(str(status))}</span>"]
    if items:
        out.append("<br><small>" + " · ".join(f"{e(str(k))} = {e(str(v))}"
                                              for k, v in items.items()) + "</small>")
    if rows:
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if flags:
        out.append("<ul>" + "".join(f"<li style='color:#b06000'>{e(f)}</li>" for f in flags)
                   + "</ul>")
    return "".join(out) + "</div>"


# -------------------------------------------------------------------------------------------
# Progress


class _Bar:
    """A `progress(done, total, what)` callback driving one `tqdm` bar per `what`."""

    def __init__(self, tqdm, kwargs: dict):
        self._tqdm = tqdm
        self._kwargs = kwargs
        self._bar = None
        self._what = None

    def __call__(self, done: int, total: int | None, what: str) -> None:
        if self._bar is None or what != self._what:
            self.close()
            self._bar = self._tqdm(total=total, desc=what, **self._kwargs)
            self._what = what
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def tqdm_progress(**kwargs) -> ProgressFn:
    """A progress callback for every experiment's `progress=`: a `tqdm.auto` bar (a widget in
    Jupyter, text in a terminal), one bar per stage (`what`); silent when tqdm is not installed
    (`pip install eom-dnn[notebook]`). `kwargs` go to `tqdm` (e.g. `leave=False`).

    >>> import eom
    >>> progress = eom.experiments.tqdm_progress(disable=True)
    >>> progress(2, 4, "GD vs EoM"); progress(4, 4, "GD vs EoM")
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return lambda done, total, what: None
    return _Bar(tqdm, kwargs)
