"""`eom symmetry`: options → `eom.experiments.symmetry` → a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from .._errors import EomError
from ..experiments._symmetry import (
    DEFAULT_DECAY,
    DEFAULT_STEPS,
    DEFAULT_WIDTH,
    MAX_SAVED,
    QUICK_STEPS,
    QUICK_SUBSET,
)
from ._options import (
    ConfigOpt,
    DatasetOpt,
    DepthOpt,
    DevicesOpt,
    LrOpt,
    NameOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    TargetOpt,
    console,
    out_dir,
    run_and_report,
    settings_from,
)


def symmetry(
    model: Annotated[str | None, typer.Option(
        "--model", "-m",
        help="A model with normalization and/or a softmax output: mlp-bn, linear, mlp, cnn, or "
             "package.module:factory. \\[default: mlp-bn]")] = None,
    dataset: DatasetOpt = None,
    lr: LrOpt = None,
    target: TargetOpt = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help=f"Number of GD steps. \\[default: {DEFAULT_STEPS}; --quick: "
                        f"{QUICK_STEPS}]")] = None,
    weight_decays: Annotated[str | None, typer.Option(
        "--weight-decays", help="Weight decays λ to run, e.g. 0,0.01 (coupled: GD on "
                                "L + λ/2‖θ‖²). \\[default: 0 and λ with η·λ·steps = --decay]")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Run only this one weight decay λ (shorthand for "
                               "--weight-decays λ).")] = None,
    decay: Annotated[float | None, typer.Option(
        "--decay", help="η·λ·steps of the automatic λ > 0, so the decay shows within the run. "
                        f"\\[default: {DEFAULT_DECAY}]")] = None,
    seed: SeedOpt = None,
    subset: Annotated[int | None, typer.Option(
        "--subset", help=f"Use only N samples (seeded shuffle). \\[default: all; --quick: "
                         f"{QUICK_SUBSET}]")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", help=f"Hidden width of built-in models. \\[default: {DEFAULT_WIDTH}]")] = None,
    depth: DepthOpt = None,
    save_every: Annotated[int | None, typer.Option(
        "--save-every", help=f"Save every this many steps. \\[default: steps/{MAX_SAVED} rounded "
                             f"up, so at most ~{MAX_SAVED} saved points]")] = None,
    groups: Annotated[int | None, typer.Option(
        "--groups", help="How many of the largest scale groups (and translation directions) to "
                         "plot and keep curves of in metrics.csv. \\[default: 4]")] = None,
    quick: Annotated[bool | None, typer.Option(
        "--quick/--no-quick", help=f"A short run ({QUICK_STEPS} steps, {QUICK_SUBSET} samples "
                                   "unless given) for a first look or a test. \\[default: off]")
    ] = None,
    devices: DevicesOpt = None,
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Scale- and translation-invariant groups: where gradient flow is wrong and the EoM is not.

    Runs GD, gradient flow (GF), EoM-1 and EoM-2 on mlp-bn (batch-normalized MLP of width 32,
    softmax output) on digits for 300 steps, with λ = 0 and with a λ > 0. GF says the norm of
    the weights feeding a BatchNorm is conserved; GD grows it, and the EoM follows GD. With
    weight decay the softmax-logit sums s = u·θ decay as (1−ηλ)^k under GD but as e^(−λt)
    under GF. Writes config.json, metrics.csv (‖w‖² and s per saved step, measured and
    analytic), results.json (per λ and group: relative errors against GD at the end),
    figures/*.png and report.html; rerunning with the same --out resumes with the weight
    decays not yet done. A model with no symmetric group ends with exit code 2.
    """
    from ..experiments import SymmetrySettings, parse_weight_decays, symmetry as symmetry_experiment

    if weight_decay is not None and weight_decays is not None:
        raise EomError("give either --weight-decay or --weight-decays, not both.")
    wds = parse_weight_decays(weight_decays if weight_decay is None else weight_decay)
    flags = dict(model=model, dataset=dataset, lr=lr, target=target, steps=steps,
                 weight_decays=wds, decay=decay, seed=seed, subset=subset, width=width,
                 depth=depth, save_every=save_every, groups=groups, quick=quick, devices=devices,
                 name=name, out=str(out) if out is not None else None)
    s = settings_from(SymmetrySettings, config, flags, {"weight_decays": parse_weight_decays})
    folder = out_dir(s.name, s.out)
    result = run_and_report(
        lambda **kw: symmetry_experiment(s, folder, overwrite=overwrite, **kw),
        folder, "symmetry")
    print_summary(result.results, folder)


def print_summary(results: dict, folder: Path) -> None:
    from ..report import number
    from ..report._symmetry import summary_rows

    _, rows = summary_rows(results)
    t = Table(
        title=f"{results.get('model')} on {results.get('dataset')}: η = "
              f"{number(results.get('lr'), 'auto')}, η·λ_max(θ_0) = "
              f"{number(results.get('eta_lambda_max_initial'), 'auto')}, "
              f"{results.get('num_steps')} steps\n"
              "relative error against GD at the end, median / max over groups",
        box=box.SIMPLE_HEAD,
    )
    for h in ("λ", "", "groups", "GD change", "GF", "EoM-1", "EoM-2"):
        t.add_column(h, justify="right", no_wrap=True)
    for r in rows:
        pairs = [f"{number(r[j], 'sci')} / {number(r[j + 1], 'sci')}"
                 for j in range(4, len(r), 2)]
        t.add_row(number(r[0], "auto"), r[1], str(r[2]), r[3], *pairs)
    console.print(t)
    c = (results.get("groups") or {}).get("count") or {}
    if c:
        console.print(f"groups at θ_0: {c.get('scale')} scale, {c.get('translation')} "
                      f"translation, {c.get('null')} null")
    for key, r in (results.get("runs") or {}).items():
        eq = r.get("equilibrium")
        if eq:
            console.print(
                f"λ = {float(key):g}: angular update at the end "
                f"{number(eq['angular_update_final']['median'], 'auto')} (median) vs √(2ηλ) = "
                f"{number(eq['angular_update_limit'], 'auto')}; ‖w‖²/equilibrium "
                f"{number(eq['sq_norm_final_over_equilibrium']['median'], 'auto')}")
    wall = (results.get("wall_time") or {}).get("total")
    if wall is not None:
        console.print(f"wall time {wall:.1f} s")
    console.print(f"report: {folder / 'report.html'}", markup=False)
