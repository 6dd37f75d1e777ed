r"""The optimizer abstraction: a discrete training method and its continuous models.

Every layer above the engine (`compare`, the experiments, the reports, the CLI) sees a training
method only through this interface, so a new optimizer adds its engine part (a subclass here and
its fields) and its experiment columns, never a new copy of the runner.

An `Optimizer` says

- how to advance the discrete iterates ($\theta_{k+1}$ from $\theta_k$ and a small state, such as
  a velocity), by `init` and `advance`, jittable, with the step count traced;
- which continuous models to measure against them (`models`): gradient flow and EoMs of any
  order, each a `ContinuousModel` whose field is written in the time $t = k\eta$ of the discrete
  run, so that model and iterates are compared at the same $t$;
- where its series is expected to hold (`regime_bound`), in units of $\eta\lambda_{\max}$, and
  where the discrete method itself is stable on a quadratic (`stability_limit`);
- where the comparison begins (`begin`): step 0 by default, or a later step $k_0$ with the
  iterate and state there (momentum's settled start from rest).

Contract (read by `eom.measure.compare` and everything above it):

- `loss` is whatever the optimizer consumes: `loss(params)` for full-batch methods, or
  `loss(params, batch)` for minibatch methods, whose batches the optimizer instance holds.
  `full_loss(loss)` is the loss reported and analysed ($L$, without weight decay).
- `init(loss, params0, lr) -> state` and `advance(loss, params, state, lr, k0, num) ->
  (params, state)`: `num` steps from step index `k0` (both may be traced); the only place the
  discrete method is stepped.
- `models(loss, lr, orders) -> tuple[ContinuousModel, ...]`: one model per requested order (and
  per kind, e.g. SGD's switching / epoch / averaged EoMs), each with a unique `label`.
- `begin(loss, params0, lr) -> (k0, params, state)`: the step where the comparison begins, the
  iterate $\theta_{k_0}$ and the optimizer state there (default `(0, params0, init(...))`).
  With $k_0 > 0$ the discrete run is advanced from `params` and `state`, recorded steps are the
  true step numbers $k_0 + k$ and every model starts at $\theta_{k_0}$ at time $k_0\eta$.
- `start(loss, params0, lr, model) -> y0`: the model's initial point when the comparison begins
  at step 0 (default: `params0`; momentum's effective start from rest differs).

How `eom.compare` uses a model:

- `boundaries="none"`: one adaptive solve per chunk of recorded steps, sampled at $t = k\eta$.
- `boundaries="step"`: one solve per step $k$, on $[k\eta, (k+1)\eta]$, restarted at every
  boundary. During step $k$ the field is called with $t$ clamped to
  $[k\eta, (k+1-10^{-9})\eta]$, so `step_index(t, lr)` is $k$ at every stage of the solver
  (including the last, which sits at the right end).
- `every=m`: errors and losses of that model are recorded only at steps that are multiples of
  `m`; the other recorded rows hold NaN (the grid stays shared by all models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import PyTree

Field = Callable[[Any, PyTree, Any], PyTree]

#: Fraction of a step by which `compare` keeps a step-wise model's time inside its step.
STEP_MARGIN = 1e-9


def step_index(t, lr):
    r"""The step $k$ whose interval $[k\eta, (k+1)\eta)$ holds $t$ (robust to rounding of k·η/η)."""
    return jnp.floor(t / lr + 0.5 * STEP_MARGIN).astype(int)


class ContinuousModel(eqx.Module):
    r"""One continuous model compared against the discrete iterates.

    - `label`: unique short key used in column names (`"gf"`, `"eom1"`, `"switch2"`, …).
    - `kind`: what it models (`"gf"`, `"eom"`, `"switching"`, `"epoch"`, `"averaged"`).
    - `order`: truncation order $N$ in $\eta$ (0 = the gradient-flow-type model).
    - `field`: `field(t, y, lr) -> dy/dt` in the run's time $t = k\eta$.
    - `boundaries`: `"none"` if the field is smooth in $t$; `"step"` if it switches at every
      $t = k\eta$ (the solver must restart at each step boundary).
    - `every`: the model is only meaningful at steps that are multiples of `every` (an epoch EoM
      at epoch boundaries); 1 otherwise.
    """

    label: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    order: int = eqx.field(static=True)
    field: Field = eqx.field(static=True)
    boundaries: Literal["none", "step"] = eqx.field(static=True, default="none")
    every: int = eqx.field(static=True, default=1)


class Optimizer(eqx.Module):
    """Base class of the discrete methods eom models (see the module docstring's contract)."""

    name: ClassVar[str] = "optimizer"

    def full_loss(self, loss: Callable) -> Callable[[PyTree], Any]:
        """The loss $L(\\theta)$ that is reported and analysed (no weight decay)."""
        return loss

    def init(self, loss: Callable, params0: PyTree, lr) -> PyTree:
        """The discrete method's state before step 0 (GD: an empty tuple)."""
        return ()

    def advance(self, loss: Callable, params: PyTree, state: PyTree, lr, k0, num):
        """`num` steps from step index `k0`; returns `(params, state)`."""
        raise NotImplementedError

    def models(self, loss: Callable, lr, orders: tuple[int, ...]) -> tuple[ContinuousModel, ...]:
        """The continuous models to compare against the iterates, one or more per order."""
        raise NotImplementedError

    def start(self, loss: Callable, params0: PyTree, lr, model: ContinuousModel) -> PyTree:
        """The initial point of `model` (default: the discrete method's own start)."""
        return params0

    def begin(self, loss: Callable, params0: PyTree, lr) -> tuple[int, PyTree, PyTree]:
        """`(k0, θ_{k0}, state)`: where the comparison begins (default: step 0, `init`)."""
        return 0, params0, self.init(loss, params0, lr)

    def regime_bound(self) -> float:
        """η·λ_max below which the model series converges (GD: 1)."""
        return 1.0

    def stiffness_note(self, order: int, lr_lambda: float) -> str:
        """A sentence for a solver failure of the order-N model at η·λ_max = `lr_lambda` that
        says why its field is stiff there ('' when nothing specific is known)."""
        return ""

    def stability_limit(self) -> float:
        r"""η·λ_max below which the discrete method is stable on $L = \tfrac12\lambda\theta^2$.

        GD (and SGD, per batch): $|1 - \eta\lambda| < 1 \iff \eta\lambda < 2$.
        """
        return 2.0
