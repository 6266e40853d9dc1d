"""Chain, the base distribution, the transformed distribution and gradients."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import ffjord

TIGHT = dict(rtol=1e-9, atol=1e-11)


def make_blocks(key, n, hidden=8, **kw):
    keys = jax.random.split(key, n)
    return [ffjord.FFJORD(ffjord.MLPField(2, hidden, 3, key=k), **kw) for k in keys]


def test_chain_applies_list_in_order(getkey):
    f1, f2 = make_blocks(getkey(), 2, **TIGHT)
    x = jax.random.normal(getkey(), (5, 2))
    chain = ffjord.Chain([f1, f2])
    y, ldj = chain.forward_and_log_det(x)
    y1, l1 = f1.forward_and_log_det(x)
    y2, l2 = f2.forward_and_log_det(y1)
    np.testing.assert_allclose(y, y2, atol=1e-10)
    np.testing.assert_allclose(ldj, l1 + l2, atol=1e-10)
    x_back, ildj = chain.inverse_and_log_det(y)
    np.testing.assert_allclose(x_back, x, atol=1e-8)
    np.testing.assert_allclose(ildj, -ldj, atol=1e-8)
    # Order matters: the reversed chain is a different map.
    assert not np.allclose(ffjord.Chain([f2, f1]).forward(x), y, atol=1e-4)


def test_scanned_and_looped_chains_agree(getkey):
    same = make_blocks(getkey(), 3, **TIGHT)  # same structure: scanned
    odd = make_blocks(getkey(), 1, hidden=5, **TIGHT)  # breaks homogeneity: looped
    x = jax.random.normal(getkey(), (4, 2))
    chain_scan = ffjord.Chain(same)
    chain_loop = ffjord.Chain(same + odd)
    expected = odd[0].forward_and_log_det(chain_scan.forward(x))
    y, ldj, stats = chain_loop.forward_with_stats(x)
    np.testing.assert_allclose(y, expected[0], atol=1e-9)
    _, scan_ldj, scan_stats = chain_scan.forward_with_stats(x)
    np.testing.assert_allclose(ldj, scan_ldj + expected[1], atol=1e-9)
    assert int(stats.num_steps) > int(scan_stats.num_steps) > 0


def test_chain_rejects_mixed_dimensions(getkey):
    f2 = ffjord.FFJORD(ffjord.MLPField(2, 8, 2, key=getkey()))
    f3 = ffjord.FFJORD(ffjord.MLPField(3, 8, 2, key=getkey()))
    with pytest.raises(ValueError, match="different dimensions"):
        ffjord.Chain([f2, f3])
    with pytest.raises(ValueError, match="at least one"):
        ffjord.Chain([])


def test_normal_matches_scipy(getkey):
    loc, scale = jnp.array([0.5, -1.0]), jnp.array([0.8, 2.0])
    base = ffjord.MultivariateNormalDiag(loc, scale)
    x = jax.random.normal(getkey(), (6, 2))
    expected = scipy.stats.multivariate_normal(loc, np.diag(scale**2)).logpdf(x)
    np.testing.assert_allclose(base.log_prob(x), expected, rtol=1e-12)
    s = base.sample(getkey(), (20000,))
    assert s.shape == (20000, 2)
    np.testing.assert_allclose(s.mean(0), loc, atol=0.05)
    np.testing.assert_allclose(s.std(0), scale, rtol=0.03)
    np.testing.assert_allclose(
        base.entropy(), scipy.stats.multivariate_normal(loc, np.diag(scale**2)).entropy()
    )


@pytest.mark.parametrize(
    "loc,scale,message",
    [
        (jnp.zeros(2), jnp.array([1.0, 0.0]), "scale_diag must be positive"),
        (jnp.zeros(2), jnp.ones(3), "scale_diag must have the shape of loc"),
        (jnp.zeros((2, 2)), jnp.ones((2, 2)), "loc must be a vector"),
        (jnp.array([0.0, jnp.nan]), jnp.ones(2), "must be finite"),
    ],
)
def test_normal_rejects_bad_parameters(loc, scale, message):
    with pytest.raises(ValueError, match=message):
        ffjord.MultivariateNormalDiag(loc, scale)


def tutorial_dist(key, n_blocks=2, **kw):
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), 0.8 * jnp.ones(2))
    return ffjord.TransformedDistribution(base, ffjord.Chain(make_blocks(key, n_blocks, **kw)))


def test_log_prob_integrates_to_one(getkey):
    dist = tutorial_dist(getkey(), rtol=1e-6, atol=1e-8)
    lin = jnp.linspace(-5, 5, 161)
    grid = jnp.stack(jnp.meshgrid(lin, lin), -1).reshape(-1, 2)
    mass = jnp.sum(jnp.exp(dist.log_prob(grid))) * (lin[1] - lin[0]) ** 2
    np.testing.assert_allclose(mass, 1.0, atol=2e-3)


def test_sample_and_log_prob_consistent(getkey):
    dist = tutorial_dist(getkey(), **TIGHT)
    key = getkey()
    y, lp = dist.sample_and_log_prob(key, (3, 5))
    assert y.shape == (3, 5, 2) and lp.shape == (3, 5)
    np.testing.assert_allclose(dist.log_prob(y), lp, atol=1e-7)
    np.testing.assert_allclose(dist.sample(key, (3, 5)), y, atol=1e-10)
    # Samples of the model follow its density: E[-log p] over samples ~ entropy via MC.
    assert dist.sample(getkey(), 7).shape == (7, 2)


def test_transformed_distribution_dimension_checks(getkey):
    dist = tutorial_dist(getkey())
    with pytest.raises(ValueError, match="y has dimension 3"):
        dist.log_prob(jnp.ones((4, 3)))
    base3 = ffjord.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match="base distribution is 3-dimensional"):
        ffjord.TransformedDistribution(base3, dist.bijector)
    with pytest.raises(ValueError, match="sample_shape"):
        dist.sample(getkey(), (-1,))


@pytest.mark.parametrize("checkpoints", [None, pytest.param(2, marks=pytest.mark.slow)])
def test_backsolve_gradients_match_backpropagation(getkey, checkpoints):
    """The backsolve adjoint and backpropagation through the solver (with every default
    checkpoint, or only 2 and recomputation) give the same parameter gradients."""
    key, y = getkey(), jax.random.normal(getkey(), (16, 2))
    grads = []
    for adjoint in (
        diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints),
        diffrax.BacksolveAdjoint(),
    ):
        dist = tutorial_dist(key, rtol=1e-10, atol=1e-12, adjoint=adjoint)
        params, static = eqx.partition(dist, eqx.is_inexact_array)
        g = jax.jit(jax.grad(lambda p, s=static: -jnp.mean(eqx.combine(p, s).log_prob(y))))(params)
        grads.append(np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)]))
    assert np.linalg.norm(grads[0]) > 1e-3  # a real gradient
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "adjoint",
    [
        diffrax.RecursiveCheckpointAdjoint(),
        pytest.param(diffrax.BacksolveAdjoint(), marks=pytest.mark.slow),  # 15-20 s
    ],
)
def test_parameter_gradients_match_finite_differences(getkey, adjoint):
    dist = tutorial_dist(getkey(), rtol=1e-10, atol=1e-12, adjoint=adjoint)
    y = jax.random.normal(getkey(), (8, 2))
    params, static = eqx.partition(dist, eqx.is_inexact_array)

    @jax.jit  # six evaluations of one program
    def loss(p):
        return -jnp.mean(eqx.combine(p, static).log_prob(y))

    grads = jax.grad(loss)(params)
    for _ in range(3):
        leaves, treedef = jax.tree.flatten(params)
        direction = [jax.random.normal(getkey(), leaf.shape) for leaf in leaves]
        v = jax.tree.unflatten(treedef, direction)
        plus = jax.tree.map(lambda p, d: p + 1e-5 * d, params, v)
        minus = jax.tree.map(lambda p, d: p - 1e-5 * d, params, v)
        fd = (loss(plus) - loss(minus)) / 2e-5
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), direction, strict=True)
        )
        np.testing.assert_allclose(analytic, fd, rtol=1e-5)
