"""Simulation-based inference: ``sbi``'s NPE and FMPE against ffjord's plain command line.

Posterior estimation p(theta | x) on sbibm tasks, in one invocation, one method after the
other on the same machine and the same simulations:

* Data: for each task, ``--simulations`` pairs (theta, x) drawn from sbibm's prior and
  simulator after ``torch.manual_seed(seed)`` / ``np.random.seed(seed)``, as float32. Every
  method trains on the same pairs.
* sbi NPE: ``sbi.inference.NPE(prior=task.get_prior_dist())`` (its default density estimator,
  ``"maf"`` in sbi 0.27), ``append_simulations(theta, x).train()`` with the defaults (batches
  of 200, Adam 5e-4, 10% validation, stops 20 epochs after the best validation loss), then
  ``build_posterior()``. Training time: ``train()`` plus ``build_posterior()``.
* sbi FMPE: the same with ``sbi.inference.FMPE`` (flow matching; defaults: an MLP field,
  samples by ODE).
* ffjord: the pairs go to ``PAIRS.npy`` of shape (n, d_theta + d_x), theta columns first, and
  the plain command ``ffjord train --data PAIRS.npy --context-dims d_x --out RUN`` runs as a
  subprocess (nothing else: the command picks its own defaults). Training time is the
  subprocess's wall time (interpreter start-up, JAX import and compilation included; the run's
  own ``wall_seconds``, from its summary line and the last line of ``RUN/metrics.jsonl``, is kept
  for reference). Then the three observations go to ``OBS.npy`` of shape (3, d_x) and
  ``ffjord sample RUN -n 10000 --context OBS.npy -o SAMPLES.npy`` (shape (3, 10000, d_theta))
  runs, timed the same way.
* Quality: for observations 1, 2, 3 (``task.get_observation(num_observation=i)``) 10,000
  posterior samples (sbi: ``posterior.sample((10000,), x=obs)``, which by default rejects
  samples outside the prior's support; ``ffjord sample`` redraws samples outside the range
  of the training parameters, which it records without knowing the prior; the fraction
  outside the prior's support is reported for every method, with a second C2ST on the
  samples inside it when there are any outside) are compared with
  ``task.get_reference_posterior_samples(i)`` by sbibm's own
  ``sbibm.metrics.c2st(X=reference, Y=samples)`` (5-fold MLP classifier accuracy, z-scored
  by the reference; 0.5 is perfect, 1.0 fully distinguishable). Reported: the
  per-observation and mean C2ST, training seconds and sampling seconds (sum over the three
  observations; for ffjord the one ``ffjord sample`` process) and the ratios ffjord / NPE and
  ffjord / FMPE.

sbi's times are in this process (torch imported, ``torch.set_num_threads(2)``); ffjord's are
whole processes. A method that fails (an import error, a missing ffjord option, ...) is
reported as failed and the run carries on.

Peers (never needed by ffjord itself), the ``sbi-peers`` extra; sbibm declares dependencies
it does not need here (and pins an old sbi), so it goes in with ``--no-deps``. On Linux install
a CPU torch first so that nothing pulls a CUDA build::

    pip install torch==2.13.0            # the CPU wheel (or --index-url .../whl/cpu)
    pip install sbi                      # 0.27.0
    pip install --no-deps sbibm          # 1.1.0
    pip install pyro-ppl future autograd pandas
    python -c "import sbi, sbibm, torch"

sbibm's ``sir`` and ``lotka_volterra`` need ``diffeqtorch`` (Julia) and are reported as skipped
when it is missing; ``slcp_distractors`` fails to load its files with torch >= 2.6.

Run from the repository root::

    python benchmarks/compare_sbi.py --tasks two_moons gaussian_linear --simulations 10000
    python benchmarks/compare_sbi.py --tasks two_moons --skip-peers        # ffjord only
    python benchmarks/compare_sbi.py --tasks slcp --methods npe fmpe --merge   # add to the JSON

Writes ``docs/benchmarks/sbi.json`` (``--out``) and ``docs/SBI.md`` (``--report``; from
everything in the JSON, so ``--merge`` keeps earlier tasks and methods in the report).
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

# sbibm's slcp_distractors pickles its distractor mixture, which torch >= 2.6 refuses to
# load by default (weights_only); the file ships with sbibm itself.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

OBSERVATIONS = (1, 2, 3)
NUM_POSTERIOR_SAMPLES = 10_000
THREADS = 2
DEFAULT_OUT = "docs/benchmarks/sbi.json"
DEFAULT_REPORT = "docs/SBI.md"
METHODS = ("npe", "fmpe", "ffjord")
PEERS = ("npe", "fmpe")
LABELS = {"npe": "sbi NPE", "fmpe": "sbi FMPE", "ffjord": "ffjord CLI"}
TAIL = 3000  # characters of a failed subprocess's output kept


# Tasks, data and the metric ----------------------------------------------------------------


def load_task(name: str):
    """The sbibm task, with a prior/simulator draw to make sure it really works here."""
    import sbibm
    import torch

    task = sbibm.get_task(name)
    with torch.random.fork_rng():
        task.get_simulator()(task.get_prior()(num_samples=2))
    task.get_reference_posterior_samples(num_observation=OBSERVATIONS[0])
    return task


def seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def simulate(task, n: int, seed: int):
    """``n`` pairs (theta, x) from the task's prior and simulator, float32 torch tensors."""
    import torch

    seed_all(seed)
    theta = task.get_prior()(num_samples=n).to(torch.float32)
    x = task.get_simulator()(theta).to(torch.float32)
    return theta, x


