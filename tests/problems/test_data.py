"""Data sets: shapes, dtypes, determinism, local generation, and every bad `.npz` input."""

import random
import socket

import jax.numpy as jnp
import numpy as np
import pytest

from eom import EomError
from eom.problems import DATASETS, Dataset, _data, digits, load_npz, open_dataset, teacher_student


def test_digits_shape_dtype_and_standardization():
    data = digits()
    assert isinstance(data, Dataset)
    assert data.X.shape == (1797, 8, 8) and data.X.dtype == jnp.float64
    assert data.input_shape == (8, 8) and data.n_features == 64
    assert data.y.shape == (1797,) and jnp.issubdtype(data.y.dtype, jnp.integer)
    assert data.task == "classification" and data.n_classes == 10 and data.out_dim == 10
    X = np.asarray(data.X_flat)
    # Per-pixel standardization over the full set: exact up to float64 rounding (1e-12).
    np.testing.assert_allclose(X.mean(0), 0.0, atol=1e-12)
    std = X.std(0)
    constant = std < 1e-12  # pixels that are always 0 in the raw data stay 0
    assert 0 < constant.sum() < 64
    np.testing.assert_allclose(std[~constant], 1.0, rtol=1e-12)


def test_subset_is_deterministic_and_seeded():
    a = open_dataset("digits", subset=50, seed=3)
    b = open_dataset("digits", subset=50, seed=3)
    c = open_dataset("digits", subset=50, seed=4)
    assert a.X.shape == (50, 8, 8) and a.n_classes == 10
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y) or not np.array_equal(a.X, c.X)
    # the subset is a subset: every row of a is a row of the full data
    full = np.asarray(digits().X_flat)
    rows = {r.tobytes() for r in full}
    assert all(r.tobytes() in rows for r in np.asarray(a.X_flat))


@pytest.mark.parametrize("subset", [0, -1, 1798, 2.5, True])
def test_subset_out_of_range(subset):
    with pytest.raises(EomError, match="subset"):
        open_dataset("digits", subset=subset)


def test_teacher_student_regression_seeded():
    a, b, c = teacher_student(seed=1), teacher_student(seed=1), teacher_student(seed=2)
    assert a.task == "regression" and a.n_classes is None
    assert a.X.shape == (512, 16) and a.y.shape == (512, 1) and a.out_dim == 1
    assert a.X.dtype == jnp.float64 and a.y.dtype == jnp.float64
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.y, c.y)
    # targets are a tanh teacher: bounded by |b2| + ‖W2‖₁ + noise, and not constant
    assert 0.01 < float(jnp.std(a.y)) < 10


def test_teacher_student_noise_level():
    # The noise is drawn last from the same stream, so with the same seed the teacher is the same
    # and y(noise=σ) − y(noise=0) = σ·ε with ε ~ N(0, 1). Its sample std over n = 512 has relative
    # standard error 1/√(2n) ≈ 3 %, so ±20 % is a > 6σ band.
    clean = teacher_student(noise=0.0, seed=5)
    noisy = teacher_student(noise=0.01, seed=5)
    np.testing.assert_array_equal(clean.X, noisy.X)
    diff = np.asarray(noisy.y - clean.y)
    assert 0.008 < diff.std() < 0.012
    with pytest.raises(EomError, match="noise"):
        teacher_student(noise=-1.0)


