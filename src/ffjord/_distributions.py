"""Distributions: a diagonal Gaussian base and the transformed (flow) distribution."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._bijector import AbstractBijector, SolveStats, check_points


def _shape_tuple(sample_shape) -> tuple[int, ...]:
    if isinstance(sample_shape, int):
        sample_shape = (sample_shape,)
    shape = tuple(sample_shape)
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in shape):
        raise ValueError(f"sample_shape must be a tuple of non-negative integers, got {shape}")
    return tuple(int(s) for s in shape)


class MultivariateNormalDiag(eqx.Module):
    """A Gaussian with independent coordinates: mean `loc`, standard deviations `scale_diag`.

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), 0.8 * jnp.ones(2))
        >>> base.log_prob(jnp.zeros((3, 2))).shape
        (3,)
    """

    loc: Float[Array, " d"]
    scale_diag: Float[Array, " d"]

    def __init__(self, loc, scale_diag):
        loc = jnp.asarray(loc)
        scale = jnp.asarray(scale_diag)
        dtype = jnp.result_type(loc.dtype, scale.dtype, float)
        loc, scale = loc.astype(dtype), scale.astype(dtype)
        if loc.ndim != 1:
            raise ValueError(f"loc must be a vector of shape (d,), got shape {loc.shape}")
        if scale.shape != loc.shape:
            raise ValueError(
                f"scale_diag must have the shape of loc {loc.shape}, got shape {scale.shape}"
            )
        try:
            s, m = np.asarray(scale), np.asarray(loc)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            pass  # traced (e.g. inside jit): nothing to check yet
        else:
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
                raise ValueError("loc and scale_diag must be finite")
            if not np.all(s > 0):
                raise ValueError(f"scale_diag must be positive, got {s.tolist()}")
        self.loc = loc
        self.scale_diag = scale

    @property
    def dim(self) -> int:
        return self.loc.shape[0]

    def log_prob(self, x: Array) -> Array:
        """Log-density of points `x` of shape `(..., d)`; result of shape `(...)`."""
        x = jnp.asarray(x)
        check_points(x, self.dim, "x")
        u = (x - self.loc) / self.scale_diag
        log_norm = jnp.sum(jnp.log(self.scale_diag)) + 0.5 * self.dim * math.log(2 * math.pi)
        return -0.5 * jnp.sum(u**2, axis=-1) - log_norm

    def sample(self, key: PRNGKeyArray, sample_shape=()) -> Array:
        """Draw samples of shape `sample_shape + (d,)`."""
        shape = _shape_tuple(sample_shape) + (self.dim,)
        eps = jax.random.normal(key, shape, dtype=self.loc.dtype)
        return self.loc + self.scale_diag * eps

    def entropy(self) -> Array:
        """Differential entropy in nats."""
        return jnp.sum(jnp.log(self.scale_diag)) + 0.5 * self.dim * (1 + math.log(2 * math.pi))


class TransformedDistribution(eqx.Module):
    """The distribution of `bijector.forward(x)` for `x` drawn from `base`.

    `log_prob(y) = base.log_prob(x) + log|det dinverse/dy|` with `x = inverse(y)`.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> flows = [ffjord.FFJORD(field), ffjord.Affine(jnp.zeros(2), 2 * jnp.ones(2))]
        >>> dist = ffjord.TransformedDistribution(base, ffjord.Chain(flows))
        >>> dist.log_prob(jnp.zeros((5, 2))).shape
        (5,)
        >>> dist.sample(jax.random.key(1), (100,)).shape
        (100, 2)
    """

    base: MultivariateNormalDiag
    bijector: AbstractBijector

    def __check_init__(self):
        d = self.bijector.dim
        if d is not None and d != self.base.dim:
            raise ValueError(
                f"the base distribution is {self.base.dim}-dimensional but the bijector is "
                f"{d}-dimensional"
            )

    @property
    def dim(self) -> int:
        return self.base.dim

    def log_prob_with_stats(
        self, y: Array, *, context: Array | None = None, key: PRNGKeyArray | None = None
    ) -> tuple[Array, SolveStats]:
        """`log_prob(y)` and the solver statistics of its solve."""
        y = jnp.asarray(y)
        check_points(y, self.dim, "y")
        x, ildj, stats = self.bijector.inverse_with_stats(y, context=context, key=key)
        return self.base.log_prob(x) + ildj, stats

    def log_prob_with_regularizers(
        self,
        y: Array,
        *,
        context: Array | None = None,
        key: PRNGKeyArray | None = None,
        frobenius: bool = True,
    ) -> tuple[Array, Array, Array, SolveStats]:
        r"""`log_prob(y)`, and RNODE's integrals along each point's path, from the same solve.

        Returns `(log_prob, kinetic, frobenius, stats)`, the middle two of shape `(...)`:
        the kinetic energy $\int \lVert f \rVert^2 dt$ and the Jacobian's squared Frobenius
        norm $\int \lVert \partial f / \partial z \rVert_F^2 dt$, summed over blocks.
        The Frobenius norm is exact with `ExactTrace` and Hutchinson's estimate from the
        solve's own probes with `HutchinsonTrace`; `frobenius=False` skips it (zeros),
        which keeps a field's cheap closed-form divergence.

        Example:
            >>> import jax, jax.numpy as jnp, ffjord
            >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
            >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
            >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
            >>> lp, kinetic, frob, stats = dist.log_prob_with_regularizers(jnp.ones((5, 2)))
            >>> loss = -lp.mean() + 0.01 * kinetic.mean() + 0.01 * frob.mean()
            >>> lp.shape, kinetic.shape, frob.shape
            ((5,), (5,), (5,))
        """
        y = jnp.asarray(y)
        check_points(y, self.dim, "y")
        x, ildj, stats = self.bijector.transform(
            y,
            context=context,
            key=key,
            inverse=True,
            throw=False,
            regularize="all" if frobenius else "kinetic",
        )
        assert stats.kinetic is not None and stats.jacobian_frobenius is not None
        return self.base.log_prob(x) + ildj, stats.kinetic, stats.jacobian_frobenius, stats

    def log_prob(
        self, y: Array, *, context: Array | None = None, key: PRNGKeyArray | None = None
    ) -> Array:
        """Log-density of points `y` of shape `(..., d)` (exact, or unbiased with Hutchinson)."""
        return self.log_prob_with_stats(y, context=context, key=key)[0]

    def _base_shape(self, sample_shape, context) -> tuple[int, ...]:
        shape = _shape_tuple(sample_shape)
        if context is not None:
            shape = shape + tuple(jnp.shape(context)[:-1])
        return shape

    def sample(self, key: PRNGKeyArray, sample_shape=(), *, context: Array | None = None) -> Array:
        """Draw samples of shape `sample_shape + context batch shape + (d,)`."""
        base_key, _ = jax.random.split(key)  # the same draws as sample_and_log_prob
        x = self.base.sample(base_key, self._base_shape(sample_shape, context))
        return self.bijector.forward(x, context=context)

    def sample_and_log_prob(
        self, key: PRNGKeyArray, sample_shape=(), *, context: Array | None = None
    ) -> tuple[Array, Array]:
        """Samples and their log-densities, from one forward solve."""
        y, lp, _ = self._sample_and_log_prob(key, sample_shape, context, throw=True)
        return y, lp

    def sample_and_log_prob_with_stats(
        self, key: PRNGKeyArray, sample_shape=(), *, context: Array | None = None
    ) -> tuple[Array, Array, SolveStats]:
        """`sample_and_log_prob` plus the solver statistics; never raises on a failed solve
        (check `stats.failed`)."""
        return self._sample_and_log_prob(key, sample_shape, context, throw=False)

    def _sample_and_log_prob(self, key, sample_shape, context, *, throw: bool):
        base_key, trace_key = jax.random.split(key)
        x = self.base.sample(base_key, self._base_shape(sample_shape, context))
        y, ldj, stats = self.bijector.transform(x, context=context, key=trace_key, throw=throw)
        return y, self.base.log_prob(x) - ldj, stats
