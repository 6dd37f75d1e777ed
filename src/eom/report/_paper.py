"""The report of `eom paper`: one page with the four parts' reports, each under its claim."""

from __future__ import annotations

import html

from ..experiments import RunDir
from ..experiments._store import read_json
from ._kinds import REPORTERS, effective_results

CLAIMS = {
    "run": "1. The counter terms and the EoM on a real network; predicted against measured error",
    "sweep": "2. Order of accuracy: the order-N error at fixed T falls like η^(N+1)",
    "symmetry": "3. Scale- and translation-invariant layers, with and without weight decay",
    "validity": "4. Where the EoM stops holding",
}


def paper_report(rd: RunDir, cfg: dict, results: dict) -> tuple[str, list]:
    """(title, sections): each part's sections nested under its claim."""
    sections = []
    status = results.get("status")
    if status != "complete":
        sections.append(("", f"<p class='warn'>Status: <b>{html.escape(str(status))}</b>. "
                             f"{html.escape(results.get('message') or '')}</p>"))
    for kind, claim in CLAIMS.items():
        sub = RunDir(rd.path / kind)
        if not sub.exists():
            sections.append((claim, "<p class='warn'>not run yet.</p>"))
            continue
        sub_cfg = read_json(sub.config_path)
        _, parts = REPORTERS[kind](sub, sub_cfg, effective_results(sub))
        body = "".join(f"<h3>{html.escape(h)}</h3>{c}" if h else c for h, c in parts)
        sections.append((claim, body))
    return "eom paper — the seed paper's claims" + (" (quick)" if cfg.get("settings", {})
                                                    .get("quick") else ""), sections
