"""Training objectives side by side: likelihood, likelihood + RNODE, flow matching (both
couplings), each with its defaults, through the real `ffjord train` command.

For every data set and objective this runs one `ffjord train` process (figures off) and
reads its `metrics.jsonl`:

* time to quality: seconds from process start until the first epoch whose held-out NLL
  (exact likelihood, fresh draws) is at most the threshold: 0.60 nats on moons (true
  entropy 0.477), and entropy + 0.12 nats on the other sets;
* final held-out NLL, and the best one over the epochs;
* evaluation NFE (field evaluations of the held-out solve after the last epoch) and
  training NFE (mean field evaluations per training step over the run);
* the whole command's wall time.

The processes run one after the other in one invocation and share a warm compilation
cache (a first pass fills it), so every row is measured the same way; the machine is
shared and noisy, so compare rows of one run.

    python benchmarks/objectives.py                       # moons, 8gaussians: docs/OBJECTIVES.md
    python benchmarks/objectives.py --data moons --quick  # 3 epochs each, no report
    python benchmarks/objectives.py --smoke               # moons, one epoch each, no warm-up
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import harness

ROOT = harness.ROOT
OBJECTIVES = {
    "likelihood": [],
    "likelihood + RNODE (0.01, 0.01)": ["--kinetic", "0.01", "--jacobian-frobenius", "0.01"],
    "flow matching (its defaults: OT coupling)": ["--objective", "flow-matching"],
    "flow matching, independent coupling": [
        "--objective",
        "flow-matching",
        "--coupling",
        "independent",
    ],
}


def threshold(data: str) -> float:
    if data == "moons":
        return 0.60
    from ffjord import datasets

    return round(datasets.toy_entropy(data, method="quadrature") + 0.12, 3)


def run_one(data: str, extra: list[str], out: Path, env: dict, epochs: int | None) -> dict:
    options = ["--data", data, *extra, *(["--epochs", str(epochs)] if epochs else [])]
    shown = " ".join(["ffjord", "train", "--out", "RUN", *options])
    argv = [*harness.ffjord(), "train", "--out", str(out), *options, "--no-figures", "--quiet"]
    proc = harness.run(argv, env=env)
    if not proc.ok:
        raise SystemExit(f"{shown} failed: {proc.stderr.strip().splitlines()[-1]}")
    total = proc.seconds
    summary = proc.summary()
    rows = harness.read_jsonl(out / "metrics.jsonl")
    before_loop = total - summary["wall_seconds"]  # interpreter, imports, data, model
    limit = threshold(data)
    reached = next((r for r in rows if r["test_nll"] <= limit), None)
    return {
        "command": shown,
        "threshold": limit,
        "seconds_to_threshold": None
        if reached is None
        else round(before_loop + reached["wall_seconds"], 2),
        "epoch_at_threshold": None if reached is None else reached["epoch"],
        "final_nll": round(rows[-1]["test_nll"], 4),
        "best_nll": round(min(r["test_nll"] for r in rows), 4),
        "eval_nfe": rows[-1]["eval_nfe"],
        "train_nfe": round(sum(r["nfe"] for r in rows) / len(rows), 1),
        "epochs": len(rows),
        "wall_seconds": round(total, 2),
    }


def markdown(results: dict) -> str:
    lines = [
        "# Training objectives side by side",
        "",
        "Produced by `python benchmarks/objectives.py` (one `ffjord train` process per row,",
        "run one after the other with a warm compilation cache, figures off). Held-out NLL",
        "is the exact likelihood of fresh draws after every epoch; the time to quality",
        "counts from process start. Threshold: 0.60 nats on moons (entropy 0.477), the",
        "data's entropy + 0.12 nats elsewhere. Train NFE: mean field evaluations per",
        "training step (flow matching: 1, no solve); eval NFE: the held-out solve's.",
        "",
    ]
    for data, rows in results["data"].items():
        lines += [
            f"## {data}",
            "",
            "| objective | command | s to NLL <= {} | final NLL | best NLL | eval NFE | "
            "train NFE | whole command, s |".format(rows[0]["threshold"]),
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in zip(OBJECTIVES, rows, strict=True):
            reached = (
                "not reached"
                if r["seconds_to_threshold"] is None
                else f"{r['seconds_to_threshold']} (epoch {r['epoch_at_threshold']})"
            )
            lines.append(
                f"| {name} | `{r['command']}` | {reached} | {r['final_nll']} | "
                f"{r['best_nll']} | {r['eval_nfe']} | {r['train_nfe']} | {r['wall_seconds']} |"
            )
        lines.append("")
    lines.append(f"Machine: {results['machine']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", default=["moons", "8gaussians"])
    p.add_argument("--quick", action="store_true", help="3 epochs each, no report")
    p.add_argument("--out", default=str(ROOT / "docs" / "OBJECTIVES.md"))
    p.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "objectives.json"))
    harness.add_smoke(p)
    args = p.parse_args()
    if args.smoke:
        args.data = ["moons"]
    epochs = 1 if args.smoke else 3 if args.quick else None
    info = harness.machine()
    results: dict = {
        "machine": f"{info['cpu_count']} CPU cores, Python {info['python']}",
        "data": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FFJORD_CACHE_DIR": str(Path(tmp) / "cache")}
        warm = Path(tmp) / "warm"
        for i, extra in enumerate(OBJECTIVES.values()):  # fill the compilation cache
            if not args.smoke:
                run_one(args.data[0], extra, warm / str(i), env, epochs=1)
        for data in args.data:
            rows = []
            for i, (name, extra) in enumerate(OBJECTIVES.items()):
                row = run_one(data, extra, Path(tmp) / f"{data}{i}", env, epochs)
                print(data, name, json.dumps(row), flush=True)
                rows.append(row)
            results["data"][data] = rows
    if not (args.quick or args.smoke):
        Path(args.out).write_text(markdown(results))
        json_path = Path(args.json)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out} and {json_path}")


if __name__ == "__main__":
    main()
