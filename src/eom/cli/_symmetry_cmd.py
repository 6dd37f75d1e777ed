"""`eom symmetry` (being written)."""

from __future__ import annotations

import typer


def symmetry_command():
    """Not available yet."""
    raise typer.Exit(1)
