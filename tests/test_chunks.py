"""Chunked evaluation: exact results for any number of points, one compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffjord._chunks import map_chunks


def test_chunks_give_the_unchunked_result_for_any_size():
    traces = []

    @jax.jit
    def f(scale, x):
        traces.append(x.shape)
        return scale * jnp.stack([x.sum(axis=1), x[:, 0] - x[:, 1]], axis=1)

    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5, 13, 64):
        x = rng.normal(size=(n, 2))
        out = map_chunks(f, x, 4, 2.0)
        expected = 2.0 * np.stack([x.sum(axis=1), x[:, 0] - x[:, 1]], axis=1)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert traces == [(4, 2)]  # one shape, traced once, shared by the threads


def test_no_points_is_an_error():
    with pytest.raises(ValueError, match="at least one point"):
        map_chunks(jax.jit(lambda x: x), np.zeros((0, 2)), 4)
