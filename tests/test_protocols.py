"""The model layer's declared interfaces: vector fields, transform(), frozen bijectors."""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffjord

TIGHT = dict(rtol=1e-10, atol=1e-12)


def test_a_plain_callable_field_gives_the_mlp_fields_density(getkey):
    mlp = ffjord.MLPField(2, 8, 3, key=getkey())
    plain = ffjord.FFJORD(lambda t, z, context: mlp(t, z, context), **TIGHT)
    assert isinstance(plain.field, ffjord.CallableField) and plain.dim is None
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    y = jax.random.normal(getkey(), (5, 2))
    lp_plain = eqx.filter_jit(ffjord.TransformedDistribution(base, plain).log_prob)(y)
    lp_mlp = eqx.filter_jit(
        ffjord.TransformedDistribution(base, ffjord.FFJORD(mlp, **TIGHT)).log_prob
    )(y)
    np.testing.assert_allclose(lp_plain, lp_mlp, rtol=1e-12)
    # The adapter's divergence is the trace of the brute-force Jacobian ...
    z = y[0]
    dz, div = plain.field.value_and_divergence(0.4, z, None)
    np.testing.assert_allclose(dz, mlp(0.4, z, None), rtol=1e-14)
    np.testing.assert_allclose(div, jnp.trace(jax.jacobian(lambda u: mlp(0.4, u))(z)), rtol=1e-12)
    # ... and the flow's log-determinant that of the brute-force Jacobian of its map.
    jacobian, log_det = (
        eqx.filter_jit(jax.jacobian(plain.forward)),
        eqx.filter_jit(plain.forward_log_det_jacobian),
    )
    for x in y[:2]:
        np.testing.assert_allclose(log_det(x), jnp.linalg.slogdet(jacobian(x))[1], rtol=1e-8)


def test_callable_field_declares_its_dimensions():
    field = ffjord.CallableField(lambda t, z, context: -z, dim=3, context_dim=0)
    flow = ffjord.FFJORD(field)
    assert flow.dim == 3 and flow.context_dim == 0 and flow.field is field
    assert ffjord.for_inference(flow).field is field  # no faster form: itself
    with pytest.raises(ValueError, match="the flow is 3-dimensional"):
        flow.forward(jnp.ones(2))
    with pytest.raises(ValueError, match="dim must be None or an integer >= 1, got 0"):
        ffjord.CallableField(lambda t, z, context: z, dim=0)


def _blocks(key, n):
    keys = jax.random.split(key, n)
    return [ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=k), **TIGHT) for k in keys]


@pytest.mark.parametrize("regularize", [None, "kinetic", "all"])
def test_log_det_has_the_batch_shape_with_and_without_regularisers(getkey, regularize):
    bijector = ffjord.Chain(
        [*_blocks(getkey(), 1), ffjord.Affine(jnp.ones(2), 2 * jnp.ones(2)), ffjord.UnitInterval(2)]
    )
    x = 0.5 * jax.random.normal(getkey(), (3, 4, 2))
    y, ld, stats = bijector.transform(x, regularize=regularize)
    assert y.shape == (3, 4, 2) and ld.shape == (3, 4)
    plain_ld = bijector.forward_log_det_jacobian(x)
    np.testing.assert_allclose(ld, plain_ld, rtol=1e-9)
    if regularize is None:
        assert stats.kinetic is None and stats.jacobian_frobenius is None
    else:
        assert stats.kinetic is not None and stats.jacobian_frobenius is not None
        assert stats.kinetic.shape == stats.jacobian_frobenius.shape == (3, 4)
        assert bool(jnp.all(stats.kinetic > 0))
        assert bool(jnp.all(stats.jacobian_frobenius > 0)) == (regularize == "all")
    # A map without dynamics: zero integrals, same shapes.
    affine = ffjord.Affine(jnp.zeros(2), 3 * jnp.ones(2))
    _, ld, stats = affine.transform(x, regularize=regularize)
    assert ld.shape == (3, 4)
    if regularize is not None:
        assert stats.kinetic is not None and float(jnp.abs(stats.kinetic).max()) == 0.0


