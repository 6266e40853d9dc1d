"""Embedding networks on raw observations against good summary statistics, with exact
posteriors (`embedding_tasks.py`: i.i.d. trials of a Gaussian, an AR(1) time series).

For each task and simulation seed: 10,000 pairs from the prior and the simulator, then
`ffjord train` on the same pairs given as summary statistics and as raw observations
with each embedding (one process after the other), and for each run:

* the excess NLL: the mean over 1,000 held-out pairs of log p(theta | x) - log q(theta |
  x), exact posterior minus the flow's (`ffjord density`): an estimate of the expected
  KL divergence from the exact posterior to the flow's, in nats (0 is perfect);
* C2ST (sbibm's classifier: an MLP of two layers of 10 d units, 5-fold accuracy) of
  2,000 draws of the flow (`ffjord sample --keep-outside`: a flow that leaks out of the
  prior pays for it) against 2,000 exact draws, for the first
  `--observations` held-out observations (0.5 is perfect);
* the whole `ffjord train` process's wall time.

    python benchmarks/compare_embeddings.py --seeds 0 1 2   # docs/benchmarks/embeddings.json

``--smoke``: one task, 600 pairs, one epoch per run, into a temporary directory.
"""

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np

import embedding_tasks

import harness

DRAWS = 2000  # C2ST: draws of each side per observation
TEST_PAIRS = 1000


def variants(task: embedding_tasks.Task) -> dict[str, list[str]]:
    """name -> (conditions, options) of each run on `task`."""
    steps, channels = task.shape
    shaped = ["--context-shape", f"{steps},{channels}"]
    return {
        "summaries": ["summaries"],
        "raw, no embedding": ["raw", "--embedding", "none"],
        "raw, linear": ["raw", "--embedding", "linear"],
        "raw, mlp": ["raw", "--embedding", "mlp"],
        f"raw, {task.embedding}": ["raw", *shaped, "--embedding", task.embedding],
    }


def run_variant(task, name, spec, train, test, exact_lp, work: Path, args) -> dict:
    conditions, options = spec[0], spec[1:]
    (theta, x), (theta_test, x_test) = train, test

    def rows(t, obs):
        cond = task.summaries(obs) if conditions == "summaries" else obs
        return np.concatenate([t, cond], axis=1).astype(np.float32)

    data, test_file = work / "train.npy", work / "test.npy"
    np.save(data, rows(theta, x))
    np.save(test_file, rows(theta_test, x_test))
    k = np.load(data).shape[1] - 2
    run = work / "run"
    argv = [*harness.ffjord(), "train", "--data", str(data), "--context-dims", str(k),
            "--out", str(run), "--quiet", "--no-figures", *options]  # fmt: skip
    argv += shlex.split(args.extra)
    trained = harness.run(argv).check(name)
    density = work / "lp.npy"
    harness.run([*harness.ffjord(), "density", str(run), "--points", str(test_file),
                 "-o", str(density)]).check(name)  # fmt: skip
    log_q = np.load(density).astype(np.float64)
    observations = np.load(test_file)[: args.observations, 2:]
    np.save(work / "obs.npy", observations)
    samples = work / "samples.npy"
    sample = [*harness.ffjord(), "sample", str(run), "-n", str(DRAWS), "--keep-outside"]
    harness.run([*sample, "--context", str(work / "obs.npy"), "-o", str(samples)]).check(name)
    draws = np.load(samples)
    rng = np.random.default_rng(0)
    scores = [
        harness.c2st(task.posterior_draws(rng, x_test[i], DRAWS), draws[i])
        for i in range(args.observations)
    ]
    config = json.loads((run / "config.json").read_text())
    return {
        "variant": name,
        "options": options,
        "condition_columns": k,
        "excess_nll": float(np.mean(exact_lp - log_q)),
        "excess_nll_se": float(np.std(exact_lp - log_q) / np.sqrt(len(log_q))),
        "c2st": scores,
        "c2st_mean": float(np.mean(scores)),
        "train_seconds": trained.seconds,
        "objective": config["objective"]["name"],
        "epochs": (trained.summary() or {}).get("epochs"),
    }


def _stat(rows: list[dict], key: str, spec: str) -> str:
    mean, sd = harness.mean_sd([r[key] for r in rows])
    return harness.fmt(mean, spec) + (f" ± {harness.fmt(sd, spec)}" if len(rows) > 1 else "")


def render(record: dict) -> str:
    """docs/EMBEDDINGS.md's table from `record` (this script's JSON): per task and
    variant, the mean and standard deviation over simulation seeds."""
    rows = record["results"]
    lines = [
        "| task | conditions | excess NLL (nats) | C2ST | train seconds | objective | seeds |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    order = list(dict.fromkeys((r["task"], r["variant"]) for r in rows))
    for task, variant in order:
        mine = [r for r in rows if (r["task"], r["variant"]) == (task, variant)]
        nll = _stat(mine, "excess_nll", ".3f")
        c2st_ = _stat(mine, "c2st_mean", ".3f")
        seconds = _stat(mine, "train_seconds", ".0f")
        lines.append(
            f"| {task} | {variant} | {nll} | {c2st_} | {seconds} | {mine[0]['objective']} "
            f"| {len(mine)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(embedding_tasks.TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--observations", type=int, default=5, help="C2ST on the first N test pairs")
    p.add_argument("--variants", nargs="+", help="only these (names as in the table)")
    p.add_argument("--extra", default="", help="options added to every ffjord train, as one string")
    p.add_argument("--out", default="docs/benchmarks/embeddings.json")
    harness.add_smoke(p)
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.seeds, args.simulations, args.observations = ["trials"], [0], 600, 1
        args.extra = "--epochs 1"
        args.out = str(harness.smoke_dir(__file__) / "embeddings.json")
    results = []
    with tempfile.TemporaryDirectory(prefix="ffjord_embeddings_") as tmp:
        for name in args.tasks:
            task = embedding_tasks.TASKS[name]
            for seed in args.seeds:
                train = embedding_tasks.pairs(task, args.simulations, seed)
                test = embedding_tasks.pairs(task, TEST_PAIRS, 10_000 + seed)
                exact_lp = np.array([task.log_posterior(x, t) for t, x in zip(*test, strict=True)])
                for variant, spec in variants(task).items():
                    if args.variants and variant not in args.variants:
                        continue
                    work = Path(tmp) / f"{name}-{seed}-{len(results)}"
                    work.mkdir()
                    started = time.perf_counter()
                    r = run_variant(task, variant, spec, train, test, exact_lp, work, args)
                    r.update(task=name, seed=seed, seconds=time.perf_counter() - started)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": harness.command_line(Path(__file__).name, None),
        "machine": harness.machine(),
        "versions": harness.versions("ffjord", "jax"),
        "results": results,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(render(record))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
