"""The settings `ffjord train --data FILE` chooses, against variants, by held-out NLL.

For each task: 10,000 simulated pairs (theta, x) saved as rows, then the plain command
`ffjord train --data PAIRS.npy --context-dims K` and the same with each variant's options,
one after the other; with `--npe`, also sbi's NPE trained on the command's own training
rows (its defaults) and scored on the same test rows. Reports the held-out NLL of
p(theta | x) (nats, lower is better; the exact likelihood of the command's fixed 10% test
split), the whole command's wall time, and the epochs run and chosen by early stopping.

    python benchmarks/data_defaults.py --tasks arcs two_moons slcp \\
        --variants "" "--hidden 128" "--lr 1e-3" --npe

`arcs` is ffjord's built-in simulator; other names are sbibm tasks (extra `.[sbi-peers]`
plus `pip install --no-deps sbibm`, see benchmarks/compare_sbi.py). ``--smoke``: `arcs`
only, 1,000 simulations, one short variant, into a temporary directory.
"""

import argparse
import json
import shlex
import tempfile
from pathlib import Path

import numpy as np

import harness


def pairs_file(task: str, n: int, folder: Path) -> tuple[Path, int]:
    """(a file of rows (theta, x), the width of x)."""
    path = folder / f"{task}.npy"
    if task == "arcs":
        from ffjord import simulators

        theta, x = simulators.simulate(n, seed=0)
    else:
        import sbi_tasks

        sbibm_task = sbi_tasks.load_task(task)
        theta, x = (a.numpy() for a in sbi_tasks.simulate(sbibm_task, n, 0))
    np.save(path, np.concatenate([theta, x], axis=1).astype(np.float32))
    return path, x.shape[1]


def run(pairs: Path, width: int, options: str, out: Path) -> dict:
    argv = [*harness.ffjord(), "train", "--data", str(pairs), "--context-dims", str(width)]
    argv += ["--out", str(out), "--quiet", "--no-figures", *shlex.split(options)]
    done = harness.run(argv)
    if not done.ok:
        return {"options": options, "error": done.stderr.strip().splitlines()[-1]}
    summary = done.summary()
    return {
        "options": options or "(none: the defaults)",
        "test_nll": summary["test_nll"],
        "seconds": round(done.seconds, 1),
        "epochs": summary["epochs"],
        "best_epoch": summary.get("best_epoch"),
    }


def npe_row(task: str, pairs: Path, width: int, log_dir: Path) -> dict:
    """sbi's NPE (defaults) on the rows `ffjord train` trains on; NLL on its test rows."""
    import torch

    from ffjord import datasets

    import sbi_tasks

    train, test = (torch.tensor(a) for a in datasets.split_holdout(np.load(pairs), 0.1, 0))
    d = train.shape[1] - width  # rows (theta, x), split as `ffjord train` splits them
    sbibm_task = sbi_tasks.load_task(task)
    _, estimator, seconds, epochs = sbi_tasks.train_sbi(
        "npe", sbibm_task, train[:, :d], train[:, d:], 0, log_dir
    )
    with torch.no_grad():
        log_prob = estimator.log_prob(test[:, :d].unsqueeze(0), condition=test[:, d:])
    return {"options": "sbi NPE (reference)", "test_nll": float(-log_prob.mean()),
            "seconds": round(seconds, 1), "epochs": epochs, "best_epoch": None}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["arcs"])
    p.add_argument("--variants", nargs="+", default=["", "--hidden 128", "--lr 1e-3"])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--npe", action="store_true", help="add sbi's NPE on the same split")
    p.add_argument("--out", default="docs/benchmarks/data_defaults.json")
    harness.add_smoke(p)
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.simulations, args.variants = ["arcs"], 1000, ["--epochs 1 --blocks 1"]
        args.npe, args.out = False, str(harness.smoke_dir(__file__) / "data_defaults.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task in args.tasks:
            pairs, width = pairs_file(task, args.simulations, folder)
            for i, options in enumerate(args.variants):
                row = {"task": task, **run(pairs, width, options, folder / f"{task}-{i}")}
                print(json.dumps(row), flush=True)
                rows.append(row)
            if args.npe and task != "arcs":
                row = {"task": task, **npe_row(task, pairs, width, folder / "sbi-logs")}
                print(json.dumps(row), flush=True)
                rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| task | options | held-out NLL | wall s | epochs (best) |\n|---|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['task']} | {r['options']} | error: {r['error']} | | |")
        else:
            print(
                f"| {r['task']} | {r['options']} | {r['test_nll']:.3f} | {r['seconds']} | "
                f"{r['epochs']} ({r['best_epoch']}) |"
            )


if __name__ == "__main__":
    main()