def observation(task, i: int):
    import torch

    return task.get_observation(num_observation=i).to(torch.float32).reshape(1, -1)


def c2st(task, i: int, samples, first: int | None = None) -> float:
    """sbibm's C2ST of ``samples`` against the reference posterior of observation ``i``
    (with ``first``: of the first that many of each, a quicker and noisier screen)."""
    import sbibm.metrics
    import torch

    reference = task.get_reference_posterior_samples(num_observation=i).to(torch.float32)
    samples = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    if first is not None:
        reference, samples = reference[:first], samples[:first]
    return float(sbibm.metrics.c2st(X=reference, Y=samples)[0])


def outside_prior(task, samples) -> np.ndarray:
    """Boolean mask of the samples outside the support of the task's prior."""
    import torch

    support = task.get_prior_dist().support
    inside = support.check(torch.as_tensor(np.asarray(samples), dtype=torch.float32))
    return ~inside.numpy().astype(bool)


def score(task, i: int, samples, result: dict, first: int | None = None) -> None:
    """Append observation ``i``'s C2ST (and, if some samples lie outside the prior, their
    fraction and the C2ST of those inside) to ``result``."""
    samples = np.asarray(samples, dtype=np.float32)
    finite = np.isfinite(samples).all(axis=1)
    result["non_finite"].append(int((~finite).sum()))
    samples = samples[finite]
    outside = outside_prior(task, samples)
    result["outside_prior_fraction"].append(float(outside.mean()))
    result["c2st"].append(c2st(task, i, samples, first))
    if outside.any():
        inside = c2st(task, i, samples[~outside], first)
        result.setdefault("c2st_inside_prior", {})[str(i)] = inside


def new_result(method: str) -> dict:
    return {
        "method": method,
        "ok": False,
        "c2st": [],
        "sampling_seconds_per_observation": [],
        "outside_prior_fraction": [],
        "non_finite": [],
    }


def finish(result: dict) -> dict:
    result["c2st_mean"] = float(np.mean(result["c2st"]))
    result["ok"] = True
    return result


def warning_lines(caught) -> list[str]:
    lines = []
    for w in caught:
        line = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:200]}"
        if line not in lines:
            lines.append(line)
    return lines


# The peers: sbi's NPE and FMPE -------------------------------------------------------------


