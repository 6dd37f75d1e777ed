r"""A training problem: a full-batch loss $L(\theta)$, its initial parameters and its data.

Classification: $L(\theta) = -\frac1n\sum_i \log\operatorname{softmax}(f_\theta(x_i))_{y_i}$.
Regression: $L(\theta) = \frac1{nk}\sum_{i,j}(f_\theta(x_i)_j - y_{ij})^2$.

The model is split with `eqx.partition(model, eqx.is_inexact_array)`: $\theta$ = the float arrays,
everything else (structure, activation names) is closed over with the data. `Problem.loss` is
built once per problem and is the same object for its lifetime, so the engine's compiled code
(cached by the loss function's identity) is reused by every call that passes it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from .._errors import EomError
from .._tree import check_params, tree_size
from ._data import DATASET_HELP, Dataset, open_dataset, take_subset
from ._models import MODEL_HELP, MODELS, build_model


class Problem(eqx.Module):
    """A loss, its starting point and its data.

    - `loss`: `params -> scalar` (float64), full batch, jit-friendly, deterministic.
    - `params0`: the initial parameters (a pytree of float64 arrays).
    - `dataset`: the `Dataset` the loss closes over.
    - `model_name`, `dataset_name`: names as given (a user model's `module:factory` spec).
    - `n_params`: number of scalar parameters.
    - `accuracy`: `params -> fraction correct` for classification with a built-in model, else
      `None` (a user factory may return it as a third element).
    - `predict`: `params -> model outputs (n, out_dim)` for built-in models, else `None`.
    """

    loss: Callable[[PyTree], Float[Array, ""]] = eqx.field(static=True)
    params0: PyTree
    dataset: Dataset
    model_name: str = eqx.field(static=True)
    dataset_name: str = eqx.field(static=True)
    n_params: int = eqx.field(static=True)
    accuracy: Callable[[PyTree], Float[Array, ""]] | None = eqx.field(static=True, default=None)
    predict: Callable[[PyTree], Float[Array, "n k"]] | None = eqx.field(static=True, default=None)

    @property
    def task(self) -> str:
        return self.dataset.task


def cross_entropy(logits: Float[Array, "n k"], labels: Int[Array, " n"]) -> Float[Array, ""]:
    r"""Mean softmax cross-entropy $-\frac1n\sum_i \log\operatorname{softmax}(z_i)_{y_i}$."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def mean_squared_error(pred: Float[Array, "n k"], target: Float[Array, "n k"]) -> Float[Array, ""]:
    r"""Mean squared error $\frac1{nk}\sum_{i,j}(p_{ij} - t_{ij})^2$."""
    return jnp.mean((pred - target) ** 2)


def _builtin_problem(name: str, data: Dataset, seed: int, model_kwargs: dict) -> Problem:
    model = build_model(name, data, seed, **model_kwargs)
    params0, static = eqx.partition(model, eqx.is_inexact_array)
    X, y = data.X, data.y
    classify = data.task == "classification"

    @jax.jit
    def predict(params):
        return eqx.combine(params, static)(X)

    @jax.jit
    def loss(params):
        out = eqx.combine(params, static)(X)
        return cross_entropy(out, y) if classify else mean_squared_error(out, y)

    accuracy = None
    if classify:

        @jax.jit
        def accuracy(params):
            pred = jnp.argmax(eqx.combine(params, static)(X), axis=-1)
            return jnp.mean((pred == y).astype(jnp.float64))

    return Problem(
        loss=loss,
        params0=params0,
        dataset=data,
        model_name=name,
        dataset_name=data.name,
        n_params=tree_size(params0),
        accuracy=accuracy,
        predict=predict,
    )


def make_problem(
    model: str,
    dataset: str | os.PathLike | Dataset,
    *,
    seed: int = 0,
    subset: int | None = None,
    data_seed: int | None = None,
    **model_kwargs: Any,
) -> Problem:
    """Build a full-batch training problem.

    **Arguments:**

    - `model`: a built-in model (`linear`, `mlp`, `mlp-bn`, `cnn`) or `package.module:factory`
      (also `path/to/file.py:factory`), where `factory(dataset, seed)` returns `(loss_fn, params0)`
      (optionally a third element `accuracy_fn`).
    - `dataset`: `digits`, `mnist1d`, `teacher-student`, a path to an `.npz` holding `X` and `y`,
      or a `Dataset`.
    - `seed`: initializes the model; also the data seed unless `data_seed` is given.
    - `subset`: keep the first `subset` samples after a seeded shuffle.
    - `data_seed`: seed of the subset shuffle and of the teacher-student teacher (default `seed`).
    - `model_kwargs`: `width`, `depth`, `hidden`, `activation`, `eps` (see `build_model`); `None`
      values mean the default. For a user factory they are passed on as keyword arguments.

    >>> import eom
    >>> p = eom.make_problem("linear", "teacher-student", subset=32)
    >>> p.n_params, p.dataset.X.shape, float(p.loss(p.params0)) > 0
    (17, (32, 16), True)
    """
    seed = _check_seed(seed, "seed")
    data_seed = seed if data_seed is None else _check_seed(data_seed, "data_seed")
    if isinstance(dataset, Dataset):
        data = take_subset(dataset, subset, data_seed)
    else:
        data = open_dataset(dataset, seed=data_seed, subset=subset)
    if not isinstance(model, str):
        raise EomError(f"model must be a string, got {type(model).__name__}.")
    if model in MODELS:
        return _builtin_problem(model, data, seed, model_kwargs)
    if ":" in model:
        return user_problem(model, data, seed, **model_kwargs)
    raise EomError(
        f"unknown model {model!r}; use one of {', '.join(MODELS)}, or package.module:factory "
        "(a function factory(dataset, seed) -> (loss_fn, params0)) for your own model."
    )


def _check_seed(seed, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise EomError(f"{what} must be a non-negative integer, got {seed!r}.")
    return int(seed)


# ---------------------------------------------------------------------------------------------
# user models


def load_factory(spec: str) -> Callable:
    """Resolve `package.module:factory` (or `path/to/file.py:factory`) to the callable.

    The current directory is put on `sys.path` (as `python -m` does), so modules next to where
    `eom` is run — e.g. `examples.custom_equinox_model:factory` from the repository root — import.
    `torch:package.module:factory` names a PyTorch factory returning
    `(module, loss_fn, example_batch)`, wrapped by `eom.adapters.torch_factory`.
    """
    if spec.startswith("torch:"):
        from ..adapters import torch_factory

        return torch_factory(load_factory(spec.removeprefix("torch:")), spec)
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise EomError(
            f"model {spec!r} is not of the form package.module:factory; e.g. "
            "examples.custom_equinox_model:factory."
        )
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        module = _import_file(mod_name, spec)
    else:
        module = _import_module(mod_name, spec)
    if not hasattr(module, attr):
        public = sorted(
            k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
        )
        raise EomError(
            f"module {mod_name!r} has no attribute {attr!r} (model {spec!r}); its callables are: "
            f"{', '.join(public) or 'none'}. Fix the name after the colon."
        )
    factory = getattr(module, attr)
    if not callable(factory):
        raise EomError(
            f"{spec!r} is a {type(factory).__name__}, not a callable; it must be a function "
            "factory(dataset, seed) -> (loss_fn, params0)."
        )
    return factory


def _import_module(mod_name: str, spec: str):
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (mod_name == missing or mod_name.startswith(missing + ".")):
            raise EomError(
                f"cannot import module {mod_name!r} for model {spec!r}: no module named "
                f"{missing!r}. Run eom from the directory that contains it, add that directory "
                "to PYTHONPATH, install the package, or give a file: path/to/file.py:factory."
            ) from exc
        raise EomError(
            f"importing {mod_name!r} for model {spec!r} failed: it needs the module {missing!r}, "
            "which is not installed. Install it, or remove that import."
        ) from exc
    except Exception as exc:  # noqa: BLE001 — user code: report whatever it raised
        raise EomError(
            f"importing {mod_name!r} for model {spec!r} raised {type(exc).__name__}: {exc}. "
            "Fix the error in that module."
        ) from exc


def _import_file(path: str, spec: str):
    p = Path(path).expanduser()
    if not p.is_file():
        raise EomError(
            f"model file {path!r} (from {spec!r}) does not exist; give an existing .py file or a "
            "package.module:factory name."
        )
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]
    name = f"_eom_user_{p.stem}_{digest}"
    mspec = importlib.util.spec_from_file_location(name, p)
    if mspec is None or mspec.loader is None:
        raise EomError(f"cannot load {path!r} as a Python module; give a .py file.")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[name] = module
    try:
        mspec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 — user code: report whatever it raised
        del sys.modules[name]
        raise EomError(
            f"running {path!r} for model {spec!r} raised {type(exc).__name__}: {exc}. "
            "Fix the error in that file."
        ) from exc
    return module


def _to_float64(params: PyTree) -> PyTree:
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(jnp.float64) if x.dtype != jnp.float64 else x

    return jax.tree.map(cast, params)


def user_problem(spec: str, data: Dataset, seed: int = 0, **kwargs: Any) -> Problem:
    """Call the user's `factory(dataset, seed, **kwargs)` and validate what it returns.

    Checks: a tuple `(loss_fn, params0)` or `(loss_fn, params0, accuracy_fn)`; `loss_fn` callable;
    every leaf of `params0` a float array (float32/float16 leaves are cast to float64);
    `loss_fn(params0)` a finite real scalar.
    """
    factory = load_factory(spec)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        result = factory(data, seed, **kwargs)
    except EomError:
        raise
    except Exception as exc:  # noqa: BLE001 — user code: report whatever it raised
        raise EomError(
            f"calling {spec}(dataset, seed) raised {type(exc).__name__}: {exc}. Fix the factory; "
            "it receives an eom.problems.Dataset (fields X, y, task, n_classes, input_shape) and "
            "an int seed."
        ) from exc
    if not isinstance(result, tuple | list) or len(result) not in (2, 3):
        raise EomError(
            f"{spec} returned {type(result).__name__}"
            f"{f' of length {len(result)}' if isinstance(result, tuple | list) else ''}; it must "
            "return a tuple (loss_fn, params0), with loss_fn(params0) a scalar."
        )
    loss, params0 = result[0], result[1]
    accuracy = result[2] if len(result) == 3 else None
    if not callable(loss):
        raise EomError(
            f"{spec} returned a {type(loss).__name__} as loss_fn; the first element must be a "
            "function loss_fn(params) -> scalar."
        )
    if accuracy is not None and not callable(accuracy):
        raise EomError(f"{spec}: the third element (accuracy_fn) must be callable or None.")
    try:
        check_params(params0, "params0")
    except ValueError as exc:
        raise EomError(f"{spec} returned invalid params0: {exc}") from exc
    params0 = _to_float64(params0)
    from ..engine import check_loss

    try:
        check_loss(loss, params0)
        value = loss(params0)
    except EomError as exc:
        if type(exc.__cause__).__name__ == "TraceContextError":  # Flax NNX state mutated
            from ..adapters import TRACE_HINT

            raise EomError(f"{spec}: {TRACE_HINT}") from exc
        raise EomError(f"{spec}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 — user code: report whatever it raised
        raise EomError(
            f"{spec}: evaluating loss_fn(params0) raised {type(exc).__name__}: {exc}."
        ) from exc
    if not np.isfinite(float(value)):
        raise EomError(
            f"{spec}: loss_fn(params0) = {float(value)} is not finite; check the initialization "
            "and the data."
        )
    return Problem(
        loss=loss,
        params0=params0,
        dataset=data,
        model_name=spec,
        dataset_name=data.name,
        n_params=tree_size(params0),
        accuracy=accuracy,
        predict=None,
    )


# ---------------------------------------------------------------------------------------------
# help text


def available_models() -> dict[str, str]:
    """Model names (built-in, plus the user-model form) → one-line description."""
    return dict(MODEL_HELP)


def available_datasets() -> dict[str, str]:
    """Data set names (built-in, plus the `.npz` form) → one-line description."""
    return dict(DATASET_HELP)


def available() -> str:
    """A plain-text listing of the models and data sets, for `--help` texts."""
    lines = ["Models:"]
    lines += [f"  {k:<24} {v}" for k, v in MODEL_HELP.items()]
    lines += ["Datasets:"]
    lines += [f"  {k:<24} {v}" for k, v in DATASET_HELP.items()]
    return "\n".join(lines)