def test_mnist1d_generated_locally_without_network_or_pickle(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.chdir(tmp_path)
    _data._mnist1d_arrays.cache_clear()
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    data = open_dataset("mnist1d", subset=100)
    # the generator's global seeding must not leak into the caller's RNG state
    assert np.random.random() == np_before and random.random() == py_before
    assert list(tmp_path.iterdir()) == []  # no pickle cache written
    assert data.X.shape == (100, 40) and data.X.dtype == jnp.float64
    assert data.n_classes == 10 and data.input_shape == (40,)
    full = open_dataset("mnist1d")
    assert full.X.shape == (4000, 40)
    # Fixed seed (42, the package default): the generated data are the same every time. Checked
    # against values recorded once (generating twice would double the test's ~3 s cost); the
    # labels are exact, the floats allow 1e-9 for scipy interpolation rounding differences.
    np.testing.assert_array_equal(full.y[:12], [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9])
    np.testing.assert_allclose(
        full.X[0, :4], [-0.33200567, -0.47191037, -0.77869708, -1.00974083], atol=1e-8
    )


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(EomError) as err:
        open_dataset("digitz")
    for name in DATASETS:
        assert name in str(err.value)
    assert ".npz" in str(err.value)


# ---------------------------------------------------------------------------------------------
# .npz


def test_npz_classification_and_regression(tmp_path, rng):
    X = rng.standard_normal((30, 3, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    np.savez(tmp_path / "c.npz", X=X, y=y)
    data = open_dataset(str(tmp_path / "c.npz"))
    assert data.task == "classification" and data.n_classes == 3
    assert data.input_shape == (3, 4) and data.X.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(data.X), X.astype(np.float64))
    np.savez(tmp_path / "r.npz", X=X[:, 0], y=rng.standard_normal(30))
    reg = open_dataset(tmp_path / "r.npz", subset=10)
    assert reg.task == "regression" and reg.y.shape == (10, 1) and reg.out_dim == 1
    np.savez(tmp_path / "r2.npz", X=X[:, 0], y=rng.standard_normal((30, 2)))
    assert load_npz(tmp_path / "r2.npz").out_dim == 2


def _bad(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(X=np.zeros((5, 2))), "lacks the key.*y"),
        (dict(y=np.zeros(5)), "lacks the key.*X"),
        (dict(X=np.zeros(5), y=np.zeros(5)), "at least 2 dimensions"),
        (dict(X=np.zeros((5, 2)), y=np.zeros((5, 2, 2))), "y has shape"),
        (dict(X=np.zeros((5, 2)), y=np.zeros(4)), "5 samples but y has 4"),
        (dict(X=np.array([[0.0, np.nan]] * 5), y=np.zeros(5)), "X contains NaN"),
        (dict(X=np.zeros((5, 2)), y=np.array([0.0, 1, 2, np.inf, 0])), "y contains NaN"),
        (dict(X=np.zeros((5, 2)), y=np.array([0, 1, -1, 0, 1])), "labels must be 0..K-1"),
        (dict(X=np.zeros((5, 2)), y=np.zeros(5, dtype=int)), "single class"),
        (dict(X=np.zeros((5, 2)), y=np.array(["a"] * 5)), "dtype"),
        (dict(X=np.zeros((0, 2)), y=np.zeros(0)), "empty"),
    ],
)
def test_npz_bad_contents(tmp_path, arrays, match):
    with pytest.raises(EomError, match=match):
        open_dataset(str(_bad(tmp_path, **arrays)))


def test_npz_missing_file(tmp_path):
    with pytest.raises(EomError, match="does not exist"):
        open_dataset(str(tmp_path / "nope.npz"))


def test_npz_not_an_npz(tmp_path):
    text = tmp_path / "data.npz"
    text.write_text("X,y\n1,2\n")
    with pytest.raises(EomError, match="not an .npz archive.*text or other file"):
        open_dataset(str(text))
    npy = tmp_path / "arr.npy"
    np.save(npy, np.zeros((3, 2)))
    with pytest.raises(EomError, match="single .npy array"):
        open_dataset(str(npy))
    with pytest.raises(EomError, match="directory"):
        open_dataset(tmp_path)


def test_npz_object_array_rejected_without_pickle(tmp_path):
    # np.savez pickles object arrays; loading them needs allow_pickle=True, which eom never sets.
    path = tmp_path / "obj.npz"
    X = np.empty((3, 1), dtype=object)
    X[:, 0] = [1.0, [2.0], "x"]
    np.savez(path, X=X, y=np.array([0, 1, 0]))
    with pytest.raises(EomError, match="object arrays"):
        open_dataset(str(path))
