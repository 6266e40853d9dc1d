"""Screen `ffjord train` options on sbibm tasks by C2ST: the search behind the defaults.

For each task, the same 10,000 simulations as `sbi_tasks.py` (seed 0), then for each
variant `ffjord train --data PAIRS.npy --context-dims K OPTIONS` and `ffjord sample`, and
sbibm's C2ST for observations 1-3, one row of JSON per (task, variant) appended to
``--out``. ``--c2st-samples N`` compares only the first N of the 10,000 samples with the
first N reference samples: quicker, but biased low against the full C2ST (the classifier
learns from fewer points: about -0.015 with 4,000 on slcp, on the same samples), so
compare only rows measured the same way.

    python benchmarks/sbi_variants.py --tasks slcp two_moons --c2st-samples 4000 \\
        --variants "" "--objective flow-matching --epochs 300 --hidden 96 --patience 1000"

Extras as for `sbi_tasks.py` (`.[sbi-peers]` plus `pip install --no-deps sbibm`).
``--smoke``: two_moons, 500 simulations, one short variant, into a temporary directory;
without sbibm/torch, ffjord's side alone on its own ``arcs`` simulator, unscored.
"""

import argparse
import json
import shlex
import tempfile
from pathlib import Path

import harness
import sbi_tasks

SMOKE_VARIANT = "--epochs 1 --blocks 1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["slcp"])
    p.add_argument("--variants", nargs="+", default=[""], help="option strings ('' = defaults)")
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="simulation seeds")
    p.add_argument(
        "--observations",
        nargs="+",
        type=int,
        default=list(sbi_tasks.OBSERVATIONS),
        help="sbibm observation numbers (1-10; default 1 2 3)",
    )
    p.add_argument("--c2st-samples", type=int, help="C2ST of the first N samples only")
    p.add_argument("--out", default="docs/benchmarks/sbi_variants.jsonl")
    harness.add_smoke(p)
    args = p.parse_args()
    if args.smoke:
        if not harness.peer_available("torch", "sbibm"):
            harness.skip_peer("sbibm / torch")
            result = sbi_tasks.smoke_ffjord_only(
                harness.smoke_dir(__file__), shlex.split(SMOKE_VARIANT)
            )
            print(json.dumps({"training_seconds": result["training_seconds"]}))
            return
        args.tasks, args.variants, args.simulations = ["two_moons"], [SMOKE_VARIANT], 500
        args.out = str(harness.smoke_dir(__file__) / "sbi_variants.jsonl")
    import torch

    torch.set_num_threads(sbi_tasks.THREADS)
    with tempfile.TemporaryDirectory(prefix="ffjord_sbi_variants_") as tmp:
        for name in args.tasks:
            task = sbi_tasks.load_task(name)
            for seed in args.seeds:
                theta, x = sbi_tasks.simulate(task, args.simulations, seed)
                for i, options in enumerate(args.variants):
                    work = Path(tmp) / f"{name}-{seed}-{i}"
                    r = sbi_tasks.run_ffjord(
                        task,
                        theta,
                        x,
                        work,
                        shlex.split(options),
                        args.c2st_samples,
                        args.observations,
                    )
                    record(args, name, seed, options, r)


def record(args, name: str, seed: int, options: str, r: dict) -> None:
    """Print and append one row of JSON for a (task, seed, variant) run."""
    row = {
        "task": name,
        "seed": seed,
        "simulations": args.simulations,
        "options": options or "(none: the defaults)",
        "c2st": round(r["c2st_mean"], 4),
        "observations": r["observations"],
        "per_observation": [round(c, 4) for c in r["c2st"]],
        "spread_ratio": r.get("spread_ratio"),  # per observation and parameter: std / reference
        "c2st_samples": args.c2st_samples or sbi_tasks.NUM_POSTERIOR_SAMPLES,
        "training_seconds": round(r["training_seconds"], 1),
        "epochs": r.get("epochs"),
        "test_nll": r.get("summary", {}).get("test_nll"),
        "time_budget": r.get("config", {}).get("time_budget"),
    }
    print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
