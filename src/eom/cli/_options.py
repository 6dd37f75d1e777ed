"""What every command shares: the consoles, error handling, the progress bar, shared options."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .._errors import EomError

console = Console(stderr=False, width=None if sys.stdout.isatty() else 100, emoji=False)
err_console = Console(stderr=True, emoji=False)


def fail(message: str) -> None:
    """One short paragraph naming the problem and the fix; exit code 2 (printed verbatim: no
    rich markup or emoji codes are interpreted)."""
    err_console.print("[bold red]eom: error[/]", highlight=False)
    err_console.print(message, soft_wrap=True, highlight=False, markup=False, emoji=False)
    raise typer.Exit(2)


def say(message: str) -> None:
    """Print a plain message (paths and user text are never read as markup)."""
    console.print(message, markup=False, emoji=False, highlight=False)


#: After a Ctrl-C, seconds to wait for the run to stop by itself before ending the process.
INTERRUPT_GRACE = 4.0


def _watch_interrupts() -> None:
    """End the process `INTERRUPT_GRACE` s after a Ctrl-C even when the main thread is stuck in
    compiled code (a long ODE solve), where Python's KeyboardInterrupt cannot arrive.

    The C-level handler writes the signal to a wakeup pipe at once; this thread reads it, waits,
    and exits with 130. Every file of a run is written atomically or truncated on resume, so the
    run stays resumable (it reads as interrupted: running, with its lock released)."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:
        return

    def watch():
        while os.read(r, 1) != bytes([signal.SIGINT]):
            pass
        time.sleep(INTERRUPT_GRACE)
        err_console.print("Interrupted (the solve in progress was abandoned); rerun the same "
                          "command to resume from the last recorded step.")
        os._exit(130)

    threading.Thread(target=watch, daemon=True, name="eom-interrupt").start()


def friendly(fn):
    """Turn eom's errors, OS errors and a Ctrl-C into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EomError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}. Check the path and its "
                 "permissions, or choose another --out.")
        except KeyboardInterrupt:
            err_console.print(
                "[yellow]Interrupted.[/] Everything up to the last recorded step is saved; "
                "rerun the same command to resume."
            )
            raise typer.Exit(130) from None

    return wrapper


def progress_bar(unit: str = "steps") -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )


def with_progress(call: Callable, description: str, unit: str = "steps"):
    """Run `call(progress=…, log=…)` under a progress bar."""
    with progress_bar(unit) as bar:
        task = bar.add_task(description, total=None)

        def progress(done, total, what):
            bar.update(task, completed=done, total=total, description=what)

        def log(msg):
            bar.console.print(msg, markup=False, emoji=False, highlight=False)

        return call(progress=progress, log=log)


def out_dir(name: str | None, out: Path | str | None) -> Path:
    from ..experiments._store import default_name

    if out is not None:
        return Path(out)
    return Path("runs") / (name or default_name())


def settings_from(cls, config: Path | None, flags: dict, parsers: dict | None = None):
    """Defaults ← TOML file ← flags, parsed (`parsers`: key → parse function) and checked."""
    from ..experiments import build_settings, load_toml

    file_values = load_toml(config, cls)
    for key, parse in (parsers or {}).items():
        if key in file_values:
            file_values[key] = parse(file_values[key])
    quick = flags.get("quick") if flags.get("quick") is not None else file_values.get("quick")
    if quick:
        for key, value in getattr(cls, "QUICK", {}).items():
            if flags.get(key) is None and key not in file_values:
                flags = {**flags, key: value}
    opt = flags.get("optimizer") or file_values.get("optimizer")
    if opt and hasattr(cls, "optimizer"):  # sgd/momentum: tiny defaults under what was given
        from ..experiments._settings import OPTIMIZER_DEFAULTS, with_optimizer_defaults

        flags = with_optimizer_defaults(opt, {**{k: file_values.get(k) for k in file_values},
                                              **{k: v for k, v in flags.items() if v is not None}})
        # an optimizer default of None (momentum's target: automatic, relative to its radius)
        # replaces the dataclass default; build_settings drops None flags, not base values
        file_values = {k: None for k, v in OPTIMIZER_DEFAULTS.get(opt, {}).items()
                       if v is None and flags.get(k) is None}
    return build_settings(file_values, flags, cls)


def report_after(folder: Path) -> Path | None:
    """Write the folder's report (figures + report.html); a failure is printed, not raised."""
    from ..report import write_report

    if not (folder / "results.json").exists():
        return None
    try:
        return write_report(folder)
    except EomError as exc:
        err_console.print(f"could not write the report: {exc}", markup=False, emoji=False)
        return None


def run_and_report(call: Callable, folder: Path, description: str, unit: str = "steps",
                   parts: tuple[str, ...] = ()):
    """`with_progress(call)`, then the report of `folder` (and of its `parts` sub-folders),
    also when the run fails. A Ctrl-C skips the report, so the command ends at once (the next
    run or `eom report` writes it)."""
    try:
        result = with_progress(call, description, unit)
    except KeyboardInterrupt:
        raise
    except BaseException:
        for sub in (*parts, ""):
            report_after(folder / sub)
        raise
    for sub in (*parts, ""):
        report_after(folder / sub)
    return result


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
    "--overwrite", help="Start afresh instead of resuming when --out already holds a run (the "
                        "old run is deleted only once the new one has written its first "
                        "chunk).")]
DevicesOpt = Annotated[int | None, typer.Option(
    "--devices", help="Split the full batch over this many local devices (data parallel; "
                      "results equal the one-device run to rounding). \\[default: all]")]
