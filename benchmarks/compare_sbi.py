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
  for reference). Then the observations go to ``OBS.npy`` of shape (m, d_x) and
  ``ffjord sample RUN -n 10000 --context OBS.npy -o SAMPLES.npy`` (shape (3, 10000, d_theta))
  runs, timed the same way.
* Quality: for observations ``--observations`` (default 1-10;
  ``task.get_observation(num_observation=i)``) 10,000
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

``--seeds 0 1 2``: every method on each seed's simulations, the rows averaged over seeds
(each seed's mean kept). Peers' results go to ``--peer-cache``
(``docs/benchmarks/sbi_peers.json``) and are reused for the same task, simulations, seed
and observations, so a later run measures ffjord alone against them.

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
everything in the JSON, so ``--merge`` keeps earlier tasks and methods in the report; the
report is rendered by ``render_sbi.py``). The measuring parts shared with ``sbi_variants.py``
and ``data_defaults.py`` live in ``sbi_tasks.py``.

``--smoke``: two_moons with 500 simulations and one epoch of ffjord, into a temporary
directory; without sbibm/torch, ffjord's side alone on its own ``arcs`` simulator.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import harness
import render_sbi
from sbi_tasks import (
    ALL_OBSERVATIONS,
    LABELS,
    METHODS,
    NUM_POSTERIOR_SAMPLES,
    PEERS,
    THREADS,
    finish,
    load_task,
    new_result,
    over_seeds,
    run_ffjord,
    run_sbi,
    simulate,
    smoke_ffjord_only,
)

DEFAULT_OUT = render_sbi.DEFAULT_OUT
DEFAULT_REPORT = render_sbi.DEFAULT_REPORT
DEFAULT_PEER_CACHE = "docs/benchmarks/sbi_peers.json"
SMOKE_FFJORD = ["--epochs", "1", "--blocks", "1"]


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


def cached_peer(cache: dict, key: str, observations: list[int]) -> dict | None:
    """A peer's cached result for `key` if it scored every one of `observations` (then
    cut down to them, in their order)."""
    r = cache.get(key)
    if not (r and r.get("ok") and set(observations) <= set(r.get("observations", []))):
        return None
    at = {i: k for k, i in enumerate(r["observations"])}
    picked = dict(r, observations=list(observations), from_cache=True)
    for field in ("c2st", "outside_prior_fraction", "non_finite"):
        picked[field] = [r[field][at[i]] for i in observations]
    if "sampling_seconds_per_observation" in r:
        per = [r["sampling_seconds_per_observation"][at[i]] for i in observations]
        picked.update(sampling_seconds_per_observation=per, sampling_seconds=float(sum(per)))
    return finish(picked)


