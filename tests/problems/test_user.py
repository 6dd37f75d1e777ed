"""User models given as `package.module:factory` (or `file.py:factory`): loading and validation."""

import sys
import textwrap
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eom import EomError
from eom.problems import Dataset, load_factory, make_problem

GOOD = """
import jax.numpy as jnp

def factory(dataset, seed, scale=1.0):
    X, y = dataset.X_flat, dataset.y
    params0 = {"w": jnp.full((X.shape[1], dataset.out_dim), 0.01 * scale)}

    def loss(p):
        return jnp.mean((X @ p["w"]) ** 2)

    return loss, params0
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write `source` as a uniquely named module on sys.path; return its import name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"user_model_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_user_factory_builds_a_problem(user_module):
    name = user_module(GOOD)
    p = make_problem(f"{name}:factory", "digits", subset=20, seed=3)
    assert p.model_name == f"{name}:factory" and p.dataset_name == "digits"
    assert isinstance(p.dataset, Dataset) and p.dataset.X.shape == (20, 8, 8)
    assert p.n_params == 64 * 10 and p.accuracy is None and p.predict is None
    expected = np.mean((np.asarray(p.dataset.X_flat) @ np.full((64, 10), 0.01)) ** 2)
    assert float(p.loss(p.params0)) == pytest.approx(expected, rel=1e-13)
    # model options are passed on to the factory as keyword arguments
    q = make_problem(f"{name}:factory", "digits", subset=20, scale=2.0)
    assert float(q.params0["w"][0, 0]) == pytest.approx(0.02)


def test_user_factory_with_npz_data(user_module, tmp_path, rng):
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((15, 4)), y=rng.standard_normal(15))
    p = make_problem(f"{user_module(GOOD)}:factory", str(tmp_path / "d.npz"))
    assert p.dataset.task == "regression" and p.params0["w"].shape == (4, 1)


def test_file_path_spec(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(GOOD)
    p = make_problem(f"{path}:factory", "teacher-student", subset=10)
    assert p.params0["w"].shape == (16, 1)
    with pytest.raises(EomError, match="does not exist"):
        load_factory(f"{tmp_path / 'missing.py'}:factory")


def test_current_directory_is_importable(tmp_path, monkeypatch):
    # `eom` run as a console script does not have the cwd on sys.path; the loader adds it.
    name = f"cwd_model_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert callable(load_factory(f"{name}:factory"))


def test_examples_are_loadable():
    # run from the repository root (pytest's rootdir), as the README says
    for spec in ("examples.custom_equinox_model:factory", "examples.custom_function_model:factory"):
        p = make_problem(spec, "digits", subset=16, width=4)
        assert np.isfinite(float(p.loss(p.params0)))
        assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(p.params0))
        g = jax.jit(jax.grad(p.loss))(p.params0)
        assert jax.tree.structure(g) == jax.tree.structure(p.params0)


def test_float32_params_are_cast_to_float64(user_module):
    name = user_module(GOOD.replace("0.01 * scale)", "0.01 * scale, dtype=jnp.float32)"))
    p = make_problem(f"{name}:factory", "digits", subset=5)
    assert p.params0["w"].dtype == jnp.float64


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no_such_module_xyz:factory", "cannot import module 'no_such_module_xyz'"),
        ("no_colon_here", "unknown model"),
        (":factory", "not of the form"),
        ("examples.custom_equinox_model:", "not of the form"),
        ("examples.custom_equinox_model:nope", "has no attribute 'nope'.*factory"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(EomError, match=match):
        make_problem(spec, "digits", subset=5)


@pytest.mark.parametrize(
    "source, match",
    [
        ("factory = 3\n", "not a callable"),
        ("import not_installed_pkg_q\ndef factory(d, s): pass\n", "needs the module"),
        ("raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
        ("def factory(d, s):\n    raise KeyError('k')\n", "raised KeyError"),
        ("def factory(d, s):\n    return 1\n", "returned int"),
        ("def factory(d, s):\n    return (1, 2, 3, 4)\n", "of length 4"),
        ("import jax.numpy as jnp\ndef factory(d, s):\n    return 1.0, jnp.zeros(3)\n",
         "first element must be a function"),
        ("import jax.numpy as jnp\ndef factory(d, s):\n    return (lambda p: p.sum()), "
         "jnp.zeros(3, dtype=jnp.int32)\n", "invalid params0.*dtype int32"),
        ("import jax.numpy as jnp\ndef factory(d, s):\n    return (lambda p: p), jnp.zeros(3)\n",
         "must return a scalar"),
        ("import jax.numpy as jnp\ndef factory(d, s):\n    return (lambda p: p['a']), "
         "jnp.zeros(3)\n", "calling loss"),
        ("import jax.numpy as jnp\ndef factory(d, s):\n    return (lambda p: jnp.sum(p) / 0.0), "
         "jnp.zeros(3)\n", "not finite"),
        ("import jax.numpy as jnp\ndef factory(d, s):\n    return (lambda p: p.sum()), "
         "jnp.zeros(3), 5\n", "accuracy_fn"),
    ],
)
def test_bad_factories(user_module, source, match):
    name = user_module(source)
    with pytest.raises(EomError, match=match):
        make_problem(f"{name}:factory", "digits", subset=5)
