r"""Built-in Equinox models. All act on a full batch and use smooth activations (tanh by default):
the EoM's counter terms are derivatives of the loss of every order, so ReLU kinks are excluded.

- `linear`: $f(x) = Wx + b$ — softmax regression or linear regression.
- `mlp`: $f = W_{D+1}\,\sigma(\cdots\sigma(W_1x + b_1)\cdots) + b_{D+1}$, `depth` = D hidden layers.
- `mlp-bn`: every hidden layer is $\sigma(\gamma\odot\mathrm{BN}(W x + b) + \beta)$ with full-batch
  statistics (stateless), see `BatchNormDense`: each hidden unit's incoming weight row is a
  scale-invariant group, and the softmax output layer has translation-invariant directions.
- `cnn`: `depth` convolutions (3×3 on images, width 5 on sequences, "SAME" padding, channels
  `width`, 2·`width`, …), one 2×2 (or 2) average pool, a dense hidden layer, the output layer.

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
import numpy as np
from jaxtyping import Array, Float

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
    "torch:package.module:factory": "a PyTorch model (eom-dnn[torch]): factory(dataset, seed) "
    "-> (module, loss_fn, example_batch)",
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

    def __init__(self, inp: int, out: int, *, gain: float = 1.0, rng: np.random.Generator):
        std = gain / math.sqrt(inp)
        self.weight = jnp.asarray(std * rng.standard_normal((out, inp)), jnp.float64)
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

    def __init__(self, inp: int, out: int, *, eps: float, rng: np.random.Generator):
        self.dense = Dense(inp, out, rng=rng)
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
        rng: np.random.Generator,
    ):
        sizes = [inp] + [width] * depth
        if batchnorm:
            self.hidden = tuple(
                BatchNormDense(a, b, eps=eps, rng=rng) for a, b in zip(sizes[:-1], sizes[1:])
            )
        else:
            self.hidden = tuple(Dense(a, b, rng=rng) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = Dense(sizes[-1], out, gain=OUTPUT_GAIN, rng=rng)
        self.activation = activation

    def __call__(self, x: Float[Array, "n ..."]) -> Float[Array, "n out"]:
        h = x.reshape(x.shape[0], -1)
        act = _act(self.activation)
        for layer in self.hidden:
            h = act(layer(h))
        return self.out(h)


class Conv(eqx.Module):
    r"""Batched convolution with "SAME" padding, $y = w * x + b$, on `(n, C, *spatial)` inputs."""

    weight: Float[Array, "out inp *kernel"]
    bias: Float[Array, " out"]

    def __init__(self, inp: int, out: int, kernel: tuple[int, ...], *, rng: np.random.Generator):
        fan_in = inp * math.prod(kernel)
        w = rng.standard_normal((out, inp, *kernel)) / math.sqrt(fan_in)
        self.weight = jnp.asarray(w, jnp.float64)
        self.bias = jnp.zeros((out,), jnp.float64)

    def __call__(self, x: Float[Array, "n c ..."]) -> Float[Array, "n o ..."]:
        y = jax.lax.conv_general_dilated(
            x, self.weight, window_strides=(1,) * (x.ndim - 2), padding="SAME"
        )
        return y + self.bias.reshape(-1, *([1] * (x.ndim - 2)))


def avg_pool2(x: Float[Array, "n c ..."]) -> Float[Array, "n c ..."]:
    """Average over non-overlapping windows of 2 along each spatial axis (odd edges dropped)."""
    n, c, *spatial = x.shape
    half = [s // 2 for s in spatial]
    x = x[(slice(None), slice(None), *(slice(0, 2 * h) for h in half))]
    x = x.reshape(n, c, *[d for h in half for d in (h, 2)])
    return x.mean(axis=tuple(3 + 2 * i for i in range(len(half))))


class CNN(eqx.Module):
    """Convolutions (channels `width·2^i`), one 2× average pool, a dense hidden layer, the output.

    Inputs of shape `(L,)` use 1-D convolutions (width 5) with one channel; `(H, W)` 2-D (3×3)
    with one channel; `(C, H, W)` 2-D with C channels.
    """

    convs: tuple[Conv, ...]
    dense: Dense
    out: Dense
    activation: str = eqx.field(static=True)
    channels_shape: tuple[int, ...] = eqx.field(static=True)
    pool: bool = eqx.field(static=True)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out: int,
        *,
        width: int,
        depth: int,
        hidden: int,
        activation: str,
        rng: np.random.Generator,
    ):
        if len(input_shape) == 1:
            shape, kernel = (1, *input_shape), (5,)
        elif len(input_shape) == 2:
            shape, kernel = (1, *input_shape), (3, 3)
        elif len(input_shape) == 3:
            shape, kernel = tuple(input_shape), (3, 3)
        else:
            raise EomError(
                f"cnn: inputs of shape {input_shape} are not supported; use (L,), (H, W) or "
                "(C, H, W) samples, or the mlp model."
            )
        chans = [shape[0]] + [width * 2**i for i in range(depth)]
        self.convs = tuple(Conv(a, b, kernel, rng=rng) for a, b in zip(chans[:-1], chans[1:]))
        spatial = shape[1:]
        self.pool = min(spatial) >= 2
        if self.pool:
            spatial = tuple(s // 2 for s in spatial)
        self.dense = Dense(chans[-1] * math.prod(spatial), hidden, rng=rng)
        self.out = Dense(hidden, out, gain=OUTPUT_GAIN, rng=rng)
        self.activation = activation
        self.channels_shape = shape

    def __call__(self, x: Float[Array, "n ..."]) -> Float[Array, "n out"]:
        act = _act(self.activation)
        h = x.reshape(x.shape[0], *self.channels_shape)
        for conv in self.convs:
            h = act(conv(h))
        if self.pool:
            h = avg_pool2(h)
        return self.out(act(self.dense(h)))


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


def build_model(name: str, dataset: Dataset, seed: int = 0, **kwargs) -> eqx.Module:
    """Instantiate built-in model `name` for `dataset` (input and output sizes follow the data).

    Weights are drawn with `numpy.random.default_rng(seed)` (no per-shape JAX compilation, so
    building even the 151k-parameter CNN takes milliseconds).

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
    rng = np.random.default_rng(seed)
    if name == "linear":
        return Dense(inp, out, gain=OUTPUT_GAIN, rng=rng)
    if name in ("mlp", "mlp-bn"):
        return MLP(inp, out, batchnorm=name == "mlp-bn", rng=rng, **opts)
    return CNN(dataset.input_shape, out, rng=rng, **opts)
