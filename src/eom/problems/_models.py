r"""Built-in Equinox models. All act on a full batch and use smooth activations (tanh by default):
the EoM's counter terms are derivatives of the loss of every order, so ReLU kinks are excluded.

- `linear`: $f(x) = Wx + b$ — softmax regression or linear regression.
- `mlp`: $f = W_{D+1}\,\sigma(\cdots\sigma(W_1x + b_1)\cdots) + b_{D+1}$, `depth` = D hidden layers.
- `mlp-bn`: every hidden layer is $\sigma(\gamma\odot\mathrm{BN}(W x + b) + \beta)$ with full-batch
  statistics (stateless), see `BatchNormDense`: each hidden unit's incoming weight row is a
  scale-invariant group, and the softmax output layer has translation-invariant directions.
- `cnn`: `depth` convolutions (3×3 on images, width 5 on sequences, "SAME" padding, channels
  `width`, 2·`width`, …), a 2×2 (or 2) average pool, a dense hidden layer and the output layer.

Dense weights are drawn $\mathcal N(0, 1/\text{fan-in})$ (LeCun, suited to tanh), biases are 0;
the output layer is scaled by `OUTPUT_GAIN` = 0.5, so the initial classification loss is close
to $\log K$.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import EomError
from ._data import Dataset

#: Scale of the output layer's initial weights (relative to LeCun's 1/√fan-in).
OUTPUT_GAIN = 0.5

#: Names of the built-in models.
MODELS: tuple[str, ...] = ("linear", "mlp", "mlp-bn", "cnn")

MODEL_HELP: dict[str, str] = {
    "linear": "linear softmax regression (classification) or linear regression",
    "mlp": "tanh MLP, width 128, depth 2 hidden layers (26k params on digits)",
    "mlp-bn": "tanh MLP with full-batch BatchNorm after each hidden layer (scale-invariant "
    "groups) and a softmax output (translation-invariant directions)",
    "cnn": "small tanh conv net: 2 convs (32, 64 channels), avg-pool, dense 128 (151k params on "
    "digits)",
    "package.module:factory": "your own model: factory(dataset, seed) -> (loss_fn, params0)",
}

#: Smooth activations accepted by `activation=`.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
}


def _act(name: str) -> Callable[[Array], Array]:
    return ACTIVATIONS[name]


class Dense(eqx.Module):
    r"""Batched affine map $x \mapsto xW^\top + b$ on `(n, …)` inputs (flattened per sample)."""

    weight: Float[Array, "out inp"]
    bias: Float[Array, " out"]

    def __init__(self, inp: int, out: int, *, gain: float = 1.0, key: PRNGKeyArray):
        std = gain / math.sqrt(inp)
        self.weight = std * jax.random.normal(key, (out, inp), jnp.float64)
        self.bias = jnp.zeros((out,), jnp.float64)

    def __call__(self, x: Float[Array, "n ..."]) -> Float[Array, "n out"]:
        return x.reshape(x.shape[0], -1) @ self.weight.T + self.bias


class BatchNormDense(eqx.Module):
    r"""Dense layer followed by full-batch batch normalization and an affine map.

    For hidden unit $j$ with incoming weights $w_j$ and pre-activations
    $z_{ij} = w_j\cdot x_i + b_j$:

    $$\hat z_{ij} = \frac{z_{ij} - \bar z_j}
    {\sqrt{\operatorname{Var}_i z_{ij} + \varepsilon\lVert w_j\rVert^2}},
    \qquad \text{out}_{ij} = \gamma_j \hat z_{ij} + \beta_j,$$

    with mean and variance over the whole batch (no running averages: full-batch GD sees one
    batch). The $\varepsilon$ term is scaled by $\lVert w_j\rVert^2$, so $\hat z$ is *exactly*
    invariant to $w_j \to c\,w_j$ ($c > 0$) — an absolute $\varepsilon$ would break the invariance
    at relative order $\varepsilon/\operatorname{Var}z$. The bias $b_j$ cancels in $z - \bar z$
    and gets zero gradient (THEORY.md §4).
    """

    dense: Dense
    gamma: Float[Array, " out"]
    beta: Float[Array, " out"]
    eps: float = eqx.field(static=True)

    def __init__(self, inp: int, out: int, *, eps: float, key: PRNGKeyArray):
        self.dense = Dense(inp, out, key=key)
        self.gamma = jnp.ones((out,), jnp.float64)
        self.beta = jnp.zeros((out,), jnp.float64)
        self.eps = float(eps)

    def __call__(self, x: Float[Array, "n inp"]) -> Float[Array, "n out"]:
        z = self.dense(x)
        zc = z - jnp.mean(z, axis=0)
        var = jnp.mean(zc**2, axis=0)
        w2 = jnp.sum(self.dense.weight**2, axis=1)
        return self.gamma * zc / jnp.sqrt(var + self.eps * w2) + self.beta


class MLP(eqx.Module):
    """`depth` hidden layers of `width` units (optionally batch-normalized), smooth activation."""

    hidden: tuple[Dense | BatchNormDense, ...]
    out: Dense
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        inp: int,
        out: int,
        *,
        width: int,
        depth: int,
        activation: str,
        batchnorm: bool = False,
        eps: float = 1e-8,
        key: PRNGKeyArray,
    ):
        keys = jax.random.split(key, depth + 1)
        sizes = [inp] + [width] * depth
        if batchnorm:
            self.hidden = tuple(
                BatchNormDense(a, b, eps=eps, key=k)
                for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-1], strict=True)
            )
        else:
            self.hidden = tuple(
                Dense(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-1], strict=True)
            )
        self.out = Dense(sizes[-1], out, gain=OUTPUT_GAIN, key=keys[-1])
        self.activation = activation

    def __call__(self, x: Float[Array, "n ..."]) -> Float[Array, "n out"]:
        h = x.reshape(x.shape[0], -1)
        act = _act(self.activation)
        for layer in self.hidden:
            h = act(layer(h))
        return self.out(h)


class CNN(eqx.Module):
    """Convolutions (channels `width·2^i`), one average pool, a dense hidden layer, the output.

    Inputs of shape `(L,)` use 1-D convolutions with one channel; `(H, W)` 2-D with one channel;
    `(C, H, W)` 2-D with C channels.
    """

    convs: tuple[eqx.nn.Conv, ...]
    pool: eqx.nn.AvgPool1d | eqx.nn.AvgPool2d | None
    dense: Dense
    out: Dense
    activation: str = eqx.field(static=True)
    channels_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out: int,
        *,
        width: int,
        depth: int,
        hidden: int,
        activation: str,
        key: PRNGKeyArray,
    ):
        if len(input_shape) == 1:
            shape, dims, ksize = (1, *input_shape), 1, 5
        elif len(input_shape) == 2:
            shape, dims, ksize = (1, *input_shape), 2, 3
        elif len(input_shape) == 3:
            shape, dims, ksize = tuple(input_shape), 2, 3
        else:
            raise EomError(
                f"cnn: inputs of shape {input_shape} are not supported; use (L,), (H, W) or "
                "(C, H, W) samples, or the mlp model."
            )
        keys = jax.random.split(key, depth + 2)
        chans = [shape[0]] + [width * 2**i for i in range(depth)]
        self.convs = tuple(
            eqx.nn.Conv(dims, a, b, ksize, padding="SAME", key=k, dtype=jnp.float64)
            for a, b, k in zip(chans[:-1], chans[1:], keys[:depth], strict=True)
        )
        spatial = shape[1:]
        if min(spatial) >= 2:
            pool_cls = eqx.nn.AvgPool1d if dims == 1 else eqx.nn.AvgPool2d
            self.pool = pool_cls(2, 2)
            spatial = tuple(s // 2 for s in spatial)
        else:
            self.pool = None
        flat = chans[-1] * math.prod(spatial)
        self.dense = Dense(flat, hidden, key=keys[-2])
        self.out = Dense(hidden, out, gain=OUTPUT_GAIN, key=keys[-1])
        self.activation = activation
        self.channels_shape = shape

    def _features(self, x: Float[Array, "c ..."]) -> Float[Array, " f"]:
        act = _act(self.activation)
        for conv in self.convs:
            x = act(conv(x))
        if self.pool is not None:
            x = self.pool(x)
        return x.reshape(-1)

    def __call__(self, x: Float[Array, "n ..."]) -> Float[Array, "n out"]:
        x = x.reshape(x.shape[0], *self.channels_shape)
        h = jax.vmap(self._features)(x)
        return self.out(_act(self.activation)(self.dense(h)))


# ---------------------------------------------------------------------------------------------
# construction from a name

_DEFAULTS: dict[str, dict[str, object]] = {
    "linear": {},
    "mlp": {"width": 128, "depth": 2, "activation": "tanh"},
    "mlp-bn": {"width": 128, "depth": 2, "activation": "tanh", "eps": 1e-8},
    "cnn": {"width": 32, "depth": 2, "hidden": 128, "activation": "tanh"},
}


def model_defaults(name: str) -> dict[str, object]:
    """The keyword arguments `build_model(name, …)` accepts, with their defaults."""
    return dict(_DEFAULTS[name])


def _check_kwargs(name: str, kwargs: dict[str, object]) -> dict[str, object]:
    allowed = _DEFAULTS[name]
    given = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise EomError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it accepts: {accepted}."
        )
    opts = {**allowed, **given}
    for key in ("width", "depth", "hidden"):
        if key in opts:
            val = opts[key]
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise EomError(f"model {name!r}: {key} must be a positive integer, got {val!r}.")
    if "activation" in opts and opts["activation"] not in ACTIVATIONS:
        raise EomError(
            f"model {name!r}: activation {opts['activation']!r} is not available; use a smooth one "
            f"({', '.join(ACTIVATIONS)}) — the EoM needs a loss with derivatives of every order."
        )
    if "eps" in opts:
        eps = opts["eps"]
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps >= 0:
            raise EomError(f"model {name!r}: eps must be a number ≥ 0, got {eps!r}.")
    return opts


def build_model(name: str, dataset: Dataset, key: PRNGKeyArray, **kwargs) -> eqx.Module:
    """Instantiate built-in model `name` for `dataset` (input and output sizes follow the data).

    Options (`None` means default): `width`, `depth`, `activation` for mlp/mlp-bn; `eps` for
    mlp-bn; `width`, `depth`, `hidden`, `activation` for cnn; none for linear.
    """
    if name not in MODELS:
        raise EomError(
            f"unknown model {name!r}; use one of {', '.join(MODELS)}, or package.module:factory "
            "for your own model."
        )
    opts = _check_kwargs(name, kwargs)
    inp, out = dataset.n_features, dataset.out_dim
    if name == "linear":
        return Dense(inp, out, gain=OUTPUT_GAIN, key=key)
    if name in ("mlp", "mlp-bn"):
        return MLP(inp, out, batchnorm=name == "mlp-bn", key=key, **opts)
    return CNN(dataset.input_shape, out, key=key, **opts)
