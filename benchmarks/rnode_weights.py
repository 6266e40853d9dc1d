"""RNODE's weights on the tutorial: training NFE and held-out NLL against plain likelihood.

Runs `ffjord train` (the tutorial: moons, 4 blocks, 40 epochs) once without
regularisation and once per weight `w` with `--kinetic w --jacobian-frobenius w`, one
process after the other, and reports the mean training NFE per step over the run (field
evaluations of the forward solve, all blocks), its ratio to the plain run, the final
held-out NLL and its difference, the evaluation NFE after the last epoch and the
seconds per epoch.

    python benchmarks/rnode_weights.py                   # weights 0.01 0.03 0.05 0.1
    python benchmarks/rnode_weights.py --weights 0.01    # the paper's weights only
    python benchmarks/rnode_weights.py --smoke           # one weight, one epoch of one block
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import harness

ROOT = harness.ROOT


def train(out: Path, extra: list[str], smoke: list[str]) -> dict:
    argv = [*harness.ffjord(), "train", "--out", str(out), "--no-figures", "--quiet", *extra]
    harness.run([*argv, *smoke]).check()
    rows = harness.read_jsonl(out / "metrics.jsonl")
    return {
        "command": " ".join(["ffjord", "train", "--out", "RUN", *extra]),
        "train_nfe": statistics.mean(r["nfe"] for r in rows),
        "final_nll": rows[-1]["test_nll"],
        "eval_nfe": rows[-1]["eval_nfe"],
        "seconds_per_epoch": harness.median(r["seconds"] for r in rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", type=float, default=[0.01, 0.03, 0.05, 0.1])
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "rnode_weights.json"))
    harness.add_smoke(p)
    args = p.parse_args()
    smoke = ["--epochs", "1", "--blocks", "1"] if args.smoke else []
    if args.smoke:
        args.weights, args.out = [0.1], str(harness.smoke_dir(__file__) / "rnode_weights.json")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train(Path(tmp) / "plain", [], smoke)]
        for w in args.weights:
            extra = ["--kinetic", str(w), "--jacobian-frobenius", str(w)]
            rows.append(train(Path(tmp) / f"w{w}", extra, smoke))
    plain = rows[0]
    print("| command | train NFE | ratio | final NLL | change | eval NFE | s/epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["nfe_ratio"] = r["train_nfe"] / plain["train_nfe"]
        r["nll_change"] = r["final_nll"] - plain["final_nll"]
        print(
            f"| `{r['command']}` | {r['train_nfe']:.1f} | {r['nfe_ratio']:.2f}x | "
            f"{r['final_nll']:.4f} | {r['nll_change']:+.4f} | {r['eval_nfe']:.1f} | "
            f"{r['seconds_per_epoch']:.3f} |"
        )
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
