r"""Full-batch gradient descent as an `Optimizer`: the method the EoM was first derived for.

$\theta_{k+1} = \theta_k - \eta\nabla L_\lambda(\theta_k)$ with coupled weight decay
$L_\lambda = L + \tfrac\lambda2\lVert\theta\rVert^2$. Its continuous models are gradient flow
(order 0) and the order-$N$ EoM $\dot\theta = -\nabla L_\lambda - \sum_{k\le N}\eta^k\xi_k$
(THEORY.md §2), labelled by the order itself (`"0"`, `"1"`, …) so that the columns of
`eom.compare` stay `error_0`, `error_1`, ….
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax

from .._errors import EomError
from ._cache import loss_cache
from ._counter import eom_field, regularized
from ._lie import check_order
from ._optimizer import ContinuousModel, Optimizer
from ._trajectory import gd_advance


class GD(Optimizer):
    """Full-batch GD on $L_\\lambda$; `weight_decay` is λ, `method` the counter-term method."""

    name: ClassVar[str] = "gd"
    weight_decay: float = eqx.field(static=True, default=0.0)
    method: str = eqx.field(static=True, default="auto")

    def __check_init__(self):
        if not float(self.weight_decay) >= 0:
            raise EomError(f"weight_decay must be ≥ 0, got {self.weight_decay}.")

    def advance(self, loss: Callable, params, state, lr, k0, num):
        """`num` GD steps (k0 is unused: full-batch GD does not depend on the step index)."""
        return gd_advance(_grad_wd(loss, float(self.weight_decay)), params, lr, num), state

    def models(self, loss: Callable, lr, orders: tuple[int, ...]) -> tuple[ContinuousModel, ...]:
        """Gradient flow (order 0) and the order-N EoMs; the fields take lr as an argument, so
        the same field objects serve every learning rate (no recompilation in sweeps)."""
        return tuple(
            ContinuousModel(
                label=str(n),
                kind="gf" if n == 0 else "eom",
                order=n,
                field=_model_field(loss, check_order(n), float(self.weight_decay), self.method),
            )
            for n in orders
        )


@loss_cache
def _grad_wd(loss, weight_decay):
    return jax.grad(regularized(loss, weight_decay))


@loss_cache
def _model_field(loss, order, weight_decay, method):
    field = eom_field(loss, order, weight_decay, method)
    return lambda t, y, lr: field(y, lr)
