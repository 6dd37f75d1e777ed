"""The `eom` command line: a thin typer layer over the library (see `eom --help`)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .._errors import EomError
from .._version import __version__

app = typer.Typer(
    name="eom",
    help=(
        "eom — how closely does a differential equation describe what gradient descent does? "
        "Runs GD, gradient flow (GF) and the equation of motion (EoM: GF plus counter terms) side "
        "by side on real networks and data, and measures the discretization error. All numbers "
        "are float64."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, width=None if sys.stdout.isatty() else 100)
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """One short paragraph naming the problem and the fix; exit code 2."""
    err_console.print("[bold red]eom: error[/]", highlight=False)
    err_console.print(message, soft_wrap=True, highlight=False, markup=False)
    raise typer.Exit(2)


def friendly(fn):
    """Turn eom's errors (and a Ctrl-C) into a message and an exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EomError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err_console.print(
                "[yellow]Interrupted.[/] Everything up to the last recorded step is saved; "
                "rerun the same command to resume."
            )
            raise typer.Exit(130) from None

    return wrapper


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# -- shared options -------------------------------------------------------------------------
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m",
    help="linear | mlp | mlp-bn | cnn, or package.module:factory for your own model "
         "(factory(dataset, seed) -> (loss_fn, params0)). \\[default: mlp]")]
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", "-d",
    help="digits | mnist1d | teacher-student, or a path to an .npz with arrays X and y. "
         "\\[default: digits]")]
LrOpt = Annotated[float | None, typer.Option(
    "--lr", help="Learning rate η. \\[default: chosen so that η·λ_max(θ_0) = --target]")]
TargetOpt = Annotated[float | None, typer.Option(
    "--target", help="η·λ_max(θ_0) used to choose η when --lr is not given. \\[default: 0.2]")]
StepsOpt = Annotated[int | None, typer.Option(
    "--steps", help="Number of GD steps. \\[default: 200]")]
OrdersOpt = Annotated[str | None, typer.Option(
    "--orders", help="EoM orders to compare, e.g. 0,1,2 or 0-3 (0 = gradient flow). "
                     "\\[default: 0,1,2]")]
WdOpt = Annotated[float | None, typer.Option(
    "--weight-decay", help="Coupled weight decay λ (GD on L + λ/2‖θ‖²). \\[default: 0]")]
SeedOpt = Annotated[int | None, typer.Option(
    "--seed", help="Seed of model init and data. \\[default: 0]")]
RecordOpt = Annotated[int | None, typer.Option(
    "--record-every", help="Record errors every this many steps. \\[default: 5]")]
DiagOpt = Annotated[int | None, typer.Option(
    "--diagnose-every", help="Record η·λ_max, term ratios and the validity regime every this many "
                             "steps (0 = off). \\[default: 50]")]
SubsetOpt = Annotated[int | None, typer.Option(
    "--subset", help="Use only N samples (seeded shuffle). \\[default: all]")]
WidthOpt = Annotated[int | None, typer.Option("--width", help="Hidden width of built-in models.")]
DepthOpt = Annotated[int | None, typer.Option("--depth", help="Hidden layers of built-in models.")]
NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Run name: results go to runs/<name>/. \\[default: a timestamp]")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="Output folder (overrides --name). Rerunning with the same --out resumes.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="A TOML file of settings (same names as the flags); flags override it.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Start afresh instead of resuming when --out already holds a run.")]


def out_dir(name: str | None, out: Path | None) -> Path:
    from ._store import default_name

    if out is not None:
        return Path(out)
    return Path("runs") / (name or default_name())


