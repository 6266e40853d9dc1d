"""From a prior and a simulator to a posterior: `simulate` draws (theta, x) pairs, and
`fit_posterior` trains on them exactly as the plain `ffjord train --data PAIRS.npy
--context-dims K` does (the same data-driven defaults; any `ffjord.train` option
overrides them).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ffjord import sbi
    >>> prior = sbi.BoxUniform([-2.0], [2.0])
    >>> def simulator(key, theta):  # x ~ N(theta, 0.1^2), twice
    ...     return theta + 0.1 * jax.random.normal(key, (theta.shape[0], 2))
    >>> theta, x = sbi.simulate(jax.random.key(0), prior, simulator, 1000)
    >>> theta.shape, x.shape
    ((1000, 1), (1000, 2))
"""

import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._checks import positive_int
from .._errors import InputError
from .._io import save_npy
from .._keys import as_typed_key
from .._plan import train
from ._diagnostics import paired
from ._posterior import Posterior
from ._prior import support_of


def simulate(key, prior, simulator, n: int, *, batch_size: int | None = None):
    """`n` pairs `(theta (n, p), x (n, k))`: `theta` from `prior.sample(key, (n,))`, `x`
    from `simulator(key, theta)` (a batch at a time: `batch_size` rows, all by default).
    Pairs with NaN or infinite values are dropped, with a warning that says how many.

    Example:
        >>> import warnings
        >>> prior = ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))
        >>> fails = lambda key, t: jnp.where(t > 1.0, jnp.nan, t)  # fails above 1
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     theta, x = simulate(jax.random.key(0), prior, fails, 1000)
        >>> len(theta) < 1000, "simulate dropped" in str(caught[0].message)
        (True, True)
    """
    n = positive_int(n, "n")
    prior_key, simulator_key = jax.random.split(as_typed_key(key))
    theta = np.asarray(prior.sample(prior_key, (n,)))
    if theta.ndim != 2 or theta.shape[0] != n:
        raise InputError(
            f"prior.sample(key, ({n},)) must give shape ({n}, p), got {theta.shape}",
            parameters=("prior",),
        )
    batch = n if batch_size is None else positive_int(batch_size, "batch_size")
    parts = []
    for i, start in enumerate(range(0, n, batch)):
        rows = theta[start : start + batch]
        x = np.asarray(simulator(jax.random.fold_in(simulator_key, i), rows))
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != len(rows):
            raise InputError(
                f"simulator(key, theta) for theta of shape {rows.shape} must give shape "
                f"({len(rows)}, k), got {x.shape}",
                parameters=("simulator",),
            )
        parts.append(x)
    x = np.concatenate(parts)
    finite = np.all(np.isfinite(theta), axis=1) & np.all(np.isfinite(x), axis=1)
    dropped = int(n - finite.sum())
    if dropped == n:
        raise InputError(f"all {n} simulations gave NaN or infinite values")
    if dropped:
        warnings.warn(
            f"simulate dropped {dropped} of {n} simulations with NaN or infinite values",
            stacklevel=2,
        )
    return theta[finite], x[finite]


def fit_posterior(
    key, theta, x, *, prior: Any = None, run_dir=None, show_progress: bool = False, **options
) -> Posterior:
    """A `Posterior` trained on the pairs `theta` (n, p), `x` (n, k) as `ffjord train
    --data PAIRS.npy --context-dims k` would (`options`: any `ffjord.train` keyword, e.g.
    `time_budget=600`, `embedding="set", context_shape=(N, C)`). A bounded `prior`'s
    support is given to the run (`support`), so draws stay inside it. With `run_dir`,
    the run is kept there (and the pairs beside it, `RUN_DIR.simulations.npy`, which a
    resume reads); without, both live in a temporary directory.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ffjord import sbi
        >>> prior = sbi.BoxUniform([-2.0], [2.0])
        >>> theta, x = sbi.simulate(jax.random.key(0), prior,
        ...                         lambda key, t: t + 0.3 * jax.random.normal(key, t.shape), 2000)
        >>> posterior = sbi.fit_posterior(jax.random.key(1), theta, x, prior=prior,
        ...                               epochs=4, blocks=1, hidden=8)
        >>> draws = posterior.sample(jax.random.key(2), (500,), x=jnp.array([1.0]))
        >>> draws.shape, bool(abs(draws.mean() - 1.0) < 0.3)
        ((500, 1), True)
    """
    theta, x = paired(theta, x)
    for name in ("data", "context_dims", "resume"):
        if name in options:
            raise InputError(
                f"fit_posterior sets {name} itself (from theta and x)", parameters=(name,)
            )
    if "seed" not in options:
        options["seed"] = int(jax.random.randint(as_typed_key(key), (), 0, 2**31 - 1))
    if prior is not None and "support" not in options:
        low, high = support_of(prior, theta.shape[1])
        if np.any(np.isfinite(low)) or np.any(np.isfinite(high)):
            options["support"] = [
                (None if math.isinf(a) else float(a), None if math.isinf(b) else float(b))
                for a, b in zip(low, high, strict=True)
            ]
    pairs = np.concatenate([theta, x], axis=1)
    if run_dir is not None:
        return _fit_in(Path(run_dir), pairs, x.shape[1], prior, show_progress, options)
    with tempfile.TemporaryDirectory(prefix="ffjord-posterior-") as tmp:
        return _fit_in(Path(tmp) / "run", pairs, x.shape[1], prior, show_progress, options)


def _fit_in(run_dir: Path, pairs, k: int, prior, show_progress: bool, options) -> Posterior:
    data = Path(f"{os.fspath(run_dir)}.simulations.npy")
    if data.exists():
        raise InputError(f"{data} exists already; choose another run_dir", parameters=("run_dir",))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    save_npy(data, pairs)
    try:
        train(run_dir, data=str(data), context_dims=k, show_progress=show_progress, **options)
    except BaseException:
        if not run_dir.exists():
            data.unlink(missing_ok=True)  # nothing was made: leave nothing behind
        raise
    return Posterior(run_dir, prior=prior)
