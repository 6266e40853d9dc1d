"""Real data: ffjord's plain command line against flowjax's discrete flows on 8x8 digits.

One invocation, one method after the other on the same machine and the same split:

* Data: ``ffjord.datasets.load_digits(seed)``: scikit-learn's 1,797 digits as 64-D points,
  uniformly dequantised ``(x + u) / 17``, shuffled and split 1,500 train / 297 held out.
* flowjax (the ``flowjax-peers`` extra): ``masked_autoregressive_flow`` with 5 layers of
  width 128 over a standard normal base, with an affine transformer (``--peers affine``)
  or a rational-quadratic spline one (``spline``: 8 knots on [-4, 4]), on the points as
  they are (in [0, 1): standardising them per column made both worse here, affine -62.3
  and spline -71.7 on seed 0); trained by ``fit_to_data`` (Adam 5e-4, batches of 100,
  10% validation, the best epoch kept after 10 epochs without a better validation loss,
  at most 200 epochs: more patient than its default 5, which gave -62.3 and -77.9).
  Time: ``fit_to_data`` (its compilation included) and the held-out log-density, in this
  process. ``affine-logit`` and ``spline-logit`` train the same flows on the space ffjord
  models digits in: ``logit(0.01 + 0.98 x)``, standardised by the training logits (the
  map's log-determinant is added back, so every NLL is in the data's own units).
* ffjord: ``ffjord train --data digits --out RUN`` as a subprocess, nothing else (the
  command picks its own settings for 64-D data); time: the whole process (interpreter
  start-up, imports and compilation included). Its held-out NLL is that of the epoch the
  run keeps (its early stopping), from its summary line.

Held-out NLL is the mean negative log-density of the 297 held-out points, in nats
(lower is better); a full-covariance Gaussian fitted to the training points is given
for scale. Reported: NLL, wall seconds, and ffjord's NLL minus each peer's.

Run from the repository root (``pip install -e '.[flowjax-peers]'``)::

    python benchmarks/compare_digits.py                       # all, seed 0
    python benchmarks/compare_digits.py --seeds 0 1 2         # several splits
    python benchmarks/compare_digits.py --ffjord-args --hidden 256   # a variant

Writes ``docs/benchmarks/digits.json`` (``--out``) and ``docs/DIGITS.md`` (``--report``).
"""

import argparse
import functools
import json
import shutil
import time
from pathlib import Path

import numpy as np

import ffjord
from ffjord.datasets import load_digits

import harness

ROOT = harness.ROOT

PEERS = ("affine", "spline", "affine-logit", "spline-logit")


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    from scipy.stats import multivariate_normal

    x = train.astype(np.float64)
    model = multivariate_normal(x.mean(axis=0), np.cov(x, rowvar=False))
    return float(-np.mean(model.logpdf(test.astype(np.float64))))


