"""Rounds against one round on the same simulation budget, where the posterior is far
narrower than the prior and known exactly: the gain of `sbi.sequential` (TSNPE).

The simulator ("banana"): theta uniform on [-5, 5]^2, u = (theta_1, theta_1^2 +
theta_2), x = u + sigma e with e ~ N(0, I) and sigma = 0.05. The map theta -> u has
Jacobian determinant 1, so the exact posterior is N(x, sigma^2 I) pulled back through
u -> (u_1, u_2 - u_1^2) and cut to the prior's box: a thin curved ridge, about 1/200 of
the prior's width (`exact_draws`; tests/test_benchmarks.py checks it against the
unnormalised density).

For each of `--observations` observations (true parameters drawn inside [-4, 4]^2):

* **one round**: `sbi.fit_posterior` on `--simulations` pairs from the prior (trained
  once: it is amortized);
* **rounds**: `sbi.sequential` with the same total `--simulations` in `--rounds`
  equal rounds at this observation;

and C2ST (sbibm's classifier, `harness.c2st`) of 2,000 posterior draws against 2,000
exact draws (0.5 is perfect). Seconds are whole calls, compilation included.

With `--sbibm TASK` (extra `.[sbi-peers]`), the same comparison on an sbibm task
instead: its prior (a box), its simulator (torch, seeded from the key), observations
1..N and their reference posteriors, scored with sbibm's own C2ST (10,000 draws), e.g.
slcp, where the published gain of rounds is small (TSNPE 0.866 against NPE 0.901).

    python benchmarks/sbi_rounds.py                 # docs/benchmarks/sbi_rounds.json
    python benchmarks/sbi_rounds.py --sbibm slcp --observations 3 \
        --out docs/benchmarks/sbi_rounds_slcp.json --figure docs/figures/sbi-rounds-slcp.png
    python benchmarks/sbi_rounds.py --smoke         # tiny, into a temporary dir
"""

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import matplotlib
import numpy as np

import harness

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ffjord import sbi  # noqa: E402

LOW, HIGH, SIGMA = -5.0, 5.0, 0.05
DRAWS = 2000


def prior() -> sbi.BoxUniform:
    return sbi.BoxUniform([LOW, LOW], [HIGH, HIGH])


def simulator(key, theta):
    theta = np.asarray(theta)
    u = np.stack([theta[:, 0], theta[:, 0] ** 2 + theta[:, 1]], axis=1)
    return u + SIGMA * np.asarray(jax.random.normal(key, u.shape))


