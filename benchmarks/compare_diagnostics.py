"""Calibration checks at scale: ffjord's `sbi.sbc` and `sbi.coverage` against `sbi`'s
`run_sbc` (NPE and FMPE), on the same test pairs, in one invocation.

For sbibm's ``--task`` (default two_moons): ``--simulations`` training pairs (seed 0) and
``--test-pairs`` test pairs (seed 1) from its prior and simulator. sbi's NPE and FMPE
train with their defaults, ffjord with `sbi.fit_posterior` (the plain command's
defaults, the prior's box as its support). Then, each timed as a whole call (ffjord's
compilation included: the first call of the process):

* SBC: ``run_sbc(theta, x, posterior, num_posterior_samples=L)`` (ranks of the
  marginals) against ``ffjord.sbi.sbc(key, posterior, theta, x, num_samples=L)``;
* expected coverage: ``run_sbc(..., reduce_fns=posterior.log_prob)`` (sample, then the
  log density of every draw: Deistler et al.'s sample-based coverage) against
  ``ffjord.sbi.coverage`` (draws and their log densities from the same solves).

Reported: seconds, ratios, and each check's verdict. FMPE's coverage (its log density is
an ODE solve per draw) runs with ``--fmpe-coverage``.

    python benchmarks/compare_diagnostics.py --out docs/benchmarks/diagnostics.json
    python benchmarks/compare_diagnostics.py --methods ffjord npe   # FMPE's SBC alone: > 14 min
    python benchmarks/compare_diagnostics.py --smoke   # tiny; ffjord alone without sbi

Extras as for compare_sbi.py (``.[sbi-peers]``, ``pip install --no-deps sbibm``).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from ffjord import sbi as ffsbi  # not the `sbi` package, the peer

import harness


def ffjord_side(theta, x, test_theta, test_x, low, high, samples: int, extra) -> dict:
    prior = ffsbi.BoxUniform(low, high)
    started = time.perf_counter()
    posterior = ffsbi.fit_posterior(jax.random.key(0), theta, x, prior=prior, **extra)
    out = {"training_seconds": time.perf_counter() - started}
    started = time.perf_counter()
    r = ffsbi.sbc(jax.random.key(1), posterior, test_theta, test_x, num_samples=samples)
    out["sbc_seconds"] = time.perf_counter() - started
    out["sbc"] = r.to_dict()
    started = time.perf_counter()
    c = ffsbi.coverage(jax.random.key(2), posterior, test_theta, test_x, num_samples=samples)
    out["coverage_seconds"] = time.perf_counter() - started
    out["coverage"] = {k: v for k, v in c.to_dict().items() if k not in ("levels", "coverage")}
    return out


def peer_side(method: str, task, theta, x, test_theta, test_x, samples: int, coverage: bool):
    import torch
    from sbi.diagnostics import check_sbc, run_sbc

    from sbi_tasks import train_sbi

    logs = Path(tempfile.mkdtemp(prefix="ffjord_diagnostics_sbi_"))
    inference, estimator, seconds, _ = train_sbi(method, task, theta, x, 0, logs)
    posterior = inference.build_posterior(estimator)
    out = {"training_seconds": seconds}
    t, xs = torch.as_tensor(test_theta), torch.as_tensor(test_x)
    started = time.perf_counter()
    ranks, dap = run_sbc(t, xs, posterior, num_posterior_samples=samples,
                         show_progress_bar=False)  # fmt: skip
    out["sbc_seconds"] = time.perf_counter() - started
    checked = check_sbc(ranks, t, dap, num_posterior_samples=samples)
    out["sbc"] = {"ks_pvals": [float(v) for v in checked["ks_pvals"]]}
    if coverage:
        started = time.perf_counter()
        run_sbc(t, xs, posterior, num_posterior_samples=samples, show_progress_bar=False,
                reduce_fns=posterior.log_prob)  # fmt: skip
        out["coverage_seconds"] = time.perf_counter() - started
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="two_moons")
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--test-pairs", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--fmpe-coverage", action="store_true")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("ffjord", "npe", "fmpe"),
        default=["ffjord", "npe", "fmpe"],
        help="which to run (FMPE's SBC: > 14 min)",
    )
    p.add_argument("--out", default="docs/benchmarks/diagnostics.json")
    harness.add_smoke(p)
    args = p.parse_args()
    extra = {}
    if args.smoke:
        args.simulations, args.test_pairs, args.samples = 500, 20, 50
        args.out = str(harness.smoke_dir(__file__) / "diagnostics.json")
        extra = dict(harness.TINY_MODEL)
    report: dict = {"machine": harness.machine_line(), "settings": vars(args).copy()}
    if not harness.peer_available("torch", "sbibm", "sbi"):
        if not args.smoke:
            raise SystemExit("compare_diagnostics needs sbi, sbibm and torch (.[sbi-peers])")
        harness.skip_peer("sbi / sbibm / torch")
        rng = np.random.default_rng(0)
        theta = rng.uniform(-1, 1, (args.simulations + args.test_pairs, 2))
        x = theta + 0.1 * rng.normal(size=theta.shape)
        n = args.simulations
        out = ffjord_side(theta[:n], x[:n], theta[n:], x[n:], [-1, -1], [1, 1],
                          args.samples, extra)  # fmt: skip
        print(json.dumps({k: v for k, v in out.items() if k.endswith("seconds")}))
        return
    import torch

    from sbi_tasks import THREADS, load_task, prior_box, simulate

    torch.set_num_threads(THREADS)
    task = load_task(args.task)
    theta, x = simulate(task, args.simulations, 0)
    test_theta, test_x = simulate(task, args.test_pairs, 1)
    low, high = prior_box(task)
    report["versions"] = harness.versions("ffjord", "jax", "torch", "sbi", "sbibm")
    methods = {
        "ffjord": lambda: ffjord_side(theta.numpy(), x.numpy(), test_theta.numpy(),
                                      test_x.numpy(), low, high, args.samples, extra),
        "npe": lambda: peer_side("npe", task, theta, x, test_theta.numpy(), test_x.numpy(),
                                 args.samples, True),
        "fmpe": lambda: peer_side("fmpe", task, theta, x, test_theta.numpy(), test_x.numpy(),
                                  args.samples, args.fmpe_coverage),
    }  # fmt: skip
    for name, run in methods.items():
        if name not in args.methods:
            continue
        print(f"[{args.task}] {name} ...", flush=True)
        report[name] = run()
        shown = {k: round(v, 2) for k, v in report[name].items() if k.endswith("seconds")}
        print(f"[{args.task}] {name}: {shown}", flush=True)
    ff = report.get("ffjord", {})
    report["ratios"] = {
        f"{peer}/ffjord_{what}": report[peer][f"{what}_seconds"] / ff[f"{what}_seconds"]
        for peer in ("npe", "fmpe")
        for what in ("sbc", "coverage")
        if f"{what}_seconds" in report.get(peer, {}) and f"{what}_seconds" in ff
    }
    print(json.dumps(report["ratios"], indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
