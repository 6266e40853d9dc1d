"""The whole SBI workflow on the built-in `arcs` simulator, whose posterior is known:
simulate, train with the plain defaults, diagnose, look: the numbers and figures of
docs/guides/sbi.md.

    python benchmarks/sbi_workflow.py                       # docs/figures/sbi-*.png
    python benchmarks/sbi_workflow.py --smoke               # tiny, into a temporary dir

Each step is timed as a user meets it (compilation included). The diagnostics run on
test pairs from the prior; the pairplot overlays the exact posterior's draws
(`simulators.posterior_sample`) and the true parameter. A second set of diagnostics
on a deliberately overconfident posterior (the trained flow's draws shrunk halfway to
their mean) shows what a failed check looks like.
"""

import argparse
import json
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np

import harness

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ffjord import sbi, simulators  # noqa: E402


class Shrunk(sbi.AbstractPosterior):
    """A posterior made overconfident on purpose: draws pulled halfway to their mean."""

    def __init__(self, posterior: sbi.Posterior, factor: float = 0.5):
        self.posterior, self.factor = posterior, factor

    def sample(self, key, shape, *, x):
        draws = self.posterior.sample(key, shape, x=x)
        mean = draws.mean(axis=tuple(range(len(shape))), keepdims=True)
        return mean + self.factor * (draws - mean)

    def log_prob(self, theta, *, x):  # not used by SBC
        return self.posterior.log_prob(theta, x=x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--test-pairs", type=int, default=500)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--figures", default="docs/figures", help="where the figures go")
    p.add_argument("--out", default="docs/benchmarks/sbi_workflow.json")
    harness.add_smoke(p)
    args = p.parse_args()
    extra = {}
    if args.smoke:
        tmp = harness.smoke_dir(__file__)
        args.simulations, args.test_pairs, args.samples = 600, 40, 50
        args.figures, args.out = str(tmp), str(tmp / "sbi_workflow.json")
        extra = dict(harness.TINY_MODEL)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(0)
    timings, report = {}, {"machine": harness.machine_line()}

    started = time.perf_counter()
    theta, x = sbi.simulate(key, simulators.prior(), simulators.simulator, args.simulations)
    timings["simulate"] = time.perf_counter() - started

    started = time.perf_counter()
    posterior = sbi.fit_posterior(jax.random.key(1), theta, x, prior=simulators.prior(), **extra)
    timings["fit_posterior"] = time.perf_counter() - started

    test_theta, test_x = sbi.simulate(
        jax.random.key(2), simulators.prior(), simulators.simulator, args.test_pairs
    )
    started = time.perf_counter()
    results = sbi.diagnose(
        jax.random.key(3), posterior, test_theta, test_x, num_samples=args.samples
    )
    timings["diagnose"] = time.perf_counter() - started
    report["diagnostics"] = {name: r.to_dict() for name, r in results.items()}
    for name, r in results.items():
        fig = r.plot(["theta[0]", "theta[1]"]) if name == "sbc" else r.plot()
        fig.savefig(figures / f"sbi-{name}.png", dpi=110)
        plt.close(fig)

    shrunk = sbi.sbc(jax.random.key(4), Shrunk(posterior), test_theta, test_x,
                     num_samples=args.samples)  # fmt: skip
    report["overconfident_sbc"] = shrunk.to_dict()
    fig = shrunk.plot(["theta[0]", "theta[1]"])
    fig.savefig(figures / "sbi-sbc-overconfident.png", dpi=110)
    plt.close(fig)

    x_o = np.array([1.5, 1.2])
    truth = np.array([1.2, 0.9])  # |truth| = 1.5, truth[0] near x_o[1]
    started = time.perf_counter()
    draws = posterior.sample(jax.random.key(5), (5000,), x=x_o)
    timings["sample_5000"] = time.perf_counter() - started
    exact = simulators.posterior_sample(x_o, 5000, seed=6)
    title = "p(theta | x = (1.5, 1.2)): ffjord (blue), exact (outline)"
    labels = ["theta[0]", "theta[1]"]
    fig = sbi.pairplot(draws, truth=truth, reference=exact, labels=labels, title=title)
    fig.savefig(figures / "sbi-pairplot.png", dpi=110)
    plt.close(fig)
    started = time.perf_counter()
    mode = posterior.map(x_o, key=jax.random.key(7))
    timings["map"] = time.perf_counter() - started
    report["map"] = {"x_o": x_o.tolist(), "mode": mode.tolist(),
                     "mode_radius": float(np.linalg.norm(mode))}  # fmt: skip
    report["seconds"] = timings
    report["settings"] = {"simulations": args.simulations, "test_pairs": args.test_pairs,
                          "samples": args.samples}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps({"seconds": timings, **{k: v["ok"] for k, v in report["diagnostics"].items()}})
    )


if __name__ == "__main__":
    main()
