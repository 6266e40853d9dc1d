"""The report and figure of ``compare_tfp.py``, from the raw JSONs it wrote.

``compare_tfp.py`` measures (one process per side and seed) and writes
``docs/benchmarks/{tfp,ffjord}_seed{S}.json``, ``ffjord_warm.json`` and ``meta.json``; this
module turns them into ``docs/NAME.md`` and ``docs/figures/nll_vs_time[_name].png``. It runs
nothing, so it can be rerun on its own::

    python benchmarks/render_tfp.py                     # docs/BENCHMARKS.md from docs/benchmarks
    python benchmarks/render_tfp.py --name SPEED        # docs/SPEED.md from docs/benchmarks/speed
    python benchmarks/render_tfp.py --raw DIR --doc OUT.md --figure OUT.png
"""

import argparse
import json
import os
from pathlib import Path

import harness
from harness import fmt as _f
from harness import mean_sd as _mean_sd
from harness import median as _median
from harness import ratio as _ratio

ROOT = harness.ROOT
MOONS_ENTROPY = 0.478  # nats; true differential entropy of moons with noise 0.06 (TUTORIAL.md)
TFP_COLOR, FF_COLOR = "tab:orange", "tab:blue"
TFP_LABEL, FF_LABEL = "TFP tutorial (TF 2, tf.function)", "ffjord (JAX, jit + lax.scan)"


def paths(name: str) -> tuple[Path, Path, Path]:
    """(raw JSON folder, figure, report) of the report called ``name``: ``BENCHMARKS`` is
    the main one; other names keep their JSONs in docs/benchmarks/name/."""
    if name == "BENCHMARKS":
        raw = ROOT / "docs" / "benchmarks"
        fig = ROOT / "docs" / "figures" / "nll_vs_time.png"
    else:  # a separate run that leaves the main report alone
        raw = ROOT / "docs" / "benchmarks" / name.lower()
        fig = ROOT / "docs" / "figures" / f"nll_vs_time_{name.lower()}.png"
    return raw, fig, ROOT / "docs" / f"{name}.md"


# Report helpers --------------------------------------------------------------------------------


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


def _fastest(d: dict) -> float | None:
    return min(d["epoch_seconds"][1:], default=None)


