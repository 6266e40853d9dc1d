"""Run the TFP tutorial peer and the ffjord side one after the other; write docs/BENCHMARKS.md.

Run from the repository root::

    python benchmarks/compare_tfp.py --epochs 8                 # one seed (--seed, default 0)
    python benchmarks/compare_tfp.py --epochs 8 --seeds 0 1 2   # seed-to-seed spread of the NLL

For each seed in ``--seeds`` (default: just ``--seed``), in this order:

1. ``benchmarks/peer_tfp.py`` with the peer venv's Python (``--peer-python``, default
   ``.venv-peers/bin/python``; how to create it: see that script's docstring);
2. ``benchmarks/ffjord_side.py`` with this Python (``sys.executable``), cold start (JAX's
   persistent compilation cache off; every ffjord process here is a cold start);
3. after the FIRST seed only, unless ``--no-warm-start``: the ffjord side twice more for one
   epoch with a fresh persistent cache directory, the second run measuring a warm-cache start;

each as its own fresh process, with ``FFJORD_BENCH_T0`` set just before it is launched so that
the start-up times include interpreter start-up. The raw JSONs go to ``docs/benchmarks/``
(``tfp_seed{S}.json``, ``ffjord_seed{S}.json``, ``ffjord_warm.json``, ``meta.json``; the
single-seed ``tfp.json`` / ``ffjord.json`` of older versions are removed), the report to
``docs/BENCHMARKS.md`` and the figure to ``docs/figures/nll_vs_time.png``.

The report keeps the detailed speed table of the first seed, adds the median over seeds of
each side's speed measures (and the ratio of the medians), and a quality section: per epoch,
mean +- standard deviation over seeds of the held-out NLL on both sides, each seed's value,
and whether ffjord's mean lies within TFP's seed-to-seed spread (TFP mean +- 1 sd).
``--report-only`` rewrites the report and the figure from the JSONs already there. The report
and the figure are drawn by ``render_tfp.py`` (which runs nothing and can be run on its own).

``--smoke``: one epoch of seed 0, no warm-cache runs, everything into a temporary directory;
without the peer venv, the ffjord side alone, and the report rendered from the JSONs in
``docs/benchmarks`` (into the temporary directory).
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import harness
import render_tfp

ROOT, HERE = harness.ROOT, harness.HERE

PEER_VENV_HINT = (
    "create it with: python3.11 -m venv .venv-peers && .venv-peers/bin/pip install "
    "'tensorflow==2.21.0' 'tensorflow-probability==0.25.0' 'tf-keras==2.21.0' "
    "'dm-sonnet==2.0.2' 'scikit-learn==1.9.1' 'numpy==2.4.6' (see benchmarks/peer_tfp.py)"
)


def _run(cmd: list[str], label: str) -> float:
    """Run one side in a fresh process; return the 1-minute load average just before."""
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the cold start must not find a cache
    load = harness.loadavg()
    env["FFJORD_BENCH_T0"] = f"{time.time():.6f}"
    print(f"[compare] {label}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = harness.run(cmd, env=env, cwd=ROOT, capture=False)
    if not proc.ok:
        sys.exit(f"[compare] {label} failed with exit code {proc.returncode}")
    return load


def smoke_without_peer(args, tmp: Path) -> int:
    """The ffjord side for one epoch, and the report rendered from docs/benchmarks."""
    harness.skip_peer(f"the TFP peer venv ({args.peer_python})")
    side = [sys.executable, str(HERE / "ffjord_side.py"), "--epochs", "1", "--seed", "0"]
    _run([*side, "--no-cache", "--out", str(tmp / "ffjord_seed0.json")], "ffjord seed 0")
    raw, _, _ = render_tfp.paths("BENCHMARKS")
    print(render_tfp.render(raw, tmp / "nll_vs_time.png", tmp / "BENCHMARKS.md"))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="the seed when --seeds is not given")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run both sides once per seed, in this order (default: just --seed)",
    )
    p.add_argument("--solver", choices=("dopri5", "tsit5"), default="dopri5", help="ffjord side")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    p.add_argument(
        "--no-warm-start", action="store_true", help="skip the warm-cache runs (first seed)"
    )
    p.add_argument("--report-only", action="store_true", help="rewrite the report from JSONs")
    p.add_argument(
        "--add-seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run these seeds and add them to the results already in docs/benchmarks",
    )
    p.add_argument(
        "--name",
        default="BENCHMARKS",
        help="report docs/NAME.md; other names keep their JSONs in docs/benchmarks/name/",
    )
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if not args.name.replace("_", "").isalnum():
        p.error("--name takes letters, digits and underscores")
    seeds = args.seeds if args.seeds is not None else [args.seed]
    if args.add_seeds is not None:
        seeds = args.add_seeds
    if len(set(seeds)) != len(seeds):
        p.error("--seeds must not repeat a seed")

    raw, fig, doc = render_tfp.paths(args.name)
    if args.smoke:
        tmp = harness.smoke_dir(__file__)
        if not Path(args.peer_python).exists():
            return smoke_without_peer(args, tmp)
        raw, fig, doc = tmp, tmp / "nll_vs_time.png", tmp / "BENCHMARKS.md"
        args.epochs, args.no_warm_start, args.report_only, seeds = 1, True, False, [0]
    warm_json, meta_json = raw / "ffjord_warm.json", raw / "meta.json"

    if not args.report_only:
        if not Path(args.peer_python).exists():
            print(f"peer Python {args.peer_python} not found; {PEER_VENV_HINT}")
            return 2
        raw.mkdir(parents=True, exist_ok=True)
        previous = json.loads(meta_json.read_text()) if args.add_seeds is not None else None
        if previous is not None and set(seeds) & set(previous["seeds"]):
            p.error(f"--add-seeds: seeds {sorted(set(seeds) & set(previous['seeds']))} are done")
        meta = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python "
            + shlex.join(["benchmarks/compare_tfp.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": harness.machine(),
            "seeds": seeds,
            "files": [f"{side}_seed{s}.json" for s in seeds for side in ("tfp", "ffjord")],
            "load_before": harness.loadavg(),
            "raw_dir": os.path.relpath(raw, ROOT),
            "load_before_runs": [],
        }
        loads = meta["load_before_runs"]
        for k, seed in enumerate(seeds):
            common = ["--epochs", str(args.epochs), "--seed", str(seed)]
            tfp_json, ff_json = raw / f"tfp_seed{seed}.json", raw / f"ffjord_seed{seed}.json"
            peer = [args.peer_python, str(HERE / "peer_tfp.py"), *common, "--out", str(tfp_json)]
            label = f"TFP seed {seed}"
            loads.append({"label": label, "load": _run(peer, label)})
            side = [sys.executable, str(HERE / "ffjord_side.py"), *common, "--solver", args.solver]
            label = f"ffjord seed {seed}"
            loads.append(
                {"label": label, "load": _run([*side, "--no-cache", "--out", str(ff_json)], label)}
            )
            if k > 0 or previous is not None:
                continue
            if args.no_warm_start:
                warm_json.unlink(missing_ok=True)
            else:
                with tempfile.TemporaryDirectory() as cache:
                    one = [sys.executable, str(HERE / "ffjord_side.py"), "--epochs", "1"]
                    one += ["--seed", str(seed), "--solver", args.solver, "--cache-dir", cache]
                    prime = Path(cache) / "prime.json"
                    _run([*one, "--out", str(prime)], "ffjord (filling the cache)")
                    _run([*one, "--out", str(warm_json)], "ffjord (warm cache)")
        meta["load_after"] = harness.loadavg()
        if previous is not None:  # one report over the earlier seeds and these
            meta = {
                **previous,
                "command": previous["command"] + " && " + meta["command"],
                "seeds": previous["seeds"] + seeds,
                "files": previous["files"] + meta["files"],
                "load_before_runs": previous["load_before_runs"] + loads,
                "load_after": meta["load_after"],
            }
        meta_json.write_text(json.dumps(meta, indent=2) + "\n")
        for old in ("tfp.json", "ffjord.json"):  # single-seed layout of older versions
            (raw / old).unlink(missing_ok=True)

    print(render_tfp.render(raw, fig, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
