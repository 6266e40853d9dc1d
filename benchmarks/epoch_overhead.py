"""The engine's fixed cost per epoch, measured through the public ``ffjord train``.

Trains flow matching (independent coupling, one block of MLP(64, 4), SiLU, batches of 256)
on moons files of two sizes, each a fresh ``ffjord train`` process, and fits, from the
``seconds`` of ``metrics.jsonl`` (the epoch's own time; the first epoch is dropped)::

    seconds = overhead + steps * per_step

With ``--baseline DIR`` (another checkout, e.g. a ``git worktree`` of main) the same runs
are made with ``DIR/src`` first on ``PYTHONPATH``, interleaved with this tree's, so that
before and after come from one invocation on equally loaded cores.

Also printed: ``seconds / steps`` of the smaller size (the command's own per-step time, as
``benchmarks/compare_flow_matching.py`` and issue 22 compare it with torchcfm; torchcfm is not
run here, its 1.25 ms per step is the issue's number).

Usage::

    python benchmarks/epoch_overhead.py                    # 25 and 207 steps an epoch
    python benchmarks/epoch_overhead.py --baseline ../main --repeats 3
    python benchmarks/epoch_overhead.py --smoke            # two short runs (~15 s)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import harness

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
HELD_OUT = 0.1  # `ffjord train --data FILE` holds out this share for the test NLL, and the
# settings it chooses for a file hold out as much of the rest for validation
TORCHCFM_MS_PER_STEP = 1.25  # issue 22's measurement of torchcfm on moons (not rerun here)
# the built-in moons' values where a data file's size would choose others (it still chooses
# a validation split, which `seconds` does not include)
OPTIONS = {
    "objective": "flow-matching",
    "coupling": "independent",
    "batch-size": str(BATCH),
    "blocks": "1",
    "hidden": "64",
    "layers": "4",
    "activation": "silu",
    "lr": "1e-2",
    "schedule": "cosine",
    "weight-decay": "0",
    "logit": "0",
}
FLAGS = [arg for name, value in OPTIONS.items() for arg in (f"--{name}", value)]


def rows_for(steps: int) -> int:
    """Rows of a data file whose training split gives `steps` full batches."""
    return int(np.ceil((steps * BATCH + BATCH // 2) / (1 - HELD_OUT) ** 2))


def make_data(folder: Path, steps: int) -> Path:
    import ffjord.datasets

    path = folder / f"moons_{steps}.npy"
    np.save(path, ffjord.datasets.sample_toy("moons", rows_for(steps), 0))
    return path


def train(src: Path, data: Path, out: Path, epochs: int) -> list[dict]:
    """The metrics of one `ffjord train` process run with `src` first on the path."""
    path = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    command = [sys.executable, "-m", "ffjord.cli", "train", "--data", str(data), "--out", str(out)]
    command += [*FLAGS, "--epochs", str(epochs), "--quiet", "--no-figures"]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(overhead, per_step) of the least-squares line through (steps, seconds)."""
    steps = np.array([p[0] for p in points], float)
    seconds = np.array([p[1] for p in points], float)
    per_step, overhead = np.polyfit(steps, seconds, 1)
    return float(overhead), float(per_step)


def main() -> None:
    parser = argparse.ArgumentParser(description="The engine's fixed cost per epoch.")
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 207], help="steps an epoch")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2, help="processes per tree and size")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    harness.add_smoke(parser)  # one short run per size
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.epochs, args.repeats = [2, 8], 3, 1
    trees = {"this": ROOT / "src"}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve() / "src", **trees}
    epoch_seconds: dict[tuple[str, int], list[float]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {steps: make_data(folder, steps) for steps in args.steps}
        for repeat in range(args.repeats):  # interleaved: both trees see the same load
            for steps in args.steps:
                for name, src in trees.items():
                    out = folder / f"{name}_{steps}_{repeat}"
                    records = train(src, files[steps], out, args.epochs)
                    assert all(r["steps"] == steps for r in records), records[0]["steps"]
                    seconds = [r["seconds"] for r in records[1:]]
                    epoch_seconds.setdefault((name, steps), []).extend(seconds)
    result: dict = {"steps": args.steps, "epochs": args.epochs, "repeats": args.repeats}
    for name in trees:
        medians = {s: harness.median(epoch_seconds[name, s]) for s in args.steps}
        overhead, per_step = fit(list(medians.items()))
        small = min(args.steps)
        command_ms = 1e3 * medians[small] / small
        result[name] = {
            "overhead_ms": round(1e3 * overhead, 3),
            "per_step_ms": round(1e3 * per_step, 4),
            "median_epoch_ms": {s: round(1e3 * m, 3) for s, m in medians.items()},
            "command_ms_per_step": round(command_ms, 4),
            "torchcfm_ratio": round(TORCHCFM_MS_PER_STEP / command_ms, 2),
        }
        epochs_ms = ", ".join(f"{s} steps {1e3 * m:.1f} ms" for s, m in medians.items())
        print(
            f"{name:8s}  overhead {1e3 * overhead:6.2f} ms/epoch  per step {1e3 * per_step:.4f} ms"
            f"  (median epoch: {epochs_ms}); seconds/steps at {small} steps {command_ms:.3f} ms"
            f" = torchcfm's {TORCHCFM_MS_PER_STEP} ms / {TORCHCFM_MS_PER_STEP / command_ms:.2f}"
        )
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
