"""Where the time of `ffjord train` goes, and what the levers we tried are worth.

Run: `python benchmarks/profile_phases.py [--repeats 30] [--out docs/benchmarks/profile.json]`

Measures, in one fresh process with JAX's persistent compilation cache off:
- the phases before training: import, model and data set-up, tracing/lowering and
  XLA compilation of the jitted epoch (timed apart with JAX's ahead-of-time API),
  and the first epoch's run;
- steady-state seconds per epoch, held-out evaluation time;
- the compiled time of one `log_prob` + gradient on 256 moons points with the
  tutorial's 4-block model (median over `--repeats` calls, `block_until_ready`),
  for the default and for the variants we tried: the exact trace by d JVPs instead of the
  field's closed-form divergence, Tsit5 instead of Dopri5,
  `BacksolveAdjoint`, a smaller `max_steps`, and one block per point (`per_point`);
- forward-only `log_prob` on 256 points for the same variants, and for the default in
  `ffjord.for_inference` form (the form evaluation uses);
- `log_prob` and sampling throughput on 8192 points (`for_inference` form), in one jitted
  call and through the
  command line's bulk path (fixed-size chunks on one thread per core).
Every variant is measured in the same process, interleaved, so ratios are fair
on a noisy machine; absolute seconds vary with the load.
"""

import time

T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ffjord  # noqa: E402
from ffjord._plan import TUTORIAL, RunPlan  # noqa: E402
from ffjord._source import DataSource  # noqa: E402
from ffjord._trainer import transform  # noqa: E402

import harness  # noqa: E402

IMPORT_S = time.time() - T0


class JvpTraceField(eqx.Module):
    """The same MLP without `value_and_divergence`: the exact trace then takes d JVPs."""

    field: ffjord.MLPField

    def __call__(self, t, z, context):
        return self.field(t, z, context)


def tutorial_dist(jvp_trace=False, **flow_kwargs):
    keys = jax.random.split(jax.random.key(0), 4)
    fields = [ffjord.MLPField(2, 8, 3, key=k) for k in keys]
    if jvp_trace:
        fields = [JvpTraceField(f) for f in fields]
    flows = [ffjord.FFJORD(f, **flow_kwargs) for f in fields]
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), 0.8 * jnp.ones(2))
    return ffjord.TransformedDistribution(base, ffjord.Chain(flows))


def timed(fn, *args, repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="docs/benchmarks/profile.json")
    harness.add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.out = 3, str(harness.smoke_dir(__file__) / "profile.json")
    result: dict = {"import_s": IMPORT_S, "machine": platform.processor() or platform.machine()}

    # Phases of training, as the CLI runs them.
    from ffjord._trainer import Trainer
    from trace_counts import traces

    epoch_traces = traces(Trainer, "_epoch")
    t = time.time()
    cfg = dict(TUTORIAL)
    source, train, test = DataSource.open(cfg["data"], cfg["seed"], 0)
    plan = RunPlan.from_settings(cfg)
    trainer = plan.trainer(source, train)
    state = trainer.init(plan.key)
    batches, contexts = trainer._epoch_batches(state, train, None)
    n = batches.shape[0]
    prepared = trainer._prepare(state, batches, contexts, n)
    result["setup_s"] = time.time() - t
    t = time.time()
    lowered = trainer._epoch_fn.lower(state, batches, contexts, n, prepared)
    result["trace_lower_s"] = time.time() - t
    t = time.time()
    lowered.compile()
    result["xla_compile_s"] = time.time() - t
    t = time.time()
    state, record = trainer.run_epoch(state, train)
    result["first_epoch_run_s"] = time.time() - t
    result["process_start_to_first_epoch_s"] = time.time() - T0
    t = time.time()
    trainer.nll(state, test)
    result["eval_first_s"] = time.time() - t
    epochs, evals = [], []
    for _ in range(5):
        state, record = trainer.run_epoch(state, train)
        epochs.append(record["seconds"])
        t = time.time()
        trainer.nll(state, test)
        evals.append(time.time() - t)
    result["steady_epoch_s"] = statistics.median(epochs)
    result["steady_eval_s"] = statistics.median(evals)
    result["epoch_traces"] = epoch_traces()

    # One log_prob + gradient on 256 points, and variants, interleaved.
    x = jnp.asarray(train[:256])
    variants = {
        "default (Dopri5, backprop through solver, closed-form divergence)": {},
        "exact trace by d JVPs instead of the closed form": {"jvp_trace": True},
        "Tsit5": {"solver": diffrax.Tsit5()},
        "BacksolveAdjoint": {"adjoint": diffrax.BacksolveAdjoint()},
        "max_steps=64": {"max_steps": 64},
    }
    steps: dict = {name: [] for name in variants}
    compiled = {}
    for name, kwargs in variants.items():
        dist = tutorial_dist(**kwargs)
        fn = eqx.filter_jit(
            eqx.filter_value_and_grad(lambda d, y: -jnp.mean(d.log_prob_with_stats(y)[0]))
        )
        first, _ = timed(fn, dist, x, repeats=1)
        forward = eqx.filter_jit(lambda d, y: d.log_prob(y))
        compiled[name] = (fn, dist, first)
        forward_ms = 1e3 * timed(forward, dist, x, repeats=10)[1]
        result.setdefault("log_prob_256_ms", {})[name] = forward_ms
    for _ in range(3):
        for name, (fn, dist, _) in compiled.items():
            steps[name].append(timed(fn, dist, x, repeats=args.repeats // 3)[1])
    fast = ffjord.for_inference(tutorial_dist())
    forward = eqx.filter_jit(lambda d, y: d.log_prob(y))
    forward_ms = 1e3 * timed(forward, fast, x, repeats=10)[1]
    result["log_prob_256_ms"]["default, for_inference (unit by unit)"] = forward_ms
    result["log_prob_grad_256_ms"] = {
        name: {"median_ms": 1e3 * statistics.median(v), "compile_s": compiled[name][2]}
        for name, v in steps.items()
    }

    # Throughput on 8192 points: exact log-density and sampling.
    dist = ffjord.for_inference(tutorial_dist())
    y = jnp.asarray(train)
    log_prob = eqx.filter_jit(lambda d, y: d.log_prob(y))
    sample = eqx.filter_jit(lambda d, k: d.sample(k, (8192,)))
    _, lp_s = timed(log_prob, dist, y, repeats=5)
    _, sample_s = timed(sample, dist, jax.random.key(1), repeats=5)
    result["density_points_per_s"] = 8192 / lp_s
    result["sample_points_per_s"] = 8192 / sample_s
    # The same through the CLI's bulk path: fixed-size chunks on one thread per core.
    _, lp_chunked_s = timed(trainer.log_prob, dist, train, repeats=5)
    base = np.asarray(dist.base.sample(jax.random.key(1), (8192,)), np.float32)
    _, sample_chunked_s = timed(transform, dist.bijector, base, repeats=5)
    result["density_points_per_s_chunked"] = 8192 / lp_chunked_s
    result["sample_points_per_s_chunked"] = 8192 / sample_chunked_s
    result["jax"] = jax.__version__
    result["diffrax"] = diffrax.__version__

    print(json.dumps(result, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