def sbi_tracker(log_dir: Path):
    """sbi's default TensorBoard logging, written under ``log_dir`` instead of the current
    directory's ``sbi-logs/`` (same cost, nothing left in the repository)."""
    from sbi.utils.tracking import TensorBoardTracker
    from torch.utils.tensorboard.writer import SummaryWriter

    return TensorBoardTracker(SummaryWriter(str(log_dir)))


def train_sbi(method: str, task, theta, x, seed: int, log_dir: Path):
    """(inference, estimator, training seconds, epochs or None): sbi's NPE or FMPE trained
    with its defaults on tensors `theta`, `x`."""
    from sbi.inference import FMPE, NPE

    cls = {"npe": NPE, "fmpe": FMPE}[method]
    seed_all(seed)
    inference = cls(
        prior=task.get_prior_dist(), show_progress_bars=False, tracker=sbi_tracker(log_dir)
    )
    start = time.perf_counter()
    estimator = inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - start
    print(flush=True)  # sbi's "converged after N epochs." ends without a newline
    summary = getattr(inference, "summary", None) or getattr(inference, "_summary", {})
    epochs = summary.get("epochs_trained") if isinstance(summary, dict) else None
    return inference, estimator, seconds, int(epochs[-1]) if epochs else None


def run_sbi(method: str, task, theta, x, seed: int, log_dir: Path) -> dict:
    """Train sbi's NPE or FMPE with its defaults, sample and score the three observations."""
    import torch

    result = new_result(method)
    result["class"] = f"sbi.inference.{method.upper()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inference, estimator, seconds, epochs = train_sbi(method, task, theta, x, seed, log_dir)
        start = time.perf_counter()
        posterior = inference.build_posterior(estimator)
        result["training_seconds"] = seconds + time.perf_counter() - start
        if epochs:
            result["epochs"] = epochs
        result["parameters"] = int(sum(p.numel() for p in estimator.parameters()))
        for i in OBSERVATIONS:
            obs = observation(task, i)
            seed_all(seed + i)
            start = time.perf_counter()
            with torch.no_grad():
                samples = posterior.sample(
                    (NUM_POSTERIOR_SAMPLES,), x=obs, show_progress_bars=False
                )
            result["sampling_seconds_per_observation"].append(time.perf_counter() - start)
            score(task, i, samples.numpy(), result)
    result["sampling_seconds"] = float(sum(result["sampling_seconds_per_observation"]))
    result["warnings"] = warning_lines(caught)
    return finish(result)


# ffjord: the plain command line ------------------------------------------------------------


def ffjord_command() -> list[str]:
    beside = Path(sys.executable).parent / "ffjord"
    found = str(beside) if beside.exists() else shutil.which("ffjord")
    if found is None:
        raise RuntimeError("the ffjord command is not on PATH (pip install -e .)")
    return [found]


