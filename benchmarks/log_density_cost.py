"""What a posterior's log-density costs on top of its draws: why expected coverage (draws
and their log q, from one solve) takes about 2.4x SBC's time (draws alone).

On a conditional flow trained by `sbi.fit_posterior` on the built-in `arcs` simulator
(the plain defaults: two blocks of a 3-layer, 64-unit field), for one chunk of 4,096
base draws under four conditions:

* the field alone against the field and its exact divergence (the closed form), per
  evaluation;
* the solve without and with the log-determinant: seconds and adaptive steps;
* the same solve with the step size following the draws only (`steps_follow="state"`,
  as expected coverage solves: the log-determinant carried along, not controlled), and
  the errors of both against a float64 solve at
  rtol 1e-9: what the cheaper control would cost in accuracy.

    python benchmarks/log_density_cost.py           # docs/benchmarks/log_density_cost.json
    python benchmarks/log_density_cost.py --smoke   # a tiny model, into a temporary dir
"""

import argparse
import json
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import harness

jax.config.update("jax_enable_x64", True)  # the reference solve; the model stays float32

from ffjord import AbstractVectorField, for_inference, sbi, simulators  # noqa: E402

CHUNK = 4096
REPEATS = 10


def timed(fn, *args) -> tuple[float, object]:
    """The least seconds of `fn(*args)` over `REPEATS` calls after a first (compiling)
    one (the least: the machine is shared), and its value."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.min(times)), out


def with_controller(bijector, make):
    is_pid = lambda node: isinstance(node, diffrax.PIDController)  # noqa: E731
    return jax.tree.map(lambda c: make(c) if is_pid(c) else c, bijector, is_leaf=is_pid)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/benchmarks/log_density_cost.json")
    harness.add_smoke(p)
    args = p.parse_args()
    extra: dict = {}
    if args.smoke:
        args.out = str(harness.smoke_dir(__file__) / "log_density_cost.json")
        extra = dict(harness.TINY_MODEL)
    theta, x = sbi.simulate(jax.random.key(0), simulators.prior(), simulators.simulator, 10_000)
    posterior = sbi.fit_posterior(jax.random.key(1), theta, x, prior=simulators.prior(), **extra)
    bijector = for_inference(posterior.flow.bijector)
    base = np.asarray(posterior.flow.base.sample(jax.random.key(2), (CHUNK,)), np.float32)
    context = np.repeat(np.asarray(x[:4]), CHUNK // 4, axis=0).astype(np.float32)
    report: dict = {"machine": harness.machine_line(), "chunk": CHUNK}

    is_field = lambda n: isinstance(n, AbstractVectorField)  # noqa: E731
    field = next(n for n in jax.tree.leaves(bijector, is_leaf=is_field) if is_field(n))
    z = jnp.asarray(base)
    c = jnp.zeros((CHUNK, field.context_dim), jnp.float32)  # the field's (embedded) conditions

    def value(f, z, c):
        return jax.vmap(lambda zi, ci: f(0.5, zi, ci))(z, c)

    def value_and_divergence(f, z, c):
        return jax.vmap(lambda zi, ci: f.value_and_divergence(0.5, zi, ci))(z, c)

    plain, _ = timed(eqx.filter_jit(value), field, z, c)
    both, _ = timed(eqx.filter_jit(value_and_divergence), field, z, c)
    report["field_ms"] = {"value": 1e3 * plain, "value_and_divergence": 1e3 * both,
                          "ratio": both / plain}  # fmt: skip

    def solve_with(steps_follow):
        return eqx.filter_jit(
            lambda b, z, c, ld: b.transform(
                z, context=c, log_det=ld, throw=False, steps_follow=steps_follow
            )
        )

    solve = solve_with("all")
    reference = with_controller(
        jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, bijector),
        lambda _: diffrax.PIDController(rtol=1e-9, atol=1e-11),
    )
    _, ref = timed(solve, reference, base.astype(np.float64), context.astype(np.float64), True)
    rows = {}
    for name, steps, ld in (("draws", "all", False), ("draws and log-det", "all", True),
                            ("log-det, steps follow the draws", "state", True)):  # fmt: skip
        seconds, (y, log_det, stats) = timed(solve_with(steps), bijector, base, context, ld)
        row = {"seconds": seconds, "solver_steps": int(np.sum(stats.num_steps))}
        row["draw_error_mean"] = float(np.mean(np.abs(np.asarray(y) - np.asarray(ref[0]))))
        if ld:
            error = np.abs(np.asarray(log_det) - np.asarray(ref[1]))
            row["log_det_error_mean"] = float(error.mean())
            row["log_det_error_max"] = float(error.max())
        rows[name] = row
    report["solves"] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
