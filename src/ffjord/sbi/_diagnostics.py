"""Can a posterior be trusted? Calibration checks over test pairs (theta_i, x_i) drawn from
the prior and the simulator, each beside the posterior's sharpness.

* `sbc`: simulation-based calibration (Talts et al. 2018), the rank of each theta_i among
  posterior draws given x_i, per parameter, tested for uniformity.
* `coverage`: expected coverage of highest-density regions (Hermans et al. 2022) from the
  posterior's own `log_prob`.
* `tarp`: coverage of random balls around reference points (Lemos et al. 2023), as `sbi`
  computes it.

A posterior that returns the prior is calibrated and useless, so every result also
reports the `contraction` per parameter (1 - posterior variance / prior variance, the
prior's variance taken from the test parameters) and `mean_log_prob`, the mean log q of
the true parameters.

The posterior can be any object with `sample(key, shape, *, x)` (for `x` of shape
`(m, k)`: draws of shape `(*shape, m, p)`) and `log_prob(theta, *, x)` (theta of shape
`(..., m, p)`: log densities of shape `(..., m)`); an `AbstractPosterior` may also give
both from one computation (`sample_and_log_prob`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ffjord import sbi
    >>> class Exact(sbi.AbstractPosterior):  # theta ~ N(0, 1), x = theta + N(0, 1)
    ...     def sample(self, key, shape, *, x):
    ...         return x / 2 + jax.random.normal(key, (*shape, *x.shape)) / jnp.sqrt(2.0)
    ...     def log_prob(self, theta, *, x):
    ...         return jax.scipy.stats.norm.logpdf(theta, x / 2, 1 / jnp.sqrt(2.0)).sum(-1)
    >>> theta = jax.random.normal(jax.random.key(0), (500, 1))
    >>> x = theta + jax.random.normal(jax.random.key(1), (500, 1))
    >>> r = sbi.coverage(jax.random.key(2), Exact(), theta, x, num_samples=500)
    >>> r.ok, r.verdict, round(float(r.contraction[0]), 1)
    (True, 'calibrated', 0.5)
"""

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from .._checks import positive_int
from .._errors import InputError
from .._keys import as_typed_key

ALPHA = 0.01  # every verdict's significance level (Bonferroni-corrected over parameters)
SIGMAS = 3.0  # coverage: how many binomial standard errors a level may stray by
LEVELS = np.linspace(0.01, 0.99, 99)  # credibility levels of the coverage curves
DRAWS_AT_ONCE = 1 << 24  # numbers of posterior draws held at once (memory bound)


class AbstractPosterior(abc.ABC):
    """What the diagnostics ask of a posterior; a subclass that gets log densities with
    its draws (a flow does, from the same solve) overrides `sample_and_log_prob`.

    Example:
        >>> class Wide(AbstractPosterior):  # N(0, 2^2) whatever the observation
        ...     def sample(self, key, shape, *, x):
        ...         return 2.0 * jax.random.normal(key, (*shape, *x.shape))
        ...     def log_prob(self, theta, *, x):
        ...         return jax.scipy.stats.norm.logpdf(theta, 0.0, 2.0).sum(-1)
        >>> theta, lp = Wide().sample_and_log_prob(jax.random.key(0), (5,), x=jnp.zeros((3, 1)))
        >>> theta.shape, lp.shape
        ((5, 3, 1), (5, 3))
    """

    @abc.abstractmethod
    def sample(self, key, shape: tuple[int, ...], *, x) -> Any:
        """Draws of shape `(*shape, m, p)` given observations `x` of shape `(m, k)`."""

    @abc.abstractmethod
    def log_prob(self, theta, *, x) -> Any:
        """Log densities of shape `(..., m)` of `theta` of shape `(..., m, p)`."""

    def sample_and_log_prob(
        self, key, shape: tuple[int, ...], *, x, for_ranking: bool = False
    ) -> tuple[Any, Any]:
        """(draws, their log densities): `sample`, then `log_prob` of the draws.
        `for_ranking`: the densities will only be ranked against each other and
        `log_prob` (expected coverage), so a subclass may trade accuracy for speed."""
        del for_ranking  # the same either way here
        theta = self.sample(key, shape, x=x)
        return theta, self.log_prob(theta, x=x)


