"""The `eom` command line: a thin typer layer over `eom.experiments` and `eom.report`."""

from __future__ import annotations

import sys

import typer

from .._version import __version__
from . import _bench_cmd, _paper_cmd, _run_cmd, _sweep_cmd, _symmetry_cmd, _validity_cmd
from ._options import _watch_interrupts, console, friendly

app = typer.Typer(
    name="eom",
    help=(
        "eom — how closely does a differential equation describe what gradient descent does? "
        "Runs GD, gradient flow (GF) and the equation of motion (EoM: GF plus counter terms) side "
        "by side on real networks and data, and measures the discretization error. All numbers "
        "are float64 (float32 with EOM_NO_X64=1, and then said so)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name, _fn in (
    ("run", _run_cmd.run), ("sweep", _sweep_cmd.sweep), ("report", _run_cmd.report),
    ("symmetry", _symmetry_cmd.symmetry), ("validity", _validity_cmd.validity),
    ("paper", _paper_cmd.paper), ("bench", _bench_cmd.bench_command),
):
    app.command(name=_name)(friendly(_fn))


@app.command()
def version():
    """Print the eom version."""
    console.print(f"eom {__version__}")


def main() -> None:
    """Console-script entry point."""
    from .._cache import enable_compilation_cache

    enable_compilation_cache()
    _watch_interrupts()
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)
