"""Flax NNX, Flax Linen, Haiku and Equinox adapters: float64 `(loss, params0)` whose counter term
ξ_1 = ½H∇L matches a brute-force Hessian (tiny models with BatchNorm where the library has one)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom.adapters import from_equinox, from_haiku, from_linen, from_nnx

from ._brute import assert_float64, check_xi1_against_hessian

X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)))
Y = jnp.asarray(np.random.default_rng(1).normal(size=(8, 2)))
# The test suite runs with strict dtype promotion; the libraries' own init code mixes dtypes.
STANDARD = jax.numpy_dtype_promotion("standard")


def mse(out, target):
    return jnp.mean((out - target) ** 2)


def _nnx_model(nnx):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.l2 = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.bn(self.l1(x))))

    return Net(nnx.Rngs(0))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_nnx_with_batchnorm_matches_hessian(mode):
    nnx = pytest.importorskip("flax.nnx")
    model = _nnx_model(nnx)
    loss, params0 = from_nnx(model, mse, (X, Y), mode=mode)
    check_xi1_against_hessian(loss, params0)
    # float32 by default in NNX: the adapter cast θ; the user's model is untouched.
    assert model.l1.kernel[...].dtype == jnp.float32
    assert float(jnp.abs(model.bn.mean[...]).max()) == 0.0
    # train: batch statistics ⇒ the bias before BatchNorm cancels exactly; eval: it does not.
    g_bias = eom.counter_terms(loss, params0, 1)[0]["l1"]["bias"][...]
    if mode == "train":
        assert float(jnp.abs(g_bias).max()) < 1e-15
    else:
        assert float(jnp.abs(g_bias).max()) > 1e-6


def test_nnx_trace_level_error_is_explained():
    nnx = pytest.importorskip("flax.nnx")
    outer = _nnx_model(nnx)  # a model captured from outside the loss, BatchNorm in train mode

    def leaky_loss(out, target):
        return mse(out, target) + 0.0 * jnp.sum(outer(X))

    loss, params0 = from_nnx(_nnx_model(nnx), leaky_loss, (X, Y))
    with pytest.raises(eom.EomError, match="different trace level.*from_nnx"):
        jax.grad(loss)(params0)


def test_linen_with_batchnorm_matches_hessian():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Dense(4)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dense(2)(jnp.tanh(x))

    net = Net()
    with STANDARD:  # Linen init mixes its float32 parameters with the float64 batch
        variables = net.init(jax.random.key(0), X, train=False)
    assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32
    loss, params0 = from_linen(net, variables, mse, (X, Y), train=True)
    check_xi1_against_hessian(loss, params0)
    assert float(jnp.abs(jax.grad(loss)(params0)["Dense_0"]["bias"]).max()) < 1e-15


def test_haiku_transform_and_with_state_match_hessian():
    hk = pytest.importorskip("haiku")

    def mlp(x):
        return hk.nets.MLP([4, 2], activation=jnp.tanh)(x)

    plain = hk.without_apply_rng(hk.transform(mlp))
    with STANDARD:  # Haiku init mixes float32 parameters with the float64 batch
        params = plain.init(jax.random.key(0), X)
    loss, params0 = from_haiku(plain, params, mse, (X, Y))
    check_xi1_against_hessian(loss, params0)

    def bn_net(x, is_training):
        x = hk.Linear(4)(x)
        x = hk.BatchNorm(True, True, 0.9)(x, is_training=is_training)
        return hk.Linear(2)(jnp.tanh(x))

    stateful = hk.transform_with_state(bn_net)
    with STANDARD:
        params, state = stateful.init(jax.random.key(0), X, is_training=True)
    loss, params0 = from_haiku(stateful, params, mse, (X, Y), state=state, is_training=True)
    check_xi1_against_hessian(loss, params0)
    with pytest.raises(eom.EomError, match="state="):
        from_haiku(stateful, params, mse, (X, Y))


def test_equinox_matches_hessian():
    model = eqx.nn.MLP(3, 2, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    assert model.layers[0].weight.dtype == jnp.float64  # x64 on; float32 leaves are cast anyway
    model32 = jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model)
    # eqx.nn.MLP maps one sample; the wrapper vmaps it over the batch.

    class Batched(eqx.Module):
        mlp: eqx.nn.MLP

        def __call__(self, x):
            return jax.vmap(self.mlp)(x)

    loss, params0 = from_equinox(Batched(model32), mse, (X, Y))
    check_xi1_against_hessian(loss, params0)


def test_bad_batch_is_an_eom_error():
    nnx = pytest.importorskip("flax.nnx")
    with pytest.raises(eom.EomError, match="pair"):
        from_nnx(_nnx_model(nnx), mse, X)
    with pytest.raises(eom.EomError, match="mode"):
        from_nnx(_nnx_model(nnx), mse, (X, Y), mode="training")
    assert_float64(from_nnx(_nnx_model(nnx), mse, (X, Y))[1])


@pytest.mark.slow  # an `eom run` (GD, orders 0 and 1, report): ~20 s of compiles on 2 cores
def test_nnx_batchnorm_model_runs_through_eom_run(tmp_path):
    pytest.importorskip("flax.nnx")
    from pathlib import Path

    from typer.testing import CliRunner

    from eom.cli import app

    spec = f"{Path(__file__).parent / 'nnx_models.py'}:factory"
    out = tmp_path / "nnx"
    result = CliRunner().invoke(app, ["run", "--model", spec, "--subset", "64", "--steps", "4",
                                      "--record-every", "2", "--orders", "0,1",
                                      "--diagnose-every", "0", "--no-predict", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "metrics.csv").read_text().splitlines()
    assert len(text) == 3  # header + steps 2 and 4


def test_hand_written_nnx_merge_gets_the_trace_hint():
    pytest.importorskip("flax.nnx")
    from pathlib import Path

    from eom.problems import make_problem

    spec = f"{Path(__file__).parent / 'nnx_bad_factory.py'}:factory"
    with pytest.raises(eom.EomError, match="different trace level.*from_nnx"):
        make_problem(spec, "digits", subset=16)