def _sample_and_log_prob(posterior, key, num: int, x, with_log_prob: bool):
    if isinstance(posterior, AbstractPosterior) and with_log_prob:
        return posterior.sample_and_log_prob(key, (num,), x=x, for_ranking=True)
    theta = posterior.sample(key, (num,), x=x)
    return theta, posterior.log_prob(theta, x=x) if with_log_prob else None


def paired(theta, x, what: str = "pairs") -> tuple[np.ndarray, np.ndarray]:
    """`theta` (n, p) and `x` (n, k) as arrays, refused unless they are `what`: row-aligned
    2-D arrays."""
    theta, x = np.asarray(theta), np.asarray(x)
    if theta.ndim != 2 or x.ndim != 2 or len(theta) != len(x):
        raise InputError(
            f"theta and x must be {what} of shapes (n, p) and (n, k), got {theta.shape} "
            f"and {x.shape}",
            parameters=("theta", "x"),
        )
    return theta, x


def _test_pairs(theta, x) -> tuple[np.ndarray, np.ndarray]:
    theta, x = paired(theta, x, "test pairs")
    if len(theta) < 2:
        raise InputError(f"the diagnostics need at least 2 test pairs, got {len(theta)}")
    for name, a in (("theta", theta), ("x", x)):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name} has NaN or infinite values", parameters=(name,))
    return theta, x


@dataclasses.dataclass(frozen=True)
class Draws:
    """L posterior draws for each of n test pairs, `(L, n, p)`, their log densities
    `(L, n)` (when asked for) and the log densities of the true parameters `(n,)`."""

    theta: np.ndarray
    samples: np.ndarray
    log_probs: np.ndarray | None
    true_log_prob: np.ndarray

    def sharpness(self) -> dict[str, Any]:
        prior_variance = self.theta.var(axis=0)
        posterior_variance = self.samples.var(axis=0).mean(axis=0)
        return {
            "contraction": 1.0 - posterior_variance / prior_variance,
            "mean_log_prob": float(np.mean(self.true_log_prob)),
            "num_samples": int(self.samples.shape[0]),
        }