def test_regularisers_sum_over_blocks_whatever_the_chain(getkey):
    """The integrals of a chain are the sums of its blocks' own ones, whether the chain
    scans over stacked blocks, loops over mixed ones, or solves point by point."""
    blocks = _blocks(getkey(), 2)
    affine = ffjord.Affine(jnp.array([0.1, -0.2]), jnp.array([1.5, 0.5]))
    y = jax.random.normal(getkey(), (6, 2))

    def integrals(bijector, points):
        x, ld, stats = bijector.transform(points, inverse=True, regularize="all")
        return x, ld, stats.kinetic, stats.jacobian_frobenius

    # Block by block, data to base: the last block first.
    z, *parts = integrals(affine, y)
    sums = [np.asarray(p) for p in parts]
    for block in blocks[::-1]:
        z, *parts = integrals(block, z)
        sums = [s + np.asarray(p) for s, p in zip(sums, parts, strict=True)]
    scanned = integrals(ffjord.Chain([ffjord.Chain(blocks), affine]), y)
    looped = integrals(ffjord.Chain([blocks[0], blocks[1], affine]), y)
    one_by_one = [ffjord.FFJORD(b.field, per_point=True, **TIGHT) for b in blocks]
    per_point = integrals(ffjord.Chain([*one_by_one, affine]), y)
    for result in (scanned, looped):
        np.testing.assert_allclose(result[0], z, rtol=1e-12)
        for got, want in zip(result[1:], sums, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12)
    for got, want in zip(per_point[1:], sums, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)  # own steps per point
    # The distribution's RNODE terms are these integrals.
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain([*blocks, affine]))
    lp, kinetic, frobenius, _ = dist.log_prob_with_regularizers(y)
    np.testing.assert_allclose(kinetic, sums[1], rtol=1e-12)
    np.testing.assert_allclose(frobenius, sums[2], rtol=1e-12)
    np.testing.assert_allclose(lp, dist.log_prob(y), rtol=1e-10)


class Shift(ffjord.AbstractBijector):
    """A bijector only this test knows: a fixed translation."""

    offset: jax.Array

    frozen: ClassVar[bool] = True

    @property
    def dim(self) -> int:
        return self.offset.shape[0]

    @property
    def context_dim(self) -> int:
        return 0

    def transform_flat(self, x, context, key, mode):
        y = x - self.offset if mode.inverse else x + self.offset
        return y, jnp.zeros(x.shape[:1], x.dtype), ffjord.SolveStats.zero()


class LearnedShift(Shift):
    frozen: ClassVar[bool] = False


def _model(key, around):
    flow = ffjord.FFJORD(
        ffjord.MLPField(2, 8, 2, key=key),
        solver=diffrax.Euler(),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=0.25,
    )
    bijector = ffjord.Chain([around(jnp.array([1.0, -1.0])), flow, around(jnp.array([0.5, 0.5]))])
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, bijector)


@pytest.mark.parametrize("objective", [ffjord.MaximumLikelihood(), ffjord.FlowMatching()])
def test_a_new_frozen_bijector_stays_fixed_in_training(getkey, objective):
    dist = _model(getkey(), Shift)
    data = np.asarray(jax.random.normal(getkey(), (256, 2)) + 2.0)
    trained, _ = ffjord.fit(
        getkey(), dist, data, objective=objective, epochs=2, batch_size=64, show_progress=False
    )
    before, after = dist.bijector.bijectors, trained.bijector.bijectors
    for i in (0, 2):
        np.testing.assert_array_equal(after[i].offset, before[i].offset)
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(before[1].field), jax.tree.leaves(after[1].field), strict=True
        )
    ]
    assert any(moved)


def test_flow_matching_refuses_a_trainable_map_around_its_block(getkey):
    with pytest.raises(ffjord.InputError, match="fixed maps .* got LearnedShift, LearnedShift"):
        ffjord.FlowMatching().check(_model(getkey(), LearnedShift))
