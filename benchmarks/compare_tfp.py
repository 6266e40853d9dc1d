"""Run the TFP tutorial peer and the ffjord side one after the other; write docs/BENCHMARKS.md.

Run from the repository root::

    python benchmarks/compare_tfp.py --epochs 8

1. ``benchmarks/peer_tfp.py`` with the peer venv's Python (``--peer-python``, default
   ``.venv-peers/bin/python``; how to create it: see that script's docstring);
2. ``benchmarks/ffjord_side.py`` with this Python (``sys.executable``), cold start (JAX's
   persistent compilation cache off);
3. unless ``--no-warm-start``: the ffjord side twice more for one epoch with a fresh persistent
   cache directory, the second run measuring a warm-cache start;

each as its own process, with ``FFJORD_BENCH_T0`` set just before it is launched so that the
start-up times include interpreter start-up. The raw JSONs go to ``docs/benchmarks/``
(``tfp.json``, ``ffjord.json``, ``ffjord_warm.json``, ``meta.json``), the report to
``docs/BENCHMARKS.md`` and the figure to ``docs/figures/nll_vs_time.png``.
``--report-only`` rewrites the report and the figure from the JSONs already there.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
MOONS_ENTROPY = 0.478  # nats; true differential entropy of moons with noise 0.06 (TUTORIAL.md)

PEER_VENV_HINT = (
    "create it with: python3.11 -m venv .venv-peers && .venv-peers/bin/pip install "
    "'tensorflow==2.21.0' 'tensorflow-probability==0.25.0' 'tf-keras==2.21.0' "
    "'dm-sonnet==2.0.2' 'scikit-learn==1.9.1' 'numpy==2.4.6' (see benchmarks/peer_tfp.py)"
)


# Running ---------------------------------------------------------------------------------------


def _run(cmd: list[str], label: str) -> None:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the cold start must not find a cache
    env["FFJORD_BENCH_T0"] = f"{time.time():.6f}"
    print(f"[compare] {label}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"[compare] {label} failed with exit code {proc.returncode}")


def _machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = int(line.split()[1]) / 1024**2
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)),
        "ram_gb": ram_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


# Report ----------------------------------------------------------------------------------------


def _f(x, fmt=".2f", none="n/a"):
    return none if x is None else format(x, fmt)


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _nll_times(d: dict) -> list[float]:
    """Wall seconds since process start at which each epoch's held-out NLL was known."""
    if d.get("nll_wall_s"):
        return list(d["nll_wall_s"])
    t = d["process_start_to_first_step_s"] - d["setup_to_first_step_s"]  # setup finished
    out = []
    for ep, ev in zip(d["epoch_seconds"], d["eval_seconds"], strict=True):
        t += ep + ev
        out.append(t)
    return out


