"""Built-in models and `make_problem`: sizes, dtypes, determinism, losses, and the symmetries
(BatchNorm scale invariance, softmax translation invariance) that THEORY.md §4–5 rely on."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom import EomError
from eom._tree import tree_norm, tree_sub
from eom.problems import MODELS, Problem, build_model, digits, make_problem, model_defaults

TINY = {"linear": {}, "mlp": dict(width=6, depth=2), "mlp-bn": dict(width=6, depth=2),
        "cnn": dict(width=2, depth=1, hidden=5)}


def _tiny(model, dataset="digits", subset=40, seed=0, **kw):
    return make_problem(model, dataset, subset=subset, seed=seed, **{**TINY[model], **kw})


def test_default_parameter_counts_on_digits():
    data = digits()
    count = {m: eom._tree.tree_size(eqx.filter(build_model(m, data), eqx.is_inexact_array))
             for m in MODELS}
    # closed forms: weights + biases of each layer
    mlp = 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert count["linear"] == 64 * 10 + 10
    assert count["mlp"] == mlp == 26122 and count["mlp"] >= 20_000
    assert count["mlp-bn"] == mlp + 2 * (2 * 128)  # + γ, β per hidden unit
    cnn = (1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 4 * 4 * 128 + 128) + (128 * 10 + 10)
    assert count["cnn"] == cnn == 151306 and count["cnn"] >= 100_000


@pytest.mark.parametrize("model", MODELS)
def test_problem_shapes_dtypes_and_initial_loss(model):
    p = _tiny(model)
    assert isinstance(p, Problem) and p.model_name == model and p.dataset_name == "digits"
    leaves = jax.tree.leaves(p.params0)
    assert leaves and all(x.dtype == jnp.float64 for x in leaves)
    assert p.n_params == sum(x.size for x in leaves)
    loss0 = p.loss(p.params0)
    assert loss0.shape == () and loss0.dtype == jnp.float64
    # Output layer initialized at half LeCun scale: logits have std ≲ 0.5, so the excess of the
    # cross-entropy over log K ≈ Var(logits)/2 is well below 0.4 (observed 0.0–0.26).
    assert abs(float(loss0) - math.log(10)) < 0.4
    assert p.predict(p.params0).shape == (40, 10)
    acc = float(p.accuracy(p.params0))
    expected = np.mean(np.argmax(np.asarray(p.predict(p.params0)), 1) == np.asarray(p.dataset.y))
    assert acc == pytest.approx(expected, abs=1e-15)
    g = jax.jit(jax.grad(p.loss))(p.params0)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))


def test_same_seed_same_problem_different_seed_different_params():
    a, b, c = _tiny("mlp", seed=1), _tiny("mlp", seed=1), _tiny("mlp", seed=2)
    assert float(tree_norm(tree_sub(a.params0, b.params0))) == 0.0
    assert float(a.loss(a.params0)) == float(b.loss(b.params0))
    assert float(tree_norm(tree_sub(a.params0, c.params0))) > 0.1
    # data_seed pins the data while the seed changes the initialization
    d = _tiny("mlp", seed=2, data_seed=1)
    np.testing.assert_array_equal(d.dataset.X, a.dataset.X)


def test_losses_match_numpy_closed_forms():
    p = _tiny("linear")
    W, b = np.asarray(p.params0.weight), np.asarray(p.params0.bias)
    X, y = np.asarray(p.dataset.X_flat), np.asarray(p.dataset.y)
    z = X @ W.T + b
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert float(p.loss(p.params0)) == pytest.approx(-logp[np.arange(len(y)), y].mean(), rel=1e-13)

    r = make_problem("linear", "teacher-student", subset=50)
    assert r.accuracy is None and r.dataset.task == "regression"
    W, b = np.asarray(r.params0.weight), np.asarray(r.params0.bias)
    X, y = np.asarray(r.dataset.X), np.asarray(r.dataset.y)
    assert float(r.loss(r.params0)) == pytest.approx(((X @ W.T + b - y) ** 2).mean(), rel=1e-13)


def test_batchnorm_scale_invariance():
    p = _tiny("mlp-bn")
    l0 = float(p.loss(p.params0))
    g = jax.jit(jax.grad(p.loss))(p.params0)
    q = _tiny("mlp")  # control: a plain MLP is not scale invariant, so the check can fail
    for layer in (0, 1):
        w = p.params0.hidden[layer].dense.weight
        scaled = eqx.tree_at(
            lambda t: t.hidden[layer].dense.weight, p.params0, w.at[3].multiply(3.0)
        )
        # exact invariance (the ε term is scaled by ‖w_j‖²): equal up to a few ulp of rounding
        assert float(p.loss(scaled)) == pytest.approx(l0, rel=1e-13, abs=0)
        # identity w·g_w = 0 per unit (THEORY §4), relative to ‖w‖‖g_w‖: rounding level
        gw = g.hidden[layer].dense.weight
        cos = jnp.sum(w * gw, axis=1) / (jnp.linalg.norm(w, axis=1) * jnp.linalg.norm(gw, axis=1))
        assert float(jnp.max(jnp.abs(cos))) < 1e-10
        # the bias before BatchNorm cancels in z − mean(z): zero gradient up to rounding
        assert float(jnp.max(jnp.abs(g.hidden[layer].dense.bias))) < 1e-14
        wq = q.params0.hidden[layer].weight
        scaled_q = eqx.tree_at(lambda t: t.hidden[layer].weight, q.params0, wq.at[3].multiply(3.0))
        assert abs(float(q.loss(scaled_q)) - float(q.loss(q.params0))) > 1e-6


@pytest.mark.parametrize("model", ["linear", "mlp-bn"])
def test_softmax_translation_invariance(model):
    p = _tiny(model)
    out = p.params0 if model == "linear" else p.params0.out
    where = (lambda q: q) if model == "linear" else (lambda q: q.out)
    l0 = float(p.loss(p.params0))
    # logit bias: b → b + c·1;  one input feature's column of W: W[:, j] → W[:, j] + c·1
    shifted_b = eqx.tree_at(lambda q: where(q).bias, p.params0, out.bias + 2.5)
    shifted_w = eqx.tree_at(lambda q: where(q).weight, p.params0, out.weight.at[:, 1].add(-1.7))
    # log-softmax is shift-invariant in exact arithmetic; float64 rounding of O(1) logits: 1e-13
    assert float(p.loss(shifted_b)) == pytest.approx(l0, rel=1e-13)
    assert float(p.loss(shifted_w)) == pytest.approx(l0, rel=1e-13)
    # u·g = 0 for u ∝ 1 on the bias
    g = jax.jit(jax.grad(p.loss))(p.params0)
    gb = g.bias if model == "linear" else g.out.bias
    assert abs(float(jnp.sum(gb))) < 1e-14
    # control: regression (MSE) has no such invariance
    r = make_problem("linear", "teacher-student", subset=30)
    shifted = eqx.tree_at(lambda q: q.bias, r.params0, r.params0.bias + 2.5)
    assert abs(float(r.loss(shifted)) - float(r.loss(r.params0))) > 1.0


def test_cnn_on_sequences_and_bad_shapes(tmp_path, rng):
    # MNIST-1D is (n, 40): 1-D convolutions. Checked on a small .npz with the same layout so the
    # test does not pay for generating MNIST-1D.
    np.savez(tmp_path / "seq.npz", X=rng.standard_normal((20, 40)), y=rng.integers(0, 4, 20))
    p = make_problem("cnn", tmp_path / "seq.npz", **TINY["cnn"])
    # conv(1→2, width 5) + pool to 20 + dense(2·20→5) + out(5→4)
    assert p.n_params == (5 + 1) * 2 + (40 + 1) * 5 + (5 + 1) * 4
    assert np.isfinite(float(p.loss(p.params0)))
    np.savez(tmp_path / "img3.npz", X=rng.standard_normal((6, 3, 4, 4)), y=np.arange(6) % 2)
    assert make_problem("cnn", tmp_path / "img3.npz", **TINY["cnn"]).n_params == (
        (3 * 9 + 1) * 2 + (2 * 2 * 2 + 1) * 5 + (5 + 1) * 2
    )
    np.savez(tmp_path / "4d.npz", X=rng.standard_normal((6, 1, 2, 3, 4)), y=np.arange(6) % 2)
    with pytest.raises(EomError, match="not supported"):
        make_problem("cnn", tmp_path / "4d.npz")


@pytest.mark.parametrize(
    "model, kwargs, match",
    [
        ("mlpp", {}, "unknown model.*linear, mlp, mlp-bn, cnn"),
        ("mlp", dict(width=0), "width must be a positive integer"),
        ("mlp", dict(depth=1.5), "depth must be a positive integer"),
        ("mlp", dict(activation="relu"), "smooth"),
        ("mlp", dict(hidden=3), "does not take option"),
        ("linear", dict(width=3), "does not take option"),
        ("mlp-bn", dict(eps=-1.0), "eps"),
    ],
)
def test_bad_model_options(model, kwargs, match):
    with pytest.raises(EomError, match=match):
        make_problem(model, "digits", subset=10, **kwargs)


def test_none_options_mean_default_and_seed_checked():
    assert model_defaults("mlp")["width"] == 128
    p = make_problem("mlp", "digits", subset=10, width=None, depth=1)
    assert p.params0.hidden[0].weight.shape == (128, 64)
    with pytest.raises(EomError, match="seed"):
        make_problem("mlp", "digits", subset=10, seed=-1)


def test_problem_runs_through_the_engine():
    # The loss is jit-friendly and the same object for the problem's lifetime, so the engine's
    # compiled-code caches (keyed on the loss) apply.
    p = _tiny("linear", subset=30)
    gd = eom.gradient_descent(p.loss, p.params0, 0.1, 5)
    assert gd.loss.shape == (6,) and float(gd.loss[-1]) < float(gd.loss[0])
    assert jax.tree.structure(gd.at(-1)) == jax.tree.structure(p.params0)