def exact_draws(x_o: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` draws of the exact posterior at `x_o`: N(x_o, sigma^2 I) in u, pulled back,
    kept inside the box (rejection; the box cuts a negligible share here)."""
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    for _ in range(100):
        u = x_o + SIGMA * rng.standard_normal((2 * n, 2))
        theta = np.stack([u[:, 0], u[:, 1] - u[:, 0] ** 2], axis=1)
        kept.append(theta[np.all((theta >= LOW) & (theta <= HIGH), axis=1)])
        if sum(len(k) for k in kept) >= n:
            return np.concatenate(kept)[:n]
    raise RuntimeError(f"the exact posterior at {x_o} lies outside the prior's box")


def log_unnormalised(theta: np.ndarray, x_o: np.ndarray) -> np.ndarray:
    """log prior + log likelihood, up to a constant (for the test of `exact_draws`)."""
    u = np.stack([theta[..., 0], theta[..., 0] ** 2 + theta[..., 1]], axis=-1)
    inside = np.all((theta >= LOW) & (theta <= HIGH), axis=-1)
    return np.where(inside, -0.5 * np.sum((u - x_o) ** 2, axis=-1) / SIGMA**2, -np.inf)


def observations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(-4.0, 4.0, (n, 2))
    x_o = simulator(jax.random.key(seed), truth)
    return truth, x_o


@dataclasses.dataclass
class Problem:
    """What the comparison needs of a simulator: its prior and simulator, the
    observations, and how a sample at observation i is scored against the truth."""

    name: str
    prior: Any
    simulator: Callable
    x_o: np.ndarray  # (m, k)
    score: Callable[[int, np.ndarray], float]  # (i, draws) -> C2ST
    draws: int  # posterior draws per score
    reference: Callable[[int], np.ndarray]  # i -> reference draws (for the figure)


def banana(n: int, seed: int) -> Problem:
    _, x_o = observations(n, seed)

    def reference(i: int) -> np.ndarray:
        return exact_draws(x_o[i], DRAWS, seed=i)

    def score(i: int, draws: np.ndarray) -> float:
        return harness.c2st(reference(i), draws)

    return Problem("banana", prior(), simulator, x_o, score, DRAWS, reference)


def sbibm_problem(name: str, n: int) -> Problem:
    import torch

    import sbi_tasks

    task = sbi_tasks.load_task(name)
    low, high = sbi_tasks.prior_box(task)
    numbers = range(1, n + 1)
    x_o = np.concatenate([sbi_tasks.observation(task, i).numpy() for i in numbers])

    def simulate(key, theta):
        torch.manual_seed(int(jax.random.randint(key, (), 0, 2**31 - 1)))
        with torch.no_grad():
            x = task.get_simulator()(torch.tensor(np.array(theta, dtype=np.float32)))
        return x.numpy()

    def reference(i: int) -> np.ndarray:
        return task.get_reference_posterior_samples(num_observation=i + 1).numpy()

    def score(i: int, draws: np.ndarray) -> float:
        return sbi_tasks.c2st(task, i + 1, draws)

    return Problem(name, sbi.BoxUniform(low, high), simulate, x_o, score,
                   sbi_tasks.NUM_POSTERIOR_SAMPLES, reference)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--observations", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sbibm", metavar="TASK", help="an sbibm task instead of the banana")
    p.add_argument("--figure", default="docs/figures/sbi-rounds.png")
    p.add_argument("--out", default="docs/benchmarks/sbi_rounds.json")
    harness.add_smoke(p)
    args = p.parse_args()
    extra = {}
    if args.smoke:
        tmp = harness.smoke_dir(__file__)
        args.simulations, args.observations, args.rounds = 800, 1, 2
        args.figure, args.out = str(tmp / "sbi-rounds.png"), str(tmp / "sbi_rounds.json")
        extra = dict(harness.TINY_MODEL)
    key = jax.random.key(args.seed)
    if args.sbibm:
        problem = sbibm_problem(args.sbibm, args.observations)
    else:
        problem = banana(args.observations, args.seed + 1000)

    started = time.perf_counter()
    theta, x = sbi.simulate(jax.random.fold_in(key, 0), problem.prior, problem.simulator,
                            args.simulations)  # fmt: skip
    amortized = sbi.fit_posterior(jax.random.fold_in(key, 1), theta, x, prior=problem.prior,
                                  **extra)  # fmt: skip
    one_round_seconds = time.perf_counter() - started

    rows, shown = [], None
    for i, x_o in enumerate(problem.x_o):
        one = amortized.sample(jax.random.fold_in(key, 10 + i), (problem.draws,), x=x_o)
        started = time.perf_counter()
        posterior = sbi.sequential(jax.random.fold_in(key, 100 + i), problem.prior,
                                   problem.simulator, x_o, rounds=args.rounds,
                                   simulations=args.simulations, **extra)  # fmt: skip
        seconds = time.perf_counter() - started
        many = posterior.sample(jax.random.fold_in(key, 200 + i), (problem.draws,), x=x_o)
        row = {
            "observation": i + 1,
            "x_o": x_o.tolist(),
            "c2st_one_round": problem.score(i, one),
            "c2st_rounds": problem.score(i, many),
            "rounds_seconds": seconds,
            "rounds": posterior.rounds,
        }
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("observation", "c2st_one_round", "c2st_rounds",
                                               "rounds_seconds")}), flush=True)  # fmt: skip
        if shown is None:
            shown = (i, problem.reference(i), one, many)

    report = {
        "machine": harness.machine_line(),
        "command": harness.command_line(__file__, None),
        "problem": problem.name,
        "settings": {
            "simulations": args.simulations,
            "rounds": args.rounds,
            "observations": args.observations,
            "seed": args.seed,
            "draws": problem.draws,
        },
        "one_round_seconds": one_round_seconds,
        "c2st_one_round_mean": float(np.mean([r["c2st_one_round"] for r in rows])),
        "c2st_rounds_mean": float(np.mean([r["c2st_rounds"] for r in rows])),
        "observations": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    assert shown is not None
    figure(problem.name, *shown, Path(args.figure))
    print(json.dumps({k: report[k] for k in ("c2st_one_round_mean", "c2st_rounds_mean",
                                             "one_round_seconds")}))  # fmt: skip


def figure(name: str, i: int, exact, one, many, path: Path) -> None:
    """The first two parameters of the reference posterior and both estimates at
    observation i, zoomed on the reference."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    lo, hi = exact.min(axis=0), exact.max(axis=0)
    pad = 0.5 * (hi - lo)
    lo, hi = lo[:2], hi[:2]
    pad = pad[:2]
    for ax, draws, how in zip(axes, (one, many), ("one round", "rounds (TSNPE)"), strict=True):
        ax.scatter(*exact[:1000, :2].T, s=3, color="0.6", label="reference")
        ax.scatter(*draws[:1000, :2].T, s=3, color="C0", alpha=0.6, label=f"ffjord, {how}")
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel("theta[0]")
        ax.set_title(f"{how}: observation {i + 1}")
        ax.legend(loc="upper right", markerscale=4)
    axes[0].set_ylabel("theta[1]")
    fig.suptitle(f"{name}: one simulation budget spent in one round and in rounds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
