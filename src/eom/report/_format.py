"""The one number formatter of every report, table and console summary."""

from __future__ import annotations

import html
import math

MISSING = "–"


def number(x, style: str = "g", *, missing: str = MISSING) -> str:
    """Format a number for a report or a console table.

    Styles: `"g"` 3 significant digits (`0.0123`); `"auto"` 3 significant digits in
    [1e-3, 1e4), else `1.23e-05`; `"sci"` compact scientific (`2.3e-4`); `"pct"` a signed
    percentage (`+1.2%`); `"e3"` `1.234e-05`; `"e1"` `1.2e-05`; `"e2"` `1.23e-05`.
    None and non-finite values give `missing`; strings are HTML-escaped; booleans are yes/no;
    integers are written whole.

    >>> number(0.012345), number(1.5e-6, "auto"), number(2.3e-4, "sci"), number(0.0123, "pct")
    ('0.0123', '1.50e-06', '2.3e-4', '+1.23%')
    """
    if x is None:
        return missing
    if isinstance(x, str):
        return html.escape(x)
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        return missing
    return _STYLES[style](x)


def _auto(x: float) -> str:
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


def _sci(x: float) -> str:
    if x == 0:
        return "0"
    m, e = f"{x:.1e}".split("e")
    return f"{m}e{int(e)}"


_STYLES = {
    "g": lambda x: f"{x:.3g}",
    "auto": _auto,
    "sci": _sci,
    "pct": lambda x: f"{100 * x:+.3g}%",
    "e1": lambda x: f"{x:.1e}",
    "e2": lambda x: f"{x:.2e}",
    "e3": lambda x: f"{x:.3e}",
}


def solver_error_text(x) -> str:
    """A solver-error estimate for tables. Exactly 0 means the verification solve could not be
    tighter than the run's own (both at the float64 tolerance floor, 1e-13), so it says so
    instead of printing a misleading 0."""
    if x is not None and float(x) == 0.0:
        return "at floor"
    return number(x, "e1")
