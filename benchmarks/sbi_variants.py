"""Screen `ffjord train` options on sbibm tasks by C2ST: the search behind the defaults.

For each task, the same 10,000 simulations as `compare_sbi.py` (seed 0), then for each
variant `ffjord train --data PAIRS.npy --context-dims K OPTIONS` and `ffjord sample`, and
sbibm's C2ST for observations 1-3, one row of JSON per (task, variant) appended to
``--out``. ``--c2st-samples N`` compares only the first N of the 10,000 samples with the
first N reference samples: quicker, but biased low against the full C2ST (the classifier
learns from fewer points: about -0.015 with 4,000 on slcp, on the same samples), so
compare only rows measured the same way.

    python benchmarks/sbi_variants.py --tasks slcp two_moons --c2st-samples 4000 \\
        --variants "" "--objective flow-matching --epochs 300 --hidden 96 --patience 1000"

Extras as for `compare_sbi.py` (`.[sbi-peers]` plus `pip install --no-deps sbibm`).
"""

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import compare_sbi  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["slcp"])
    p.add_argument("--variants", nargs="+", default=[""], help="option strings ('' = defaults)")
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--c2st-samples", type=int, help="C2ST of the first N samples only")
    p.add_argument("--out", default="docs/benchmarks/sbi_variants.jsonl")
    args = p.parse_args()
    import torch

    torch.set_num_threads(compare_sbi.THREADS)
    with tempfile.TemporaryDirectory(prefix="ffjord_sbi_variants_") as tmp:
        for name in args.tasks:
            task = compare_sbi.load_task(name)
            theta, x = compare_sbi.simulate(task, args.simulations, 0)
            for i, options in enumerate(args.variants):
                work = Path(tmp) / f"{name}-{i}"
                r = compare_sbi.run_ffjord(
                    task, theta, x, work, shlex.split(options), args.c2st_samples
                )
                row = {
                    "task": name,
                    "options": options or "(none: the defaults)",
                    "c2st": round(r["c2st_mean"], 4),
                    "per_observation": [round(c, 4) for c in r["c2st"]],
                    "c2st_samples": args.c2st_samples or compare_sbi.NUM_POSTERIOR_SAMPLES,
                    "training_seconds": round(r["training_seconds"], 1),
                    "epochs": r.get("epochs"),
                    "test_nll": r.get("summary", {}).get("test_nll"),
                }
                print(json.dumps(row), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
