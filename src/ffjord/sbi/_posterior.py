"""A posterior p(theta | x) from a conditional flow, kept inside the prior's support.

`Posterior(flow_or_run_dir, prior=None)`: draws outside the support are redrawn with a
bounded effort (`ffjord.sample_within`'s, an `OutsideBox` error naming the share kept
instead of a hang); many observations at once run in fixed-size chunks, so they fit in
memory; `sample_and_log_prob` gets the draws' log densities from the same solves.

The support is the prior's when one is given (`AbstractPrior.support`), else the one a
run directory recorded (`ffjord train --support`, or the training parameters' range),
else none.

Example:
    >>> import jax, jax.numpy as jnp, ffjord
    >>> from ffjord import sbi
    >>> field = ffjord.MLPField(1, 8, 2, context_dim=1, key=jax.random.key(0))  # untrained
    >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))
    >>> flow = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
    >>> posterior = sbi.Posterior(flow, prior=sbi.BoxUniform([0.0], [3.0]))
    >>> theta = posterior.sample(jax.random.key(0), (100,), x=jnp.zeros((2, 1)))
    >>> theta.shape, bool(theta.min() >= 0.0)
    ((100, 2, 1), True)
"""

import math
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._bijector import StepsFollow
from .._checks import positive_int
from .._distributions import TransformedDistribution
from .._errors import InputError
from .._keys import as_typed_key
from .._run import RunDir, load
from .._sampling import MAX_DRAWS, draws_within, within_box
from .._source import DataSource
from .._trainer import Trainer
from ._diagnostics import AbstractPosterior
from ._prior import support_of

LEAKAGE_DRAWS = 10_000  # draws per observation that estimate the flow's mass in the support


def _recorded_box(run_dir) -> tuple[np.ndarray, np.ndarray] | None:
    config = RunDir(run_dir).require()
    if "data" not in config:
        return None
    return DataSource.from_config(config["data"]).sampling_box()


@eqx.filter_jit
def _ascend(flow, theta, x, scale, low, high, steps: int):
    """`steps` of Adam on log q(theta | x) in units of `scale`, clipped to [low, high]."""
    optimizer = optax.adam(0.05)

    def loss(u):
        return -jnp.sum(flow.log_prob(jnp.clip(u * scale, low, high), context=x))

    def step(carry, _):
        u, state = carry
        grads = jax.grad(loss)(u)
        updates, state = optimizer.update(grads, state, u)
        u = jnp.clip(optax.apply_updates(u, updates) * scale, low, high) / scale
        return (u, state), None

    u0 = theta / scale
    (u, _), _ = jax.lax.scan(step, (u0, optimizer.init(u0)), None, length=steps)
    return jnp.clip(u * scale, low, high)


