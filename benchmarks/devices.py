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
   a batch of ``--batch`` held-out points as one solve and as k shards solved apart
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
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_sbi import ffjord_command, last_json_line  # noqa: E402


def throughput(devices: int, args, work: Path) -> dict:
    run = work / f"run_{devices}"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    argv = [*ffjord_command(), "train", "--out", str(run), "--epochs", str(args.epochs)]
    argv += ["--devices", str(devices), "--quiet", "--no-figures", *args.ffjord_args]
    if args.data:
        argv += ["--data", args.data]
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    steady = statistics.median(r["seconds"] for r in rows[1:])
    points = rows[-1]["steps"] * config["batch_size"]
    return {
        "devices": devices,
        "seconds_per_epoch": steady,
        "points_per_second": points / steady,
        "test_nll": rows[-1]["test_nll"],
        "summary": last_json_line(done.stdout),
        "run": str(run),
    }


def shared_against_per_shard(run: str, batch: int) -> list[dict]:
    import ffjord
    from ffjord._settings import load_data, split_columns

    dist = ffjord.load(run)
    cfg = json.loads((Path(run) / "config.json").read_text())
    _, test = load_data(cfg)
    points, _ = split_columns(cfg, test)
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
    args = p.parse_args(argv)
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
    command = "python benchmarks/devices.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command.strip(), "throughput": runs, "steps": steps}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