def run_method(method: str, task, theta, x, seed: int, args, work: Path, cache: dict) -> dict:
    """One method on one seed's simulations: a peer from the cache when it holds it."""
    key = f"{args.task_name}|{method}|{args.simulations}|{seed}"
    if method != "ffjord":
        found = cached_peer(cache, key, args.observations)
        if found is not None:
            print(f"  {LABELS[method]}, seed {seed}: cached", flush=True)
            return found
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        if method == "ffjord":
            result = run_ffjord(
                task, theta, x, work, args.ffjord_options, observations=args.observations
            )
        else:
            log_dir = work.parent / "sbi-logs"
            result = run_sbi(method, task, theta, x, seed, log_dir, args.observations)
    except Exception as exc:  # noqa: BLE001 - report the failure, go on with the rest
        result = new_result(method)
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {LABELS[method]}, seed {seed} FAILED: {result['error']}", flush=True)
    result["seed"] = seed
    result["total_seconds"] = time.perf_counter() - started
    result["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before, after
    if result["ok"]:
        if method != "ffjord":
            cache[key] = result
        print(
            f"  {LABELS[method]}, seed {seed}: C2ST {result['c2st_mean']:.3f}, "
            f"training {result['training_seconds']:.1f} s, "
            f"sampling {result['sampling_seconds']:.1f} s",
            flush=True,
        )
    return result


def run_task(name: str, methods: list[str], args, work_root: Path, cache: dict) -> dict:
    entry = {"task": name, "methods": {}}
    try:
        task = load_task(name)
    except Exception as exc:  # noqa: BLE001 - a task that cannot run here is skipped
        entry["skipped"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        print(f"[{name}] skipped: {entry['skipped']}", flush=True)
        return entry
    args.task_name = name
    by_method: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in args.seeds:
        theta, x = simulate(task, args.simulations, seed)
        entry.update(
            dim_parameters=int(theta.shape[1]),
            dim_data=int(x.shape[1]),
            simulations=int(theta.shape[0]),
        )
        print(f"[{name}] seed {seed}: {theta.shape[0]} simulations, theta "
              f"{theta.shape[1]}-d, x {x.shape[1]}-d", flush=True)  # fmt: skip
        for method in methods:
            work = work_root / name / f"seed-{seed}"
            by_method[method].append(run_method(method, task, theta, x, seed, args, work, cache))
            if args.peer_cache:
                write_json(Path(args.peer_cache), cache)
    for method, results in by_method.items():
        entry["methods"][method] = over_seeds(results)
        r = entry["methods"][method]
        if r.get("ok"):
            seeds = ", ".join(f"{c:.3f}" for c in r.get("seed_means", [r["c2st_mean"]]))
            print(f"[{name}] {LABELS[method]}: C2ST {r['c2st_mean']:.3f} (seeds: {seeds})")
    entry["ratios"] = ratios(entry["methods"])
    return entry


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["two_moons", "gaussian_linear"])
    p.add_argument("--simulations", type=int, default=10_000)
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="simulation seeds")
    p.add_argument(
        "--observations",
        nargs="+",
        type=int,
        default=list(ALL_OBSERVATIONS),
        help="sbibm observation numbers (default 1-10)",
    )
    p.add_argument(
        "--peer-cache",
        default=DEFAULT_PEER_CACHE,
        help=f"peers' results, reused when they hold the task, seed and observations "
        f"('' for none; default {DEFAULT_PEER_CACHE})",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--skip-peers", action="store_true", help="run ffjord only")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    p.add_argument("--report", default=DEFAULT_REPORT, help="markdown report ('' for none)")
    p.add_argument(
        "--merge", action="store_true", help="keep the other tasks/methods already in --out"
    )
    p.add_argument("--work-dir", help="keep the ffjord files and runs here (default: temporary)")
    harness.add_smoke(p)
    args = p.parse_args(argv)
    args.ffjord_options = []
    if args.smoke:  # two_moons, 500 simulations, one epoch of ffjord, outputs in a temporary dir
        tmp = harness.smoke_dir(__file__)
        args.tasks, args.simulations, args.merge = ["two_moons"], 500, False
        args.observations, args.peer_cache = [1, 2], str(tmp / "peers.json")
        args.out, args.report = str(tmp / "sbi.json"), str(tmp / "SBI.md")
        args.ffjord_options = SMOKE_FFJORD
    return args


def smoke_without_peers() -> int:
    harness.skip_peer("sbibm / torch")
    result = smoke_ffjord_only(harness.smoke_dir(__file__), SMOKE_FFJORD)
    print(json.dumps({k: result[k] for k in ("training_seconds", "sampling_seconds")}))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = ["ffjord"] if args.skip_peers else [m for m in METHODS if m in args.methods]
    if args.smoke and not harness.peer_available("torch", "sbibm", "sbi"):
        return smoke_without_peers()
    import torch  # sbibm (tasks, simulators, C2ST) needs it even for ffjord alone

    torch.set_num_threads(THREADS)
    command = harness.command_line("compare_sbi.py", argv)
    out = Path(args.out)
    report = {"meta": {}, "tasks": {}}
    if args.merge and out.exists():
        report = json.loads(out.read_text())
    previous = report.get("meta", {})
    report["meta"] = {
        "date": datetime.date.today().isoformat(),
        "machine": harness.machine_line(),
        "versions": harness.versions(
            "ffjord", "jax", "torch", "sbi", "sbibm", "pyro-ppl", "scikit-learn", "numpy"
        ),
        "simulations": args.simulations,
        "seeds": args.seeds,
        "num_posterior_samples": NUM_POSTERIOR_SAMPLES,
        "observations": args.observations,
        "torch_threads": THREADS,
        "commands": [*previous.get("commands", []), command] if args.merge else [command],
    }
    if args.merge and previous.get("simulations") not in (None, args.simulations):
        print(f"warning: --merge with {previous['simulations']} simulations in {out}", flush=True)
    cache_path = Path(args.peer_cache) if args.peer_cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="ffjord_sbi_") as tmp:
        work_root = Path(args.work_dir) if args.work_dir else Path(tmp)
        for name in args.tasks:
            entry = run_task(name, methods, args, work_root, cache)
            old = report["tasks"].get(name, {}) if args.merge else {}
            if old and not entry.get("skipped"):
                entry["methods"] = {**old.get("methods", {}), **entry["methods"]}
                entry["ratios"] = ratios(entry["methods"])
            report["tasks"][name] = entry
            write_json(out, report)  # after every task
    render_sbi.print_table(report)
    if args.report:
        render_sbi.write_markdown(report, Path(args.report), out)
        print(f"\nwrote {out} and {args.report}")
    else:
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