class Posterior(AbstractPosterior):
    """p(theta | x) from a conditional flow (a `TransformedDistribution` or a run
    directory of `ffjord train --context-dims K`), inside the `prior`'s support.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> field = ffjord.MLPField(2, 8, 2, context_dim=3, key=jax.random.key(0))  # untrained
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> flow = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> posterior = Posterior(flow)
        >>> theta, log_q = posterior.sample_and_log_prob(jax.random.key(0), (5,), x=jnp.ones(3))
        >>> theta.shape, log_q.shape
        ((5, 2), (5,))
        >>> bool(jnp.allclose(log_q, posterior.log_prob(theta, x=jnp.ones(3)), atol=1e-4))
        True
        >>> posterior.map(jnp.ones(3), num_draws=100, steps=20).shape
        (2,)
    """

    def __init__(
        self,
        flow: "TransformedDistribution | str | os.PathLike[str]",
        prior: Any = None,
        *,
        max_draws: int = MAX_DRAWS,
    ):
        box = None
        if isinstance(flow, str | os.PathLike):
            box = _recorded_box(flow)
            flow = load(flow)
        if not isinstance(flow, TransformedDistribution) or not flow.bijector.context_dim:
            raise InputError(
                "Posterior needs a conditional flow (trained with conditions, e.g. "
                "ffjord train --context-dims K) or its run directory",
                parameters=("flow",),
            )
        self.flow, self.prior = flow, prior
        self.dim, self.context_dim = flow.dim, int(flow.bijector.context_dim)
        self.max_draws = positive_int(max_draws, "max_draws")
        if prior is not None:
            box = support_of(prior, self.dim)
            if box[0].shape != (self.dim,):
                raise InputError(
                    f"the prior has {box[0].shape[0]} parameters but the flow {self.dim}",
                    parameters=("prior",),
                )
        self.region = "the prior's support" if prior is not None else "the recorded support"
        self.low, self.high = box if box is not None else (None, None)
        self._evaluator = Trainer(flow)
        # filled by `sbi.sequential`: each round's record, and where the last round's
        # parameters came from (the truncated prior), for local diagnostics
        self.rounds: list[dict[str, Any]] = []
        self.proposal: Any = prior

    # Shapes -----------------------------------------------------------------------------------

    def _observations(self, x) -> tuple[np.ndarray, bool]:
        """(x as rows (m, k), whether one observation (k,) was given)."""
        x = np.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.context_dim:
            raise InputError(
                f"x must have shape ({self.context_dim},) or (m, {self.context_dim}), got "
                f"{x.shape}",
                parameters=("x",),
            )
        if not np.all(np.isfinite(x)):
            raise InputError("x has NaN or infinite values", parameters=("x",))
        return np.atleast_2d(x), x.ndim == 1

    def _draws(self, key, shape, x, with_log_prob: bool, steps_follow: StepsFollow = "all"):
        rows, single = self._observations(x)
        shape = tuple(int(s) for s in np.atleast_1d(np.asarray(shape, dtype=int))) if shape else ()
        n = positive_int(math.prod(shape), "the number of draws")
        theta, log_q = draws_within(
            self.flow,
            as_typed_key(key),
            n,
            self.low,
            self.high,
            rows,
            self.max_draws,
            self.region,
            with_log_prob,
            steps_follow,
        )  # (m, n, p) and (m, n)
        theta = np.moveaxis(theta, 0, 1).reshape(*shape, *(() if single else (len(rows),)), -1)
        if log_q is not None:
            log_q = np.moveaxis(log_q, 0, 1).reshape(*shape, *(() if single else (len(rows),)))
        return theta, log_q

    # Draws and densities ---------------------------------------------------------------------

    def sample(self, key, shape: tuple[int, ...], *, x) -> np.ndarray:
        """Draws inside the support: `(*shape, p)` for one observation `x` (k,), `(*shape,
        m, p)` for `m` observations (m, k)."""
        return self._draws(key, shape, x, with_log_prob=False)[0]

    def sample_and_log_prob(self, key, shape: tuple[int, ...], *, x, for_ranking: bool = False):
        """`sample`'s draws and their log densities under the flow (as `log_prob` without
        the leakage correction), from the same solves. `for_ranking` (what expected
        coverage asks for): the log-density rides on the draws' adaptive steps
        (`ffjord.Mode(steps_follow="state")`), about 25% cheaper, its error not
        controlled (about 0.01 nats: docs/DIAGNOSTICS.md)."""
        steps_follow = "state" if for_ranking else "all"
        theta, log_q = self._draws(key, shape, x, with_log_prob=True, steps_follow=steps_follow)
        assert log_q is not None
        return theta, log_q

    def log_prob(self, theta, *, x, leakage_key=None, leakage_draws: int = LEAKAGE_DRAWS):
        """log q(theta | x): `theta` (..., p) for one observation `x` (k,), or (..., m, p)
        for `m` observations; `-inf` outside the support. With `leakage_key`, corrected
        for the flow's mass outside the support (minus the log of the share of
        `leakage_draws` draws per observation that land inside it)."""
        rows, single = self._observations(x)
        theta = np.asarray(theta)
        m = len(rows)
        if theta.ndim < 1 or theta.shape[-1] != self.dim or (not single and theta.ndim < 2):
            raise InputError(
                f"theta must have shape (..., {self.dim})"
                + ("" if single else f" with the observations' axis before it: (..., {m}, "
                   f"{self.dim})")
                + f", got {theta.shape}",
                parameters=("theta",),
            )  # fmt: skip
        if not single and theta.shape[-2] != m:
            raise InputError(
                f"theta has {theta.shape[-2]} rows on the observations' axis but x has {m}",
                parameters=("theta", "x"),
            )
        batch = theta.shape[:-1]
        points = theta.reshape(-1, self.dim)
        context = np.broadcast_to(rows if not single else rows[0], (*batch, self.context_dim))
        dtype = np.asarray(self.flow.base.loc).dtype
        log_q = self._evaluator.log_prob(
            self.flow, points.astype(dtype), context.reshape(-1, self.context_dim).astype(dtype)
        ).reshape(batch)
        if self.low is not None:
            inside = within_box(theta, self.low, self.high)
            log_q = np.where(inside, log_q, -np.inf)
        if leakage_key is not None:
            mass = self.mass_inside(leakage_key, x, leakage_draws)
            log_q = log_q - np.log(mass)
        return log_q

    def mass_inside(self, key, x, num_draws: int = LEAKAGE_DRAWS) -> np.ndarray:
        """The share of the flow's draws inside the support, per observation (`()` for
        one `x` (k,), `(m,)` for m): the flow's probability mass there, by Monte Carlo."""
        rows, single = self._observations(x)
        num_draws = positive_int(num_draws, "leakage_draws")
        if self.low is None:
            mass = np.ones(len(rows))
        else:
            draws, _ = draws_within(self.flow, as_typed_key(key), num_draws, context=rows)
            mass = within_box(draws, self.low, self.high).mean(axis=1)
        if np.any(mass == 0):
            raise InputError(
                f"none of {num_draws} draws of the flow lies within {self.region} for some "
                "observation: its density there cannot be normalised",
                parameters=("x",),
            )
        return mass[0] if single else mass

    def map(self, x, *, key=None, num_draws: int = 1000, steps: int = 200) -> np.ndarray:
        """The posterior mode given `x` ((p,) for one observation (k,), (m, p) for m):
        gradient ascent on log q (Adam, steps scaled to the draws' spread) from the best
        of `num_draws` draws, kept inside the support; the better of the start and the
        end is returned, so the result is never worse than the best draw."""
        rows, single = self._observations(x)
        steps = positive_int(steps, "steps")
        key = as_typed_key(jax.random.key(0) if key is None else key)
        draws, log_q = self._draws(key, (positive_int(num_draws, "num_draws"),), rows, True)
        assert log_q is not None  # (n, m, p) and (n, m)
        best = np.take_along_axis(draws, np.argmax(log_q, axis=0)[None, :, None], 0)[0]
        start_log_q = np.max(log_q, axis=0)
        scale = np.maximum(draws.std(axis=0), 1e-6)  # (m, p)
        low = -np.inf if self.low is None else self.low
        high = np.inf if self.high is None else self.high
        dtype = np.asarray(self.flow.base.loc).dtype
        theta = _ascend(self.flow, jnp.asarray(best, dtype), jnp.asarray(rows, dtype),
                        jnp.asarray(scale, dtype), jnp.asarray(low, dtype),
                        jnp.asarray(high, dtype), steps)  # fmt: skip
        theta = np.asarray(theta)
        end_log_q = self.log_prob(theta, x=rows)
        mode = np.where((end_log_q > start_log_q)[:, None], theta, best)
        return mode[0] if single else mode

    def __repr__(self) -> str:
        return f"Posterior(dim={self.dim}, context_dim={self.context_dim}, region={self.region!r})"
