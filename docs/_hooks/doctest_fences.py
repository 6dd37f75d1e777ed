"""Griffe extension: render docstring examples (`>>>` blocks) as Python console code.

Docstrings are plain Markdown here (`docstring_style: null`), so without this an example such as
`r.results["slope"]["0"]` reads as a Markdown reference link (a broken-reference error under
`--strict`) and its output as prose. Each run of lines from a `>>>` line to the next blank line
is wrapped in a ```pycon fence; nothing else in the docstring changes.
"""

from __future__ import annotations

import griffe


def fence(text: str) -> str:
    out: list[str] = []
    inside = False
    for line in text.split("\n"):
        if not inside and line.lstrip().startswith(">>>"):
            if out and out[-1].strip():
                out.append("")  # a fence opens a block only after a blank line
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence(obj.docstring.value)
