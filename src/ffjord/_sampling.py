"""Many draws from a flow at once: in fixed-size chunks on every core, per condition,
optionally kept within a box (a prior's support, the training data's range)."""

import jax
import jax.numpy as jnp
import numpy as np

from ._bijector import StepsFollow
from ._checks import positive_int
from ._distributions import TransformedDistribution
from ._errors import InputError
from ._keys import as_typed_key
from ._trainer import transform, transform_with_log_det

MAX_DRAWS = 100  # draws per kept sample before `sample_within` gives up
ROUND_ROWS = 1 << 20  # the most rows one round of rejection draws at once (memory bound)


class OutsideBox(InputError):
    """Too few of a model's draws lie within the box: `acceptance` is the share of draws
    kept for the worst condition (`condition`, counted from 0; None for one condition).

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.Affine(jnp.zeros(1), jnp.ones(1)))
        >>> try:  # 5 sigma away: about 1 draw in 3.5 million
        ...     ffjord.sample_within(dist, jax.random.key(0), 10, low=[5.0], max_draws=10)
        ... except ffjord.OutsideBox as err:
        ...     print(err, err.acceptance)
        only 0% of the model's draws lie within the box after 100 draws 0.0
    """

    def __init__(self, message: str, acceptance: float, condition: int | None):
        super().__init__(message)
        self.acceptance = acceptance
        self.condition = condition


def within_box(points: np.ndarray, low, high) -> np.ndarray:
    """Whether each point `(..., d)` lies in the box `low <= y <= high`: shape `(...)`."""
    return np.all((points >= low) & (points <= high), axis=-1)


def _conditions(dist: TransformedDistribution, context) -> np.ndarray | None:
    width = dist.bijector.context_dim or 0
    if context is None:
        if width:
            raise InputError(
                f"the model is conditional ({width} condition columns): give context=",
                parameters=("context",),
            )
        return None
    context = np.asarray(context)
    if context.ndim not in (1, 2) or context.shape[-1] != width or width == 0:
        raise InputError(
            f"context must have shape (k,) or (m, k) with k = {width}, got {context.shape}",
            parameters=("context",),
        )
    if not np.all(np.isfinite(context)):
        raise InputError("context has NaN or infinite values", parameters=("context",))
    return context


def _base_draws(dist: TransformedDistribution, key, n: int, conditions: np.ndarray | None):
    """(base draws `(rows * n, d)`, their conditions or None): in float32 (the same
    numbers in 32- and 64-bit mode), in the model's dtype; row i * n + j is draw j of
    condition i."""
    rows = 1 if conditions is None or conditions.ndim == 1 else len(conditions)
    dtype = np.asarray(dist.base.loc).dtype
    base = np.asarray(dist.base.sample(key, (rows * n,)), np.float32).astype(dtype)
    context = None
    if conditions is not None:
        context = np.repeat(np.atleast_2d(conditions), n, axis=0).astype(dtype)
    return base, context


def _draw(dist: TransformedDistribution, key, n: int, conditions: np.ndarray | None):
    """`n` draws per condition, `(rows, n, d)`, pushed through the flow in chunks."""
    base, context = _base_draws(dist, key, n, conditions)
    return transform(dist.bijector, base, context).reshape(-1, n, dist.dim)


def _draw_with_log_prob(
    dist: TransformedDistribution, key, n: int, conditions, steps_follow: StepsFollow
):
    """`_draw`'s draws and their log densities `(rows, n)`, from the same solves."""
    base, context = _base_draws(dist, key, n, conditions)
    y, log_det = transform_with_log_det(dist.bijector, base, context, steps_follow)
    log_prob = np.asarray(dist.base.log_prob(jnp.asarray(base))) - log_det
    return y.reshape(-1, n, dist.dim), log_prob.reshape(-1, n)


