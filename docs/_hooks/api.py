"""MkDocs hook: expand `<!-- eom-api -->` (or `<!-- eom-api: eom.adapters -->`) into one
mkdocstrings block per public module of eom, listing every public name that module exports
(found by importing it at build time), so a newly exported function appears in the API pages
without editing them."""

from __future__ import annotations

import importlib
import pkgutil
import re
import types

MARKER = re.compile(r"<!-- eom-api(?::\s*([\w.]+))? -->")
SKIP = {"cli", "adapters"}  # the CLI has its own page (reference/cli.md); adapters too


def public_modules() -> list[str]:
    import eom

    names = ["eom"]
    for info in pkgutil.iter_modules(eom.__path__):
        if not info.name.startswith("_") and info.name not in SKIP:
            names.append(f"eom.{info.name}")
    return names


def public_members(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    names = exported if exported is not None else [n for n in vars(module) if not n.startswith("_")]
    return [n for n in names if not isinstance(getattr(module, n, None), types.ModuleType)]


def api_markdown(only: str | None = None) -> str:
    blocks = []
    for name in [only] if only else public_modules():
        members = public_members(name)
        if not members:
            continue
        listed = ", ".join(members)
        blocks.append(
            f"::: {name}\n    options:\n      members: [{listed}]\n      show_submodules: false\n"
        )
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    return MARKER.sub(lambda m: api_markdown(m.group(1)), markdown)
