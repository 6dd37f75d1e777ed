"""Shared tiny problems for the measurement tests.

Every jitted piece of `eom.measure` is cached on the identity of the loss function, so all tests
use these module-level functions (never fresh closures): each solver is then compiled once per
test session, which keeps the suite fast on a small machine.

- `mlp_loss` / `mlp_params()`: a 2 → 3 → 1 tanh network on 6 fixed samples (12 parameters in a
  nested pytree with three leaves). Its Hessian at θ_0 has eigenvalues in [−0.8, 1.13], so
  η ≤ 0.1 keeps ηλ_max ≲ 0.11.
- `quad_loss` / `quad_params()`: L(θ) = ½θᵀAθ − bᵀθ over two leaves (2 + 3 = 5 parameters), with
  A symmetric positive definite, spectrum `QUAD_EIGS`; the closed forms of THEORY.md §2 apply.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# --------------------------------------------------------------------------------------------
# Tiny nonlinear model

_rng = np.random.default_rng(0)
_X = jnp.asarray(_rng.standard_normal((6, 2)))
_Y = jnp.asarray(_rng.standard_normal((6,)))
_W0 = 0.8 * _rng.standard_normal((2, 3))
_B0 = 0.1 * _rng.standard_normal(3)
_V0 = 0.8 * _rng.standard_normal(3)


def mlp_params() -> dict:
    """θ_0 of the tiny MLP: {"hidden": {"W", "b"}, "out": v}."""
    return {
        "hidden": {"W": jnp.asarray(_W0), "b": jnp.asarray(_B0)},
        "out": jnp.asarray(_V0),
    }


def mlp_loss(p) -> jax.Array:
    """Mean squared error of a tanh network (every derivative order is non-zero)."""
    h = jnp.tanh(_X @ p["hidden"]["W"] + p["hidden"]["b"])
    return 0.5 * jnp.mean((h @ p["out"] - _Y) ** 2)


# --------------------------------------------------------------------------------------------
# Quadratic ½θᵀAθ − bᵀθ over a two-leaf pytree

QUAD_EIGS = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
_rq = np.random.default_rng(1)
_Q, _ = np.linalg.qr(_rq.standard_normal((5, 5)))
QUAD_A = (_Q * QUAD_EIGS) @ _Q.T
QUAD_A = 0.5 * (QUAD_A + QUAD_A.T)
QUAD_B = _rq.standard_normal(5)
_QA, _QB = jnp.asarray(QUAD_A), jnp.asarray(QUAD_B)
_THETA0 = _rq.standard_normal(5)


def quad_params() -> dict:
    """θ_0 of the quadratic: {"a": 2 entries, "c": 3 entries} (flattened in that order)."""
    return {"a": jnp.asarray(_THETA0[:2]), "c": jnp.asarray(_THETA0[2:])}


def quad_loss(p) -> jax.Array:
    th = jnp.concatenate([p["a"], p["c"]])
    return 0.5 * th @ (_QA @ th) - _QB @ th


def quad_flat0() -> np.ndarray:
    return _THETA0.copy()


def expm_sym(M: np.ndarray) -> np.ndarray:
    """exp(M) of a symmetric matrix by eigendecomposition."""
    w, v = np.linalg.eigh(0.5 * (M + M.T))
    return (v * np.exp(w)) @ v.T


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def flat_stacked(tree) -> np.ndarray:
    """A pytree whose leaves have a leading axis (n, ...) → an (n, d) array (leaf order)."""
    leaves = jax.tree.leaves(tree)
    n = leaves[0].shape[0]
    return np.concatenate([np.asarray(x).reshape(n, -1) for x in leaves], axis=1)
