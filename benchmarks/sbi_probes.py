"""Probe ideas for posterior quality that need no change to ffjord, scored by C2ST.

Two probes on sbibm tasks, each on the same 10,000 simulations (seed 0) as
`sbi_variants.py`, with the plain `ffjord train --data PAIRS.npy --context-dims K`:

* ``ensemble``: train ``--members`` runs that differ only in ``--seed`` and pool their
  posterior draws (an equal mixture of the flows), against each member alone.
* ``logit-box``: model the parameters in logit space of their training range,
  ``logit(a + (1 - 2a) (theta - low) / (high - low))`` with a = 0.01 (the bounded-parameter
  transform a uniform prior calls for), the draws mapped back before scoring.

One row of JSON per (task, probe) is appended to ``--out``. ``--c2st-samples N`` scores
the first N draws only (biased low against the full C2ST; compare rows measured alike).

    python benchmarks/sbi_probes.py --tasks two_moons gaussian_mixture \\
        --probes ensemble logit-box --c2st-samples 5000

Extras as for `sbi_tasks.py`. ``--smoke``: two_moons, 500 simulations, a one-epoch model;
without sbibm/torch, ffjord's side alone on its own ``arcs`` simulator, unscored.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import harness
import sbi_tasks

ALPHA = 0.01  # the logit-box probe's margin, as `--logit`'s default
SMOKE_OPTIONS = ["--epochs", "1", "--blocks", "1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons"])
    p.add_argument("--probes", nargs="+", choices=["ensemble", "logit-box"], default=["ensemble"])
    p.add_argument("--members", type=int, default=3, help="ensemble: runs pooled")
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--observations", nargs="+", type=int, default=list(sbi_tasks.ALL_OBSERVATIONS))
    p.add_argument("--c2st-samples", type=int, help="C2ST of the first N samples only")
    p.add_argument("--out", default="docs/benchmarks/sbi_probes.jsonl")
    harness.add_smoke(p)
    args = p.parse_args()
    options: list[str] = []
    if args.smoke:
        if not harness.peer_available("torch", "sbibm"):
            harness.skip_peer("sbibm / torch")
            result = sbi_tasks.smoke_ffjord_only(harness.smoke_dir(__file__), SMOKE_OPTIONS)
            print(json.dumps({"training_seconds": result["training_seconds"]}))
            return
        args.tasks, args.simulations, args.members = ["two_moons"], 500, 2
        args.observations, args.c2st_samples = [1], 500
        args.out, options = str(harness.smoke_dir(__file__) / "sbi_probes.jsonl"), SMOKE_OPTIONS
    import torch

    torch.set_num_threads(sbi_tasks.THREADS)
    with tempfile.TemporaryDirectory(prefix="ffjord_sbi_probes_") as tmp:
        for name in args.tasks:
            task = sbi_tasks.load_task(name)
            theta, x = sbi_tasks.simulate(task, args.simulations, 0)
            observed = [sbi_tasks.observation(task, i).numpy() for i in args.observations]
            rows = np.concatenate(observed)
            for probe in args.probes:
                work = Path(tmp) / f"{name}-{probe}"
                run = ensemble if probe == "ensemble" else logit_box
                row = {
                    "task": name,
                    "probe": probe,
                    "simulations": args.simulations,
                    "c2st_samples": args.c2st_samples or sbi_tasks.NUM_POSTERIOR_SAMPLES,
                }
                row.update(run(args, task, theta.numpy(), x.numpy(), rows, work, options))
                print(json.dumps(row), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


def scored(args, task, samples: np.ndarray) -> dict:
    """Mean and per-observation C2ST of `samples` (observations, draws, p)."""
    first = args.c2st_samples
    per = [sbi_tasks.c2st(task, i, samples[k], first) for k, i in enumerate(args.observations)]
    return {"c2st": round(float(np.mean(per)), 4), "per_observation": [round(c, 4) for c in per]}


def ensemble(args, task, theta, x, rows, work: Path, options) -> dict:
    """Each member alone, then every member's draws pooled (equal shares, shuffled)."""
    members, seconds = [], []
    for seed in range(args.members):
        timings, samples = sbi_tasks.ffjord_posterior(
            theta, x, rows, work / f"seed{seed}", [*options, "--seed", str(seed)]
        )
        members.append(samples)
        seconds.append(round(timings["training_seconds"], 1))
    n = members[0].shape[1]
    share = -(-n // len(members))
    pooled = np.concatenate([m[:, :share] for m in members], axis=1)
    order = np.random.default_rng(0).permutation(pooled.shape[1])[:n]
    return {
        "members": [scored(args, task, m)["c2st"] for m in members],
        "pooled": scored(args, task, pooled[:, order]),
        "training_seconds": seconds,
    }


def logit_box(args, task, theta, x, rows, work: Path, options) -> dict:
    """The plain command on logit-space parameters; draws mapped back to the box."""
    low, high = theta.min(axis=0).astype(np.float64), theta.max(axis=0).astype(np.float64)
    u = ALPHA + (1 - 2 * ALPHA) * (theta - low) / (high - low)
    logits = (np.log(u) - np.log1p(-u)).astype(np.float32)
    timings, samples = sbi_tasks.ffjord_posterior(logits, x, rows, work, options)
    back = low + (1 / (1 + np.exp(-samples.astype(np.float64))) - ALPHA) / (1 - 2 * ALPHA) * (
        high - low
    )
    plain = sbi_tasks.ffjord_posterior(theta, x, rows, work / "plain", options)[1]
    return {
        "logit_box": scored(args, task, back),
        "plain": scored(args, task, plain),
        "training_seconds": round(timings["training_seconds"], 1),
    }


if __name__ == "__main__":
    main()
