"""`eom bench`: counter-term and EoM costs as ratios to a gradient, measured in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def bench_command(
    quick: Annotated[bool, typer.Option(
        "--quick", help="Smaller models and fewer repeats (a few minutes on 2 cores).")] = False,
    eta_lambda: Annotated[float, typer.Option(
        "--eta-lambda", help="Learning rates are set so that lr·λ_max(θ_0) equals this.")] = 0.25,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Also write the table (Markdown) and the raw rows (JSON) here: "
                      "OUT.md and OUT.json.")] = None,
):
    """Benchmark: order-N EoM field / gradient (N = 1…4), compile times, EoM trajectory / GD
    wall time, the naive nested-jvp recursion and the full-Hessian approach as baselines, and
    memory — all as ratios measured in the same run (see benchmarks/README.md)."""
    import dataclasses
    import json
    import math

    from .._errors import EomError

    if not (math.isfinite(eta_lambda) and 0 < eta_lambda < 2):
        raise EomError(f"--eta-lambda (lr·λ_max(θ_0)) must be in (0, 2), got {eta_lambda}; "
                       "GD is unstable at 2 and beyond.")

    from rich.markdown import Markdown

    from ..bench import format_table, run_bench
    from ._options import console

    with console.status("benchmarking…") as status:
        report = run_bench(quick=quick, eta_lambda=eta_lambda,
                           log=lambda line: status.update(line))
    table = format_table(report)
    console.print(Markdown(table))
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table + "\n")
        rows = [dataclasses.asdict(r) for r in report.rows]
        out.with_suffix(".json").write_text(json.dumps(
            {"machine": report.machine, "settings": report.settings, "rows": rows},
            indent=2, default=str))
        console.print(f"written: {out.with_suffix('.md')}, {out.with_suffix('.json')}")
