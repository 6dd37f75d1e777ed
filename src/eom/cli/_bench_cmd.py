"""`eom bench` (being written)."""

from __future__ import annotations

import typer


def bench_command():
    """Not available yet."""
    raise typer.Exit(1)
