"""Symmetry detection and the identities of THEORY.md §4–5 on tiny hand-built models.

Models (float64, a few dozen parameters, so `jax.hessian` brute force is cheap):

- `bn_model`: x → W1 x + b1 → full-batch BatchNorm (no ε, no affine) → tanh → W2 h + b2 →
  softmax CE. Known groups: each row of W1 (scale), b1 (null: cancels in z − mean z), b2
  (translation, u ∝ 1), each column of W2 (translation: adds h_j to every logit).
- `linear_model`: softmax regression W x + b. Known: b and each column of W (translation).
- `mse_model`: tanh MLP with mean-squared error: no group at all.

Tolerances: identities that hold exactly in exact arithmetic are checked at 1e-12 relative (float64
rounding of a few hundred flops is ~1e-15; 1e-12 leaves room for cancellation in the BN gradient).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eom.symmetry as S
from eom import EomError
from eom.symmetry._detect import _bisect


def _ce(logits, y):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def bn_model(seed=0, n=24, d=3, h=4, k=3):
    r = np.random.default_rng(seed)
    X = jnp.asarray(r.standard_normal((n, d)))
    y = jnp.asarray(r.integers(0, k, n))

    def loss(p):
        z = X @ p["w1"].T + p["b1"]
        zc = z - jnp.mean(z, axis=0)
        hid = jnp.tanh(zc / jnp.sqrt(jnp.mean(zc**2, axis=0)))
        return _ce(hid @ p["w2"].T + p["b2"], y)

    p = {
        "w1": r.standard_normal((h, d)),
        "b1": 0.1 * r.standard_normal(h),
        "w2": r.standard_normal((k, h)),
        "b2": 0.1 * r.standard_normal(k),
    }
    return loss, jax.tree.map(jnp.asarray, p)


def linear_model(seed=0, n=20, d=4, k=3):
    r = np.random.default_rng(seed)
    X = jnp.asarray(r.standard_normal((n, d)))
    y = jnp.asarray(r.integers(0, k, n))

    def loss(p):
        return _ce(X @ p["w"].T + p["b"], y)

    p = {"w": r.standard_normal((k, d)), "b": 0.1 * r.standard_normal(k)}
    return loss, jax.tree.map(jnp.asarray, p)


def mse_model(seed=0, n=20, d=3, h=5, k=2, zero_readout=False):
    r = np.random.default_rng(seed)
    X = jnp.asarray(r.standard_normal((n, d)))
    Y = jnp.asarray(r.standard_normal((n, k)))

    def loss(p):
        out = jnp.tanh(X @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]
        return 0.5 * jnp.mean(jnp.sum((out - Y) ** 2, axis=-1))

    p = {
        "w1": r.standard_normal((h, d)),
        "b1": 0.1 * r.standard_normal(h),
        "w2": np.zeros((k, h)) if zero_readout else r.standard_normal((k, h)),
        "b2": 0.1 * r.standard_normal(k),
    }
    return loss, jax.tree.map(jnp.asarray, p)


def _keys(groups):
    return {(g.kind, g.path, g.axis, g.index) for g in groups}


BN_EXPECTED = (
    {("scale", "['w1']", 0, i) for i in range(4)}
    | {("null", "['b1']", None, None), ("translation", "['b2']", None, None)}
    | {("translation", "['w2']", 1, j) for j in range(4)}
)


@functools.cache
def bn_detected():
    """The BN model and its detected groups, built once per session: the same loss object in
    every test module lets the compiled functions (cached per loss) be shared."""
    loss, p = bn_model()
    return loss, p, S.detect(loss, p)


@pytest.fixture(scope="module")
def bn():
    return bn_detected()


# ---- detection ----------------------------------------------------------------------------------


def test_detect_bn_model_finds_exactly_the_known_groups(bn):
    _, _, groups = bn
    assert _keys(groups) == BN_EXPECTED
    # Sorted by leaf (dict keys: b1, b2, w1, w2), then kind, axis, index.
    assert [g.label for g in groups][:3] == [
        "null ['b1']",
        "translation ['b2']",
        "scale ['w1'][0, :]",
    ]


def test_detect_linear_softmax_finds_bias_and_feature_columns():
    loss, p = linear_model()
    groups = S.detect(loss, p, key=jax.random.PRNGKey(3))
    expected = {("translation", "['b']", None, None)} | {
        ("translation", "['w']", 1, j) for j in range(4)
    }
    # The whole-leaf constant direction of w is the sum of its columns': not reported.
    assert _keys(groups) == expected


def test_detect_mse_tanh_mlp_finds_nothing():
    loss, p = mse_model()
    assert S.detect(loss, p) == ()


def test_detect_not_fooled_by_a_zero_readout():
    # With W2 = 0 every hidden parameter has zero gradient *at θ* and the loss ignores it there;
    # the random perturbations of θ expose that this is not a symmetry.
    loss, p = mse_model(zero_readout=True)
    assert np.abs(np.asarray(jax.jit(jax.grad(loss))(p)["w1"])).max() == 0.0
    assert S.detect(loss, p) == ()


def test_detect_reports_a_whole_leaf_when_rows_are_not_invariant():
    # Weight normalization by the Frobenius norm: only the whole matrix is scale-invariant.
    r = np.random.default_rng(1)
    X, y = jnp.asarray(r.standard_normal((15, 3))), jnp.asarray(r.integers(0, 3, 15))

    def loss(p):
        w = p["w"] / jnp.sqrt(jnp.sum(p["w"] ** 2))
        return _ce(X @ w.T + p["b"], y) + 0.1 * jnp.sum(p["b"] ** 2)

    p = {"w": jnp.asarray(r.standard_normal((3, 3))), "b": jnp.asarray(r.standard_normal(3))}
    assert _keys(S.detect(loss, p)) == {("scale", "['w']", None, None)}


def test_detect_angle_loss_whole_vector_is_scale_invariant():
    loss, w0 = _angle_problem()
    (g,) = S.detect(loss, w0)
    assert (g.kind, g.path, g.axis, g.size) == ("scale", "<root>", None, 2)


def _angle_problem(kappa=1.0):
    # L(w) = κ·atan2(w1, w0): ‖∇L‖ = κ/‖w‖ exactly, so ‖ĝ‖ = κ on the whole sphere.
    return (lambda w: kappa * jnp.arctan2(w[1], w[0])), jnp.asarray([1.0, 0.5])


def test_detect_validates_arguments(bn):
    loss, p, _ = bn
    with pytest.raises(EomError, match="rtol"):
        S.detect(loss, p, rtol=0.0)
    with pytest.raises(EomError, match="num_trials"):
        S.detect(loss, p, num_trials=0)
    with pytest.raises(EomError, match="scalar"):
        S.detect(lambda q: q["w1"], p)


def test_bisect_finds_exactly_the_failing_members():
    def run(n, bad):
        calls = []

        def test(items):
            calls.append(len(items))
            return not bad.intersection(items)

        assert _bisect(list(range(n)), test) == [i for i in range(n) if i not in bad]
        return len(calls)

    # One offender among 64: about 2·log2(64) + 1 = 13 tests instead of 64.
    assert run(64, {37}) <= 13
    assert run(16, {3, 7, 8}) <= 2 * 3 * 4 + 1
    assert run(5, set()) == 1


# ---- identities (THEORY.md §4–5) ----------------------------------------------------------------


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _unflat(like, vec):
    leaves, treedef = jax.tree.flatten(like)
    out, i = [], 0
    for x in leaves:
        out.append(vec[i : i + x.size].reshape(x.shape))
        i += x.size
    return jax.tree.unflatten(treedef, out)


def _perturbed(p, seed, scale=0.3):
    r = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x) + scale * r.standard_normal(x.shape)), p
    )


def _derivatives(loss, p):
    """Jitted brute force at p (numpy results): g, the dense Hessian, (a, b) ↦ ∇³L[a, b]."""
    flat = jnp.asarray(_flat(p))

    def lf(v):
        return loss(_unflat(p, v))

    g = np.asarray(jax.jit(jax.grad(lf))(flat))
    H = np.asarray(jax.jit(jax.hessian(lf))(flat))

    @jax.jit
    def d3(a, b):  # ∇³L[a, b] = d/dε H(θ + εa) b
        return jax.jvp(lambda x: jax.jvp(jax.grad(lf), (x,), (b,))[1], (flat,), (a,))[1]

    return g, H, lambda a, b: np.asarray(d3(jnp.asarray(a), jnp.asarray(b)))


def test_scale_identities_hold_on_bn_model(bn):
    loss, p0, groups = bn
    p = _perturbed(p0, 5)  # a generic point, not the detection point
    g, H, d3 = _derivatives(loss, p)
    hscale = np.linalg.norm(H, 2)
    r = np.random.default_rng(0)
    u, v = r.standard_normal(g.size), r.standard_normal(g.size)
    grad_at = jax.jit(jax.grad(loss))
    c = 2.7
    for grp in (x for x in groups if x.kind == "scale"):
        m, w = _flat(grp.mask(p)), _flat(grp.embed(p))
        gw = m * g
        # w·g_w = 0, relative to ‖w‖‖g_w‖.
        assert abs(w @ gw) <= 1e-13 * np.linalg.norm(w) * np.linalg.norm(gw)
        # H ŵ = −(g_w, 0): the whole params-space vector, brute-force Hessian.
        assert np.linalg.norm(H @ w + gw) <= 1e-12 * hscale * np.linalg.norm(w)
        # g_w(cw) = g_w(w)/c (degree −1).
        pc = jax.tree.map(lambda x, mk: x * (1 + (c - 1) * mk), p, grp.mask(p))
        np.testing.assert_allclose(grp.take(grad_at(pc)), grp.take(grad_at(p)) / c, rtol=1e-11)
        # ∇³L[ŵ, u, v] = −u_w·(Hv)_w − (Hu)_w·v_w for random u, v.
        rhs = -(m * u) @ (H @ v) - (H @ u) @ (m * v)
        np.testing.assert_allclose(d3(w, u) @ v, rhs, rtol=1e-10)


def test_translation_identities_hold_on_bn_and_linear_models(bn):
    for loss, p0, groups in (bn, (*linear_model()[:2], None)):
        groups = groups or S.detect(loss, p0)
        p = _perturbed(p0, 7)
        g, H, d3 = _derivatives(loss, p)
        hscale, gscale = np.linalg.norm(H, 2), np.linalg.norm(g)
        v = np.random.default_rng(3).standard_normal(g.size)
        for grp in (x for x in groups if x.kind == "translation"):
            u = _flat(grp.direction(p))
            assert abs(np.linalg.norm(u) - 1.0) < 1e-15
            assert abs(u @ g) <= 1e-13 * gscale  # u·g = 0
            assert np.linalg.norm(H @ u) <= 1e-13 * hscale  # H u = 0
            # Every higher derivative vanishes along u: ∇³L[u, v] = 0 for a random v.
            assert np.linalg.norm(d3(u, v)) <= 1e-12 * hscale * np.linalg.norm(v)


def test_null_group_has_identically_zero_gradient(bn):
    loss, p0, groups = bn
    (null,) = [g for g in groups if g.kind == "null"]
    grad = jax.jit(jax.grad(loss))
    for seed in range(3):
        g = grad(_perturbed(p0, seed))
        assert np.linalg.norm(null.take(g)) <= 1e-14 * np.linalg.norm(_flat(g))


# ---- the Group object ---------------------------------------------------------------------------


def test_group_accessors_on_points_and_stacked_trajectories(bn):
    loss, p, groups = bn
    row = next(g for g in groups if g.kind == "scale" and g.index == 2)
    col = next(g for g in groups if g.kind == "translation" and g.axis == 1 and g.index == 1)
    np.testing.assert_array_equal(row.take(p), p["w1"][2])
    np.testing.assert_array_equal(col.take(p), p["w2"][:, 1])
    assert row.size == 3 and col.size == 3 and row.where == "[2, :]" and col.where == "[:, 1]"
    w2, w1 = np.asarray(p["w2"]), np.asarray(p["w1"])
    assert float(col.extract(p)) == pytest.approx(np.sum(w2[:, 1]) / np.sqrt(3), rel=1e-15)
    np.testing.assert_allclose(row.sq_norm(p), np.sum(w1[2] ** 2), rtol=1e-15)
    # mask / embed / direction live in params space.
    m = row.mask(p)
    assert np.sum(m["w1"]) == 3.0 and np.sum(m["w2"]) == 0.0
    np.testing.assert_allclose(np.linalg.norm(_flat(row.direction(p))), 1.0, rtol=1e-15)
    # Leading axes (a stacked trajectory) are carried through.
    stacked = jax.tree.map(lambda x: np.stack([x, 2 * x, 3 * x]), p)
    np.testing.assert_allclose(
        row.sq_norm(stacked), np.array([1, 4, 9]) * row.sq_norm(p), rtol=1e-14
    )
    assert col.extract(stacked).shape == (3,) and row.extract(stacked).shape == (3, 3)
    # Hashable and JSON-friendly.
    assert len(set(groups)) == len(groups)
    json.dumps([g.label for g in groups])


def test_group_errors_name_the_problem(bn):
    _, p, groups = bn
    row = next(g for g in groups if g.kind == "scale")
    with pytest.raises(EomError, match="structure"):
        row.take({"a": jnp.zeros(3)})
    with pytest.raises(EomError, match="kind"):
        S.Group("rotation", "x", 0, (2,))
    with pytest.raises(EomError, match="axis"):
        S.Group("scale", "x", 0, (2,), 0, 1)
    with pytest.raises(EomError, match="range"):
        S.Group("scale", "x", 0, (2, 3), 1, 3)
    with pytest.raises(EomError, match="single point"):
        row.mask(jax.tree.map(lambda x: x[None], p))


def test_largest_groups(bn):
    _, p, groups = bn
    top = S.largest_groups(groups, p, kind="scale", k=2)
    norms = {g: float(g.sq_norm(p)) for g in groups if g.kind == "scale"}
    assert list(top) == sorted(norms, key=norms.get, reverse=True)[:2]
    assert S.largest_groups(groups, p, kind="translation", k=10)[0].kind == "translation"
