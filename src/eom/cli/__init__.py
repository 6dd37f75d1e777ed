"""The `eom` command line (typer + rich): a thin layer over the library."""

from ._app import app as app, main as main
