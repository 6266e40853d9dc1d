"""Simulators with raw observations and exact posteriors, for `compare_embeddings.py`.

Each task draws `(theta, x)` pairs from its prior and simulator and gives, for any
observation, the exact posterior on a grid (the likelihood in closed form): its
log-density at a point and draws from it. Two parameters each, so a 2-D grid of
`GRID` x `GRID` cells around the observation's maximum-likelihood estimate holds the
posterior to well below the flows' error.

* `trials`: theta = (mu, log sigma), mu ~ U(-2, 2), log sigma ~ U(-1.5, 0.5); x is N = 50
  i.i.d. draws of N(mu, sigma^2). The sufficient statistics (mean, log standard
  deviation) are the good summaries; the posterior depends on x through a sum of squares,
  so no linear summary of the raw trials is sufficient.
* `ar1`: theta = (phi, log sigma), phi ~ U(-0.9, 0.9), log sigma ~ U(-1, 1); x is T = 200
  steps of a stationary AR(1) process x_t = phi x_{t-1} + sigma e_t, x_0 ~ N(0, sigma^2 /
  (1 - phi^2)). The good summaries: the least-squares phi, the log residual standard
  deviation and the log mean square.
"""

import dataclasses

import numpy as np

GRID = 400  # cells per axis of the exact posterior's grid
SPAN = 8.0  # the grid reaches this many approximate posterior standard deviations


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    low: np.ndarray  # the uniform prior's box
    high: np.ndarray
    shape: tuple[int, int]  # the raw observation's layout (T, C)
    embedding: str  # the embedding that matches the layout

    def prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, (n, 2))

    def simulate(self, rng: np.random.Generator, theta: np.ndarray) -> np.ndarray:
        return SIMULATORS[self.name](rng, theta, self.shape[0])

    def summaries(self, x: np.ndarray) -> np.ndarray:
        return SUMMARIES[self.name](x)

    def log_likelihood(self, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """log p(x | theta) for one observation `x` on a grid of (a, b) = theta."""
        return LIKELIHOODS[self.name](x, a, b)

    def grid(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(axis a, axis b, log likelihood on the grid (GRID, GRID), log of its integral
        over the grid: the evidence up to the prior's constant density)."""
        centre, width = CENTRES[self.name](x)
        axes = []
        for j in range(2):
            lo = max(self.low[j], centre[j] - SPAN * width[j])
            hi = min(self.high[j], centre[j] + SPAN * width[j])
            axes.append(np.linspace(lo, hi, GRID))
        log_lik = self.log_likelihood(x, axes[0][:, None], axes[1][None, :])
        cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
        peak = log_lik.max()
        log_z = peak + np.log(np.sum(np.exp(log_lik - peak)) * cell)
        return axes[0], axes[1], log_lik, float(log_z)

    def log_posterior(self, x: np.ndarray, theta: np.ndarray) -> float:
        """log p(theta | x) (the prior is flat on its box, so the posterior is the
        likelihood over its integral)."""
        log_z = self.grid(x)[3]
        return float(self.log_likelihood(x, np.array(theta[0]), np.array(theta[1])) - log_z)

    def posterior_draws(self, rng: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
        """`n` draws of the exact posterior: grid cells by their mass, uniform within."""
        a, b, log_post, _ = self.grid(x)
        p = np.exp(log_post - log_post.max()).ravel()
        cells = rng.choice(p.size, n, p=p / p.sum())
        i, j = np.unravel_index(cells, log_post.shape)
        da, db = a[1] - a[0], b[1] - b[0]
        return np.stack(
            [a[i] + da * (rng.random(n) - 0.5), b[j] + db * (rng.random(n) - 0.5)], axis=1
        )


def _trials(rng, theta, n_trials):
    mu, sigma = theta[:, :1], np.exp(theta[:, 1:])
    return mu + sigma * rng.standard_normal((len(theta), n_trials))


def _trials_summaries(x):
    return np.stack([x.mean(axis=1), np.log(x.std(axis=1))], axis=1)


def _trials_likelihood(x, mu, log_sigma):
    n, s1, s2 = x.size, x.sum(), np.sum(x**2)
    return -n * log_sigma - (s2 - 2 * mu * s1 + n * mu**2) / (2 * np.exp(2 * log_sigma))


def _trials_centre(x):
    n, s = x.size, x.std()
    return (x.mean(), np.log(s)), (s / np.sqrt(n), 1 / np.sqrt(2 * n))


def _ar1(rng, theta, steps):
    phi, sigma = theta[:, 0], np.exp(theta[:, 1])
    x = np.empty((len(theta), steps))
    x[:, 0] = sigma / np.sqrt(1 - phi**2) * rng.standard_normal(len(theta))
    for t in range(1, steps):
        x[:, t] = phi * x[:, t - 1] + sigma * rng.standard_normal(len(theta))
    return x


def _ar1_fit(x):
    lagged, now = x[..., :-1], x[..., 1:]
    phi = np.sum(lagged * now, axis=-1) / np.sum(lagged**2, axis=-1)
    residual = now - phi[..., None] * lagged
    return phi, np.log(residual.std(axis=-1))


def _ar1_summaries(x):
    phi, log_sigma = _ar1_fit(x)
    return np.stack([phi, log_sigma, 0.5 * np.log(np.mean(x**2, axis=1))], axis=1)


def _ar1_likelihood(x, phi, log_sigma):
    var = np.exp(2 * log_sigma)
    s00, s11 = np.sum(x[:-1] ** 2), np.sum(x[1:] ** 2)
    s01 = np.sum(x[:-1] * x[1:])
    first = 0.5 * np.log(1 - phi**2) - x[0] ** 2 * (1 - phi**2) / (2 * var)
    rest = -(s11 - 2 * phi * s01 + phi**2 * s00) / (2 * var)
    return first + rest - len(x) * log_sigma


def _ar1_centre(x):
    phi, log_sigma = _ar1_fit(x)
    n = len(x)
    return (float(phi), float(log_sigma)), (np.sqrt(max(1 - phi**2, 0.05) / n), 1 / np.sqrt(2 * n))


SIMULATORS = {"trials": _trials, "ar1": _ar1}
SUMMARIES = {"trials": _trials_summaries, "ar1": _ar1_summaries}
LIKELIHOODS = {"trials": _trials_likelihood, "ar1": _ar1_likelihood}
CENTRES = {"trials": _trials_centre, "ar1": _ar1_centre}
TASKS = {
    "trials": Task("trials", np.array([-2.0, -1.5]), np.array([2.0, 0.5]), (50, 1), "set"),
    "ar1": Task("ar1", np.array([-0.9, -1.0]), np.array([0.9, 1.0]), (200, 1), "conv1d"),
}


def pairs(task: Task, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` pairs (theta (n, 2), raw x (n, T * C)) from the prior and the simulator."""
    rng = np.random.default_rng(seed)
    theta = task.prior(rng, n)
    return theta, task.simulate(rng, theta)