def plot(tfp: dict, ff: dict, path: Path) -> None:
    """Left: held-out NLL against wall-clock time (with a zoom on ffjord); right: per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_ep) = plt.subplots(
        1, 2, figsize=(11, 4.6), dpi=150, gridspec_kw={"width_ratios": [1.6, 1]}
    )
    sides = (
        (tfp, "TFP tutorial (TF 2, tf.function)", "tab:orange", "s"),
        (ff, "ffjord (JAX, jit + lax.scan)", "tab:blue", "o"),
    )
    inset = ax.inset_axes([0.25, 0.42, 0.25, 0.48])
    for d, label, color, marker in sides:
        ts, nll = _nll_times(d), d["test_nll"]
        first = d["process_start_to_first_step_s"]
        ax.plot(ts, nll, marker=marker, color=color, label=label, lw=1.6, ms=5)
        ax.axvline(first, color=color, ls=":", lw=1.2)
        epochs = range(1, len(nll) + 1)
        ax_ep.plot(epochs, nll, marker=marker, color=color, label=label, lw=1.6, ms=5)
        if d is ff:
            inset.plot(ts, nll, marker=marker, color=color, lw=1.4, ms=4)
            inset.axvline(first, color=color, ls=":", lw=1.2)
            for e, (t, v) in enumerate(zip(ts, nll, strict=True), 1):
                if e in (1, len(nll)):
                    inset.annotate(
                        f"epoch {e}", (t, v), xytext=(5, -9), textcoords="offset points", fontsize=7
                    )
            lo, hi = min(ts + [first]), max(ts)
            pad = 0.08 * (hi - lo)
            inset.set_xlim(lo - pad, hi + 3 * pad)
    for a in (ax, ax_ep, inset):
        a.axhline(MOONS_ENTROPY, color="gray", ls="--", lw=1)
        a.grid(True, alpha=0.3)
    ax.plot([], [], color="gray", ls="--", lw=1, label="true entropy (best possible)")
    ax.plot([], [], color="black", ls=":", lw=1.2, label="first step done (ffjord: end of epoch 1)")
    ax.set_xlim(0, None)
    inset.set_title("zoom: ffjord", fontsize=8)
    inset.tick_params(labelsize=7)
    ax.set_xlabel("wall-clock seconds since process start")
    ax.set_ylabel("held-out NLL (nats/point, 4096 points)")
    ax.set_title("Held-out NLL against wall-clock time", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8.5)
    ax_ep.set_xlabel("epoch")
    ax_ep.set_ylabel("held-out NLL (nats/point)")
    ax_ep.set_title("Held-out NLL per epoch", fontsize=10)
    ax_ep.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(
        f"FFJORD tutorial on moons, {tfp['epochs']} epochs, seed {tfp['seed']}, same CPU",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(tfp: dict, ff: dict, warm: dict | None, meta: dict, fig_rel: str) -> str:
    m = meta["machine"]
    tv, fv = tfp["versions"], ff["versions"]
    sample_ratio = _ratio(tfp["sample_s"], ff["sample_s"])
    density_ratio = _ratio(tfp["density_s"], ff["density_s"])
    tnfe, fnfe = tfp.get("nfe_per_step") or {}, ff.get("nfe_per_step") or {}
    n = tfp["dataset_size"]
    rows = [
        (
            "steady-state s/epoch (median of epochs 2..N)",
            _f(tfp["steady_epoch_s"]),
            _f(ff["steady_epoch_s"]),
            _f(_ratio(tfp["steady_epoch_s"], ff["steady_epoch_s"]), ".1f"),
        ),
        (
            "fastest epoch after the first, s (less sensitive to other load)",
            _f(min(tfp["epoch_seconds"][1:], default=None)),
            _f(min(ff["epoch_seconds"][1:], default=None)),
            _f(
                _ratio(
                    min(tfp["epoch_seconds"][1:], default=None),
                    min(ff["epoch_seconds"][1:], default=None),
                ),
                ".1f",
            ),
        ),
        (
            "process start → first step done, s (ffjord: end of epoch 1¹)",
            _f(tfp["process_start_to_first_step_s"], ".1f"),
            _f(ff["process_start_to_first_step_s"], ".1f"),
            _f(
                _ratio(tfp["process_start_to_first_step_s"], ff["process_start_to_first_step_s"]),
                ".1f",
            ),
        ),
        (
            "first epoch incl. tracing/compilation, s",
            _f(tfp["epoch_seconds"][0], ".1f"),
            _f(ff["epoch_seconds"][0], ".1f"),
            _f(_ratio(tfp["epoch_seconds"][0], ff["epoch_seconds"][0]), ".1f"),
        ),
        (
            f"sampling {n} points: s (points/s)",
            f"{_f(tfp['sample_s'], '.3f')} ({tfp['sample_points_per_s']:,.0f})",
            f"{_f(ff['sample_s'], '.3f')} ({ff['sample_points_per_s']:,.0f})",
            _f(sample_ratio, ".1f"),
        ),
        (
            f"exact density of {n} points: s (points/s)",
            f"{_f(tfp['density_s'], '.3f')} ({tfp['density_points_per_s']:,.0f})",
            f"{_f(ff['density_s'], '.3f')} ({ff['density_points_per_s']:,.0f})",
            _f(density_ratio, ".1f"),
        ),
        (
            "NFE per training step, forward (log_prob), mean of epoch 1",
            _f(tnfe.get("forward_total"), ".1f"),
            _f(fnfe.get("forward_total"), ".1f"),
            _f(_ratio(tnfe.get("forward_total"), fnfe.get("forward_total")), ".2f"),
        ),
        (
            "NFE per training step, whole step (forward + backward)²",
            _f(tnfe.get("step_total"), ".1f"),
            "— (no adjoint solve)",
            "",
        ),
        (
            f"total wall time for {tfp['epochs']} epochs + evaluation + throughput, s",
            _f(tfp["total_wall_s"], ".0f"),
            _f(ff["total_wall_s"], ".0f"),
            _f(_ratio(tfp["total_wall_s"], ff["total_wall_s"]), ".1f"),
        ),
        (
            "peak resident memory, MB",
            _f(tfp["peak_rss_mb"], ".0f"),
            _f(ff["peak_rss_mb"], ".0f"),
            _f(_ratio(tfp["peak_rss_mb"], ff["peak_rss_mb"]), ".1f"),
        ),
    ]
    if warm is not None:
        rows.insert(
            3,  # after "process start -> first step"
            (
                "… ffjord with a warm persistent compilation cache³",
                _f(tfp["process_start_to_first_step_s"], ".1f"),
                _f(warm["process_start_to_first_step_s"], ".1f"),
                _f(
                    _ratio(
                        tfp["process_start_to_first_step_s"],
                        warm["process_start_to_first_step_s"],
                    ),
                    ".1f",
                ),
            ),
        )

    lines = [
        "# Benchmark: ffjord vs. TensorFlow Probability's FFJORD tutorial",
        "",
        f"Generated by `benchmarks/compare_tfp.py` on {meta['date']}. The same problem on both "
        "sides: `make_moons(8192, noise=0.06, random_state=seed)`, batches of 256, 4 stacked "
        "FFJORD blocks of MLP(8, 3) with the exact trace, Dormand–Prince rtol 1e-3 atol 1e-5, "
        "Adam 1e-2, base N(0, 0.8² I); held-out NLL on `make_moons(4096, noise=0.06, "
        "random_state=seed + 1)`. Both run on the CPU of the same machine, one after the other, "
        "each in its own fresh process, ffjord with a cold start (no persistent compilation "
        "cache).",
        "",
        "Command (from the repository root):",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "## Summary",
        "",
        "Ratio = TFP / ffjord for times (so for throughputs it is ffjord points/s ÷ TFP "
        "points/s); above 1 means ffjord is faster.",
        "",
        "| measure | TFP | ffjord | ratio TFP / ffjord |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    est = ff.get("process_start_to_first_step_est_s")
    lines += [
        "",
        "¹ ffjord runs the 32 steps of an epoch inside one compiled `lax.scan`, so its first "
        "step cannot be observed on its own; the number is the end of the first epoch, an upper "
        "bound. Tracing/lowering took "
        f"{_f(ff.get('lower_s'), '.1f')} s and XLA compilation {_f(ff.get('compile_s'), '.1f')} s "
        "(timed apart with JAX's ahead-of-time API); compiled + one step's share of the first "
        f"epoch gives an estimated first step at {_f(est, '.1f')} s. TFP's first step is mostly "
        "TF graph tracing.",
        "",
        "² TFP's FFJORD differentiates with an adjoint ODE solved backwards (its counters see "
        f"{_f(tnfe.get('backward_total'), '.0f')} more field evaluations per step); ffjord "
        "backpropagates through the solver's operations (diffrax `RecursiveCheckpointAdjoint`), "
        "so its backward pass solves no extra ODE (checkpointing may recompute some forward "
        "evaluations; not counted). NFE counts every evaluation of a block's vector field on "
        "the whole batch, summed over the 4 blocks; ffjord's per epoch: "
        + ", ".join(_f(x, ".0f") for x in fnfe.get("forward_total_per_epoch", []))
        + " (it grows as the learned dynamics get stiffer).",
    ]
    if warm is not None:
        lines += [
            "",
            "³ A second ffjord process, 1 epoch, after a first one filled a fresh JAX persistent "
            f"compilation cache: lowering {_f(warm.get('lower_s'), '.1f')} s (still done in "
            f"every process), compilation {_f(warm.get('compile_s'), '.1f')} s (read from the "
            "cache). The `ffjord` command line enables this cache by default; the library "
            "does not.",
        ]
    lines += [
        "",
        "## Held-out NLL after each epoch",
        "",
        f"nats/point on 4096 held-out points (the true entropy, the lowest possible expected "
        f"value, is {MOONS_ENTROPY}); wall = seconds since process start when the value was "
        "known.",
        "",
        "| epoch | TFP NLL | TFP wall s | ffjord NLL | ffjord wall s |",
        "|---:|---:|---:|---:|---:|",
    ]
    tt, ft = _nll_times(tfp), _nll_times(ff)
    for i in range(max(len(tfp["test_nll"]), len(ff["test_nll"]))):
        a = tfp["test_nll"][i] if i < len(tfp["test_nll"]) else None
        b = ff["test_nll"][i] if i < len(ff["test_nll"]) else None
        ta = tt[i] if i < len(tt) else None
        tb = ft[i] if i < len(ft) else None
        lines.append(
            f"| {i + 1} | {_f(a, '.4f')} | {_f(ta, '.1f')} | {_f(b, '.4f')} | {_f(tb, '.1f')} |"
        )
    lines += [
        "",
        f"![held-out NLL against wall-clock time]({fig_rel})",
        "",
        "Per-epoch seconds (first epoch includes tracing/compilation):",
        "",
        "- TFP: " + ", ".join(_f(x) for x in tfp["epoch_seconds"]),
        "- ffjord: " + ", ".join(_f(x) for x in ff["epoch_seconds"]),
        "",
        "The two sides start from different random initial parameters (Sonnet's and "
        "ffjord's initialisers, different RNGs) and shuffle differently, so their NLL curves "
        "differ by chance as well as by implementation; compare the trend, not single epochs.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores "
        f"({m['sched_affinity']} usable), RAM {_f(m['ram_gb'], '.1f')} GB; {m['os']}",
        f"- load average (1 min) before / after the runs: {_f(meta['load_before'], '.2f')} / "
        f"{_f(meta['load_after'], '.2f')} on {m['cpu_count']} cores: the machine is shared "
        "with other work, so timings are noisy. For scale, TUTORIAL.md's reference run of the "
        "same TFP code on this machine type measured a first epoch of 67–116 s and a median "
        "of 3.2 s/epoch (2.3–5.1) over 40 epochs.",
        f"- ffjord side: Python {fv['python']}, ffjord {fv.get('ffjord')}, jax {fv['jax']} "
        f"(jaxlib {fv.get('jaxlib')}), diffrax {fv['diffrax']}, equinox {fv['equinox']}, "
        f"numpy {fv['numpy']}; backend {ff.get('backend')}",
        f"- TFP side: Python {tv['python']}, tensorflow {tv['tf']}, tensorflow-probability "
        f"{tv['tfp']}, dm-sonnet {tv['sonnet']}, numpy {tv['numpy']}",
        "",
        "Raw results: `docs/benchmarks/tfp.json`, `docs/benchmarks/ffjord.json`"
        + (", `docs/benchmarks/ffjord_warm.json`" if warm is not None else "")
        + ". What each field means: the docstrings of `benchmarks/peer_tfp.py` and "
        "`benchmarks/ffjord_side.py`.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", choices=("dopri5", "tsit5"), default="dopri5", help="ffjord side")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    p.add_argument("--no-warm-start", action="store_true", help="skip the warm-cache runs")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from JSONs")
    args = p.parse_args(argv)

    raw = ROOT / "docs" / "benchmarks"
    fig = ROOT / "docs" / "figures" / "nll_vs_time.png"
    doc = ROOT / "docs" / "BENCHMARKS.md"
    tfp_json, ff_json, warm_json = raw / "tfp.json", raw / "ffjord.json", raw / "ffjord_warm.json"
    meta_json = raw / "meta.json"

    if not args.report_only:
        if not Path(args.peer_python).exists():
            print(f"peer Python {args.peer_python} not found; {PEER_VENV_HINT}")
            return 2
        raw.mkdir(parents=True, exist_ok=True)
        common = ["--epochs", str(args.epochs), "--seed", str(args.seed)]
        meta = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python "
            + shlex.join(["benchmarks/compare_tfp.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": _machine(),
            "load_before": os.getloadavg()[0],
        }
        peer = [args.peer_python, str(HERE / "peer_tfp.py"), *common, "--out", str(tfp_json)]
        _run(peer, "TFP peer")
        side = [sys.executable, str(HERE / "ffjord_side.py"), *common, "--solver", args.solver]
        _run([*side, "--no-cache", "--out", str(ff_json)], "ffjord (cold start)")
        if args.no_warm_start:
            warm_json.unlink(missing_ok=True)
        else:
            with tempfile.TemporaryDirectory() as cache:
                one = [sys.executable, str(HERE / "ffjord_side.py"), "--epochs", "1"]
                one += ["--seed", str(args.seed), "--solver", args.solver, "--cache-dir", cache]
                prime = Path(cache) / "prime.json"
                _run([*one, "--out", str(prime)], "ffjord (filling the cache)")
                _run([*one, "--out", str(warm_json)], "ffjord (warm cache)")
        meta["load_after"] = os.getloadavg()[0]
        meta_json.write_text(json.dumps(meta, indent=2) + "\n")

    tfp = json.loads(tfp_json.read_text())
    ff = json.loads(ff_json.read_text())
    warm = json.loads(warm_json.read_text()) if warm_json.exists() else None
    meta = json.loads(meta_json.read_text())
    plot(tfp, ff, fig)
    doc.write_text(report(tfp, ff, warm, meta, os.path.relpath(fig, doc.parent)))
    s = _ratio(tfp["steady_epoch_s"], ff["steady_epoch_s"])
    f1 = _ratio(tfp["process_start_to_first_step_s"], ff["process_start_to_first_step_s"])
    print(
        f"TFP/ffjord: steady epoch {_f(s, '.1f')}x, first step {_f(f1, '.1f')}x, "
        f"sampling {_f(_ratio(tfp['sample_s'], ff['sample_s']), '.1f')}x, "
        f"density {_f(_ratio(tfp['density_s'], ff['density_s']), '.1f')}x -> {doc}, {fig}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
