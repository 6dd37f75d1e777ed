r"""Data parallelism over local devices: the full batch split along its first axis.

A full-batch loss is a mean over samples, $L(\theta) = \frac1n\sum_{i=1}^n \ell_i(\theta)$, so its
gradient, its counter terms $\xi_k$ (derivatives of $L$ along fixed directions) and every
trajectory are sums over shards of the batch plus one all-reduce. JAX does this by itself once
the data carries a `NamedSharding` over a one-axis device mesh: XLA's SPMD partitioner splits
every batch-sized intermediate, and the engine (`grad_and_terms_fn`, `gradient_descent`,
`integrate`, …) runs unchanged.

One detail matters: arrays a loss *closes over* are baked into the compiled program as constants
and lose their sharding. The losses built here therefore re-assert it inside the function with
`jax.lax.with_sharding_constraint`, which is what makes the partitioner split the work. With a
single device the mesh has size 1 and everything is exactly the unsharded computation.

Batch sizes that the device count does not divide: `data_parallel_mean` pads with copies of the
first sample at weight 0, $L = \frac1n\sum_i w_i\ell_i$ with $w_i \in \{0, 1\}$ — exact for any
$n$, but it needs the per-sample losses. `data_parallel` (any loss of the whole batch, e.g. with
full-batch normalization statistics) requires divisibility.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, PyTree

from .._errors import EomError

#: Name of the mesh axis the batch is split along.
BATCH_AXIS = "batch"


def batch_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (`"batch"`) over `devices` (default: `jax.devices()`, every device of the
    default backend: the local ones, and every host's after `jax.distributed.initialize`).

    >>> import jax
    >>> from eom.sharding import batch_mesh
    >>> mesh = batch_mesh(jax.devices()[:1])
    >>> mesh.axis_names, mesh.size
    (('batch',), 1)
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise EomError(
            "batch_mesh needs at least one device; pass devices=None for all local ones."
        )
    return Mesh(np.array(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh | None = None) -> NamedSharding:
    """`NamedSharding` that splits the leading (batch) axis over the mesh, replicating the rest.

    >>> import jax
    >>> from eom.sharding import batch_sharding
    >>> batch_sharding().spec == jax.sharding.PartitionSpec("batch")
    True
    """
    return NamedSharding(batch_mesh() if mesh is None else mesh, PartitionSpec(BATCH_AXIS))


def _check_batch(arrays: Sequence[Any], n_dev: int) -> int:
    sizes = {int(np.shape(a)[0]) for a in arrays if np.ndim(a) >= 1}
    if len(sizes) != 1 or any(np.ndim(a) < 1 for a in arrays):
        shapes = [np.shape(a) for a in arrays]
        raise EomError(
            f"every data array needs the same leading (batch) axis; got shapes {shapes}. "
            "Pass X and y with one row per sample."
        )
    return sizes.pop()


def shard_batch(*arrays: Any, mesh: Mesh | None = None) -> tuple[jax.Array, ...]:
    """Place each array on the mesh, split along its first axis (one shard per device).

    The batch size must be a multiple of the number of devices; if it is not, use
    `data_parallel_mean` (zero-weight padding) or a `subset` that the device count divides.

    >>> import jax, numpy as np
    >>> from eom.sharding import batch_mesh, shard_batch
    >>> (X,) = shard_batch(np.ones((4, 2)), mesh=batch_mesh(jax.devices()[:1]))
    >>> X.shape, X.sharding.spec == jax.sharding.PartitionSpec("batch")
    ((4, 2), True)
    """
    mesh = batch_mesh() if mesh is None else mesh
    n = _check_batch(arrays, mesh.size)
    if n % mesh.size:
        raise EomError(
            f"the batch of {n} samples does not split evenly over {mesh.size} devices; use "
            f"data_parallel_mean (pads with zero-weight samples), or keep a multiple of "
            f"{mesh.size} samples (e.g. make_problem(..., subset={n - n % mesh.size}))."
        )
    sharding = batch_sharding(mesh)
    return tuple(jax.device_put(jnp.asarray(a), sharding) for a in arrays)


def _closed_over(*arrays: Any, mesh: Mesh) -> tuple[Any, ...]:
    """The batch arrays a data-parallel loss closes over.

    One process: placed on the mesh (`shard_batch`). Several processes (the mesh spans devices
    of other hosts): JAX refuses to close over an array on non-addressable devices, so every
    process keeps the whole batch on the host (identical on every process, as in any
    multi-controller JAX program) and the sharding constraint inside the loss splits the work.
    """
    if not mesh.is_multi_process:
        return shard_batch(*arrays, mesh=mesh)
    n = _check_batch(arrays, mesh.size)
    if n % mesh.size:
        shard_batch(*arrays, mesh=mesh)  # raises the message that names the fix
    return tuple(np.asarray(a) for a in arrays)


def constrain_batch(x: jax.Array, mesh: Mesh | None = None) -> jax.Array:
    """Inside a traced function: split `x` along its first axis (`with_sharding_constraint`).

    >>> import jax, jax.numpy as jnp
    >>> from eom.sharding import constrain_batch
    >>> float(jax.jit(lambda x: jnp.sum(constrain_batch(x) ** 2))(jnp.ones((4, 2))))
    8.0
    """
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def data_parallel(
    loss_fn: Callable[..., Float[Array, ""]],
    X: Any,
    y: Any = None,
    *,
    mesh: Mesh | None = None,
) -> Callable[[PyTree], Float[Array, ""]]:
    r"""`params -> loss_fn(params, X, y)` with the batch split over the mesh's devices.

    `loss_fn(params, X, y)` is any scalar loss of the whole batch (pass `y=None` for
    `loss_fn(params, X)`). The result is a plain loss for every `eom` function; under `jit` XLA
    computes it (and its derivatives of every order) shard by shard with one all-reduce per
    batch reduction. The number of samples must be a multiple of the device count.

    >>> import jax, jax.numpy as jnp
    >>> from eom.sharding import batch_mesh, data_parallel
    >>> X, y = jnp.ones((4, 2)), jnp.zeros(4)
    >>> mse = lambda p, X, y: jnp.mean((X @ p - y) ** 2)
    >>> loss = data_parallel(mse, X, y, mesh=batch_mesh(jax.devices()[:1]))
    >>> float(loss(jnp.array([1.0, 2.0])))
    9.0
    """
    mesh = batch_mesh() if mesh is None else mesh
    data = _closed_over(X, *(() if y is None else (y,)), mesh=mesh)

    def loss(params):
        parts = [constrain_batch(a, mesh) for a in data]
        return loss_fn(params, *parts)

    return loss


def data_parallel_mean(
    sample_loss: Callable[..., Float[Array, " n"]],
    X: Any,
    y: Any = None,
    *,
    mesh: Mesh | None = None,
) -> Callable[[PyTree], Float[Array, ""]]:
    r"""$L(\theta) = \frac1n\sum_{i=1}^n \ell_i(\theta)$ from per-sample losses, split over devices.

    `sample_loss(params, X, y)` returns the $n$ per-sample losses $\ell_i$. Any $n$ works: the
    batch is padded to a multiple of the device count with copies of sample 0 at weight 0, so
    $L$ is exactly the unpadded mean (to rounding).

    >>> import jax, jax.numpy as jnp
    >>> from eom.sharding import batch_mesh, data_parallel_mean
    >>> X = jnp.arange(3.0)[:, None]
    >>> loss = data_parallel_mean(lambda p, X: (X[:, 0] * p) ** 2, X, mesh=batch_mesh())
    >>> float(loss(1.0))  # (0 + 1 + 4) / 3, whatever the device count
    1.6666666666666667
    """
    mesh = batch_mesh() if mesh is None else mesh
    arrays = (X,) if y is None else (X, y)
    n = _check_batch(arrays, mesh.size)
    pad = (-n) % mesh.size

    def padded(a):
        a = np.asarray(a)
        return np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) if pad else a

    weights = np.concatenate([np.ones(n), np.zeros(pad)])
    data = _closed_over(*(padded(a) for a in arrays), weights, mesh=mesh)

    def loss(params):
        parts = [constrain_batch(a, mesh) for a in data]
        *batch, w = parts
        return jnp.sum(w * sample_loss(params, *batch)) / n

    return loss