def _welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (None without scipy or with < 2 values a side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    try:
        from scipy import stats
    except ImportError:
        return None
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return None if p != p else float(p)  # nan (both sides constant)


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


# Figure ----------------------------------------------------------------------------------------


def _label_end(ax, ts, nll, text, color, size=7) -> None:
    """Write ``text`` just right of a curve's last point."""
    ax.annotate(
        text,
        (ts[-1], nll[-1]),
        xytext=(4, -2),
        textcoords="offset points",
        fontsize=size,
        color=color,
        va="center",
    )


def plot(runs: list[tuple[int, dict, dict]], path: Path) -> None:
    """Left: held-out NLL against wall-clock time, one thin curve per seed and side (with a
    zoom on ffjord); right: per epoch, each seed thin plus the mean +- sd band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, (ax, ax_ep) = plt.subplots(
        1, 2, figsize=(12, 5.2), dpi=150, gridspec_kw={"width_ratios": [1.5, 1]}
    )
    multi = len(runs) > 1
    lw, ms, alpha = (1.0, 3.0, 0.75) if multi else (1.6, 5.0, 1.0)

    # Left panel: wall-clock time, every seed of both sides.
    ff_times, tfp_first = [], []
    for seed, tfp, ff in runs:
        for d, color, marker in ((tfp, TFP_COLOR, "s"), (ff, FF_COLOR, "o")):
            ts, nll = _nll_times(d), d["test_nll"]
            ax.plot(ts, nll, marker=marker, color=color, lw=lw, ms=ms, alpha=alpha)
            ax.axvline(d["process_start_to_first_step_s"], color=color, ls=":", lw=0.9, alpha=0.6)
            if multi and d is tfp:  # ffjord's curves are labelled in the zoom
                _label_end(ax, ts, nll, f"seed {seed}", color)
        ff_times += _nll_times(ff) + [ff["process_start_to_first_step_s"]]
        tfp_first.append(tfp["process_start_to_first_step_s"])
    ax.set_xlim(0, None)
    xmax = ax.get_xlim()[1] * (1.07 if multi else 1.0)  # room for the "seed k" labels
    ax.set_xlim(0, xmax)

    # Zoom on ffjord, placed in the empty stretch between ffjord's last point and TFP's first
    # step (falls back to the top right corner when that stretch is too narrow).
    gap_lo, gap_hi = max(ff_times) / xmax + 0.05, min(tfp_first) / xmax - 0.03
    if gap_hi - gap_lo >= 0.18:
        width = min(0.32, gap_hi - gap_lo)
        box = [gap_lo + (gap_hi - gap_lo - width) / 2, 0.40, width, 0.50]
    else:
        box = [0.62, 0.52, 0.34, 0.40]
    inset = ax.inset_axes(box)
    for seed, _tfp, ff in runs:
        ts, nll = _nll_times(ff), ff["test_nll"]
        inset.plot(ts, nll, marker="o", color=FF_COLOR, lw=lw, ms=ms - 0.5, alpha=alpha)
        inset.axvline(ff["process_start_to_first_step_s"], color=FF_COLOR, ls=":", lw=0.9)
        _label_end(inset, ts, nll, f"seed {seed}" if multi else f"epoch {len(nll)}", FF_COLOR, 6)
    lo, hi = min(ff_times), max(ff_times)
    pad = 0.08 * (hi - lo)
    inset.set_xlim(lo - pad, hi + 4 * pad)
    inset.set_title(f"zoom: ffjord, epochs 1–{len(runs[0][2]['test_nll'])}", fontsize=8)
    inset.tick_params(labelsize=7)

    # Right panel: per epoch, each seed thin, the mean over seeds thick with a +-1 sd band.
    n_ep = min(len(d["test_nll"]) for _s, t, f in runs for d in (t, f))
    epochs = list(range(1, n_ep + 1))
    for side, color, marker in ((1, TFP_COLOR, "s"), (2, FF_COLOR, "o")):
        per_seed = [run[side]["test_nll"][:n_ep] for run in runs]
        for nll in per_seed:
            ax_ep.plot(
                epochs, nll, marker=marker, color=color, lw=lw, ms=ms, alpha=0.45 if multi else 1
            )
        if multi:
            stats_ = [_mean_sd([nll[i] for nll in per_seed]) for i in range(n_ep)]
            mean = [m for m, _ in stats_]
            sd = [s or 0.0 for _, s in stats_]
            ax_ep.fill_between(
                epochs,
                [m - s for m, s in zip(mean, sd, strict=True)],
                [m + s for m, s in zip(mean, sd, strict=True)],
                color=color,
                alpha=0.18,
                lw=0,
            )
            ax_ep.plot(epochs, mean, color=color, lw=2.4, marker=marker, ms=5.5)

    for a in (ax, ax_ep, inset):
        a.axhline(MOONS_ENTROPY, color="gray", ls="--", lw=1)
        a.grid(True, alpha=0.3)
    ax.set_xlabel("wall-clock seconds since process start")
    ax.set_ylabel("held-out NLL (nats/point, 4096 points)")
    ax.set_title(
        "Held-out NLL against wall-clock time" + (", each seed" if multi else ""), fontsize=10
    )
    ax_ep.set_xlabel("epoch")
    ax_ep.set_ylabel("held-out NLL (nats/point)")
    ax_ep.set_title(
        "Held-out NLL per epoch" + (": each seed, mean ± 1 sd" if multi else ""), fontsize=10
    )
    ax_ep.xaxis.get_major_locator().set_params(integer=True)

    handles = [
        Line2D(
            [],
            [],
            color=TFP_COLOR,
            marker="s",
            lw=lw,
            ms=ms,
            label=TFP_LABEL + (", each seed" if multi else ""),
        ),
        Line2D(
            [],
            [],
            color=FF_COLOR,
            marker="o",
            lw=lw,
            ms=ms,
            label=FF_LABEL + (", each seed" if multi else ""),
        ),
    ]
    if multi:
        handles += [
            (Patch(color=TFP_COLOR, alpha=0.25), Line2D([], [], color=TFP_COLOR, lw=2.4)),
            (Patch(color=FF_COLOR, alpha=0.25), Line2D([], [], color=FF_COLOR, lw=2.4)),
        ]
    labels = [h.get_label() for h in handles[:2]]
    if multi:
        labels += [
            f"TFP mean ± 1 sd over {len(runs)} seeds",
            f"ffjord mean ± 1 sd over {len(runs)} seeds",
        ]
    handles += [
        Line2D([], [], color="gray", ls="--", lw=1),
        Line2D([], [], color="black", ls=":", lw=1.2),
    ]
    labels += ["true entropy (best possible)", "first step done (ffjord: end of epoch 1)"]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8.5, frameon=True)
    seeds = [s for s, _t, _f in runs]
    fig.suptitle(
        f"FFJORD tutorial on moons, {runs[0][1]['epochs']} epochs, "
        + (f"seeds {_seed_list(seeds)}" if multi else f"seed {seeds[0]}")
        + ", same CPU, each run a fresh process",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.1 if multi else 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# Report ----------------------------------------------------------------------------------------


def _first_seed_rows(tfp: dict, ff: dict, warm: dict | None) -> list[tuple[str, str, str, str]]:
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
            _f(_fastest(tfp)),
            _f(_fastest(ff)),
            _f(_ratio(_fastest(tfp), _fastest(ff)), ".1f"),
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
            f"sampling {n} points: s (points/s)⁴",
            f"{_f(tfp['sample_s'], '.3f')} ({tfp['sample_points_per_s']:,.0f})",
            f"{_f(ff['sample_s'], '.3f')} ({ff['sample_points_per_s']:,.0f})",
            _f(sample_ratio, ".1f"),
        ),
        (
            f"exact density of {n} points: s (points/s)⁴",
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
    return rows


# (label, how to read it from a run's JSON, format, True for a throughput)
_ACROSS = (
    ("steady-state s/epoch (median of epochs 2..N)", lambda d: d["steady_epoch_s"], ".2f", False),
    ("fastest epoch after the first, s", _fastest, ".2f", False),
    (
        "process start → first step done, s (ffjord: end of epoch 1)",
        lambda d: d["process_start_to_first_step_s"],
        ".1f",
        False,
    ),
    ("first epoch incl. tracing/compilation, s", lambda d: d["epoch_seconds"][0], ".1f", False),
    (
        "sampling, points/s (ffjord: as `ffjord sample`, chunks on every core)",
        lambda d: d["sample_points_per_s"],
        ",.0f",
        True,
    ),
    (
        "exact density, points/s (ffjord: as `ffjord density`, chunks on every core)",
        lambda d: d["density_points_per_s"],
        ",.0f",
        True,
    ),
    (
        "sampling, points/s (ffjord: one jitted `dist.sample` call, one core)",
        lambda d: d.get("sample_points_per_s_single_call", d["sample_points_per_s"]),
        ",.0f",
        True,
    ),
    (
        "exact density, points/s (ffjord: one jitted `dist.log_prob` call, one core)",
        lambda d: d.get("density_points_per_s_single_call", d["density_points_per_s"]),
        ",.0f",
        True,
    ),
    ("total wall time, s", lambda d: d["total_wall_s"], ".0f", False),
)


def speed_across_seeds(runs: list[tuple[int, dict, dict]]) -> list[dict]:
    """Median over seeds of each side's speed measures and the ratio of the medians (above 1:
    ffjord faster, as in the first-seed table)."""
    out = []
    for label, get, fmt, throughput in _ACROSS:
        t = [get(r[1]) for r in runs]
        f = [get(r[2]) for r in runs]
        mt, mf = _median(t), _median(f)
        ratio = _ratio(mf, mt) if throughput else _ratio(mt, mf)
        out.append(dict(label=label, fmt=fmt, tfp=t, ff=f, tfp_med=mt, ff_med=mf, ratio=ratio))
    return out


def quality(runs: list[tuple[int, dict, dict]]) -> dict:
    """Per epoch: mean, sd and each seed's held-out NLL on both sides; is ffjord's mean within
    TFP's seed-to-seed spread (|ffjord mean - TFP mean| <= TFP's sd)?"""
    n_ep = min(len(d["test_nll"]) for _s, t, f in runs for d in (t, f))
    rows = []
    for i in range(n_ep):
        t = [r[1]["test_nll"][i] for r in runs]
        f = [r[2]["test_nll"][i] for r in runs]
        mt, st = _mean_sd(t)
        mf, sf = _mean_sd(f)
        diff = mf - mt
        rows.append(
            dict(
                epoch=i + 1,
                tfp=t,
                ff=f,
                tfp_mean=mt,
                tfp_sd=st,
                ff_mean=mf,
                ff_sd=sf,
                diff=diff,
                within=None if st is None else abs(diff) <= st,
                in_range=min(t) <= mf <= max(t),
                ff_all_worse=min(f) > max(t),
                ff_all_better=max(f) < min(t),
                welch_p=_welch_p(t, f),
            )
        )
    return {"epochs": n_ep, "rows": rows}


def _epochs_text(es: list[int]) -> str:
    return ("epoch " if len(es) == 1 else "epochs ") + ", ".join(str(e) for e in es)


def quality_verdict(q: dict, n_seeds: int) -> str:
    """One plain paragraph: where ffjord's mean lies relative to TFP's seed-to-seed spread."""
    rows = q["rows"]
    if n_seeds < 2:
        return (
            "Only one seed: there is no seed-to-seed spread to compare against, so single-epoch "
            "differences cannot be told apart from chance; run with `--seeds 0 1 2`."
        )
    inside = [r["epoch"] for r in rows if r["within"]]
    above = [r["epoch"] for r in rows if not r["within"] and r["diff"] > 0]
    below = [r["epoch"] for r in rows if not r["within"] and r["diff"] < 0]
    text = (
        f"**ffjord's mean held-out NLL is within TFP's seed-to-seed spread (TFP mean ± 1 sd "
        f"over {n_seeds} seeds) at {len(inside)} of {len(rows)} epochs**"
    )
    parts = []
    if above:
        parts.append(f"above it (worse) at {_epochs_text(above)}")
    if below:
        parts.append(f"below it (better) at {_epochs_text(below)}")
    text += ("; " + " and ".join(parts) + "." if parts else ".") + " "
    ps = [r["welch_p"] for r in rows]
    if all(p is not None for p in ps):
        sig = [r["epoch"] for r in rows if r["welch_p"] < 0.05]
        text += (
            "Welch's t-test (ffjord vs. TFP, one value per seed) finds "
            + (
                f"a difference at the 5% level at {_epochs_text(sig)}"
                if sig
                else "no epoch where the difference is significant at the 5% level"
            )
            + f" (smallest p = {min(ps):.3f}; with {n_seeds} seeds a side the test only "
            f"detects large differences, and with {len(rows)} epochs each tested at 5% one "
            "'significant' epoch is not unusual by chance alone). "
        )
    worse = [r["epoch"] for r in rows if r["ff_all_worse"]]
    better = [r["epoch"] for r in rows if r["ff_all_better"]]
    if worse:
        text += (
            f"At {_epochs_text(worse)} every ffjord seed's NLL is higher than every TFP seed's. "
        )
    if better:
        text += (
            f"At {_epochs_text(better)} every ffjord seed's NLL is lower than every TFP seed's. "
        )
    last = rows[-1]
    text += (
        f"After the last epoch ({last['epoch']}): TFP {last['tfp_mean']:.3f} ± "
        f"{_f(last['tfp_sd'], '.3f')}, ffjord {last['ff_mean']:.3f} ± {_f(last['ff_sd'], '.3f')} "
        f"nats/point (true entropy {MOONS_ENTROPY})."
    )
    return text


def report(runs: list[tuple[int, dict, dict]], warm: dict | None, meta: dict, fig_rel: str) -> str:
    seed0, tfp, ff = runs[0]
    seeds = [s for s, _t, _f in runs]
    multi = len(runs) > 1
    m = meta["machine"]
    tv, fv = tfp["versions"], ff["versions"]
    tnfe, fnfe = tfp.get("nfe_per_step") or {}, ff.get("nfe_per_step") or {}
    rows = _first_seed_rows(tfp, ff, warm)

    lines = [
        "# Benchmark: ffjord vs. TensorFlow Probability's FFJORD tutorial",
        "",
        f"Generated by `benchmarks/compare_tfp.py` on {meta['date']}. The same problem on both "
        "sides: `make_moons(8192, noise=0.06, random_state=seed)`, batches of 256, 4 stacked "
        "FFJORD blocks of MLP(8, 3) with the exact trace, Dormand–Prince rtol 1e-3 atol 1e-5, "
        "Adam 1e-2, base N(0, 0.8² I); held-out NLL on `make_moons(4096, noise=0.06, "
        "random_state=seed + 1)`. Both run on the CPU of the same machine, one after the other, "
        "each in its own fresh process, ffjord with a cold start (no persistent compilation "
        "cache)"
        + (
            f". Seeds {_seed_list(seeds)}, in that order, TFP then ffjord for each seed; the "
            "seed sets the training and held-out data and each side's initialisation and "
            "shuffling."
            if multi
            else "."
        ),
        "",
        "Command (from the repository root):",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"## Speed, seed {seed0}" if multi else "## Summary",
        "",
        "Ratio = TFP / ffjord for times (so for throughputs it is ffjord points/s ÷ TFP "
        "points/s); above 1 means ffjord is faster."
        + (
            f" This table is the first seed's ({seed0}); medians over seeds follow."
            if multi
            else ""
        ),
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
        "",
        "⁴ The trained model; TFP: one `tf.function` call on all 8192 points (TensorFlow uses "
        "every core). ffjord: as the `ffjord sample` / `ffjord density` commands compute them, "
        "in fixed-size chunks on one thread per core (XLA runs each of these small programs on "
        "one core). In one jitted `dist.sample` / `dist.log_prob` call on one core: "
        f"{_f(ff.get('sample_points_per_s_single_call'), ',.0f')} / "
        f"{_f(ff.get('density_points_per_s_single_call'), ',.0f')} points/s.",
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

    if multi:
        lines += [
            "",
            f"## Speed, median over {len(runs)} seeds",
            "",
            "Each side's median over the seeds (each seed's value in brackets, in seed order "
            f"{_seed_list(seeds)}); ratio of the medians, TFP / ffjord for times and ffjord / "
            "TFP for throughputs (above 1: ffjord faster). Every run is a fresh process and "
            "every ffjord run a cold start.",
            "",
            "| measure | TFP median (per seed) | ffjord median (per seed) | ratio of medians |",
            "|---|---:|---:|---:|",
        ]
        for r in speed_across_seeds(runs):
            fmt = r["fmt"]
            t_each = ", ".join(_f(x, fmt) for x in r["tfp"])
            f_each = ", ".join(_f(x, fmt) for x in r["ff"])
            lines.append(
                f"| {r['label']} | {_f(r['tfp_med'], fmt)} ({t_each}) | "
                f"{_f(r['ff_med'], fmt)} ({f_each}) | {_f(r['ratio'], '.1f')} |"
            )

    q = quality(runs)
    lines += [
        "",
        "## Quality: held-out NLL after each epoch" + (f", {len(runs)} seeds" if multi else ""),
        "",
        f"nats/point on 4096 held-out points (the true entropy, the lowest possible expected "
        f"value, is {MOONS_ENTROPY}). The two sides start from different random initial "
        "parameters (Sonnet's and ffjord's initialisers, different RNGs) and shuffle "
        "differently, so a single run's curves differ by chance as well as by implementation.",
    ]
    if multi:
        lines += [
            "",
            "Mean ± sample standard deviation over the seeds; each seed's value in brackets "
            f'(seeds {_seed_list(seeds)}). "Within TFP\'s spread": |ffjord mean − TFP mean| ≤ '
            "TFP's standard deviation. Welch p: two-sided Welch's t-test of the two sides' "
            "per-seed values.",
            "",
            "| epoch | TFP mean ± sd | TFP per seed | ffjord mean ± sd | ffjord per seed | "
            "ffjord − TFP | within TFP's spread? | Welch p |",
            "|---:|---:|---:|---:|---:|---:|:---:|---:|",
        ]
        for r in q["rows"]:
            lines.append(
                f"| {r['epoch']} | {r['tfp_mean']:.3f} ± {_f(r['tfp_sd'], '.3f')} | "
                f"({', '.join(f'{x:.3f}' for x in r['tfp'])}) | "
                f"{r['ff_mean']:.3f} ± {_f(r['ff_sd'], '.3f')} | "
                f"({', '.join(f'{x:.3f}' for x in r['ff'])}) | {r['diff']:+.3f} | "
                f"{'yes' if r['within'] else 'no'} | {_f(r['welch_p'], '.3f')} |"
            )
    lines += ["", quality_verdict(q, len(runs)), ""]
    lines += [
        f"Held-out NLL against wall-clock time, seed {seed0} (wall = seconds since process "
        "start when the value was known):",
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
    ]
    for seed, t, f in runs:
        tag = f", seed {seed}" if multi else ""
        lines.append(f"- TFP{tag}: " + ", ".join(_f(x) for x in t["epoch_seconds"]))
        lines.append(f"- ffjord{tag}: " + ", ".join(_f(x) for x in f["epoch_seconds"]))

    loads = meta.get("load_before_runs") or []
    load_txt = (
        "; before each run: " + ", ".join(f"{x['label']} {x['load']:.2f}" for x in loads)
        if loads
        else ""
    )
    where = meta.get("raw_dir", "docs/benchmarks")
    raw = [f"`{where}/{p}`" for p in meta.get("files", ["tfp.json", "ffjord.json"])]
    if warm is not None:
        raw.append(f"`{where}/ffjord_warm.json`")
    lines += [
        "",
        "## Machine and versions",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores "
        f"({m['sched_affinity']} usable), RAM {_f(m['ram_gb'], '.1f')} GB; {m['os']}",
        f"- load average (1 min) before / after all runs: {_f(meta['load_before'], '.2f')} / "
        f"{_f(meta['load_after'], '.2f')} on {m['cpu_count']} cores{load_txt}. Each process "
        "itself loads the machine (TF and XLA use every core), so some of this is the "
        "benchmark's own previous run; the machine may also be shared with other work, so "
        "timings are noisy. For scale, TUTORIAL.md's reference run of the "
        "same TFP code on this machine type measured a first epoch of 67–116 s and a median "
        "of 3.2 s/epoch (2.3–5.1) over 40 epochs.",
        f"- ffjord side: Python {fv['python']}, ffjord {fv.get('ffjord')}, jax {fv['jax']} "
        f"(jaxlib {fv.get('jaxlib')}), diffrax {fv['diffrax']}, equinox {fv['equinox']}, "
        f"numpy {fv['numpy']}; backend {ff.get('backend')}",
        f"- TFP side: Python {tv['python']}, tensorflow {tv['tf']}, tensorflow-probability "
        f"{tv['tfp']}, dm-sonnet {tv['sonnet']}, numpy {tv['numpy']}",
        "",
        "Raw results: "
        + ", ".join(raw)
        + ". What each field means: the docstrings of `benchmarks/peer_tfp.py` and "
        "`benchmarks/ffjord_side.py`.",
        "",
    ]
    return "\n".join(lines)


# Main ------------------------------------------------------------------------------------------


def _load_runs(raw: Path, meta: dict) -> list[tuple[int, dict, dict]]:
    """The (seed, TFP JSON, ffjord JSON) of every seed in meta.json, in run order (older
    single-seed layouts without ``seeds`` in meta.json: tfp.json / ffjord.json)."""
    if "seeds" not in meta:
        tfp = json.loads((raw / "tfp.json").read_text())
        return [(tfp["seed"], tfp, json.loads((raw / "ffjord.json").read_text()))]
    return [
        (
            s,
            json.loads((raw / f"tfp_seed{s}.json").read_text()),
            json.loads((raw / f"ffjord_seed{s}.json").read_text()),
        )
        for s in meta["seeds"]
    ]


def render(raw: Path, fig: Path, doc: Path) -> str:
    """Write the report ``doc`` and the figure ``fig`` from the JSONs in ``raw``; return the
    summary lines (ratios of the first seed, medians and quality over seeds)."""
    meta = json.loads((raw / "meta.json").read_text())
    runs = _load_runs(raw, meta)
    warm_json = raw / "ffjord_warm.json"
    warm = json.loads(warm_json.read_text()) if warm_json.exists() else None
    plot(runs, fig)
    doc.write_text(report(runs, warm, meta, os.path.relpath(fig, doc.parent)))
    tfp, ff = runs[0][1], runs[0][2]
    s = _ratio(tfp["steady_epoch_s"], ff["steady_epoch_s"])
    f1 = _ratio(tfp["process_start_to_first_step_s"], ff["process_start_to_first_step_s"])
    sample = _ratio(tfp["sample_s"], ff["sample_s"])
    density = _ratio(tfp["density_s"], ff["density_s"])
    lines = [
        f"TFP/ffjord, seed {runs[0][0]}: steady epoch {_f(s, '.1f')}x, first step "
        f"{_f(f1, '.1f')}x, sampling {_f(sample, '.1f')}x, "
        f"density {_f(density, '.1f')}x"
    ]
    if len(runs) > 1:
        med = {r["label"]: r["ratio"] for r in speed_across_seeds(runs)}
        lines.append(
            "ratio of medians over seeds: "
            + ", ".join(f"{k.split(',')[0]} {_f(v, '.1f')}x" for k, v in med.items())
        )
        for r in quality(runs)["rows"]:
            lines.append(
                f"epoch {r['epoch']}: TFP {r['tfp_mean']:.3f} ± {_f(r['tfp_sd'], '.3f')}, "
                f"ffjord {r['ff_mean']:.3f} ± {_f(r['ff_sd'], '.3f')}, "
                f"within: {r['within']}"
            )
    lines.append(f"-> {doc}, {fig}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="BENCHMARKS", help="the report docs/NAME.md")
    p.add_argument("--raw", type=Path, help="folder of the raw JSONs (default: from --name)")
    p.add_argument("--doc", type=Path, help="the report to write (default: from --name)")
    p.add_argument("--figure", type=Path, help="the figure to write (default: from --name)")
    args = p.parse_args(argv)
    raw, fig, doc = paths(args.name)
    print(render(args.raw or raw, args.figure or fig, args.doc or doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
