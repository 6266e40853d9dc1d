"""A built-in simulator with a known posterior, for conditional flows and simulation-based
inference: `ffjord train --data arcs`.

`arcs`: parameters `theta ~ N(0, I_2)`; observations
`x = (|theta| + 0.1 e1, theta_1 + 0.5 e2)` with `e ~ N(0, I_2)`. Given `x`, the posterior
`p(theta | x)` lies on the ring `|theta| ~ x_1`, where `theta_1 ~ x_2`: two arcs, mirror
images across the `theta_1` axis. Its density is known up to a constant, and normalised
here on a fine grid, which also gives exact reference draws.

The same model as a prior and a simulator for `ffjord.sbi.simulate`: `prior()` and
`simulator(key, theta)`.

Example:
    >>> import jax
    >>> from ffjord import sbi, simulators
    >>> theta, x = sbi.simulate(jax.random.key(0), simulators.prior(), simulators.simulator, 100)
    >>> theta.shape, x.shape
    ((100, 2), (100, 2))
    >>> theta, x = simulators.simulate(1000, seed=0)
    >>> theta.shape, x.shape
    ((1000, 2), (1000, 2))
    >>> draws = simulators.posterior_sample(np.array([1.5, 0.5]), 500, seed=1)
    >>> bool(abs(np.linalg.norm(draws, axis=1).mean() - 1.5) < 0.1)
    True
"""

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "CONDITIONAL_DATASETS",
    "THETA_DIM",
    "X_DIM",
    "prior",
    "simulator",
    "simulate",
    "posterior_log_prob",
    "posterior_sample",
]

CONDITIONAL_DATASETS: tuple[str, ...] = ("arcs",)
THETA_DIM = 2  # parameters: the flow's variable
X_DIM = 2  # observations: the condition
SHOWN_OBSERVATIONS = ((1.0, 0.0), (1.5, 1.2), (2.0, -0.8), (2.5, 0.3))  # in the figures
RADIUS_NOISE = 0.1
COORDINATE_NOISE = 0.5
_GRID_HALF_WIDTH = 4.5  # the grid covers [-4.5, 4.5]^2: the prior's mass beyond is < 1e-4
_GRID_POINTS = 721  # cell 0.0125: eight cells per standard deviation of |theta|


def simulate(n: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """`n` pairs `(theta, x)` drawn from the prior and the simulator (float32).

    Example:
        >>> theta, x = simulate(1000, seed=0)
        >>> theta.shape, x.shape, str(x.dtype)
        ((1000, 2), (1000, 2), 'float32')
    """
    rng = np.random.default_rng([seed, 0xA2C5])
    theta = rng.standard_normal((n, THETA_DIM))
    noise = rng.standard_normal((n, X_DIM))
    x = np.stack(
        [
            np.linalg.norm(theta, axis=1) + RADIUS_NOISE * noise[:, 0],
            theta[:, 0] + COORDINATE_NOISE * noise[:, 1],
        ],
        axis=1,
    )
    return theta.astype(np.float32), x.astype(np.float32)


def prior():
    """The parameters' prior, N(0, I_2), as an `ffjord.MultivariateNormalDiag`.

    Example:
        >>> import jax
        >>> prior().sample(jax.random.key(0), (5,)).shape
        (5, 2)
    """
    import jax.numpy as jnp

    from ._distributions import MultivariateNormalDiag

    return MultivariateNormalDiag(jnp.zeros(THETA_DIM), jnp.ones(THETA_DIM))


def simulator(key, theta):
    """Observations `x` (n, 2) of parameters `theta` (n, 2), with the noise of `key`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = simulator(jax.random.key(0), jnp.array([[3.0, 4.0]]))
        >>> bool(abs(x[0, 0] - 5.0) < 0.5)  # |theta| = 5, observed with noise 0.1
        True
    """
    import jax
    import jax.numpy as jnp

    theta = jnp.asarray(theta)
    noise = jax.random.normal(key, (*theta.shape[:-1], X_DIM), theta.dtype)
    radius = jnp.linalg.norm(theta, axis=-1)
    return jnp.stack(
        [radius + RADIUS_NOISE * noise[..., 0], theta[..., 0] + COORDINATE_NOISE * noise[..., 1]],
        axis=-1,
    )


def _unnormalised(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log prior + log likelihood, for points `theta` (..., 2) and one `x` (2,)."""
    radius = np.linalg.norm(theta, axis=-1)
    return (
        -0.5 * np.sum(theta**2, axis=-1)
        - 0.5 * ((x[0] - radius) / RADIUS_NOISE) ** 2
        - 0.5 * ((x[1] - theta[..., 0]) / COORDINATE_NOISE) ** 2
    )


def _grid() -> tuple[np.ndarray, float]:
    """The centres of the grid's cells (m, 2) and a cell's area."""
    axis = np.linspace(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH, _GRID_POINTS)
    cell = float(axis[1] - axis[0])
    t1, t2 = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([t1.ravel(), t2.ravel()], axis=1), cell * cell


def _log_normaliser(x: np.ndarray) -> float:
    centres, area = _grid()
    values = _unnormalised(centres, x)
    top = float(values.max())
    return top + math.log(float(np.sum(np.exp(values - top))) * area)


def _observation(x: npt.ArrayLike) -> np.ndarray:
    obs = np.asarray(x, np.float64)
    if obs.shape != (X_DIM,):
        raise ValueError(f"an observation has shape ({X_DIM},), got {obs.shape}")
    return obs


def posterior_log_prob(theta: npt.ArrayLike, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The exact log-density of `p(theta | x)` at points `theta` (..., 2), for one
    observation `x` (2,) (normalised on the grid: relative error below 1e-6).

    Example:
        >>> lp = posterior_log_prob(np.zeros((3, 2)), np.array([1.5, 0.5]))
        >>> lp.shape, bool(np.all(np.isfinite(lp)))
        ((3,), True)
    """
    obs = _observation(x)
    points = np.asarray(theta, np.float64)
    return _unnormalised(points, obs) - _log_normaliser(obs)


def posterior_sample(x: npt.ArrayLike, n: int, seed: int) -> npt.NDArray[np.float32]:
    """`n` exact draws from `p(theta | x)` for one observation `x` (2,): a cell of the
    grid by its probability, then a uniform point inside it.

    Example:
        >>> draws = posterior_sample(np.array([1.5, 0.5]), 500, seed=0)
        >>> draws.shape, bool(abs(np.linalg.norm(draws, axis=1).mean() - 1.5) < 0.2)
        ((500, 2), True)
    """
    obs = _observation(x)
    centres, area = _grid()
    values = _unnormalised(centres, obs)
    weights = np.exp(values - values.max())
    rng = np.random.default_rng([seed, 0x9057])
    cells = rng.choice(len(centres), size=n, p=weights / weights.sum())
    half = 0.5 * math.sqrt(area)
    jitter = rng.uniform(-half, half, (n, THETA_DIM))
    return (centres[cells] + jitter).astype(np.float32)
