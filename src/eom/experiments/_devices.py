r"""The devices an experiment computes on: its problem's loss split over local devices.

A built-in problem's loss is a mean over samples, $L(\theta) = \frac1n\sum_{i=1}^n\ell_i(\theta)$
(cross-entropy or squared error), so it is rebuilt with `eom.sharding.data_parallel_mean`: the
batch is split over a one-axis mesh of `devices` local devices (default: all of them) and padded
with zero-weight copies of sample 0 when the device count does not divide $n$ — exact for any $n$.
`mlp-bn` normalizes with full-batch statistics, so its loss is not a sum of per-sample terms; it
uses `eom.sharding.data_parallel` (XLA splits the batch statistics), which needs $n$ divisible
by the device count: an explicit `devices` that does not divide $n$ is refused, the default takes
the largest device count that does. A user model (`module:factory`) runs as its factory built it
(shard inside the factory with `eom.sharding`); asking for more than one device is refused.

One device is exactly the unsharded computation (the problem is returned unchanged). More
devices change only the order of the floating-point sums, so every recorded error equals the
one-device run to rounding (tested to 1e-10 with 4 forced host devices).
"""

from __future__ import annotations

from .._errors import EomError

#: How the loss of each kind of model is split (see the module docstring).
SPLIT_MEAN, SPLIT_WHOLE, SPLIT_NONE = "per-sample mean", "whole batch", "none"


def plan_devices(s, problem) -> dict:
    """Which devices the settings' problem runs on: `count`, `available`, `kind`, `platform`,
    `split` and `padding` (zero-weight samples added so the device count divides the batch)."""
    import jax

    from ..problems import MODELS

    local = jax.local_devices()
    available = len(local)
    requested = getattr(s, "devices", None)
    n = int(problem.dataset.X.shape[0])
    if requested is not None and requested > available:
        raise EomError(
            f"--devices {requested}: only {available} {local[0].platform} device(s) are "
            f"visible to this process. Use --devices {available} or fewer (or omit it for all "
            "of them); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N set before "
            "starting makes N host devices."
        )
    if s.model not in MODELS:
        if requested is not None and requested > 1:
            raise EomError(
                f"--devices {requested} with your model {s.model!r}: eom cannot split the data "
                "your factory's loss closes over. Build the loss with "
                "eom.sharding.data_parallel(loss_fn, X, y) inside the factory (it then uses "
                "every device) and omit --devices."
            )
        count, split = 1, SPLIT_NONE
    elif s.model == "mlp-bn":
        count = requested or available
        if n % count:
            if requested is not None:
                raise EomError(
                    f"--devices {requested} does not divide the batch of {n} samples, and mlp-bn "
                    "normalizes with full-batch statistics (no zero-weight padding possible). "
                    f"Use --subset {n - n % requested}, or --devices "
                    f"{max(d for d in range(1, requested + 1) if n % d == 0)}."
                )
            count = max(d for d in range(1, count + 1) if n % d == 0)
        split = SPLIT_WHOLE if count > 1 else SPLIT_NONE
    else:
        count = requested or available
        split = SPLIT_MEAN if count > 1 else SPLIT_NONE
    return {
        "count": count, "available": available, "kind": local[0].device_kind,
        "platform": local[0].platform, "split": split,
        "padding": (-n) % count if split == SPLIT_MEAN else 0,
    }


def describe(plan: dict) -> str:
    """'4 cpu devices (per-sample mean, 2 padding samples)' and the like, for headers."""
    if not plan:
        return "1 device"
    count = plan["count"]
    what = f"{count} {plan['platform']} device{'s' if count != 1 else ''}"
    extra = [] if plan["split"] == SPLIT_NONE else [f"batch split: {plan['split']}"]
    if plan.get("padding"):
        extra.append(f"{plan['padding']} zero-weight padding samples")
    if count < plan["available"]:
        extra.append(f"of {plan['available']}")
    return what + (f" ({', '.join(extra)})" if extra else "")


def shard_problem(problem, s, plan: dict):
    """The problem with its loss split over `plan["count"]` local devices (unchanged for one)."""
    if plan["split"] == SPLIT_NONE:
        return problem
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from ..problems import Problem, build_model
    from ..sharding import batch_mesh, data_parallel, data_parallel_mean

    data = problem.dataset
    model = build_model(s.model, data, s.seed, **s.model_kwargs())
    _, static = eqx.partition(model, eqx.is_inexact_array)
    classify = data.task == "classification"
    mesh = batch_mesh(jax.local_devices()[: plan["count"]])

    def per_sample(params, X, y):
        out = eqx.combine(params, static)(X)
        if classify:
            logp = jax.nn.log_softmax(out, axis=-1)
            return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
        return jnp.mean(((out - y) ** 2).reshape(out.shape[0], -1), axis=-1)

    if plan["split"] == SPLIT_MEAN:
        loss = data_parallel_mean(per_sample, data.X, data.y, mesh=mesh)
    else:
        from ..problems import cross_entropy, mean_squared_error

        def whole(params, X, y):
            out = eqx.combine(params, static)(X)
            return cross_entropy(out, y) if classify else mean_squared_error(out, y)

        loss = data_parallel(whole, data.X, data.y, mesh=mesh)
    return Problem(
        loss=jax.jit(loss), params0=problem.params0, dataset=data,
        model_name=problem.model_name, dataset_name=problem.dataset_name,
        n_params=problem.n_params, accuracy=problem.accuracy, predict=problem.predict,
    )
