"""Truncation orders and the Lie derivative: the two primitives every modified-field path
shares (the plain recursion in `_modified`, the map engine in `_map`, momentum's terms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._errors import UnsupportedOrderError

PyTree = Any
Field = Callable[[PyTree], PyTree]

#: Highest order the engine accepts. The counter-term series is asymptotic; beyond this the
#: compile time of the reference recursion is prohibitive and the terms are of no practical use.
MAX_ORDER = 8


def check_order(order: Any, *, minimum: int = 0) -> int:
    """Validate a truncation order and return it as an int."""
    if isinstance(order, bool) or not isinstance(order, int | np.integer):
        raise UnsupportedOrderError(f"order must be an integer, got {order!r}.")
    order = int(order)
    if order < minimum:
        raise UnsupportedOrderError(
            f"order must be ≥ {minimum}, got {order} (order 0 is gradient flow; "
            "order N adds the counter terms ξ_1 … ξ_N)."
        )
    if order > MAX_ORDER:
        raise UnsupportedOrderError(
            f"order {order} is above the supported maximum {MAX_ORDER}; use an order between "
            f"{minimum} and {MAX_ORDER} (in practice 1–4 already capture the error)."
        )
    return order


def lie_derivative(X: Field, G: Field) -> Field:
    """$(\\mathcal L_X G)(x) = G'(x) X(x)$ as a new field (one `jax.jvp`)."""

    def LXG(x):
        return jax.jvp(G, (x,), (X(x),))[1]

    return LXG
