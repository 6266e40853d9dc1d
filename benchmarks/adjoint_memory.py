"""Memory of a training step against the number of solver steps: backpropagation through
the solver (every step kept, or a fixed number of checkpoints) against the backsolve adjoint.

For one FFJORD block on a batch of 256 points (a 3-layer SiLU `MLPField`, d = 16 and 64
hidden units by default), solved with Dopri5 at a constant step size ``1/n`` (so a solve
takes exactly n steps, ``max_steps = n``), compiles ``value_and_grad`` of the mean NLL
with respect to the field's parameters and reads XLA's memory plan of the compiled
program (``compiled.memory_analysis().temp_size_in_bytes``: the peak of its temporary
buffers, the part that grows with the solve). Also the median seconds per gradient
(``block_until_ready``, after a warm-up) and the backsolve gradient's relative error
against backpropagation's (the backward solve retraces the path to the solver's
accuracy, not exactly).

Adjoints (``ffjord train --adjoint ... [--checkpoints N]``):

* ``backprop``: `diffrax.RecursiveCheckpointAdjoint()`, diffrax's default, which keeps
  every step of the forward solve (up to ``max_steps``);
* ``backprop, 8 checkpoints``: ``RecursiveCheckpointAdjoint(checkpoints=8)`` keeps 8 and
  recomputes the rest (treeverse);
* ``backsolve``: `diffrax.BacksolveAdjoint()` solves the adjoint ODE backwards from the end
  state: memory independent of n.

Then the backsolve adjoint over a whole training run: the tutorial (``ffjord train --out RUN
--quiet --no-figures``, 40 epochs) with ``--adjoint backprop``, ``--adjoint backprop
--checkpoints 4`` and ``--adjoint backsolve``, each a fresh process; reported: the held-out
NLL after every epoch, its largest difference from backpropagation's, and wall seconds
(``--skip-training`` leaves it out).

Run from the repository root::

    python benchmarks/adjoint_memory.py     # docs/benchmarks/adjoint_memory.json and figure

Writes ``docs/benchmarks/adjoint_memory.json`` and ``docs/figures/adjoint_memory.png``.
"""

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import ffjord

import harness
from log_panels import plot_log_panels

ROOT = harness.ROOT
BATCH = 256
ADJOINTS = {
    "backprop": lambda: diffrax.RecursiveCheckpointAdjoint(),
    "backprop, 8 checkpoints": lambda: diffrax.RecursiveCheckpointAdjoint(checkpoints=8),
    "backsolve": lambda: diffrax.BacksolveAdjoint(),
}


def model(dim: int, hidden: int, steps: int, adjoint) -> ffjord.TransformedDistribution:
    field = ffjord.MLPField(dim, hidden, 3, activation="silu", key=jax.random.key(0))
    flow = ffjord.FFJORD(
        field,
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=1.0 / steps,
        max_steps=steps,
        adjoint=adjoint,
    )
    base = ffjord.MultivariateNormalDiag(jnp.zeros(dim), jnp.ones(dim))
    return ffjord.TransformedDistribution(base, flow)


def loss(dist, x):
    return -jnp.mean(dist.log_prob(x))


def measure(dim: int, hidden: int, steps_list: list[int], repeats: int) -> list[dict]:
    x = jax.random.normal(jax.random.key(1), (BATCH, dim))
    rows = []
    for steps in steps_list:
        row: dict = {"steps": steps}
        grads = {}
        for name, make in ADJOINTS.items():
            params, static = eqx.partition(model(dim, hidden, steps, make()), eqx.is_inexact_array)
            grad_fn = jax.jit(jax.value_and_grad(lambda p, x, s=static: loss(eqx.combine(p, s), x)))
            compiled = grad_fn.lower(params, x).compile()
            memory = compiled.memory_analysis()
            _, g = jax.block_until_ready(compiled(params, x))
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(params, x))
                times.append(time.perf_counter() - start)
            grads[name] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)])
            row[name] = {
                "temp_mib": memory.temp_size_in_bytes / 2**20,
                "seconds": harness.median(times),
            }
        exact = grads["backprop"]
        for name in ADJOINTS:
            row[name]["gradient_rel_error"] = float(
                np.linalg.norm(grads[name] - exact) / np.linalg.norm(exact)
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


TRAININGS = {
    "backprop": ["--adjoint", "backprop"],
    "backprop, 4 checkpoints": ["--adjoint", "backprop", "--checkpoints", "4"],
    "backsolve": ["--adjoint", "backsolve"],
}


def whole_runs(work: Path) -> dict:
    out = {}
    for name, options in TRAININGS.items():
        run = work / name.replace(" ", "_").replace(",", "")
        shutil.rmtree(run, ignore_errors=True)
        argv = [*harness.ffjord(), "train", "--out", str(run), "--quiet", "--no-figures"]
        argv += options
        done = harness.run(argv).check(f"ffjord train {' '.join(options)}")
        rows = harness.read_jsonl(run / "metrics.jsonl")
        out[name] = {
            "command": harness.shown(argv),
            "seconds": done.seconds,
            "test_nll": [r["test_nll"] for r in rows],
        }
    reference = np.asarray(out["backprop"]["test_nll"])
    for result in out.values():
        result["max_nll_difference"] = float(np.max(np.abs(result["test_nll"] - reference)))
        print(json.dumps({k: v for k, v in result.items() if k != "test_nll"}), flush=True)
    return out


def plot(rows: list[dict], path: Path, dim: int, hidden: int) -> None:
    memory = {name: [r[name]["temp_mib"] for r in rows] for name in ADJOINTS}
    top = max(max(v) for v in memory.values()) * 1.1
    panels = [
        {
            "series": memory,
            "ylabel": "peak temporary memory, MiB (XLA's plan)",
            "ylog": False,
            "ylim": (0, top),
        },
        {
            "series": {name: [r[name]["seconds"] for r in rows] for name in ADJOINTS},
            "ylabel": "seconds per gradient",
        },
    ]
    title = f"one training step: d = {dim}, {hidden} hidden units, {BATCH} points"
    plot_log_panels(
        path, [r["steps"] for r in rows], panels, xlabel="solver steps per solve", title=title
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--work", type=Path, default=Path("/tmp/ffjord_adjoints"))
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/adjoint_memory.json")
    p.add_argument("--figure", type=Path, default=ROOT / "docs/figures/adjoint_memory.png")
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if args.smoke:  # d = 2, 2 and 4 steps, no whole training runs, outputs in a temporary dir
        tmp = harness.smoke_dir(__file__)
        args.dim, args.hidden, args.steps, args.repeats = 2, 8, [2, 4], 1
        args.skip_training, args.out, args.figure = True, tmp / "memory.json", tmp / "memory.png"
    rows = measure(args.dim, args.hidden, args.steps, args.repeats)
    meta = {"python": platform.python_version(), "jax": jax.__version__, "batch": BATCH}
    meta.update(dim=args.dim, hidden=args.hidden, device=str(jax.devices()[0].device_kind))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "rows": rows}
    if not args.skip_training:
        report["training"] = whole_runs(args.work)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, args.figure, args.dim, args.hidden)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
