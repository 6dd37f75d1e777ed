"""Building blocks for advanced users and eom's own upper layers; no stability promise.

The argument checks every public function runs (`check_loss`, `check_lr`, `check_order`,
`check_params`), the chunked comparison that `compare` and the command line's resumable runs are
made of (`compare_chunks`, `CompareState`, `auto_tolerance`), the counter-term function builders
and the sharpness / regime building blocks. `import eom` does not expose these names; import them
from here rather than from the private modules, which move.
"""

from ._tree import check_params as check_params
from .engine import (
    check_loss as check_loss,
    check_lr as check_lr,
    check_order as check_order,
    counter_term_fn as counter_term_fn,
    eom_field as eom_field,
    grad_and_terms_fn as grad_and_terms_fn,
    lie_derivative as lie_derivative,
    regularized as regularized,
    save_grid as save_grid,
)
from .measure import (
    CompareState as CompareState,
    auto_tolerance as auto_tolerance,
    compare_chunks as compare_chunks,
)