def draws_for(key, posterior, theta, x, num_samples: int, with_log_prob: bool) -> Draws:
    """Posterior draws for every test pair, a chunk of observations at a time."""
    theta, x = _test_pairs(theta, x)
    num_samples = positive_int(num_samples, "num_samples")
    n, p = theta.shape
    per_chunk = max(1, DRAWS_AT_ONCE // (num_samples * p))
    samples, log_probs = [], []
    for i, start in enumerate(range(0, n, per_chunk)):
        xs = jnp.asarray(x[start : start + per_chunk])
        s, lp = _sample_and_log_prob(
            posterior, jax.random.fold_in(key, i), num_samples, xs, with_log_prob
        )
        samples.append(np.asarray(s))
        if lp is not None:
            log_probs.append(np.asarray(lp))
    drawn = np.concatenate(samples, axis=1)
    if drawn.shape != (num_samples, n, p):
        raise InputError(
            f"posterior.sample(key, ({num_samples},), x=x) for x of shape (m, k) must give "
            f"draws of shape ({num_samples}, m, {p}); got {drawn.shape} over all test pairs"
        )
    true_log_prob = np.asarray(posterior.log_prob(jnp.asarray(theta), x=jnp.asarray(x)))
    return Draws(
        theta=theta,
        samples=drawn,
        log_probs=np.concatenate(log_probs, axis=1) if log_probs else None,
        true_log_prob=true_log_prob,
    )


# SBC ----------------------------------------------------------------------------------------


def _uniform_ranks_pvalue(ranks: np.ndarray, num_samples: int) -> float:
    """Chi-square p-value of integer ranks in 0..L against the discrete uniform, in
    bins that expect at least 5 ranks each."""
    n = len(ranks)
    bins = int(np.clip(n // 5, 2, 20))
    edges = np.linspace(0, num_samples + 1, bins + 1)
    values = np.arange(num_samples + 1)
    expected = np.histogram(values, edges)[0] / (num_samples + 1) * n
    observed = np.histogram(ranks, edges)[0]
    return float(stats.chisquare(observed, expected).pvalue)


def ecdf_band(n: int, points: np.ndarray, alpha: float, rng: np.random.Generator, trials=2000):
    """Simultaneous (1 - alpha) band of the ECDF of `n` uniform values at `points`
    (Säilynoja, Bürkner and Vehtari 2022, by simulation): the pointwise binomial
    interval whose level is adjusted until all points hold together. Returns (lower,
    upper), as fractions."""
    counts = rng.binomial(n, points[None, :], size=(trials, len(points)))
    # each simulated ECDF's most extreme point, as a two-sided binomial tail probability
    below = stats.binom.cdf(counts, n, points)
    above = stats.binom.sf(counts - 1, n, points)
    extreme = np.min(2 * np.minimum(below, above), axis=1)
    gamma = np.quantile(extreme, alpha)
    lower = stats.binom.ppf(gamma / 2, n, points) / n
    upper = stats.binom.ppf(1 - gamma / 2, n, points) / n
    return lower, upper


@dataclasses.dataclass(frozen=True)
class SBCResult:
    """Simulation-based calibration: `ranks` (n, p) of each true parameter among
    `num_samples` draws, `pvalues` (p,) of their uniformity, `ok` when every p-value
    exceeds `alpha / p` (Bonferroni); `contraction` (p,) and `mean_log_prob` beside.

    Example:
        >>> from types import SimpleNamespace
        >>> prior = SimpleNamespace(  # the prior as its own posterior
        ...     sample=lambda key, shape, *, x: jax.random.normal(key, (*shape, *x.shape)),
        ...     log_prob=lambda theta, *, x: jax.scipy.stats.norm.logpdf(theta).sum(-1))
        >>> theta = jax.random.normal(jax.random.key(0), (200, 2))
        >>> r = sbc(jax.random.key(1), prior, theta, theta + 1.0, num_samples=100)
        >>> sorted(r.to_dict())
        ['alpha', 'contraction', 'mean_log_prob', 'num_samples', 'ok', 'pvalues',
         'test_pairs']
    """

    ranks: np.ndarray
    pvalues: np.ndarray
    ok: bool
    alpha: float
    contraction: np.ndarray
    mean_log_prob: float
    num_samples: int
    band: tuple[np.ndarray, np.ndarray, np.ndarray]  # points, lower, upper

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pvalues": self.pvalues.tolist(),
            "alpha": self.alpha,
            **_sharpness(self, self.ranks.shape[0]),
        }

    def plot(self, labels=None):
        """The ECDF of each parameter's fractional ranks minus the uniform's, inside its
        simultaneous band (a curve leaving it: miscalibrated)."""
        import matplotlib.pyplot as plt

        points, lower, upper = self.band
        p = self.ranks.shape[1]
        fig, axes = plt.subplots(1, p, figsize=(3.2 * p, 3.0), squeeze=False, sharey=True)
        fractions = (self.ranks + 0.5) / (self.num_samples + 1)
        for j, ax in enumerate(axes[0]):
            ecdf = (fractions[:, j][:, None] <= points[None, :]).mean(axis=0)
            ax.fill_between(points, lower - points, upper - points, color="0.85", lw=0)
            ax.plot(points, ecdf - points, color="C0" if self.pvalues[j] > self.alpha / p else "C3")
            ax.axhline(0.0, color="0.4", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_xlabel("fractional rank")
            ax.set_title(f"{_label(labels, j)}: p = {self.pvalues[j]:.2g}", fontsize=10)
        axes[0][0].set_ylabel("ECDF - uniform")
        fig.suptitle(
            f"SBC, {len(self.ranks)} test pairs, {self.num_samples} draws each "
            f"(grey: {1 - self.alpha:.0%} simultaneous band)"
        )
        fig.tight_layout()
        return fig


def sbc(key, posterior, theta, x, *, num_samples: int = 1000, alpha: float = ALPHA) -> SBCResult:
    """Simulation-based calibration of `posterior` on test pairs `theta` (n, p), `x` (n, k).

    Example:
        >>> class Prior:  # the prior itself: calibrated, and contracts nothing
        ...     def sample(self, key, shape, *, x):
        ...         return jax.random.normal(key, (*shape, *x.shape))
        ...     def log_prob(self, theta, *, x):
        ...         return jax.scipy.stats.norm.logpdf(theta).sum(-1)
        >>> theta = jax.random.normal(jax.random.key(0), (200, 2))
        >>> x = theta + jax.random.normal(jax.random.key(1), (200, 2))
        >>> r = sbc(jax.random.key(2), Prior(), theta, x, num_samples=100)
        >>> r.ok, r.ranks.shape, r.pvalues.shape
        (True, (200, 2), (2,))
    """
    key, band_key = jax.random.split(as_typed_key(key))
    draws = draws_for(key, posterior, theta, x, num_samples, with_log_prob=False)
    return sbc_of(draws, band_key, alpha)


def sbc_of(draws: Draws, key, alpha: float = ALPHA) -> SBCResult:
    """`sbc` of draws already made (`key`: the band's simulations)."""
    num_samples = draws.samples.shape[0]
    ranks = (draws.samples < draws.theta[None]).sum(axis=0)
    n, p = ranks.shape
    pvalues = np.array([_uniform_ranks_pvalue(ranks[:, j], num_samples) for j in range(p)])
    points = np.linspace(0.0, 1.0, min(n, 100) + 1)[1:-1]
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    lower, upper = ecdf_band(n, points, alpha, rng)
    return SBCResult(
        ranks=ranks,
        pvalues=pvalues,
        ok=bool(np.all(pvalues > alpha / p)),
        alpha=alpha,
        band=(points, lower, upper),
        **draws.sharpness(),
    )


# Expected coverage of highest-density regions -------------------------------------------


def _verdict(levels: np.ndarray, covered: np.ndarray, n: int) -> str:
    """`calibrated`, or the side the curve leaves the diagonal on most, by more than
    `SIGMAS` binomial standard errors."""
    error = np.sqrt(levels * (1 - levels) / n)
    z = (covered - levels) / error
    if np.max(np.abs(z)) <= SIGMAS:
        return "calibrated"
    return "conservative" if z[np.argmax(np.abs(z))] > 0 else "overconfident"


def _coverage_plot(levels, covered, n: int, title: str, xlabel: str, ylabel: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    error = SIGMAS * np.sqrt(levels * (1 - levels) / n)
    ax.fill_between(levels, levels - error, levels + error, color="0.85", lw=0)
    ax.plot([0, 1], [0, 1], color="0.4", lw=0.8)
    ax.plot(levels, covered, color="C0")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.text(0.03, 0.93, f"grey: ±{SIGMAS:g} s.e.", transform=ax.transAxes, fontsize=8)
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig


@dataclasses.dataclass(frozen=True)
class CoverageResult:
    """Expected coverage of highest-density regions: at each credibility `levels`, the
    share of test pairs whose true parameter lies in the region (`coverage`); `ranks`
    (n,) the share of draws denser than the true parameter; `verdict` is `calibrated`,
    `overconfident` (regions too small) or `conservative`; `ok` when calibrated.

    Example:
        >>> from types import SimpleNamespace
        >>> prior = SimpleNamespace(  # the prior as its own posterior
        ...     sample=lambda key, shape, *, x: jax.random.normal(key, (*shape, *x.shape)),
        ...     log_prob=lambda theta, *, x: jax.scipy.stats.norm.logpdf(theta).sum(-1))
        >>> theta = jax.random.normal(jax.random.key(0), (200, 2))
        >>> r = coverage(jax.random.key(1), prior, theta, theta + 1.0, num_samples=100)
        >>> sorted(r.to_dict())
        ['contraction', 'coverage', 'levels', 'mean_log_prob', 'num_samples', 'ok',
         'test_pairs', 'verdict']
    """

    levels: np.ndarray
    coverage: np.ndarray
    ranks: np.ndarray
    verdict: str
    ok: bool
    contraction: np.ndarray
    mean_log_prob: float
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "levels": self.levels.tolist(),
            "coverage": self.coverage.tolist(),
            **_sharpness(self, len(self.ranks)),
        }

    def plot(self):
        """Coverage against credibility, with the band of `SIGMAS` standard errors."""
        return _coverage_plot(
            self.levels,
            self.coverage,
            len(self.ranks),
            f"expected coverage: {self.verdict}",
            "credibility level",
            "coverage of HPD regions",
        )


def coverage(key, posterior, theta, x, *, num_samples: int = 1000, levels=LEVELS) -> CoverageResult:
    """Expected coverage of `posterior`'s highest-density regions on test pairs `theta`
    (n, p), `x` (n, k), from its log densities (of the draws and of the true parameters).

    Example:
        >>> class Prior:  # the prior itself: calibrated, and contracts nothing
        ...     def sample(self, key, shape, *, x):
        ...         return jax.random.normal(key, (*shape, *x.shape))
        ...     def log_prob(self, theta, *, x):
        ...         return jax.scipy.stats.norm.logpdf(theta).sum(-1)
        >>> theta = jax.random.normal(jax.random.key(0), (200, 2))
        >>> x = theta + jax.random.normal(jax.random.key(1), (200, 2))
        >>> r = coverage(jax.random.key(2), Prior(), theta, x, num_samples=100)
        >>> r.verdict, bool(abs(r.contraction).max() < 0.2)  # or overconfident, conservative
        ('calibrated', True)
    """
    draws = draws_for(as_typed_key(key), posterior, theta, x, num_samples, with_log_prob=True)
    return coverage_of(draws, levels)


def coverage_of(draws: Draws, levels=LEVELS) -> CoverageResult:
    """`coverage` of draws already made with their log densities."""
    if draws.log_probs is None:
        raise ValueError("coverage needs the log densities of the draws")
    ranks = (draws.log_probs > draws.true_log_prob[None]).mean(axis=0)
    levels = np.asarray(levels, dtype=float)
    covered = (ranks[None, :] <= levels[:, None]).mean(axis=1)
    verdict = _verdict(levels, covered, len(ranks))
    return CoverageResult(
        levels=levels,
        coverage=covered,
        ranks=ranks,
        verdict=verdict,
        ok=verdict == "calibrated",
        **draws.sharpness(),
    )


# TARP -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TARPResult:
    """Tests of accuracy with random points: `ranks` (n,) the share of draws nearer a
    random reference point than the true parameter; `ecp` the expected coverage at
    credibility `levels`; `atc` the area between the curve and the diagonal above 0.5
    (`sbi`'s: positive, too wide; negative, too narrow); `ok` when a one-sample KS test
    of the ranks against U(0, 1) gives a p-value above `alpha`.

    Example:
        >>> from types import SimpleNamespace
        >>> prior = SimpleNamespace(  # the prior as its own posterior
        ...     sample=lambda key, shape, *, x: jax.random.normal(key, (*shape, *x.shape)),
        ...     log_prob=lambda theta, *, x: jax.scipy.stats.norm.logpdf(theta).sum(-1))
        >>> theta = jax.random.normal(jax.random.key(0), (200, 2))
        >>> r = tarp(jax.random.key(1), prior, theta, theta + 1.0, num_samples=100)
        >>> sorted(r.to_dict())
        ['alpha', 'atc', 'contraction', 'ks_pvalue', 'mean_log_prob', 'num_samples', 'ok',
         'test_pairs']
    """

    levels: np.ndarray
    ecp: np.ndarray
    ranks: np.ndarray
    atc: float
    pvalue: float
    alpha: float
    ok: bool
    contraction: np.ndarray
    mean_log_prob: float
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "atc": self.atc,
            "ks_pvalue": self.pvalue,
            "alpha": self.alpha,
            **_sharpness(self, len(self.ranks)),
        }

    def plot(self):
        """Expected coverage probability against credibility."""
        return _coverage_plot(
            self.levels,
            self.ecp,
            len(self.ranks),
            f"TARP: KS p = {self.pvalue:.2g}",
            "credibility level",
            "expected coverage probability",
        )


def tarp(key, posterior, theta, x, *, num_samples: int = 1000, alpha: float = ALPHA) -> TARPResult:
    """TARP (Lemos et al. 2023) on test pairs `theta` (n, p), `x` (n, k), as `sbi` runs it:
    parameters rescaled to the test parameters' box, one reference point per pair drawn
    uniformly in that box, Euclidean distances.

    Example:
        >>> class Prior:  # the prior itself: calibrated, and contracts nothing
        ...     def sample(self, key, shape, *, x):
        ...         return jax.random.normal(key, (*shape, *x.shape))
        ...     def log_prob(self, theta, *, x):
        ...         return jax.scipy.stats.norm.logpdf(theta).sum(-1)
        >>> theta = jax.random.normal(jax.random.key(0), (200, 2))
        >>> x = theta + jax.random.normal(jax.random.key(1), (200, 2))
        >>> r = tarp(jax.random.key(2), Prior(), theta, x, num_samples=100)
        >>> r.ok, bool(abs(r.atc) < 0.05)
        (True, True)
    """
    key, reference_key = jax.random.split(as_typed_key(key))
    draws = draws_for(key, posterior, theta, x, num_samples, with_log_prob=False)
    return tarp_of(draws, reference_key, alpha)


def tarp_of(draws: Draws, key, alpha: float = ALPHA) -> TARPResult:
    """`tarp` of draws already made (`key`: the reference points)."""
    low, high = draws.theta.min(axis=0), draws.theta.max(axis=0)
    scale = high - low + 1e-10
    references = np.asarray(jax.random.uniform(key, draws.theta.shape), dtype=float)
    theta_unit = (draws.theta - low) / scale  # the references lie in this box, [0, 1]^p
    samples_unit = (draws.samples - low) / scale
    sample_distance = np.linalg.norm(samples_unit - references[None], axis=-1)
    theta_distance = np.linalg.norm(theta_unit - references, axis=-1)
    ranks = (sample_distance < theta_distance[None]).mean(axis=0)
    levels = np.linspace(0.0, 1.0, max(len(ranks) // 10, 2) + 1)
    ecp = (ranks[None, :] <= levels[:, None]).mean(axis=1)
    upper = levels >= 0.5
    atc = float(np.sum(ecp[upper] - levels[upper]) * (levels[1] - levels[0]))
    pvalue = float(stats.kstest(ranks, "uniform").pvalue)
    return TARPResult(
        levels=levels,
        ecp=ecp,
        ranks=ranks,
        atc=atc,
        pvalue=pvalue,
        alpha=alpha,
        ok=pvalue > alpha,
        **draws.sharpness(),
    )


def _sharpness(result, test_pairs: int) -> dict[str, Any]:
    """The fields every result's `to_dict` shares."""
    return {
        "contraction": result.contraction.tolist(),
        "mean_log_prob": result.mean_log_prob,
        "num_samples": result.num_samples,
        "test_pairs": int(test_pairs),
    }


def _label(labels, j: int) -> str:
    return labels[j] if labels is not None else f"theta[{j}]"