def run_process(argv: list[str], what: str) -> tuple[float, str]:
    """Run ``argv``, return (wall seconds, stdout); raise with the output's tail on failure."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        output = (done.stdout + done.stderr).replace("\r", "\n")
        lines = [line for line in output.splitlines() if line.strip()]
        tail = "\n".join(lines)[-TAIL:]
        raise RuntimeError(f"{what} exited with status {done.returncode}:\n{tail}")
    return seconds, done.stdout


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_ffjord(
    task, theta, x, work: Path, options: list[str] | None = None, first: int | None = None
) -> dict:
    """``ffjord train --data PAIRS.npy --context-dims d_x --out RUN [options]``, then
    ``ffjord sample RUN -n 10000 --context OBS.npy -o SAMPLES.npy``; both timed as processes.
    ``first``: C2ST of the first that many samples only (see `c2st`)."""
    result = new_result("ffjord")
    del result["sampling_seconds_per_observation"]  # one process samples all three
    d_theta, d_x = theta.shape[1], x.shape[1]
    work.mkdir(parents=True, exist_ok=True)
    pairs, run_dir = work / "pairs.npy", work / "run"
    obs_file, samples_file = work / "obs.npy", work / "samples.npy"
    np.save(pairs, np.concatenate([theta.numpy(), x.numpy()], axis=1).astype(np.float32))
    exe = ffjord_command()
    train = [*exe, "train", "--data", str(pairs), "--context-dims", str(d_x), "--out", str(run_dir)]
    train += list(options or [])
    result["train_command"] = " ".join(["ffjord", *train[1:]])
    result["training_seconds"], stdout = run_process(train, "ffjord train")
    summary = last_json_line(stdout)
    if summary:
        result["summary"] = summary
    config = run_dir / "config.json"
    if config.exists():
        result["config"] = json.loads(config.read_text())  # the defaults the command chose
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        last = last_json_line(metrics.read_text())
        if last:
            result["epochs"] = last.get("epoch")
            result["metrics_wall_seconds"] = last.get("wall_seconds")
            result["last_epoch"] = {
                k: last[k] for k in ("train_loss", "test_nll", "nfe", "eval_nfe") if k in last
            }
    observations = np.concatenate([observation(task, i).numpy() for i in OBSERVATIONS])
    np.save(obs_file, observations.astype(np.float32))
    sample = [
        *exe,
        "sample",
        str(run_dir),
        "-n",
        str(NUM_POSTERIOR_SAMPLES),
        "--context",
        str(obs_file),
        "-o",
        str(samples_file),
    ]
    result["sample_command"] = " ".join(["ffjord", *sample[1:]])
    result["sampling_seconds"], _ = run_process(sample, "ffjord sample")
    samples = np.load(samples_file)
    expected = (len(OBSERVATIONS), NUM_POSTERIOR_SAMPLES, d_theta)
    if samples.shape != expected:
        raise RuntimeError(f"ffjord sample wrote shape {samples.shape}, expected {expected}")
    for k, i in enumerate(OBSERVATIONS):
        score(task, i, samples[k], result, first)
    return finish(result)


# Running, ratios and the report ------------------------------------------------------------


def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    if not (a and b and a.get("ok") and b.get("ok")):
        return None
    return a[key] / b[key] if b[key] else None


def ratios(methods: dict) -> dict:
    ff = methods.get("ffjord")
    out = {}
    for peer in PEERS:
        for key in ("training_seconds", "sampling_seconds"):
            value = ratio(ff, methods.get(peer), key)
            if value is not None:
                out[f"ffjord/{peer}_{key.split('_')[0]}"] = value
    return out


def run_task(name: str, methods: list[str], args, work_root: Path) -> dict:
    entry = {"task": name, "methods": {}}
    try:
        task = load_task(name)
    except Exception as exc:  # noqa: BLE001 - a task that cannot run here is skipped
        entry["skipped"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        print(f"[{name}] skipped: {entry['skipped']}", flush=True)
        return entry
    theta, x = simulate(task, args.simulations, args.seed)
    entry.update(
        dim_parameters=int(theta.shape[1]),
        dim_data=int(x.shape[1]),
        simulations=int(theta.shape[0]),
    )
    print(
        f"[{name}] {theta.shape[0]} simulations, theta {theta.shape[1]}-d, x {x.shape[1]}-d",
        flush=True,
    )
    for method in methods:
        print(f"[{name}] {LABELS[method]} ...", flush=True)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            if method == "ffjord":
                result = run_ffjord(task, theta, x, work_root / name)
            else:
                result = run_sbi(method, task, theta, x, args.seed, work_root / "sbi-logs")
        except Exception as exc:  # noqa: BLE001 - report the failure, go on with the rest
            result = new_result(method)
            result["error"] = f"{type(exc).__name__}: {exc}"
            print(f"[{name}] {LABELS[method]} FAILED: {result['error']}", flush=True)
        result["total_seconds"] = time.perf_counter() - started
        result["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before, after
        entry["methods"][method] = result
        if result["ok"]:
            print(
                f"[{name}] {LABELS[method]}: C2ST {result['c2st_mean']:.3f} "
                f"({', '.join(f'{c:.3f}' for c in result['c2st'])}), "
                f"training {result['training_seconds']:.1f} s, "
                f"sampling {result['sampling_seconds']:.1f} s",
                flush=True,
            )
    entry["ratios"] = ratios(entry["methods"])
    return entry


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table_rows(report: dict) -> tuple[list[str], list[str], list[str]]:
    """Markdown lines: the results table, the ratio table and the failures/skips."""
    rows = [
        "| task | method | C2ST mean | C2ST obs 1 / 2 / 3 | training s | sampling s "
        "(3 x 10k) | epochs | outside prior | load before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratio_rows = [
        "| task | ffjord/NPE training | ffjord/FMPE training | ffjord/NPE sampling "
        "| ffjord/FMPE sampling | C2ST ffjord - NPE | C2ST ffjord - FMPE |",
        "|---|---|---|---|---|---|---|",
    ]
    problems = []
    for name, entry in report["tasks"].items():
        if entry.get("skipped"):
            problems.append(f"- `{name}`: skipped ({entry['skipped']})")
            continue
        methods = entry["methods"]
        for method in METHODS:
            r = methods.get(method)
            if r is None:
                continue
            if not r.get("ok"):
                rows.append(f"| {name} | {LABELS[method]} | failed | | | | | | |")
                lines = [line for line in r.get("error", "failed").splitlines() if line.strip()]
                text = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1].strip()}"
                problems.append(f"- `{name}` / {LABELS[method]}: {text}")
                continue
            load = " / ".join(f"{v:.1f}" for v in r.get("load_average_1min", [])) or "-"
            outside = max(r["outside_prior_fraction"]) if r["outside_prior_fraction"] else 0.0
            inside = r.get("c2st_inside_prior")
            outside_text = f"{outside:.1%}"
            if inside:
                outside_text += " (C2ST inside: " + ", ".join(f"{v:.3f}" for v in inside.values())
                outside_text += ")"
            rows.append(
                f"| {name} | {LABELS[method]} | {r['c2st_mean']:.3f} | "
                + " / ".join(f"{c:.3f}" for c in r["c2st"])
                + f" | {r['training_seconds']:.1f} | {r['sampling_seconds']:.1f} | "
                f"{fmt(r.get('epochs'), 'd')} | {outside_text} | {load} |"
            )
        ff = methods.get("ffjord")
        if ff and ff.get("ok") and any(methods.get(p, {}).get("ok") for p in PEERS):
            q = entry["ratios"]

            def diff(peer, ff=ff, methods=methods):
                p = methods.get(peer)
                return f"{ff['c2st_mean'] - p['c2st_mean']:+.3f}" if p and p.get("ok") else "-"

            ratio_rows.append(
                f"| {name} | {fmt(q.get('ffjord/npe_training'), '.2f')} "
                f"| {fmt(q.get('ffjord/fmpe_training'), '.2f')} "
                f"| {fmt(q.get('ffjord/npe_sampling'), '.2f')} "
                f"| {fmt(q.get('ffjord/fmpe_sampling'), '.2f')} | {diff('npe')} | {diff('fmpe')} |"
            )
    return rows, ratio_rows, problems


def write_markdown(report: dict, path: Path, out: Path) -> None:
    rows, ratio_rows, problems = table_rows(report)
    meta = report["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [
        "# Simulation-based inference: ffjord's command line against sbi's NPE and FMPE",
        "",
        f"Generated by `benchmarks/compare_sbi.py` on {meta['date']}; raw numbers in `{out}`.",
        "",
        f"Machine: {meta['machine']}. {versions}.",
        "",
        "Commands:",
        "",
        "```bash",
        *meta["commands"],
        "```",
        "",
    ]
    if len(meta["commands"]) > 1:
        lines += [
            "Later commands (`--merge`) replace the results of the methods they run on the "
            "tasks they name (`--skip-peers`: ffjord's only).",
            "",
        ]
    lines += [
        f"Each task: {meta['simulations']} simulations (theta, x) from sbibm's prior and "
        f"simulator (seed {meta['seed']}, float32), the same for every method; for observations "
        f"{', '.join(map(str, OBSERVATIONS))} {NUM_POSTERIOR_SAMPLES} posterior samples, "
        "scored by sbibm's `c2st` against the reference posterior (0.5 is perfect).",
        "",
        "- sbi NPE / FMPE: `NPE(prior)` / `FMPE(prior)`, `append_simulations(theta, x).train()` "
        "and `build_posterior()` with every default, in this process (torch, 2 threads); "
        "sampling is `posterior.sample((10000,), x=obs)` (rejects samples outside the prior).",
        "- ffjord: the plain `ffjord train --data PAIRS.npy --context-dims d_x --out RUN` (theta "
        "columns first, then x), then `ffjord sample RUN -n 10000 --context OBS.npy -o "
        "SAMPLES.npy` for the three observations at once; both timed as whole processes "
        "(start-up, JAX import and compilation included). `ffjord sample` redraws draws outside "
        "the range of the training parameters (its default; it is not given the prior). The "
        "outside-prior column gives the largest fraction of a method's samples outside the "
        "prior's support (and the C2ST of the samples inside).",
        "- Sampling seconds: the sum over the three observations. Load: the 1-minute load "
        "average before and after the method ran (the machine may be shared; times taken "
        "under a load above the core count are inflated).",
        "",
        "## Results",
        "",
        *rows,
        "",
    ]
    if len(ratio_rows) > 2:
        lines += ["## Ratios (ffjord / peer; below 1: ffjord faster)", "", *ratio_rows, ""]
    if problems:
        lines += ["## Skipped or failed", "", *problems, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def print_table(report: dict) -> None:
    rows, ratio_rows, problems = table_rows(report)
    print()
    print("\n".join(rows))
    if len(ratio_rows) > 2:
        print()
        print("\n".join(ratio_rows))
    if problems:
        print()
        print("\n".join(problems))


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("ffjord", "jax", "torch", "sbi", "sbibm", "pyro-ppl", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "gaussian_linear"])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--skip-peers", action="store_true", help="run ffjord only")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    p.add_argument("--report", default=DEFAULT_REPORT, help="markdown report ('' for none)")
    p.add_argument(
        "--merge", action="store_true", help="keep the other tasks/methods already in --out"
    )
    p.add_argument("--work-dir", help="keep the ffjord files and runs here (default: temporary)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = ["ffjord"] if args.skip_peers else [m for m in METHODS if m in args.methods]
    import torch  # sbibm (tasks, simulators, C2ST) needs it even for ffjord alone

    torch.set_num_threads(THREADS)
    command = "python benchmarks/compare_sbi.py " + " ".join(
        a if a and " " not in a else repr(a) for a in sys.argv[1:]
    )
    out = Path(args.out)
    report = {"meta": {}, "tasks": {}}
    if args.merge and out.exists():
        report = json.loads(out.read_text())
    previous = report.get("meta", {})
    report["meta"] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), no GPU",
        "versions": versions(),
        "simulations": args.simulations,
        "seed": args.seed,
        "num_posterior_samples": NUM_POSTERIOR_SAMPLES,
        "observations": list(OBSERVATIONS),
        "torch_threads": THREADS,
        "commands": [*previous.get("commands", []), command] if args.merge else [command],
    }
    if args.merge and previous.get("simulations") not in (None, args.simulations):
        print(f"warning: --merge with {previous['simulations']} simulations in {out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ffjord_sbi_") as tmp:
        work_root = Path(args.work_dir) if args.work_dir else Path(tmp)
        for name in args.tasks:
            entry = run_task(name, methods, args, work_root)
            old = report["tasks"].get(name, {}) if args.merge else {}
            if old and not entry.get("skipped"):
                entry["methods"] = {**old.get("methods", {}), **entry["methods"]}
                entry["ratios"] = ratios(entry["methods"])
            report["tasks"][name] = entry
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")  # after every task
    print_table(report)
    if args.report:
        write_markdown(report, Path(args.report), out)
        print(f"\nwrote {out} and {args.report}")
    else:
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
