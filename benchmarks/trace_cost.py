"""The cost of the trace: one field evaluation with its divergence, exact against Hutchinson.

For d in {2, 8, 16, 32, 64} (``--dims``) and the field ``ffjord train --data FILE`` builds
for that d (a 3-layer SiLU `MLPField`, 64 hidden units up to d = 16, 128 beyond), times
one evaluation of the augmented dynamics (dz/dt and d log-det/dt) on a batch of 256
points, three ways:

* ``exact, closed form``: the field's `value_and_divergence` (what `ExactTrace` uses
  for an `MLPField`): about one extra hidden x hidden product, whatever d;
* ``exact, d JVPs``: the standard basis as probes (what `ExactTrace` does for any other
  field): d Jacobian-vector products;
* ``Hutchinson``: one Rademacher probe, one Jacobian-vector product.

Each is timed alone (the forward pass, as in evaluation and sampling with densities) and
with the gradient with respect to the field's parameters of the sum of both outputs (as
in training). Median of ``--repeats`` calls of the jitted function after a warm-up,
``block_until_ready``; the variants are interleaved so ratios are fair on a noisy
machine.

Run from the repository root::

    python benchmarks/trace_cost.py            # docs/benchmarks/trace_cost.json and the figure

Writes ``docs/benchmarks/trace_cost.json`` and ``docs/figures/trace_cost.png``.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

import ffjord

import harness
from log_panels import plot_log_panels

ROOT = harness.ROOT
BATCH = 256
VARIANTS = ("exact, closed form", "exact, d JVPs", "Hutchinson")


def dynamics(variant: str, field, t, z, key):
    """(dz/dt, d log-det/dt) of a batch under one way of taking the trace."""
    if variant == "exact, closed form":
        return jax.vmap(lambda zi: field.value_and_divergence(t, zi, None))(z)
    n, d = z.shape
    trace = ffjord.ExactTrace() if variant == "exact, d JVPs" else ffjord.HutchinsonTrace()
    probes, scale = trace.probes(key, n, d, z.dtype)
    dz, jvp = jax.linearize(lambda u: jax.vmap(lambda ui: field(t, ui, None))(u), z)
    j_probes = jax.vmap(jvp)(probes.astype(z.dtype))  # J v for every probe v, every point
    return dz, scale * jnp.sum(j_probes * probes, axis=(0, 2))


def make_fns(variant: str):
    def forward(field, z, key):
        return dynamics(variant, field, 0.5, z, key)

    def loss(field, z, key):
        dz, div = dynamics(variant, field, 0.5, z, key)
        return jnp.sum(dz) + jnp.sum(div)

    return eqx.filter_jit(forward), eqx.filter_jit(eqx.filter_grad(loss))


def median_seconds(fn, args, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return harness.median(times)


def hidden_units(d: int) -> int:
    """The width ``ffjord train --data FILE`` chooses for d columns (docs/DEFAULTS.md)."""
    return 64 if d <= 16 else 128


def measure(dims: list[int], repeats: int) -> list[dict]:
    rows = []
    for d in dims:
        hidden = hidden_units(d)
        field = ffjord.MLPField(d, hidden, 3, activation="silu", key=jax.random.key(d))
        z = jax.random.normal(jax.random.key(1), (BATCH, d))
        key = jax.random.key(2)
        fns = {v: make_fns(v) for v in VARIANTS}
        for forward, grad in fns.values():  # compile and warm up
            jax.block_until_ready(forward(field, z, key))
            jax.block_until_ready(grad(field, z, key))
        times = {v: {"forward": [], "gradient": []} for v in VARIANTS}
        for _ in range(3):  # interleaved rounds
            for v, (forward, grad) in fns.items():
                times[v]["forward"].append(median_seconds(forward, (field, z, key), repeats))
                times[v]["gradient"].append(median_seconds(grad, (field, z, key), repeats))
        row = {"dim": d, "hidden": hidden}
        for v in VARIANTS:
            row[v] = {k: 1e3 * min(ts) for k, ts in times[v].items()}  # ms, best round
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    values = [r[v][k] for r in rows for v in VARIANTS for k in ("forward", "gradient")]
    ylim = (min(values) / 1.5, max(values) * 1.5)  # one scale for both panels
    panels = [
        {
            "series": {v: [r[v][kind] for r in rows] for v in VARIANTS},
            "ylabel": f"ms per field evaluation ({BATCH} points)",
            "title": f"dynamics with divergence: {title}",
            "ylim": ylim,
        }
        for kind, title in (("forward", "evaluation"), ("gradient", "with parameter gradient"))
    ]
    plot_log_panels(path, [r["dim"] for r in rows], panels, xlabel="dimension d")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 8, 16, 32, 64])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/trace_cost.json")
    p.add_argument("--figure", type=Path, default=ROOT / "docs/figures/trace_cost.png")
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if args.smoke:  # d = 2 and 4, 2 calls each, outputs in a temporary directory
        tmp = harness.smoke_dir(__file__)
        args.dims, args.repeats, args.out, args.figure = [2, 4], 2, tmp / "t.json", tmp / "t.png"
    rows = measure(args.dims, args.repeats)
    meta = {"python": platform.python_version(), "jax": jax.__version__, "batch": BATCH}
    meta["device"] = str(jax.devices()[0].device_kind)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    plot(rows, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
