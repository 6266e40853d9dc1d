"""Rounds of simulations near one observation: truncated sequential posterior estimation
(TSNPE, Deistler et al. 2022).

Each round draws its parameters from the prior restricted to the current posterior's
highest-density region at `x_o` (where log q exceeds its `TRUNCATION` quantile over
posterior draws), simulates them, and trains on every round's pairs pooled, with the
plain loss: a truncated prior needs no correction. Parameters come by rejection from
the prior (the density tested only within the region's bounds, its posterior draws'
range widened by `MARGIN`); when that would take too many draws, by
sampling-importance-resampling from the posterior instead. Rounds stop early once the
region's prior mass (counted, or by importance sampling for a region too small to
count) changes by less than `SETTLED` between rounds. With `run_dir`, every round is
kept (`round-1`, ...) and an interrupted call resumes from the last finished round.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> from ffjord import sbi
    >>> prior = sbi.BoxUniform([-10.0], [10.0])
    >>> simulator = lambda key, t: t + 0.1 * jax.random.normal(key, t.shape)
    >>> posterior = sbi.sequential(jax.random.key(0), prior, simulator, jnp.array([1.0]),
    ...                            rounds=2, simulations=1000, epochs=3, blocks=1)
    >>> [round(r["region_prior_mass"], 2) < 0.5 for r in posterior.rounds]
    [True, True]
"""

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._checks import positive_int
from .._distributions import MultivariateNormalDiag
from .._errors import InputError
from .._io import atomic_write_text
from .._keys import as_typed_key
from .._plan import train
from .._sampling import ROUND_ROWS, draws_within, within_box
from ._fit import fit_posterior, simulate
from ._posterior import Posterior

TRUNCATION = 1e-4  # the region: log q above this quantile of log q over posterior draws
REGION_DRAWS = 10_000  # posterior draws that set the region's threshold and bounds
MARGIN = 0.25  # the region's bounds: the draws' range, widened by this share on each side
SETTLED = 0.1  # stop when the region's prior mass changes by less than this share
MIN_HITS = 100  # prior draws in the region that count its mass; fewer: importance sampling
WIDER = 2.0  # the importance sampler's base, in the flow's base scales
MAX_PRIOR_DRAWS = 10_000  # prior draws per kept parameter before rejection gives way to SIR
MAX_CANDIDATES = 200  # region tests (flow solves) per kept parameter before SIR


