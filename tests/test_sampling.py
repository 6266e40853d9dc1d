"""`ffjord.sample_within`: draws per condition, kept within a box, with a bounded effort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffjord


def shifted(context_dim: int = 0):
    """y = x + context (or x) for a standard normal x: exact marginals to test against."""

    class Shift(ffjord.AbstractBijector):
        def transform_flat(self, x, context, key, mode):
            offset = 0.0 if context is None else context
            y = x - offset if mode.inverse else x + offset
            return y, jnp.zeros(x.shape[:1], x.dtype), ffjord.SolveStats.zero()

        @property
        def dim(self):
            return 2

        @property
        def context_dim(self):
            return context_dim

    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, Shift())


def test_draws_lie_in_the_box_and_follow_the_truncated_law():
    y = ffjord.sample_within(
        shifted(), jax.random.key(0), 4000, low=[0.0, -1.0], high=[np.inf, 1.0]
    )
    assert y.shape == (4000, 2) and (y[:, 0] >= 0).all() and (np.abs(y[:, 1]) <= 1).all()
    # a half-normal's mean is sqrt(2 / pi); a normal truncated to [-1, 1] has mean 0
    assert abs(y[:, 0].mean() - np.sqrt(2 / np.pi)) < 0.03 and abs(y[:, 1].mean()) < 0.03


def test_each_condition_gets_its_own_draws():
    conditions = np.array([[0.0, 0.0], [5.0, -5.0], [-3.0, 2.0]], np.float32)
    y = ffjord.sample_within(shifted(2), jax.random.key(1), 2000, context=conditions)
    assert y.shape == (3, 2000, 2)
    np.testing.assert_allclose(y.mean(axis=1), conditions, atol=0.1)
    one = ffjord.sample_within(shifted(2), jax.random.key(1), 2000, context=conditions[1])
    assert one.shape == (2000, 2)


def test_a_box_the_model_misses_is_an_error_naming_the_share():
    conditions = np.array([[0.0, 0.0], [8.0, 0.0]], np.float32)  # the second: almost never
    with pytest.raises(ffjord.OutsideBox) as err:
        box = {"low": [-2, -2], "high": [2, 2], "region": "the prior's support"}
        ffjord.sample_within(
            shifted(2), jax.random.key(2), 100, context=conditions, max_draws=5, **box
        )
    assert str(err.value).startswith(
        "only 0% of the model's draws for condition 2 lie within the prior's support after "
    )
    assert err.value.acceptance == 0.0 and err.value.condition == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be a positive integer, got 0"),
        (
            {"n": 5, "low": [1, 1], "high": [0, 2], "context": np.zeros(2)},
            "the box needs low <= high in every column",
        ),
        ({"n": 5, "context": np.zeros(3)}, "context must have shape (k,) or (m, k) with k = 2"),
        ({"n": 5}, "the model is conditional (2 condition columns): give context="),
    ],
)
def test_bad_input_is_a_one_line_error(kwargs, message):
    with pytest.raises(ffjord.InputError) as err:
        ffjord.sample_within(shifted(2), jax.random.key(0), **kwargs)
    assert str(err.value).startswith(message)