def as_logits(points: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ffjord's own preprocessing for data in [0, 1] (``--logit 0.01``), standardised by the
    training logits: (points in that space, log |d space / dx| per point)."""
    alpha = ffjord.UnitInterval(points.shape[1]).alpha  # the map `--logit` puts last: 0.01

    def logits(x: np.ndarray) -> np.ndarray:  # UnitInterval's inverse, in float64
        u = alpha + (1 - 2 * alpha) * np.asarray(x, np.float64)
        return np.log(u) - np.log1p(-u)

    ref = logits(train)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    u = alpha + (1 - 2 * alpha) * points.astype(np.float64)
    log_det = np.sum(np.log1p(-2 * alpha) - np.log(u) - np.log1p(-u) - np.log(std), 1)
    return ((logits(points) - mean) / std).astype(np.float32), log_det


def run_flowjax(kind: str, train: np.ndarray, test: np.ndarray, seed: int) -> dict:
    import jax
    import jax.numpy as jnp
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_data

    test_log_det = np.zeros(len(test))
    if kind.endswith("-logit"):  # the same space ffjord models digits in
        train, (test, test_log_det) = as_logits(train, train)[0], as_logits(test, train)
    key, fit_key = jax.random.split(jax.random.key(seed))
    spline = kind.startswith("spline")
    transformer = RationalQuadraticSpline(knots=8, interval=4) if spline else None
    flow = masked_autoregressive_flow(
        key,
        base_dist=Normal(jnp.zeros(train.shape[1])),
        transformer=transformer,
        flow_layers=5,
        nn_width=128,
    )
    start = time.perf_counter()
    flow, losses = fit_to_data(
        fit_key,
        flow,
        train,
        learning_rate=5e-4,
        max_epochs=200,
        max_patience=10,
        batch_size=100,
        val_prop=0.1,
        show_progress=False,
    )
    log_p = jax.block_until_ready(flow.log_prob(test))
    seconds = time.perf_counter() - start
    return {
        "method": f"flowjax {kind} MAF",
        "nll": float(-np.mean(np.asarray(log_p) + test_log_det)),
        "seconds": seconds,
        "epochs": len(losses["train"]),
        "best_epoch": int(np.argmin(losses["val"])) + 1,
    }


def run_ffjord(seed: int, extra: list[str], work: Path) -> dict:
    run_dir = work / f"ffjord_seed{seed}"
    argv = [*harness.ffjord(), "train", "--data", "digits", "--seed", str(seed)]
    argv += ["--out", str(run_dir), *extra]
    shutil.rmtree(run_dir, ignore_errors=True)
    done = harness.run(argv).check("ffjord train")
    summary = done.summary() or {}
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "method": "ffjord",
        "command": harness.shown(argv),
        "nll": summary.get("test_nll"),
        "seconds": done.seconds,
        "epochs": summary.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
        "chosen": {k: config[k] for k in config.get("chosen_for_data", [])},
    }


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Real data: 8x8 digits (64-D) against flowjax",
        "",
        "Held-out NLL (nats per point, lower is better) of the 297 held-out digits, after",
        "training on the other 1,500, uniformly dequantised (`ffjord.datasets.load_digits`).",
        "Produced by `benchmarks/compare_digits.py`; every method ran in the same invocation,",
        "one after the other, on this 2-core CPU machine. flowjax's MAFs (5 layers, width",
        "128, `fit_to_data` with patience 10) ran on the points as they are and, as",
        "`affine-logit` / `spline-logit`, on the logit space ffjord models them in",
        "(`ffjord train` chooses `--logit 0.01` for data within [0, 1]).",
        "",
        "Command: `" + report["command"] + "`",
        "",
        "| seed | method | held-out NLL | wall s | epochs (best) |",
        "|---:|---|---:|---:|---:|",
    ]
    for run in report["runs"]:
        gaussian = run["gaussian"]
        lines.append(f"| {run['seed']} | full-covariance Gaussian | {gaussian:.1f} | - | - |")
        for r in run["methods"]:
            if "error" in r:
                lines.append(f"| {run['seed']} | {r['method']} | failed: {r['error']} | | |")
                continue
            lines.append(
                f"| {run['seed']} | {r['method']} | {r['nll']:.1f} | {r['seconds']:.1f} | "
                f"{r['epochs']} ({r['best_epoch']}) |"
            )
    lines += ["", "Mean over seeds:", "", "| method | held-out NLL | wall s |", "|---|---:|---:|"]
    for method, (nll, seconds) in report["means"].items():
        lines.append(f"| {method} | {nll:.1f} | {seconds:.1f} |")
    if report["runs"] and report["runs"][0]["methods"]:
        chosen = next((r for r in report["runs"][0]["methods"] if r["method"] == "ffjord"), None)
        if chosen:
            lines += ["", "ffjord's command: `" + chosen["command"] + "`; the settings it chose:"]
            lines += ["", "```", json.dumps(chosen["chosen"], indent=1), "```"]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS))
    p.add_argument("--skip-ffjord", action="store_true")
    p.add_argument("--work", type=Path, default=Path("/tmp/ffjord_digits"))
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/digits.json")
    p.add_argument("--report", type=Path, default=ROOT / "docs/DIGITS.md")
    p.add_argument("--ffjord-args", nargs=argparse.REMAINDER, default=[])
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if args.smoke:  # one short ffjord run; flowjax's affine MAF only if it is installed
        tmp = harness.smoke_dir(__file__)
        args.work, args.out, args.report = tmp / "work", tmp / "digits.json", tmp / "DIGITS.md"
        args.ffjord_args = ["--epochs", "1", "--blocks", "1", "--hidden", "16"]
        args.peers = ["affine"] if harness.peer_available("flowjax") else []
        if not args.peers:
            harness.skip_peer("flowjax")
    runs = []
    for seed in args.seeds:
        train, test = load_digits(seed)
        methods = []
        jobs = [
            (f"flowjax {k} MAF", functools.partial(run_flowjax, k, train, test, seed))
            for k in args.peers
        ]
        if not args.skip_ffjord:
            ffjord_job = functools.partial(run_ffjord, seed, args.ffjord_args, args.work)
            jobs.append(("ffjord", ffjord_job))
        for name, job in jobs:
            try:
                result = job()
            except Exception as err:  # a failed method is reported, the run carries on
                result = {"method": name, "error": str(err).splitlines()[-1][:200]}
            methods.append(result)
            print(json.dumps({"seed": seed, **result}), flush=True)
        runs.append({"seed": seed, "gaussian": gaussian_nll(train, test), "methods": methods})
    means = {}
    for name in [m["method"] for m in runs[0]["methods"]]:
        rows = [m for run in runs for m in run["methods"] if m["method"] == name and "nll" in m]
        if rows:
            means[name] = (
                float(np.mean([m["nll"] for m in rows])),
                float(np.mean([m["seconds"] for m in rows])),
            )
    command = harness.command_line("compare_digits.py", argv)
    versions = harness.versions("ffjord", "jax", "flowjax", "scikit-learn", "numpy")
    report = {"command": command, "runs": runs, "means": means, "versions": versions}
    for name, (nll, _) in means.items():
        if name != "ffjord" and "ffjord" in means:
            print(f"ffjord - {name}: {means['ffjord'][0] - nll:+.1f} nats")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
