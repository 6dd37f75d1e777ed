"""PyTorch models through torchax: a PyTorch MLP and the same MLP in JAX (weights copied) give
the same counter terms, the same nested derivatives to order 5, and the same `eom run` metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom
from eom.problems import open_dataset

torch = pytest.importorskip("torch", reason="PyTorch is the optional extra eom-dnn[torch]")
pytest.importorskip("torchax", reason="torchax is the optional extra eom-dnn[torch]")

from eom.adapters import from_torch  # noqa: E402

from . import torch_models  # noqa: E402

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def pair():
    data = open_dataset("digits", seed=0, subset=32)
    module, loss_fn, batch = torch_models.torch_factory(data, 0)
    loss_t, p_t = from_torch(module, loss_fn, batch)
    return data, loss_t, p_t, torch_models.jax_loss(data), torch_models.jax_params(module)


def _rel(a, b) -> float:
    a, b = jax.flatten_util.ravel_pytree(a)[0], jax.flatten_util.ravel_pytree(b)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_counter_terms_match_the_jax_mlp(pair):
    _, loss_t, p_t, loss_j, p_j = pair
    assert set(p_t) == set(p_j) and all(v.dtype == jnp.float64 for v in p_t.values())
    # Same float64 arithmetic up to the order of summation inside matmul/logsumexp: rounding
    # differences ~1e-16 relative, amplified by at most the depth of the nested jvps.
    assert abs(float(loss_t(p_t)) - float(loss_j(p_j))) < 1e-13
    for xi_t, xi_j in zip(eom.counter_terms(loss_t, p_t, 2), eom.counter_terms(loss_j, p_j, 2),
                          strict=True):
        assert _rel(xi_t, xi_j) < 1e-12


def test_nested_jvp_to_order_five(pair):
    _, loss_t, p_t, loss_j, p_j = pair
    v = jax.tree.map(jnp.ones_like, p_j)

    def nested(f, k):
        return f if k == 0 else (lambda p, g=nested(f, k - 1): jax.jvp(g, (p,), (v,))[1])

    d_t = jax.jit(nested(loss_t, 5))(p_t)
    d_j = jax.jit(nested(loss_j, 5))(p_j)
    # D^5 L[v,…,v] of a 300-parameter MLP: relative rounding ~1e-14 at most.
    assert abs(float(d_t) - float(d_j)) <= 1e-12 * abs(float(d_j))
    assert abs(float(d_j)) > 1e-3  # not a vacuous comparison


def _metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # two `eom run`s: ~40 s of compiles on 2 cores
def test_eom_run_torch_model_matches_jax_model(tmp_path):
    from typer.testing import CliRunner

    from eom.cli import app

    common = ["run", "--dataset", "digits", "--subset", "32", "--steps", "4", "--record-every",
              "2", "--orders", "0,1", "--lr", "0.5", "--diagnose-every", "0", "--no-predict"]
    runs = {}
    for name, model in [("torch", f"torch:{HERE / 'torch_models.py'}:torch_factory"),
                        ("jax", f"{HERE / 'torch_models.py'}:jax_factory")]:
        out = tmp_path / name
        result = CliRunner().invoke(app, [*common, "--model", model, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[name] = _metrics(out)
    assert len(runs["torch"]) == len(runs["jax"]) >= 2
    for rt, rj in zip(runs["torch"], runs["jax"], strict=True):
        for col, vj in rj.items():
            try:
                a, b = float(rt[col]), float(vj)
            except (TypeError, ValueError):
                continue
            # Errors are differences of nearly equal trajectories (~1e-4); the two losses agree
            # to 1e-13 relative, the adaptive ODE solver sees the same fields, so 1e-7 relative
            # on every metric is a generous bound that a wrong weight or dtype would break.
            assert np.isclose(a, b, rtol=1e-7, atol=1e-12), (col, a, b)


def test_torch_spec_loads_the_example_through_make_problem(monkeypatch):
    # `torch:package.module:factory` resolves through problems' user-model loading (the hook the
    # CLI's --model uses); examples/ is imported from the repository root.
    from eom.problems import make_problem

    monkeypatch.chdir(HERE.parent.parent)
    problem = make_problem("torch:examples.torch_mlp:factory", "digits", subset=16, width=4)
    assert problem.n_params == 64 * 4 + 4 + 4 * 4 + 4 + 4 * 10 + 10
    assert all(v.dtype == jnp.float64 for v in problem.params0.values())
    assert np.isfinite(float(problem.loss(problem.params0)))
    with pytest.raises(eom.EomError, match="module, loss_fn, example_batch"):
        make_problem(f"torch:{HERE / 'torch_models.py'}:jax_factory", "digits", subset=16)