def sample_within(
    dist: TransformedDistribution,
    key,
    n: int,
    *,
    low=None,
    high=None,
    context=None,
    max_draws: int = MAX_DRAWS,
    region: str = "the box",
) -> np.ndarray:
    """`n` draws from `dist` that lie within the box `low <= y <= high` (rejection: draws
    outside it are replaced by fresh ones, per condition, until each has `n`).

    `context` is `None`, one condition `(k,)` (draws of shape `(n, d)`), or `m` conditions
    `(m, k)` (draws of shape `(m, n, d)`); without `low` and `high` every draw is kept.
    The flow runs in fixed-size chunks on every core, so many conditions fit in memory.
    The effort is bounded: after `max_draws` draws per sample for some condition, an
    `OutsideBox` error (an `InputError`) names the share of draws that fell within
    `region` (how messages name the box, e.g. "the prior's support").

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.Affine(jnp.zeros(2), jnp.ones(2)))
        >>> y = ffjord.sample_within(dist, jax.random.key(0), 500, low=[0, -1], high=[1, 1])
        >>> y.shape, bool((y[:, 0] >= 0).all() and (y[:, 1] <= 1).all())
        ((500, 2), True)
    """
    samples, _ = draws_within(dist, key, n, low, high, context, max_draws, region)
    return samples


def draws_within(
    dist: TransformedDistribution,
    key,
    n: int,
    low=None,
    high=None,
    context=None,
    max_draws: int = MAX_DRAWS,
    region: str = "the box",
    with_log_prob: bool = False,
    steps_follow: StepsFollow = "all",
) -> tuple[np.ndarray, np.ndarray | None]:
    """`sample_within`'s draws and, with `with_log_prob`, their log densities under the
    flow (`(n,)` or `(m, n)`, from the same solves; not renormalised to the box;
    `steps_follow` as in `ffjord.Mode`)."""
    n = positive_int(n, "n")
    max_draws = positive_int(max_draws, "max_draws")
    conditions = _conditions(dist, context)
    key = as_typed_key(key)
    single = conditions is None or conditions.ndim == 1

    def draw(key, count) -> tuple[np.ndarray, np.ndarray | None]:
        if with_log_prob:
            return _draw_with_log_prob(dist, key, count, conditions, steps_follow)
        return _draw(dist, key, count, conditions), None

    def result(samples, log_probs):
        if single:
            return samples[0], None if log_probs is None else log_probs[0]
        return samples, log_probs

    if low is None and high is None:
        return result(*draw(key, n))
    d = dist.dim
    low = np.broadcast_to(np.asarray(-np.inf if low is None else low, np.float64), (d,))
    high = np.broadcast_to(np.asarray(np.inf if high is None else high, np.float64), (d,))
    if np.any(np.isnan(low)) or np.any(np.isnan(high)) or np.any(low > high):
        raise InputError("the box needs low <= high in every column", parameters=("low", "high"))
    rows = 1 if single else len(conditions)  # type: ignore[arg-type]
    kept: list[list[np.ndarray]] = [[] for _ in range(rows)]
    kept_log_probs: list[list[np.ndarray]] = [[] for _ in range(rows)]
    got, drawn, batch = np.zeros(rows, int), 0, n
    while got.min() < n:
        if drawn >= max_draws * n:
            worst = int(np.argmin(got))
            share = got[worst] / drawn
            which = f" for condition {worst + 1}" if rows > 1 else ""
            raise OutsideBox(
                f"only {100 * share:.2g}% of the model's draws{which} lie within {region} "
                f"after {drawn} draws",
                share,
                worst if rows > 1 else None,
            )
        key, sub = jax.random.split(key)
        draws, log_probs = draw(sub, batch)
        drawn += batch
        for i in range(rows):
            inside = within_box(draws[i], low, high)
            kept[i].append(draws[i][inside][: n - got[i]])
            if log_probs is not None:
                kept_log_probs[i].append(log_probs[i][inside][: n - got[i]])
            got[i] += len(kept[i][-1])
        accepted = max(got.min(), 1) / drawn  # the slowest condition sets the next batch
        batch = int(max((n - got.min()) / accepted * 1.2, 64))
        batch = min(batch, max(ROUND_ROWS // rows, 64), max_draws * n - drawn)
    samples = np.stack([np.concatenate(parts) for parts in kept])
    log_probs = np.stack([np.concatenate(p) for p in kept_log_probs]) if with_log_prob else None
    return result(samples, log_probs)
