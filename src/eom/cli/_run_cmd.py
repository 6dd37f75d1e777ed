"""`eom run` and `eom report`: options → `eom.experiments.run` → a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.panel import Panel
from rich.table import Table

from ._options import (
    ConfigOpt,
    DatasetOpt,
    DepthOpt,
    DevicesOpt,
    LrOpt,
    ModelOpt,
    NameOpt,
    OrdersOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    StepsOpt,
    SubsetOpt,
    TargetOpt,
    WdOpt,
    WidthOpt,
    console,
    out_dir,
    run_and_report,
    settings_from,
)


def run(
    model: ModelOpt = None, dataset: DatasetOpt = None, lr: LrOpt = None,
    target: TargetOpt = None, steps: StepsOpt = None, orders: OrdersOpt = None,
    weight_decay: WdOpt = None, seed: SeedOpt = None,
    record_every: Annotated[int | None, typer.Option(
        "--record-every", help="Record errors every this many steps. \\[default: 5]")] = None,
    diagnose_every: Annotated[int | None, typer.Option(
        "--diagnose-every", help="Record η·λ_max, term ratios and the validity regime every "
                                 "this many steps (0 = off). \\[default: 50]")] = None,
    subset: SubsetOpt = None, width: WidthOpt = None, depth: DepthOpt = None,
    local: Annotated[bool | None, typer.Option(
        "--local/--no-local", help="Also measure one-step (local) errors. \\[default: off]")
    ] = None,
    predict: Annotated[bool | None, typer.Option(
        "--predict/--no-predict", help="Also compute the predicted error. \\[default: on]")
    ] = None,
    predict_every: Annotated[int | None, typer.Option(
        "--predict-every", help="Evaluate the prediction's source ξ_(N+1) every this many GD "
                                "steps, continued linearly in between (1 = exact; 2 saves ≈ 25 "
                                "%, 5 ≈ 45 % of its cost but changes it by ≈ 1–3 % and ≈ 10–25 "
                                "% at η·λ_max = 0.2). "
                                "\\[default: 1]")] = None,
    optimizer: Annotated[str | None, typer.Option(
        "--optimizer", help="gd | sgd | momentum. sgd and momentum default to a tiny problem "
                            "(256 digits, width 16, depth 1) unless those flags are given. "
                            "\\[default: gd]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="sgd: samples per minibatch (the last partial batch is dropped; "
                             "--steps is rounded up to whole epochs). \\[default: 64]")] = None,
    shuffle: Annotated[str | None, typer.Option(
        "--shuffle", help="sgd: cyclic (same batch order every epoch; epoch EoM) or random "
                          "(reshuffled every epoch; averaged flow, orders ≤ 1). "
                          "\\[default: random]")] = None,
    momentum: Annotated[float | None, typer.Option(
        "--momentum", help="momentum: β in [0, 1). \\[default: 0.5]")] = None,
    nesterov: Annotated[bool | None, typer.Option(
        "--nesterov/--no-nesterov", help="momentum: Nesterov's variant. \\[default: off]")
    ] = None,
    start: Annotated[str | None, typer.Option(
        "--start", help="momentum: rest (v_0 = 0; errors from the transient K on) or manifold "
                        "(start on the slow manifold). \\[default: rest]")] = None,
    allow_unstable: Annotated[bool | None, typer.Option(
        "--allow-unstable", help="When η·λ_max(θ_0) ≥ 2, run GD alone and record where it goes "
                                 "instead of refusing.")] = None,
    devices: DevicesOpt = None,
    name: NameOpt = None, out: OutOpt = None, config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Run GD, gradient flow and the EoM side by side and write a report.

    With no arguments: scikit-learn's digits (full batch), an MLP with softmax cross-entropy,
    η chosen so that η·λ_max(θ_0) = 0.2, orders 0, 1, 2. Writes runs/<name>/: config.json,
    metrics.csv, results.json, figures/*.png and report.html. A learning rate with
    η·λ_max(θ_0) ≥ 2 is refused before any ODE is solved (see --allow-unstable).
    """
    from ..experiments import RunSettings, parse_orders, run as run_experiment

    flags = dict(model=model, dataset=dataset, lr=lr, target=target, steps=steps, orders=orders,
                 weight_decay=weight_decay, seed=seed, record_every=record_every,
                 diagnose_every=diagnose_every, subset=subset, width=width, depth=depth,
                 local=local, predict=predict, predict_every=predict_every,
                 optimizer=optimizer, batch_size=batch_size,
                 shuffle=shuffle, momentum=momentum, nesterov=nesterov, start=start,
                 allow_unstable=allow_unstable, devices=devices, name=name,
                 out=str(out) if out is not None else None)
    s = settings_from(RunSettings, config, flags, {"orders": parse_orders})
    folder = out_dir(s.name, s.out)
    result = run_and_report(
        lambda **kw: run_experiment(s, folder, overwrite=overwrite, **kw),
        folder, f"{s.optimizer.upper() if s.optimizer != 'momentum' else 'momentum'} vs EoM")
    print_run_summary(result.results, folder)


def print_run_summary(results: dict, folder: Path) -> None:
    from ..experiments._devices import describe
    from ..experiments._settings import distance_label
    from ..report import number, summary_table_rows

    on = f" on {describe(results['devices'])}" if results.get("devices") else ""
    t = Table(
        title=f"{results.get('model')} on {results.get('dataset')}: η = "
        f"{number(results.get('lr'))}, η·λ_max(θ_0) = "
        f"{number(results.get('eta_lambda_max_initial'))}, {results.get('steps_done')} steps{on}",
        box=box.SIMPLE_HEAD,
    )
    dist = distance_label(results.get("optimizer"))
    for h in ("", dist, "relative", "÷prev", "predicted", "solver", "flag"):
        t.add_column(h, justify="right", no_wrap=True)
    for r in summary_table_rows(results):
        t.add_row(*r)
    console.print(t)
    reg = results.get("regime") or {}
    if reg.get("warning"):
        console.print(Panel(reg["warning"], title="EoM validity", border_style="yellow"))
    wall = (results.get("wall_time") or {}).get("total")
    if wall is not None:
        console.print(f"wall time {wall:.1f} s")
    console.print(f"report: {folder / 'report.html'}", markup=False)


def report(folder: Annotated[Path, typer.Argument(help="A run folder written by eom.")]):
    """Rebuild the figures and report.html of a run folder from its files (an unreadable or
    missing metrics.csv exits 2 and keeps the old report)."""
    from ..report import write_report

    path = write_report(folder)
    console.print(f"report: {path}", markup=False)