@app.command()
@friendly
def run(
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    lr: LrOpt = None,
    target: TargetOpt = None,
    steps: StepsOpt = None,
    orders: OrdersOpt = None,
    weight_decay: WdOpt = None,
    seed: SeedOpt = None,
    record_every: RecordOpt = None,
    diagnose_every: DiagOpt = None,
    subset: SubsetOpt = None,
    width: WidthOpt = None,
    depth: DepthOpt = None,
    local: Annotated[bool | None, typer.Option(
        "--local/--no-local",
        help="Also measure one-step (local) errors. \\[default: off]")] = None,
    predict: Annotated[bool | None, typer.Option(
        "--predict/--no-predict", help="Also compute the predicted error. \\[default: on]")] = None,
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Run GD, gradient flow and the EoM side by side and write a report.

    With no arguments: scikit-learn's digits (full batch), an MLP with softmax cross-entropy,
    η chosen so that η·λ_max(θ_0) = 0.2, orders 0, 1, 2. Writes runs/<name>/: config.json,
    metrics.csv, results.json, figures/*.png and report.html.
    """
    from ._run import execute_run, summary_table_rows
    from ._settings import build_settings, load_toml
    from ._store import RunDir

    flags = dict(model=model, dataset=dataset, lr=lr, target=target, steps=steps, orders=orders,
                 weight_decay=weight_decay, seed=seed, record_every=record_every,
                 diagnose_every=diagnose_every, subset=subset, width=width, depth=depth,
                 local=local, predict=predict, name=name,
                 out=str(out) if out is not None else None)
    s = build_settings(load_toml(config), flags)
    rd = RunDir(out_dir(s.name, Path(s.out) if s.out else None))
    resuming = rd.prepare(s.as_dict(), overwrite=overwrite, command="run")
    if resuming and rd.read_results().get("status") == "complete":
        console.print(f"[green]{rd.path} is already complete[/] (use --overwrite to rerun).")
        _print_run_summary(rd.read_results(), rd, summary_table_rows)
        return
    console.print(f"eom {__version__}: writing to [bold]{rd.path}[/] (float64)")
    with progress_bar() as bar:
        task = bar.add_task("GD vs EoM", total=s.steps)

        def on_start(done, total):
            bar.update(task, completed=done, total=total)

        results = execute_run(
            s, rd, resuming=resuming, on_start=on_start,
            on_progress=lambda step: bar.update(task, completed=step),
            log=lambda msg: console.print(msg),
        )
    _print_run_summary(results, rd, summary_table_rows)


def _print_run_summary(results: dict, rd, rows_fn) -> None:
    t = Table(
        title=f"{results.get('model')} on {results.get('dataset')}: η = {results.get('lr'):.3g}, "
        f"η·λ_max(θ_0) = {results.get('eta_lambda_max_initial', float('nan')):.3g}, "
        f"{results.get('steps_done')} steps",
        box=box.SIMPLE_HEAD,
    )
    for h in ("", "‖θ−θ_GD‖", "relative", "÷prev", "predicted", "solver", "flag"):
        t.add_column(h, justify="right", no_wrap=True)
    for r in rows_fn(results):
        t.add_row(*r)
    console.print(t)
    reg = results.get("regime") or {}
    if reg.get("warning"):
        console.print(Panel(reg["warning"], title="EoM validity", border_style="yellow"))
    wall = (results.get("wall_time") or {}).get("total")
    if wall is not None:
        console.print(f"wall time {wall:.1f} s")
    console.print(f"report: [bold]{rd.report_path}[/]")


@app.command()
@friendly
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
    name: NameOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
):
    """Learning rates × orders: error at a fixed time T against η, with fitted log–log slopes.

    The order-N EoM's error at fixed T falls like η^(N+1). Writes the order-of-accuracy figure,
    a table and a report, like `eom run`.
    """
    from ._settings import build_settings, load_toml
    from ._store import RunDir
    from ._sweep import SweepSettings, execute_sweep, parse_lrs

    flags = dict(model=model, dataset=dataset, lrs=parse_lrs(lrs), num_lrs=num_lrs,
                 target=target, horizon_steps=horizon_steps, orders=orders,
                 weight_decay=weight_decay, seed=seed, subset=subset, width=width, depth=depth,
                 name=name, out=str(out) if out is not None else None)
    file_values = load_toml(config, SweepSettings)
    if "lrs" in file_values:
        file_values["lrs"] = parse_lrs(file_values["lrs"])
    s = build_settings(file_values, flags, SweepSettings)
    rd = RunDir(out_dir(s.name, Path(s.out) if s.out else None))
    resuming = rd.prepare(s.as_dict(), overwrite=overwrite, command="sweep")
    console.print(f"eom {__version__}: writing to [bold]{rd.path}[/] (float64)")
    with progress_bar() as bar:
        task = bar.add_task("sweep", total=None)
        results = execute_sweep(
            s, rd, resuming=resuming,
            on_start=lambda done, total: bar.update(task, completed=done, total=total),
            on_progress=lambda k: bar.advance(task, k),
        )
    t = Table(title=f"order of accuracy at T = {results['horizon']:.3g}", box=box.SIMPLE_HEAD)
    for h in ("", "slope", "± s.e.", "theory"):
        t.add_column(h, justify="right")
    for n, sl in results.get("slope", {}).items():
        se = results["slope_stderr"][n]
        t.add_row(f"order {n}", f"{sl:.3f}", "–" if se is None else f"{se:.3f}", str(int(n) + 1))
    console.print(t)
    console.print(f"report: [bold]{rd.report_path}[/]")


@app.command()
@friendly
def report(folder: Annotated[Path, typer.Argument(help="A run folder written by eom.")]):
    """Rebuild the figures and report.html of a run folder from its files."""
    from ._run import write_report
    from ._store import RunDir

    rd = RunDir(folder)
    if not rd.exists():
        raise EomError(f"{folder} is not an eom run folder (no config.json); give the folder that "
                       "`eom run` wrote, e.g. runs/<name>.")
    path = write_report(rd)
    console.print(f"report: [bold]{path}[/]")


@app.command()
def version():
    """Print the eom version."""
    console.print(f"eom {__version__}")


def main() -> None:
    """Console-script entry point."""
    from .._cache import enable_compilation_cache

    enable_compilation_cache()
    try:
        app()
    except SystemExit as exc:
        code = exc.code
        sys.exit(code)


# -- analyses, each in its own module (the command function carries its typer options) -------
def _register() -> None:
    from ._bench_cmd import bench_command
    from ._symmetry_cmd import symmetry_command
    from ._validity_cmd import validity_command

    app.command(name="symmetry")(friendly(symmetry_command))
    app.command(name="validity")(friendly(validity_command))
    app.command(name="bench")(friendly(bench_command))


_register()
