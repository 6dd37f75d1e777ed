"""`eom sweep`: options → `eom.experiments.sweep` → the slope table."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from ._options import (
    ConfigOpt,
    DatasetOpt,
    DepthOpt,
    DevicesOpt,
    ModelOpt,
    NameOpt,
    OrdersOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    SubsetOpt,
    TargetOpt,
    WdOpt,
    WidthOpt,
    console,
    out_dir,
    run_and_report,
    settings_from,
)


def sweep(
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    lrs: Annotated[str | None, typer.Option(
        "--lrs", help="Learning rates, e.g. 0.2,0.1,0.05. \\[default: η_0·2^-j, j < --num-lrs, "
                      "η_0 from --target]")] = None,
    num_lrs: Annotated[int | None, typer.Option(
        "--num-lrs",
        help="How many halvings of η_0 when --lrs is not given. \\[default: 4]")] = None,
    target: TargetOpt = None,
    horizon_steps: Annotated[int | None, typer.Option(
        "--horizon-steps", help="The fixed time T is this many steps of the largest η. "
                                "\\[default: 20]")] = None,
    orders: OrdersOpt = None,
    weight_decay: WdOpt = None,
    seed: SeedOpt = None,
    subset: SubsetOpt = None,
    width: WidthOpt = None,
    depth: DepthOpt = None,
    devices: DevicesOpt = None,
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Learning rates × orders: error at a fixed time T against η, with fitted log–log slopes.

    The order-N EoM's error at fixed T falls like η^(N+1). Writes the order-of-accuracy figure,
    a table and a report, like `eom run`.
    """
    from ..experiments import SweepSettings, parse_lrs, parse_orders, sweep as sweep_experiment

    flags = dict(model=model, dataset=dataset, lrs=parse_lrs(lrs), num_lrs=num_lrs,
                 target=target, horizon_steps=horizon_steps, orders=orders,
                 weight_decay=weight_decay, seed=seed, subset=subset, width=width, depth=depth,
                 devices=devices, name=name, out=str(out) if out is not None else None)
    s = settings_from(SweepSettings, config, flags, {"lrs": parse_lrs, "orders": parse_orders})
    folder = out_dir(s.name, s.out)
    result = run_and_report(
        lambda **kw: sweep_experiment(s, folder, overwrite=overwrite, **kw),
        folder, "sweep", "learning rates")
    results = result.results
    t = Table(title=f"order of accuracy at T = {results['horizon']:.3g}", box=box.SIMPLE_HEAD)
    for h in ("", "slope", "± s.e.", "theory"):
        t.add_column(h, justify="right")
    for n, sl in results.get("slope", {}).items():
        se = results["slope_stderr"][n]
        t.add_row(f"order {n}", f"{sl:.3f}", "–" if se is None else f"{se:.3f}", str(int(n) + 1))
    console.print(t)
    console.print(f"report: {folder / 'report.html'}", markup=False)
