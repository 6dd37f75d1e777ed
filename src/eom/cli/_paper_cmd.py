"""`eom paper`: the seed paper's claims end to end into one report."""

from __future__ import annotations

from typing import Annotated

import typer

from ._options import (
    DevicesOpt,
    NameOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    console,
    out_dir,
    run_and_report,
)


def paper(
    quick: Annotated[bool, typer.Option(
        "--quick", help="Tiny problems: all four parts in a few minutes on 2 cores.")] = False,
    seed: SeedOpt = None,
    devices: DevicesOpt = None,
    name: NameOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
):
    """The seed paper's claims on the built-in problems, one report: the EoM and its counter
    terms on a real network with predicted vs measured error (run), order of accuracy (sweep),
    scale- and translation-invariant layers with and without weight decay (symmetry), and
    where the EoM stops holding (validity). Each part resumes in its own sub-folder."""
    from ..experiments import PaperSettings, paper as paper_experiment
    s = PaperSettings(quick=quick, seed=seed or 0, devices=devices, name=name,
                      out=str(out) if out is not None else None)
    folder = out_dir(s.name, s.out)
    result = run_and_report(
        lambda **kw: paper_experiment(s, folder, overwrite=overwrite, **kw), folder, "paper",
        "parts", parts=("run", "sweep", "symmetry", "validity"))
    for part, r in result.results.get("parts", {}).items():
        console.print(f"{part}: {r.get('status')}")
    console.print(f"report: {folder / 'report.html'}", markup=False)
