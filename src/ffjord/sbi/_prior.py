"""Priors over parameters: `BoxUniform` and `Independent` products of 1-D priors, each
with its support (the box a posterior's draws must stay in).

Any object with `sample(key, shape)` (draws of shape `(*shape, p)`) and `log_prob(theta)`
serves as a prior; `AbstractPrior` adds `dim` and `support`, which a posterior uses to
keep its draws inside.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ffjord import sbi
    >>> prior = sbi.BoxUniform(low=[-1.0, 0.0], high=[1.0, 5.0])
    >>> prior.sample(jax.random.key(0), (3,)).shape, prior.support
    ((3, 2), (array([-1.,  0.]), array([1., 5.])))
"""

import abc
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._distributions import MultivariateNormalDiag
from .._errors import InputError


class AbstractPrior(abc.ABC):
    """A prior over `dim` parameters with `sample`, `log_prob` and a `support` box.

    Example:
        >>> class HalfNormal(AbstractPrior):  # |N(0, 1)|: support [0, inf)
        ...     dim = 1
        ...     def sample(self, key, shape=()):
        ...         return jnp.abs(jax.random.normal(key, (*shape, 1)))
        ...     def log_prob(self, theta):
        ...         lp = jnp.log(2.0) + jax.scipy.stats.norm.logpdf(theta[..., 0])
        ...         return jnp.where(theta[..., 0] >= 0, lp, -jnp.inf)
        ...     @property
        ...     def support(self):
        ...         return np.array([0.0]), np.array([np.inf])
        >>> HalfNormal().support[0]
        array([0.])
    """

    dim: int

    @abc.abstractmethod
    def sample(self, key, shape: tuple[int, ...] = ()) -> Any:
        """Draws of shape `(*shape, dim)`."""

    @abc.abstractmethod
    def log_prob(self, theta) -> Any:
        """Log densities of shape `(...)` of `theta` of shape `(..., dim)`."""

    @property
    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each of shape `(dim,)`: where the density is positive (infinite
        bounds for unbounded parameters; by default all of them)."""
        return np.full(self.dim, -np.inf), np.full(self.dim, np.inf)


def _bounds(value, name: str) -> np.ndarray:
    a = np.atleast_1d(np.asarray(value, dtype=float))
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise InputError(f"{name} must be finite numbers, one per parameter", parameters=(name,))
    return a


class BoxUniform(AbstractPrior):
    """Uniform on the box `low <= theta <= high` (one bound per parameter).

    Example:
        >>> prior = BoxUniform(low=[0.0, 0.0], high=[2.0, 4.0])
        >>> prior.log_prob(jnp.array([[1.0, 1.0], [3.0, 1.0]])).round(4).tolist()  # log 1/8
        [-2.0794, -inf]
    """

    def __init__(self, low, high):
        low, high = _bounds(low, "low"), _bounds(high, "high")
        if low.shape != high.shape or np.any(low >= high):
            raise InputError(
                f"BoxUniform needs low < high in every column, got low {low.tolist()} and "
                f"high {high.tolist()}",
                parameters=("low", "high"),
            )
        self.low, self.high = low, high
        self.dim = len(low)

    def sample(self, key, shape: tuple[int, ...] = ()):
        return jax.random.uniform(
            key, (*shape, self.dim), minval=jnp.asarray(self.low), maxval=jnp.asarray(self.high)
        )

    def log_prob(self, theta):
        theta = jnp.asarray(theta)
        inside = jnp.all((theta >= self.low) & (theta <= self.high), axis=-1)
        log_volume = float(np.sum(np.log(self.high - self.low)))
        return jnp.where(inside, -log_volume, -jnp.inf)

    @property
    def support(self) -> tuple[np.ndarray, np.ndarray]:
        return self.low.copy(), self.high.copy()


def _part_dim(part) -> int:
    if isinstance(part, AbstractPrior):
        return part.dim
    if isinstance(part, MultivariateNormalDiag):
        return part.dim
    raise InputError(
        "Independent takes priors (ffjord.sbi.BoxUniform, ffjord.MultivariateNormalDiag, "
        f"an AbstractPrior), got {type(part).__name__}",
        parameters=("parts",),
    )


class Independent(AbstractPrior):
    """The product of priors over consecutive parameter columns.

    Example:
        >>> prior = Independent([BoxUniform([0.0], [1.0]),
        ...                      ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))])
        >>> prior.dim, prior.support
        (2, (array([  0., -inf]), array([ 1., inf])))
    """

    def __init__(self, parts: Sequence[Any]):
        if len(parts) == 0:
            raise InputError("Independent needs at least one prior", parameters=("parts",))
        self.parts = list(parts)
        self.dims = [_part_dim(p) for p in self.parts]
        self.dim = int(sum(self.dims))

    def sample(self, key, shape: tuple[int, ...] = ()):
        keys = jax.random.split(key, len(self.parts))
        return jnp.concatenate(
            [p.sample(k, tuple(shape)) for p, k in zip(self.parts, keys, strict=True)], axis=-1
        )

    def log_prob(self, theta):
        theta = jnp.asarray(theta)
        edges = np.cumsum([0, *self.dims])
        return sum(
            p.log_prob(theta[..., a:b])
            for p, a, b in zip(self.parts, edges[:-1], edges[1:], strict=True)
        )

    @property
    def support(self) -> tuple[np.ndarray, np.ndarray]:
        boxes = [support_of(p, d) for p, d in zip(self.parts, self.dims, strict=True)]
        return np.concatenate([b[0] for b in boxes]), np.concatenate([b[1] for b in boxes])


def support_of(prior, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of `prior` over `dim` parameters: an `AbstractPrior`'s own support,
    else unbounded."""
    if isinstance(prior, AbstractPrior):
        low, high = prior.support
        return np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return np.full(dim, -np.inf), np.full(dim, np.inf)
