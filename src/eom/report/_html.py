"""HTML pieces of every report: a self-contained page, figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from ._figures import order_name
from ._format import number


def _num(x) -> str:
    return number(x)


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(items: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_num(v) if not isinstance(v, list | dict) else html.escape(str(v))}</td></tr>"  # noqa: E501
        for k, v in items.items()
    )
    return f"<table class='kv'>{rows}</table>"


def figure(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(path.stem)}'>{cap}</figure>"  # noqa: E501


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right} th{background:#f4f4f4}
table.kv th{text-align:left} figure{margin:1em 0} img{max-width:100%}
figcaption{font-size:.85em;color:#555}
.warn{background:#fff3c4;padding:.6em;border-left:4px solid #e0a800}
.bad{background:#f7c1c1;padding:.6em;border-left:4px solid #c00} .note{color:#555;font-size:.9em}
"""


def page(title: str, sections: list[tuple[str, str]], dtype: str = "float64") -> str:
    body = "".join(
        f"<h2>{html.escape(h)}</h2>{content}" if h else content for h, content in sections
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}"
        f"<p class='note'>All numbers computed in {html.escape(dtype)} by eom.</p>"
        "</body></html>"
    )


def summary_rows(results: dict) -> list[list]:
    rows = []
    for key, r in results.get("final", {}).get("orders", {}).items():
        rows.append([
            order_name(int(key)), r.get("error"), r.get("relative_error"),
            r.get("ratio_to_previous"), r.get("predicted"), r.get("solver_error"),
            r.get("flagged"),
        ])
    return rows


SUMMARY_HEADER = [
    "model", "final ‖θ − θ_GD‖", "relative to ‖θ_k − θ_0‖", "÷ previous order",
    "predicted", "solver error", "below solver margin",
]


def reading(results: dict) -> str:
    """A short plain-language reading of a run's numbers."""
    fin = results.get("final") or {}
    orders = fin.get("orders") or {}
    if not orders:
        return "<p>No recorded steps yet.</p>"
    lr = results.get("lr")
    k = fin.get("step")
    parts = []
    if "0" in orders:
        rel = orders["0"].get("relative_error")
        rel_txt = f" ({100 * rel:.2g}% of the distance GD travelled)" if rel is not None else ""
        parts.append(
            f"After {k} steps at learning rate η = {_num(lr)}, gradient flow is "
            f"{_num(orders['0'].get('error'))} away from gradient descent{rel_txt}."
        )
    prev = None
    for key in sorted(orders, key=int):
        if key == "0":
            prev = key
            continue
        r = orders[key]
        if r.get("flagged"):
            parts.append(
                f"The order-{key} EoM's error ({_num(r.get('error'))}) is within 10× of the ODE "
                "solver's own error, so it is only an upper bound: the EoM is at least this close."
            )
        elif prev is not None and r.get("ratio_to_previous") is not None:
            f = r["ratio_to_previous"]
            parts.append(
                f"The order-{key} EoM stays {_num(r.get('error'))} from GD: "
                f"{_num(1 / f if f else math.inf)}× closer than order {prev}."
            )
        prev = key
    el = results.get("eta_lambda_max_initial")
    if el is not None:
        parts.append(
            f"At the start ηλ_max = {_num(el)}; theory expects each added order to gain a factor "
            "of "
            f"roughly 1/(ηλ_eff) ≥ {_num(1 / el if el else math.inf)}."
        )
    reg = results.get("regime") or {}
    if reg.get("warning"):
        parts.append(f"<span class='warn'>{html.escape(reg['warning'])}</span>")
    elif reg.get("final"):
        parts.append(f"The run stayed in the “{reg['final']}” regime of the EoM.")
    return "<p>" + " ".join(parts) + "</p>"
