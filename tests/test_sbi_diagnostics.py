"""The calibration checks on posteriors known exactly (a conjugate Gaussian model), on
posteriors wrong in known ways, and on the prior itself (calibrated and useless)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ffjord import InputError, sbi
from ffjord.sbi._diagnostics import ecdf_band

NOISE = 0.5  # x = theta + NOISE * eps, theta ~ N(0, I)
SHRINK = 1 / (1 + NOISE**2)  # the exact posterior: N(SHRINK * x, NOISE^2 * SHRINK)


class Gaussian(sbi.AbstractPosterior):
    """N(SHRINK * x + shift, (width * exact std)^2) per parameter: width 1, shift 0 is exact."""

    def __init__(self, width=1.0, shift=0.0, mean_factor=SHRINK):
        self.std = width * NOISE * np.sqrt(SHRINK)
        self.shift, self.mean_factor = shift, mean_factor
        self.calls = 0

    def sample(self, key, shape, *, x):
        noise = jax.random.normal(key, (*shape, *x.shape))
        return self.mean_factor * x + self.shift + self.std * noise

    def log_prob(self, theta, *, x):
        mean = self.mean_factor * x + self.shift
        return jax.scipy.stats.norm.logpdf(theta, mean, self.std).sum(-1)

    def sample_and_log_prob(self, key, shape, *, x, for_ranking=False):
        self.calls += 1
        return super().sample_and_log_prob(key, shape, x=x, for_ranking=for_ranking)


class Prior:
    """The prior itself, duck-typed (no base class): calibrated, no contraction."""

    def sample(self, key, shape, *, x):
        return jax.random.normal(key, (*shape, *x.shape))

    def log_prob(self, theta, *, x):
        return jax.scipy.stats.norm.logpdf(theta).sum(-1)


def pairs(n=400, p=2, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n, p))
    return theta, theta + NOISE * rng.normal(size=(n, p))


@pytest.fixture(scope="module")
def test_pairs():
    return pairs()


def run_all(posterior, theta, x, key=0):
    key = jax.random.key(key)
    return [
        check(jax.random.fold_in(key, i), posterior, theta, x, num_samples=400)
        for i, check in enumerate((sbi.sbc, sbi.coverage, sbi.tarp))
    ]


def test_the_exact_posterior_passes_every_check_with_its_known_sharpness(test_pairs):
    theta, x = test_pairs
    exact = Gaussian()
    s, c, t = run_all(exact, theta, x)
    assert s.ok and c.ok and t.ok and c.verdict == "calibrated"
    assert s.ranks.shape == (400, 2) and s.ranks.min() >= 0 and s.ranks.max() <= 400
    assert s.pvalues.shape == (2,) and np.all(s.pvalues > 0.01 / 2)
    for r in (s, c, t):  # 1 - posterior variance / prior variance
        np.testing.assert_allclose(r.contraction, 1 - NOISE**2 * SHRINK, atol=0.08)
    variance = NOISE**2 * SHRINK  # E log N(theta; mean, v) = -p/2 (log 2 pi v + 1)
    assert c.mean_log_prob == pytest.approx(-(np.log(2 * np.pi * variance) + 1), abs=0.15)
    assert exact.calls == 1  # coverage took draws and densities from one call
    np.testing.assert_allclose(c.coverage, c.levels, atol=0.1)


@pytest.mark.parametrize(("width", "verdict", "atc_sign"), [(0.5, "overconfident", -1),
                                                            (2.0, "conservative", 1)])  # fmt: skip
def test_too_narrow_or_too_wide_posteriors_are_named(test_pairs, width, verdict, atc_sign):
    theta, x = test_pairs
    s, c, t = run_all(Gaussian(width=width), theta, x)
    assert not s.ok and not c.ok and not t.ok
    assert c.verdict == verdict and np.sign(t.atc) == atc_sign
    # a narrow posterior leaves the truth at the extreme ranks: the ECDF at 0.1 is high
    fractions = s.ranks / s.num_samples
    assert ((fractions < 0.1).mean() > 0.15) == (width < 1)


def test_a_biased_posterior_fails_sbc_on_the_shifted_parameter_only():
    theta, x = pairs(seed=1)
    s = sbi.sbc(jax.random.key(3), Gaussian(shift=np.array([0.6, 0.0])), theta, x,
                num_samples=300)  # fmt: skip
    assert not s.ok and s.pvalues[0] < 1e-6 and s.pvalues[1] > 0.01 / 2


def test_the_prior_is_calibrated_and_contracts_nothing(test_pairs):
    theta, x = test_pairs
    for r in run_all(Prior(), theta, x):
        assert r.ok
        np.testing.assert_allclose(r.contraction, 0.0, atol=0.15)


def test_results_are_json_ready_and_plot_with_labelled_axes(test_pairs):
    import json

    import matplotlib.pyplot as plt

    theta, x = test_pairs
    for r in run_all(Gaussian(), theta[:100], x[:100]):
        json.dumps(r.to_dict())
        fig = r.plot()
        for ax in fig.axes:
            assert ax.get_xlabel() and (ax.get_ylabel() or ax is not fig.axes[0])
            assert ax.get_xlim() == (0.0, 1.0)
        plt.close(fig)


def test_the_ecdf_band_holds_all_points_together_at_its_level():
    rng = np.random.default_rng(0)
    n, points = 200, np.linspace(0, 1, 52)[1:-1]
    lower, upper = ecdf_band(n, points, 0.05, rng)
    ecdfs = (np.sort(rng.uniform(size=(2000, n)), axis=1)[:, :, None] <= points).mean(axis=1)
    inside = np.all((ecdfs >= lower) & (ecdfs <= upper), axis=1).mean()
    assert 0.94 <= inside <= 0.985  # at least its level (discrete counts: a little more)
    low, high = stats.binom.interval(0.95, n, points)
    pointwise = np.all((ecdfs >= low / n) & (ecdfs <= high / n), axis=1).mean()
    assert pointwise < 0.8  # the pointwise band does not hold all points together


def test_bad_test_pairs_and_bad_posteriors_give_one_line_errors(test_pairs):
    theta, x = test_pairs
    key = jax.random.key(0)
    with pytest.raises(InputError, match=r"^theta and x must be test pairs of shapes"):
        sbi.sbc(key, Gaussian(), theta, x[:10])
    with pytest.raises(InputError, match=r"^theta has NaN or infinite values$"):
        sbi.coverage(key, Gaussian(), np.where(theta > 2, np.nan, theta), x)
    with pytest.raises(InputError, match=r"^num_samples must be"):
        sbi.tarp(key, Gaussian(), theta, x, num_samples=0)

    class Flat(Gaussian):
        def sample(self, key, shape, *, x):
            return jnp.zeros((*shape, 3))

    with pytest.raises(InputError, match=r"must give draws of shape \(50, m, 2\)"):
        sbi.sbc(key, Flat(), theta, x, num_samples=50)
