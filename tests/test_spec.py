"""Model descriptions: every ffjord part survives describe -> build unchanged."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import ffjord
from ffjord._spec import build, describe


def models(key):
    k = jax.random.split(key, 4)
    base2 = ffjord.MultivariateNormalDiag(jnp.array([0.5, -1.0]), jnp.array([0.8, 1.5]))
    yield ffjord.TransformedDistribution(base2, ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=k[0])))
    field = ffjord.MLPField(3, 16, 4, context_dim=2, activation="silu", key=k[1])
    flow = ffjord.FFJORD(
        field,
        trace=ffjord.HutchinsonTrace(num_samples=2, noise="gaussian"),
        solver=diffrax.Tsit5(),
        rtol=1e-4,
        atol=1e-6,
        t0=0.5,
        t1=2.0,
        dt0=0.1,
        max_steps=77,
        adjoint=diffrax.BacksolveAdjoint(),
        per_point=True,
    )
    affine = ffjord.Affine(jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 2.0, 4.0]))
    base3 = ffjord.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
    yield ffjord.TransformedDistribution(base3, ffjord.Chain([flow, affine]))
    blocks = [ffjord.FFJORD(ffjord.MLPField(2, 4, 2, activation="softplus", key=q)) for q in k[2:]]
    yield ffjord.TransformedDistribution(
        base2, ffjord.Chain([ffjord.Chain(blocks), ffjord.Affine(jnp.ones(2), jnp.ones(2))])
    )


@pytest.mark.parametrize("index", [0, 1, 2])
def test_describe_then_build_gives_the_same_model(getkey, index):
    dist = list(models(getkey()))[index]
    spec = describe(dist)
    rebuilt = build(spec)
    assert describe(rebuilt) == spec
    static = lambda m: eqx.filter(m, lambda x: not eqx.is_array(x))  # noqa: E731
    assert eqx.tree_equal(static(rebuilt), static(dist))
    shapes = lambda m: [x.shape for x in jax.tree.leaves(eqx.filter(m, eqx.is_array))]  # noqa: E731
    assert shapes(rebuilt) == shapes(dist)
    # The fixed arrays (base, Affine maps) come back exactly; trainable ones are re-drawn.
    assert eqx.tree_equal(rebuilt.base, dist.base)


def test_a_custom_part_has_no_description(getkey):
    class Field(eqx.Module):
        def __call__(self, t, z, context):
            return -z

    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    assert describe(ffjord.TransformedDistribution(base, ffjord.FFJORD(Field()))) is None


def test_a_corrupt_description_is_an_input_error():
    with pytest.raises(ffjord.InputError, match="model description is incomplete or corrupt"):
        build({"base": {"loc": [0.0]}, "bijector": {"type": "Mystery"}})


class Shift(ffjord.AbstractBijector):
    """A user's own bijector that declares a description: saved and rebuilt like ours."""

    offset: float = eqx.field(static=True)
    config_type = "TestShift"

    def to_config(self) -> dict:
        return {"type": "TestShift", "offset": self.offset}

    @classmethod
    def from_config(cls, config, keys):
        return cls(config["offset"])

    def transform_flat(self, x, context, key, mode):
        zero = jnp.zeros(x.shape[:1], x.dtype)
        return x + (-self.offset if mode.inverse else self.offset), zero, ffjord.SolveStats.zero()


def test_a_part_that_declares_config_type_is_described_and_rebuilt(getkey):
    field = ffjord.MLPField(2, 8, 3, key=getkey())
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain([ffjord.FFJORD(field), Shift(3.0)]))
    spec = describe(dist)
    assert spec["bijector"]["bijectors"][1] == {"type": "TestShift", "offset": 3.0}
    rebuilt = build(spec, jax.random.key(0))
    rebuilt = eqx.tree_at(lambda d: d.bijector.bijectors[0].field, rebuilt, field)
    y = jnp.array([[0.5, -1.0], [2.0, 3.0]])
    assert jnp.allclose(rebuilt.log_prob(y), dist.log_prob(y), atol=1e-6)
    assert describe(rebuilt) == spec


def test_an_unknown_part_type_is_an_input_error():
    spec = {"base": {"loc": [0.0], "scale_diag": [1.0]}, "bijector": {"type": "Nope"}}
    with pytest.raises(ffjord.InputError, match="unknown bijector type 'Nope'"):
        build(spec)
