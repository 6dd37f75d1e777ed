r"""Random reshuffling over many seeds: the mean SGD iterate against gradient flow and the
first-order averaged flow (THEORY.md §8, issue 12's "done when").

With $\bar\theta_e = \frac1S\sum_s\theta^{(s)}_{em}$ the mean over $S$ seeds of the SGD iterate
after $e$ epochs of $m$ batches in random order, the averaged first-order flow

$$\dot\theta = -\nabla\Big[L_\lambda
  + \frac{\eta}{4m}\sum_i\lVert\nabla L_{i,\lambda}\rVert^2\Big]$$

describes $\mathbb E\,\theta_{em}$ to $O(\eta^2)$ per unit time (inside the epoch series' regime,
$m\eta\lambda_{\max} \lesssim 1$), gradient flow only to $O(\eta)$. `seed_average` measures
$\lVert\bar\theta_e - \theta^{GF}(em\eta)\rVert$ and
$\lVert\bar\theta_e - \theta^{avg}(em\eta)\rVert$, and the sampling noise of the mean,
$\sqrt{\operatorname{tr}\widehat{\operatorname{Cov}}/S}$, below which no difference is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jax.flatten_util import ravel_pytree


@dataclass(frozen=True)
class SeedAverage:
    """Per epoch boundary e = 0…E: distances of the mean iterate over `num_seeds` seeds from GF
    and from the averaged first-order flow, and the noise of that mean."""

    lr: float
    batches: int
    num_seeds: int
    epochs: np.ndarray
    distance_gf: np.ndarray
    distance_averaged: np.ndarray
    noise: np.ndarray

    def ratio(self) -> float:
        """‖mean − averaged‖ / ‖mean − GF‖ at the last epoch (< 1: the averaged flow is closer)."""
        return float(self.distance_averaged[-1] / self.distance_gf[-1])

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self.__dict__.items()}


def seed_average(loss, params0, batches, lr: float, num_epochs: int, num_seeds: int = 8, *,
                 weight_decay: float = 0.0, rtol: float = 1e-10, atol: float = 1e-12
                 ) -> SeedAverage:
    """Run random-reshuffling SGD for seeds 0…`num_seeds`−1 (`eom.sgd`) and compare the mean
    iterate at each epoch boundary with GF and the averaged flow (diffrax Dopri8, `rtol`).

    >>> import jax.numpy as jnp
    >>> from eom.experiments import seed_average
    >>> loss = lambda p, b: 0.5 * jnp.sum((p - b) ** 2)
    >>> batches = jnp.array([[1.0], [3.0], [-2.0]])          # m = 3 batches of one sample
    >>> avg = seed_average(loss, jnp.zeros(1), batches, lr=0.1, num_epochs=3, num_seeds=8)
    >>> avg.epochs.tolist(), avg.distance_gf.shape, bool(avg.noise[-1] > 0)
    ([0, 1, 2, 3], (4,), True)
    """
    import jax

    from ..engine import sgd
    from ..engine._momentum import flow
    from ..engine._sgd import averaged_field_fn, num_batches

    m = num_batches(batches)
    runs = []
    for seed in range(int(num_seeds)):
        tr = sgd(loss, params0, batches, lr, int(num_epochs), shuffle="random", seed=seed,
                 weight_decay=weight_decay, save_every=m)
        runs.append(np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(tr.params)))
    stack = np.stack(runs)  # seeds × epochs+1 × params
    mean = stack.mean(axis=0)
    noise = np.sqrt(stack.var(axis=0, ddof=1).sum(axis=1) / num_seeds) if num_seeds > 1 else (
        np.full(mean.shape[0], np.nan))
    out = {}
    for order in (0, 1):
        field = averaged_field_fn(loss, batches, order, weight_decay=weight_decay)
        y, path = params0, [np.asarray(ravel_pytree(params0)[0])]
        for _ in range(int(num_epochs)):
            y = flow(field, y, m * lr, lr, rtol=rtol, atol=atol)
            path.append(np.asarray(ravel_pytree(y)[0]))
        out[order] = np.linalg.norm(mean - np.stack(path), axis=1)
    return SeedAverage(float(lr), m, int(num_seeds), np.arange(int(num_epochs) + 1), out[0],
                       out[1], noise)
