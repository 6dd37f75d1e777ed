"""Detection and the identities of THEORY.md §4–5 on the built-in problems (`eom.problems`).

Expected groups, derived from the model definitions:

- `mlp-bn` (hidden layers: Dense → full-batch BatchNorm with ε scaled by ‖w_j‖² → affine → tanh):
  each hidden unit's incoming weights `hidden[l].dense.weight[j, :]` are scale-invariant; each
  `hidden[l].dense.bias` is null (it cancels in z − mean z); the softmax output gives translation
  directions `out.bias` (u ∝ 1) and `out.weight[:, j]` for every hidden feature j. Input pixels
  that are constant on the training subset feed the first BatchNorm a constant, which the mean
  subtraction removes: their columns `hidden[0].dense.weight[:, j]` are null.
- `linear` (softmax regression): `bias` and every column of `weight` are translation directions,
  except columns of pixels that are zero on every sample, which are null.
- `mlp` with mean-squared error on `teacher-student`: no group.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom.symmetry as S

problems = pytest.importorskip("eom.problems")

SUBSET, WIDTH = 64, 8


def _keys(groups):
    return {(g.kind, g.path, g.axis, g.index) for g in groups}


def _pixels(problem):
    X = np.asarray(problem.dataset.X).reshape(len(problem.dataset.X), -1)
    constant = set(np.flatnonzero(np.ptp(X, axis=0) == 0).tolist())
    zero = set(np.flatnonzero(np.all(X == 0, axis=0)).tolist())
    return X.shape[1], constant, zero


@pytest.fixture(scope="module")
def mlp_bn():
    pr = problems.make_problem("mlp-bn", "digits", subset=SUBSET, width=WIDTH, depth=2)
    return pr, S.detect(pr.loss, pr.params0)


def test_mlp_bn_groups_are_exactly_the_expected_ones(mlp_bn):
    pr, groups = mlp_bn
    d, constant, _ = _pixels(pr)
    assert constant, "the digits subset has constant border pixels; the test relies on them"
    expected = set()
    for layer in range(2):
        w = f".hidden[{layer}].dense"
        expected |= {("scale", f"{w}.weight", 0, j) for j in range(WIDTH)}
        expected.add(("null", f"{w}.bias", None, None))
    expected |= {("null", ".hidden[0].dense.weight", 1, j) for j in constant}
    expected.add(("translation", ".out.bias", None, None))
    expected |= {("translation", ".out.weight", 1, j) for j in range(WIDTH)}
    assert _keys(groups) == expected
    assert d == 64


def test_linear_softmax_groups_are_exactly_the_expected_ones():
    pr = problems.make_problem("linear", "digits", subset=SUBSET)
    d, _, zero = _pixels(pr)
    expected = {("translation", ".bias", None, None)}
    expected |= {("translation", ".weight", 1, j) for j in range(d) if j not in zero}
    expected |= {("null", ".weight", 1, j) for j in zero}
    assert _keys(S.detect(pr.loss, pr.params0)) == expected


def test_mlp_with_mean_squared_error_has_no_group():
    pr = problems.make_problem("mlp", "teacher-student", subset=SUBSET, width=WIDTH, depth=2)
    assert S.detect(pr.loss, pr.params0) == ()


def test_identities_on_mlp_bn(mlp_bn):
    # w·g_w = 0 per group; then, by linearity, one HVP checks every group at once:
    # H Σ a_i ŵ_i = −Σ a_i (g_{w_i}, 0) and H Σ b_j u_j = 0 for random a, b.
    pr, groups = mlp_bn
    p = pr.params0
    grad = jax.jit(jax.grad(pr.loss))

    @jax.jit
    def hvp(v):
        return jax.jvp(jax.grad(pr.loss), (p,), (v,))[1]

    def flat(tree):
        return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])

    g = grad(p)
    gf = flat(g)
    r = np.random.default_rng(0)
    probe = flat(hvp(jax.tree.map(lambda x: jnp.asarray(r.standard_normal(x.shape)), p)))
    hscale = np.linalg.norm(probe) / np.sqrt(gf.size)  # ‖Hv‖/‖v‖ for a random v
    scale = [x for x in groups if x.kind == "scale"]
    trans = [x for x in groups if x.kind == "translation"]
    for grp in scale:
        w, gw = grp.take(p), grp.take(g)
        assert abs(w @ gw) <= 1e-12 * np.linalg.norm(w) * np.linalg.norm(gw)
    for grp in (x for x in groups if x.kind == "null"):
        # Zero analytically; numerically a cancellation Σ_n x_nj ∂L/∂z_n over the batch after the
        # BatchNorm backward pass: measured up to 1.1e-10 of ‖g‖ for a constant pixel, hence
        # 1e-9 (detection's default rtol, 1e-8, leaves another factor 10).
        assert np.linalg.norm(grp.take(g)) <= 1e-9 * np.linalg.norm(gf)
    for grp in trans:
        assert abs(float(grp.extract(g))) <= 1e-13 * np.linalg.norm(gf)
    a = r.standard_normal(len(scale))
    v = sum(ai * flat(grp.embed(p)) for ai, grp in zip(a, scale, strict=True))
    target = -sum(ai * flat(grp.mask(p)) * gf for ai, grp in zip(a, scale, strict=True))
    hv = flat(hvp(_unflat(p, v)))
    assert np.linalg.norm(hv - target) <= 1e-11 * hscale * np.linalg.norm(v)
    b = r.standard_normal(len(trans))
    u = sum(bj * flat(grp.direction(p)) for bj, grp in zip(b, trans, strict=True))
    assert np.linalg.norm(flat(hvp(_unflat(p, u)))) <= 1e-11 * hscale * np.linalg.norm(u)


def _unflat(like, vec):
    leaves, treedef = jax.tree.flatten(like)
    out, i = [], 0
    for x in leaves:
        out.append(jnp.asarray(vec[i : i + x.size].reshape(x.shape)))
        i += x.size
    return jax.tree.unflatten(treedef, out)
