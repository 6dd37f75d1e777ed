r"""Data parallelism: the full batch split over devices (one-axis mesh), one host or several.

A full-batch loss $L(\theta) = \frac1n\sum_i \ell_i(\theta)$ is a sum over shards of the batch plus
one all-reduce, so every `eom` function (counter terms, `gradient_descent`, `integrate`,
`compare`, …) runs unchanged on a loss built here. With one device it is exactly the unsharded
computation.

```python
loss = eom.sharding.data_parallel(my_loss, X, y)   # my_loss(params, X, y) -> scalar
c = eom.compare(loss, params, lr=0.05, num_steps=500)
```

Several hosts: call `jax.distributed.initialize(...)` on every process first, then build the mesh
over every process's devices, `batch_mesh(jax.devices())`, and pass it as `mesh=`; each process
passes the *whole* batch (or see `jax.make_array_from_process_local_data` for per-host slices).
"""

from ._data_parallel import (
    BATCH_AXIS as BATCH_AXIS,
    batch_mesh as batch_mesh,
    batch_sharding as batch_sharding,
    constrain_batch as constrain_batch,
    data_parallel as data_parallel,
    data_parallel_mean as data_parallel_mean,
    shard_batch as shard_batch,
)
