"""`eom validity`: options → `eom.experiments.validity` → the table and where orders stop
helping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from ..experiments._validity import (
    DEFAULT_HORIZON_STEPS,
    DEFAULT_POINTS,
    DEFAULT_SUBSET,
    QUICK_HORIZON_STEPS,
    QUICK_POINTS,
)
from ._options import (
    ConfigOpt,
    DatasetOpt,
    DepthOpt,
    DevicesOpt,
    ModelOpt,
    NameOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    WdOpt,
    WidthOpt,
    console,
    out_dir,
    run_and_report,
    settings_from,
)


def validity(
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    orders: Annotated[str | None, typer.Option(
        "--orders", help="EoM orders to compare, e.g. 0-3 (0 = gradient flow). "
                         "\\[default: 0-3]")] = None,
    points: Annotated[int | None, typer.Option(
        "--points", help=f"Number of learning rates. \\[default: {DEFAULT_POINTS}; "
                         f"--quick: {QUICK_POINTS}]")] = None,
    min_target: Annotated[float | None, typer.Option(
        "--min-target", help="Smallest η·λ_max(θ_0) of the sweep. \\[default: 0.1]")] = None,
    max_target: Annotated[float | None, typer.Option(
        "--max-target", help="Largest η·λ_max(θ_0) of the sweep (must be < 2). "
                             "\\[default: 1.9]")] = None,
    horizon_steps: Annotated[int | None, typer.Option(
        "--horizon-steps", help="Steps at the largest learning rate; the fixed time is T = "
                                "horizon_steps·max_target/λ_max(θ_0). "
                                f"\\[default: {DEFAULT_HORIZON_STEPS}; --quick: "
                                f"{QUICK_HORIZON_STEPS}]")] = None,
    quick: Annotated[bool | None, typer.Option(
        "--quick/--no-quick", help="A small sweep (fewer points, a shorter T) for a first look "
                                   "or a test. \\[default: off]")] = None,
    weight_decay: WdOpt = None,
    seed: SeedOpt = None,
    subset: Annotated[int | None, typer.Option(
        "--subset", help="Use only N samples (seeded shuffle); a data set with fewer is used "
                         f"whole (give a large N for all samples). \\[default: {DEFAULT_SUBSET}]",
    )] = None,
    width: WidthOpt = None,
    depth: DepthOpt = None,
    devices: DevicesOpt = None,
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Where does the EoM stop working? Error of orders 0–3 at a fixed time against η·λ_max.

    Learning rates with η·λ_max(θ_0) from 0.1 to 1.9 (λ_max from Lanczos at θ_0), all run to
    the same time T; the figure shows each order's error over the regimes accurate (< 0.5),
    marginal (< 1), beyond-series (< 2) and unstable, i.e. where adding orders stops paying
    off. Writes config.json, metrics.csv (one row per learning rate and order), results.json,
    figures/validity.png and report.html; rerunning with the same --out resumes.
    """
    from ..experiments import ValiditySettings, parse_orders, validity as validity_experiment

    flags = dict(model=model, dataset=dataset, orders=orders, points=points,
                 min_target=min_target, max_target=max_target, horizon_steps=horizon_steps,
                 quick=quick, weight_decay=weight_decay, seed=seed, subset=subset, width=width,
                 depth=depth, devices=devices, name=name, out=str(out) if out is not None else None)
    s = settings_from(ValiditySettings, config, flags, {"orders": parse_orders})
    folder = out_dir(s.name, s.out)
    result = run_and_report(
        lambda **kw: validity_experiment(s, folder, overwrite=overwrite, **kw),
        folder, "validity sweep", "learning rates")
    print_summary(result.results, folder)


def print_summary(results: dict, folder: Path) -> None:
    from ..report import number
    from ..report._validity import table_rows

    header, rows = table_rows(results, short=True)
    t = Table(title=f"{results.get('model')} on {results.get('dataset')}: error at T = "
                    f"{results.get('horizon', math.nan):.3g} (T·λ_max(θ_0) = "
                    f"{results.get('horizon_lambda', math.nan):.3g})", box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0), pad_edge=False)
    for h in header:
        t.add_column(h, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(*[_cell(v, number) for v in r])
    console.print(t)
    tab = results.get("table") or {}
    for k, v in (results.get("stops_helping") or {}).items():
        x = v["eta_lambda_max"]
        where = "better at every point" if x is None else f"stops helping at η·λ_max ≈ {x:.3g}"
        gain = (tab.get("gain") or {}).get(k) or []
        if len(gain) >= 2:
            where += (f"; gain {_cell(gain[0], number)}× at η·λ_max "
                      f"{_cell(tab['eta_lambda_max'][0], number)} → {_cell(gain[-1], number)}× "
                      f"at {_cell(tab['eta_lambda_max'][-1], number)}")
        console.print(f"order {k} vs order {v['previous']}: {where}")
    wall = (results.get("wall_time") or {}).get("total")
    if wall is not None:
        console.print(f"wall time {wall:.1f} s")
    console.print(f"report: {folder / 'report.html'}", markup=False)


def _cell(v, number) -> str:
    """A table cell: text as is, a number in the shared format, a NaN as "failed"."""
    if isinstance(v, str):
        return v
    return number(v, "auto", missing="–" if v is None else "failed")
