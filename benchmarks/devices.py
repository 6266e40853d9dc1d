"""Data parallelism: throughput against the device count, and what shared adaptive steps cost.

Two measurements, one invocation:

1. **Throughput.** ``ffjord train --out RUN --epochs E --devices N --quiet --no-figures
   [--data ...]`` for every N of ``--devices``, each a fresh process started with
   ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (on a CPU, N forced host
   devices share the machine's cores; on a GPU machine, N real devices). Reported: the
   median seconds per epoch after the first, training points per second, and the
   held-out NLL after the last epoch against one device's (equal up to rounding).
2. **Shared against per-shard steps.** The batch of a data-parallel step is one ODE
   solve whose adaptive step sizes all shards share (one all-reduce of the error norm per
   solver step), so every shard takes as many steps as the hardest point needs. With
   per-shard solves each device would take its own steps, and the step would wait for
   the slowest shard. For the model trained in (1) on one device, solves the density of
   a batch of ``--batch`` held-out points (the held-out digits for ``--data digits``, else
   fresh draws from the trained model) as one solve and as k shards solved apart
   (k = 2, 4, 8) and reports the solver steps of the shared solve against the slowest
   shard's: the most per-shard solves could save.

Run from the repository root::

    python benchmarks/devices.py                            # tutorial, 1 and 2 devices
    python benchmarks/devices.py --data digits --epochs 4   # 64-D

Writes ``docs/benchmarks/devices[_DATA].json``.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import harness

ROOT = harness.ROOT


def throughput(devices: int, args, work: Path) -> dict:
    run = work / f"run_{devices}"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    argv = [*harness.ffjord(), "train", "--out", str(run), "--epochs", str(args.epochs)]
    argv += ["--devices", str(devices), "--quiet", "--no-figures", *args.ffjord_args]
    if args.data:
        argv += ["--data", args.data]
    done = harness.run(argv, env=env)
    if not done.ok:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    rows = harness.read_jsonl(run / "metrics.jsonl")
    config = json.loads((run / "config.json").read_text())
    steady = harness.median(r["seconds"] for r in rows[1:]) or rows[0]["seconds"]
    points = rows[-1]["steps"] * config["batch_size"]
    return {
        "devices": devices,
        "seconds_per_epoch": steady,
        "points_per_second": points / steady,
        "test_nll": rows[-1]["test_nll"],
        "summary": done.summary(),
        "run": str(run),
    }


def held_out_points(run: str, n: int) -> np.ndarray:
    """Points the run did not train on: its held-out digits for ``--data digits``, else
    fresh draws from the trained model itself (its config.json names the data)."""
    import jax

    import ffjord
    from ffjord import datasets

    cfg = json.loads((Path(run) / "config.json").read_text())
    if cfg["data"] == "digits":
        return datasets.load_digits(cfg["seed"])[1][:n]
    return np.asarray(ffjord.load(run).sample(jax.random.key(cfg["seed"] + 1), (n,)))


def shared_against_per_shard(run: str, batch: int) -> list[dict]:
    import ffjord

    dist = ffjord.load(run)
    points = held_out_points(run, batch)
    x = np.asarray(points[: min(batch, len(points)) // 8 * 8], np.float32)  # splits in 8
    _, stats = dist.log_prob_with_stats(x)
    shared = int(np.sum(stats.num_steps))  # over the blocks
    rows = []
    for k in (2, 4, 8):
        steps = []
        for shard in np.split(x, k):
            _, s = dist.log_prob_with_stats(shard)
            steps.append(int(np.sum(s.num_steps)))
        rows.append(
            {
                "shards": k,
                "shared_steps": shared,
                "per_shard_steps": steps,
                "slowest_shard_steps": max(steps),
                "shared_over_slowest": shared / max(steps),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--data", default=None, help="ffjord train's --data (default: moons)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--ffjord-args", nargs=argparse.REMAINDER, default=[])
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if args.smoke:  # 1 and 2 devices, one epoch of one block, 64 points
        args.devices, args.epochs, args.batch = [1, 2], 1, 64
        args.ffjord_args = ["--blocks", "1"]
        args.out = harness.smoke_dir(__file__) / "devices.json"
    name = "devices" + (f"_{Path(args.data).stem}" if args.data else "")
    out = args.out or ROOT / "docs/benchmarks" / f"{name}.json"
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for n in args.devices:
            runs.append(throughput(n, args, Path(tmp)))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "summary"}), flush=True)
        one = next((r for r in runs if r["devices"] == 1), runs[0])
        for r in runs:
            r["speed_vs_one"] = one["seconds_per_epoch"] / r["seconds_per_epoch"]
            r["nll_difference"] = r["test_nll"] - one["test_nll"]
        steps = shared_against_per_shard(one["run"], args.batch)
    report = {"command": harness.command_line("devices.py", argv), "throughput": runs}
    report["steps"] = steps
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