class Truncated:
    """The prior restricted to the region {theta: log q(theta | x_o) > threshold} within
    `bounds` (low, high): a prior itself (`sample(key, shape)`, `log_prob(theta)`), the
    proposal of a sequential round. `region` builds it from a posterior.

    Prior draws outside the bounds are rejected before the (costly) density test, so
    rejection stays cheap for regions a thousandth of the prior's mass or less."""

    def __init__(self, prior, posterior: Posterior, x_o: np.ndarray, threshold: float,
                 bounds: tuple[np.ndarray, np.ndarray] | None = None):  # fmt: skip
        self.prior, self.posterior, self.x_o, self.threshold = prior, posterior, x_o, threshold
        self.bounds = bounds
        self.mass: float | None = None  # its prior mass, once estimated

    @classmethod
    def region(cls, prior, posterior: Posterior, key, x_o: np.ndarray) -> "Truncated":
        """The region where log q exceeds its `TRUNCATION` quantile over `REGION_DRAWS`
        posterior draws at `x_o`, bounded by the draws' range widened by `MARGIN` on each
        side (the draws cover the region: it excludes 1e-4 of their mass)."""
        theta, log_q = posterior.sample_and_log_prob(key, (REGION_DRAWS,), x=x_o)
        low, high = theta.min(axis=0), theta.max(axis=0)
        pad = MARGIN * (high - low)
        return cls(prior, posterior, x_o, float(np.quantile(log_q, TRUNCATION)),
                   (low - pad, high + pad))  # fmt: skip

    def sample(self, key, shape: tuple[int, ...] = ()) -> np.ndarray:
        n = int(np.prod(shape)) if shape else 1
        return self.draw(key, n)[0].reshape(*shape, -1)

    def log_prob(self, theta) -> np.ndarray:
        """The truncated prior's log density (normalised by its estimated prior mass)."""
        theta = np.asarray(theta)
        mass = self.mass if self.mass is not None else 1.0
        inside = self.inside(theta.reshape(-1, theta.shape[-1])).reshape(theta.shape[:-1])
        return np.where(inside, np.asarray(self.prior.log_prob(theta)) - np.log(mass), -np.inf)

    def in_bounds(self, theta: np.ndarray) -> np.ndarray:
        if self.bounds is None:
            return np.ones(len(theta), bool)
        return within_box(theta, *self.bounds)

    def inside(self, theta: np.ndarray) -> np.ndarray:
        inside = self.in_bounds(theta)
        inside[inside] = self._above(theta[inside])  # the density only within the bounds
        return inside

    def _above(self, theta: np.ndarray) -> np.ndarray:
        """Whether log q exceeds the threshold at each of `theta` (n, p), n >= 0."""
        if not len(theta):
            return np.zeros(0, bool)
        return self.posterior.log_prob(theta, x=self.x_o) > self.threshold

    def prior_mass(self, key, draws: int = REGION_DRAWS) -> float:
        """The region's prior mass: the share of `draws` prior draws inside it or, when
        fewer than `MIN_HITS` land there (a region too small to count), by importance
        sampling: the mean of prior / q' over `draws` draws of q', counted inside the
        region, with q' the flow from a base `WIDER` times as wide (it covers the
        region's edge, where prior / q is largest)."""
        prior_key, flow_key = jax.random.split(key)
        hits = self.inside(np.asarray(self.prior.sample(prior_key, (draws,))))
        if hits.sum() >= MIN_HITS:
            self.mass = float(hits.mean())
            return self.mass
        flow = self.posterior.flow
        if isinstance(flow.base, MultivariateNormalDiag):
            flow = eqx.tree_at(lambda f: f.base.scale_diag, flow, WIDER * flow.base.scale_diag)
        theta, log_q = draws_within(flow, flow_key, draws, context=self.x_o, with_log_prob=True)
        assert log_q is not None
        log_w = np.asarray(self.prior.log_prob(theta), np.float64) - log_q
        self.mass = float(np.mean(np.where(self.inside(theta), np.exp(log_w), 0.0)))
        return self.mass

    def draw(self, key, n: int) -> tuple[np.ndarray, str]:
        """`n` parameters from the truncated prior, and how they were drawn: by rejection
        from the prior (batches sized by the region's prior mass; the density tested
        only within the bounds), or by sampling-importance-resampling when rejection
        would need more than `MAX_PRIOR_DRAWS` prior draws or `MAX_CANDIDATES` density
        tests per kept parameter."""
        reject_key, sir_key = jax.random.split(key)
        if self.mass is not None and self.mass * MAX_PRIOR_DRAWS < 1:
            return self._resampled(sir_key, n), "sampling-importance-resampling"
        kept, got, drawn, tested = [], 0, 0, 0
        while got < n:
            if drawn >= MAX_PRIOR_DRAWS * n or tested >= MAX_CANDIDATES * n:
                return self._resampled(sir_key, n), "sampling-importance-resampling"
            rate = got / drawn if got else (self.mass or 1 / MAX_PRIOR_DRAWS)
            wanted = max(1.2 * (n - got) / rate, 1000)
            batch = int(min(wanted, ROUND_ROWS, MAX_PRIOR_DRAWS * n - drawn))
            candidate_key = jax.random.fold_in(reject_key, drawn)
            candidates = np.asarray(self.prior.sample(candidate_key, (batch,)))
            drawn += batch
            bounded = candidates[self.in_bounds(candidates)]
            tested += len(bounded)
            kept.append(bounded[self._above(bounded)])
            got += len(kept[-1])
        return np.concatenate(kept)[:n], "rejection from the prior"

    def _resampled(self, key, n: int) -> np.ndarray:
        """SIR: posterior draws in the region, weighted by prior / q, resampled."""
        draw_key, pick_key = jax.random.split(key)
        theta, log_q = self.posterior.sample_and_log_prob(draw_key, (10 * n,), x=self.x_o)
        log_w = np.asarray(self.prior.log_prob(theta)) - log_q
        log_w = np.where(self.in_bounds(theta) & (log_q > self.threshold), log_w, -np.inf)
        if not np.any(np.isfinite(log_w)):
            raise InputError("no posterior draw lies in the truncated prior's region")
        weights = np.exp(log_w - np.max(log_w))
        picked = jax.random.choice(pick_key, len(theta), (n,), p=weights / weights.sum())
        return theta[np.asarray(picked)]


class _State:
    """What finished rounds leave in `run_dir/sequential.json` (nothing without run_dir)."""

    def __init__(self, run_dir: Path | None, settings: dict[str, Any]):
        self.run_dir, self.rounds = run_dir, []
        self.path = None if run_dir is None else run_dir / "sequential.json"
        if self.path is not None and self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved["settings"] != settings:
                raise InputError(
                    f"{run_dir} holds rounds made with other settings ({saved['settings']}); "
                    "choose another run_dir",
                    parameters=("run_dir",),
                )
            self.rounds = saved["rounds"]
        self.settings = settings

    def save(self) -> None:
        if self.path is not None:
            text = json.dumps({"settings": self.settings, "rounds": self.rounds}, indent=2)
            atomic_write_text(self.path, text + "\n")


