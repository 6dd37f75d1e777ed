"""`eom validity` (being written)."""

from __future__ import annotations

import typer


def validity_command():
    """Not available yet."""
    raise typer.Exit(1)