def sequential(
    key,
    prior,
    simulator,
    x_o,
    *,
    rounds: int = 4,
    simulations: int = 10_000,
    run_dir: "str | os.PathLike[str] | None" = None,
    **options,
) -> Posterior:
    """A posterior at the observation `x_o` (k,) from `simulations` simulations spent in
    up to `rounds` equal rounds (TSNPE); `options`: any `ffjord.train` keyword for every
    round's training. The returned posterior's `rounds` lists each round's simulations,
    the region's prior mass and how its parameters were drawn.

    Diagnose a sequential posterior locally: test pairs from the last round's proposal
    (`posterior.proposal`, a prior: the prior truncated to the region), not from the
    whole prior. See the module's example (two rounds on a wide prior).

    Example:
        >>> sequential(jax.random.key(0), None, None, jnp.zeros((2, 2)))
        Traceback (most recent call last):
        ...
        ffjord._errors.InputError: x_o must be one finite observation (k,), got shape (2, 2)
    """
    rounds = positive_int(rounds, "rounds")
    simulations = positive_int(simulations, "simulations")
    x_o = np.asarray(x_o, dtype=float)
    if x_o.ndim != 1 or not np.all(np.isfinite(x_o)):
        raise InputError(f"x_o must be one finite observation (k,), got shape {x_o.shape}")
    per_round = [simulations // rounds + (i < simulations % rounds) for i in range(rounds)]
    root = None if run_dir is None else Path(run_dir)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    settings = {"rounds": rounds, "simulations": simulations, "x_o": x_o.tolist(),
                "options": {k: repr(v) for k, v in sorted(options.items())}}  # fmt: skip
    state = _State(root, settings)
    key = as_typed_key(key)

    def keys(r: int):  # (simulation, fit, region, mass, draw) keys of round r
        return jax.random.split(jax.random.fold_in(key, r), 5)

    def region_after(r: int, posterior: Posterior) -> Truncated:
        """The region round r's posterior gives (the proposal of round r + 1)."""
        _, _, region_key, mass_key, _ = keys(r)
        region = Truncated.region(prior, posterior, region_key, x_o)
        region.prior_mass(mass_key)
        return region

    thetas, xs = [], []
    posterior, proposal, region, mass = None, prior, None, 1.0
    previous: Posterior | None = None  # the posterior before the last one
    for r in range(rounds):
        sim_key, fit_key, _, _, draw_key = keys(r)
        if r < len(state.rounds):  # finished before: its pairs and its posterior
            done = state.rounds[r]
            pairs = np.load(Path(done["run_dir"] + ".simulations.npy"))
            thetas.append(pairs[:, : pairs.shape[1] - len(x_o)])
            xs.append(pairs[:, pairs.shape[1] - len(x_o) :])
            previous, posterior = posterior, Posterior(done["run_dir"], prior=prior)
            region, mass = None, done["region_prior_mass"]
            if done.get("settled"):
                break
            continue
        method = "the prior"
        if posterior is None:
            theta_r = np.asarray(prior.sample(draw_key, (per_round[r],)))
        else:
            region = region or region_after(r - 1, posterior)  # resumed: built again
            theta_r, method = region.draw(draw_key, per_round[r])
            proposal = region
        theta_r, x_r = simulate(sim_key, _Fixed(theta_r), simulator, len(theta_r))
        thetas.append(theta_r)
        xs.append(x_r)
        round_dir = None if root is None else root / f"round-{r + 1}"
        pooled = np.concatenate(thetas), np.concatenate(xs)
        previous, posterior = posterior, _fit_round(fit_key, pooled, prior, round_dir, options)
        region = region_after(r, posterior)
        new_mass = region.mass
        assert new_mass is not None
        settled = r > 0 and abs(new_mass - mass) < SETTLED * max(mass, 1e-12)
        state.rounds.append({
            "round": r + 1,
            "simulations": int(len(theta_r)),
            "drawn_by": method,
            "region_prior_mass": new_mass,
            "settled": bool(settled),
            "run_dir": None if round_dir is None else os.fspath(round_dir),
        })  # fmt: skip
        state.save()
        mass = new_mass
        if settled:
            break
    assert posterior is not None
    if proposal is prior and previous is not None:  # every round was finished before
        proposal = region_after(len(state.rounds) - 2, previous)
    posterior.rounds = list(state.rounds)
    posterior.proposal = proposal
    return posterior


def _fit_round(key, pooled, prior, round_dir: Path | None, options) -> Posterior:
    """`fit_posterior` on the pooled pairs; a round whose training was interrupted is
    resumed (its run directory holds a config), one interrupted before is redone."""
    if round_dir is not None:
        data = Path(f"{os.fspath(round_dir)}.simulations.npy")
        if (round_dir / "config.json").exists():
            train(round_dir, resume=True, show_progress=False)
            return Posterior(round_dir, prior=prior)
        data.unlink(missing_ok=True)  # the same pairs are drawn again (the same keys)
        if round_dir.exists() and not any(round_dir.iterdir()):
            round_dir.rmdir()
    return fit_posterior(key, *pooled, prior=prior, run_dir=round_dir, **options)


class _Fixed:
    """Parameters drawn already, served as a prior to `simulate`."""

    def __init__(self, theta: np.ndarray):
        self.theta = theta

    def sample(self, key, shape):
        return self.theta
