"""ffjord side of the speed benchmark: the tutorial's model trained with the ``ffjord`` library.

The counterpart of ``benchmarks/peer_tfp.py``: the same data, model, solver settings, optimiser
and batch size, the same measurements and the same JSON fields, so that the two JSON files can
be compared field by field (``benchmarks/compare_tfp.py`` does that).

* Training data: ``ffjord.datasets.sample_toy("moons", 8192, seed)``, i.e. exactly the points
  of ``make_moons(8192, noise=0.06, random_state=seed)`` (shuffled); batches of 256, Adam 1e-2.
* Held-out data: ``make_moons(4096, noise=0.06, random_state=seed + 1)`` (the peer's).
* Model: ``ffjord._plan.RunPlan.trainer`` with the ``TUTORIAL`` configuration
  (4 FFJORD blocks of MLP(8, 3), exact trace, Dopri5 rtol 1e-3 atol 1e-5, base N(0, 0.8^2 I)).

Run::

    python benchmarks/ffjord_side.py --epochs 40 --seed 0 --out runs/ffjord.json

By default the start is COLD: JAX's persistent compilation cache is switched off (whatever
``JAX_COMPILATION_CACHE_DIR`` says), so every program is traced and compiled in this process.
``--cache-dir DIR`` switches the cache on (run twice with the same ``DIR`` to measure a warm
start); ``--no-cache`` forces it off even if ``--cache-dir`` is given. As in the peer, export
``FFJORD_BENCH_T0=$(date +%s.%N)`` to include interpreter start-up.

Measured (one JSON object written to ``--out``, one summary line on stdout):

* ``process_start_to_first_step_s``: process start (or ``FFJORD_BENCH_T0``) until the end of
  the FIRST EPOCH. All 32 steps of an epoch run inside one compiled ``lax.scan``, so the first
  step cannot be observed on its own; this is an upper bound (it includes the other 31 steps).
  ``process_start_to_first_step_est_s`` is the estimate "compilation done + 1/32 of the first
  epoch's execution".
* ``lower_s`` / ``compile_s``: tracing+lowering and XLA compilation of the epoch function,
  measured separately with JAX's ahead-of-time API (``.lower(...).compile()``); the first epoch
  then reuses the compiled program (``num_traces`` shows that it was traced once).
* ``epoch_seconds``: wall seconds per epoch (``Trainer.run_epoch``, results blocked on); the
  first includes tracing and compilation (as the peer's first epoch includes TF tracing);
  ``steady_epoch_s`` is the median of the epochs after the first.
* ``test_nll``: ``Trainer.nll`` on the held-out points after every epoch (eval batch 1024);
  its time is kept out of ``epoch_seconds`` and reported as ``eval_seconds``.
* ``nfe_per_step``: vector-field evaluations per training step of the forward pass (log_prob),
  summed over the 4 blocks, from the solver statistics (``Trainer.run_epoch``'s ``nfe``); the
  mean over the first epoch (``forward_total``) and per epoch. Gradients backpropagate through
  the solver (no adjoint ODE solve).
* ``sample_points_per_s`` / ``density_points_per_s``: 8192 samples / exact log-densities of
  8192 points as the ``ffjord sample`` / ``ffjord density`` commands compute them (fixed-size
  chunks, one thread per core: ``ffjord.cli.transform`` and ``Trainer.log_prob``), after one
  warm-up call; median of 9. ``*_single_call``: the same in one jitted call of
  ``dist.sample`` / ``dist.log_prob`` (one core), ``dist = ffjord.for_inference(model)``.
"""

import time

_T_IMPORT = time.time()  # the very first thing: before numpy / jax are imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import harness  # noqa: E402


def _configure_cache(cache_dir, no_cache):
    """Cold start by default: the persistent compilation cache is off unless asked for."""
    if cache_dir and not no_cache:
        os.makedirs(cache_dir, exist_ok=True)
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        return os.path.abspath(cache_dir)
    jax.config.update("jax_enable_compilation_cache", False)
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file to write (required unless --smoke)")
    p.add_argument("--solver", choices=("dopri5", "tsit5"), default="dopri5")
    p.add_argument("--cache-dir", default=None, help="enable JAX's persistent cache in DIR")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="never use JAX's persistent compilation cache (the default unless --cache-dir)",
    )
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.out = 1, str(harness.smoke_dir(__file__) / "ffjord.json")
    elif not args.out:
        p.error("--out is required")
    if args.epochs < 1:
        p.error("--epochs must be at least 1")

    env_t0 = os.environ.get("FFJORD_BENCH_T0")
    t0 = float(env_t0) if env_t0 else _T_IMPORT
    t0 = min(t0, _T_IMPORT)
    cache_dir = _configure_cache(args.cache_dir, args.no_cache)

    import diffrax
    import equinox as eqx

    import ffjord
    from ffjord import _model_options, _plan, _spec, datasets
    from ffjord._source import DataSource
    from ffjord._trainer import Trainer, check_progress, transform
    from trace_counts import traces

    epoch_traces, eval_traces = traces(Trainer, "_epoch"), traces(Trainer, "_log_prob_chunk")

    t_imported = time.time()

    # --- Data and model (the tutorial's configuration) -------------------------------------
    cfg = dict(_plan.TUTORIAL)
    cfg.update(epochs=args.epochs, seed=args.seed, solver=args.solver)
    source, train, _ = DataSource.open("moons", args.seed, 0)
    test = datasets.make_moons(4096, 0.06, args.seed + 1)  # = sklearn's make_moons
    test = test.astype(np.float32)
    plan = _plan.RunPlan.from_settings(cfg)
    trainer = plan.trainer(source, train)
    state = trainer.init(plan.key)
    n_batches = train.shape[0] // trainer.batch_size

    # --- Compile the epoch function ahead of time (tracing and XLA compile timed apart) ----
    t_setup_done = time.time()
    lower_s = compile_s = None
    try:
        batches, contexts = trainer._epoch_batches(state, train, None)
        t = time.time()
        n = batches.shape[0]
        prepared = trainer._prepare(state, batches, contexts, n)
        lowered = trainer._epoch_fn.lower(state, batches, contexts, n, prepared)
        lower_s = time.time() - t
        t = time.time()
        lowered.compile()
        compile_s = time.time() - t
    except (AttributeError, TypeError):  # Trainer internals changed: compile in epoch 1
        pass
    t_compiled = time.time()

    # --- Training loop ----------------------------------------------------------------------
    epoch_seconds, eval_seconds, nlls, train_losses, records, nll_wall = [], [], [], [], [], []
    first_epoch_end = first_epoch_exec_s = None
    for epoch in range(args.epochs):
        t_ep = time.time()
        state, record = trainer.run_epoch(state, train)
        jax.block_until_ready(state)
        t_end = time.time()
        if epoch == 0:
            first_epoch_end = t_end
            epoch_seconds.append(t_end - t_setup_done)  # includes tracing + compilation
            first_epoch_exec_s = t_end - t_ep
        else:
            epoch_seconds.append(t_end - t_ep)
        check_progress(record, n_batches)  # stop (as ffjord.fit does) if training diverged
        records.append(record)
        train_losses.append(record["train_loss"])

        t_ev = time.time()
        nlls.append(trainer.nll(state, test))
        eval_seconds.append(time.time() - t_ev)
        nll_wall.append(time.time() - t0)
        print(
            f"epoch {epoch + 1}/{args.epochs}: {epoch_seconds[-1]:.2f} s, "
            f"train loss {train_losses[-1]:.4f}, test NLL {nlls[-1]:.4f} "
            f"(eval {eval_seconds[-1]:.2f} s), nfe {record['nfe']:.1f}",
            file=sys.stderr,
            flush=True,
        )

    # --- Throughput of the trained distribution ----------------------------------------------
    dist = ffjord.for_inference(trainer.model(state))  # the form for evaluation
    sample_size = train.shape[0]

    @eqx.filter_jit
    def draw_samples(d, key):
        return d.sample(key, (sample_size,))

    @eqx.filter_jit
    def eval_log_prob(d, x):
        return d.log_prob(x)

    def timed(fn, *a):
        jax.block_until_ready(fn(*a))  # warm-up (tracing and compilation)
        ts = []
        for _ in range(9):
            t = time.time()
            jax.block_until_ready(fn(*a))
            ts.append(time.time() - t)
        return harness.median(ts)

    def cli_samples(d, key):  # what `ffjord sample` runs: base draws, chunks on every core
        base = np.asarray(d.base.sample(key, (sample_size,)), np.float32)
        return transform(d.bijector, base)

    density_pts = jax.numpy.asarray(train[:sample_size])
    sample_one_s = timed(draw_samples, dist, jax.random.key(args.seed + 2))
    density_one_s = timed(eval_log_prob, dist, density_pts)
    sample_s = timed(cli_samples, dist, jax.random.key(args.seed + 2))
    density_s = timed(trainer.log_prob, dist, train[:sample_size])  # `ffjord density`

    nfe = None
    if records:
        nfe = {
            "forward_total": float(records[0]["nfe"]),
            "forward_total_per_epoch": [float(r["nfe"]) for r in records],
            "solver_steps_per_epoch": [float(r["solver_steps"]) for r in records],
            "steps_averaged": n_batches,
            "note": (
                "vector-field evaluations per training step, summed over the 4 blocks, mean "
                "over the first epoch (forward_total) and per epoch; forward = log_prob "
                "(inverse solves), counted from the solver statistics (Runge-Kutta stages per "
                "step + 1 first-same-as-last evaluation per solve). The backward pass "
                "differentiates through the solver (diffrax RecursiveCheckpointAdjoint), no "
                "adjoint ODE solve"
            ),
        }

    steady = harness.median(epoch_seconds[1:])
    first_step_est = None
    if compile_s is not None:
        first_step_est = t_compiled - t0 + first_epoch_exec_s / n_batches
    scale = _model_options.BASE_SCALE_TOY
    result = {
        "peer": "ffjord",
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": trainer.batch_size,
        "dataset_size": int(train.shape[0]),
        "eval_batch": trainer.eval_batch_size,
        "process_start_to_first_step_s": first_epoch_end - t0 if first_epoch_end else None,
        "first_step_note": (
            "end of the first epoch (the first step runs inside the first epoch's compiled "
            "lax.scan): an upper bound that includes the epoch's other steps"
        ),
        "process_start_to_first_step_est_s": first_step_est,
        "t0_source": "FFJORD_BENCH_T0" if env_t0 else "first statement of script",
        "import_s": t_imported - _T_IMPORT,
        "setup_to_first_step_s": first_epoch_end - t_setup_done if first_epoch_end else None,
        "lower_s": lower_s,
        "compile_s": compile_s,
        "first_epoch_exec_s": first_epoch_exec_s,
        "compile_estimate_s": (epoch_seconds[0] - steady) if steady is not None else None,
        "num_traces": {"epoch": epoch_traces(), "eval": eval_traces()},
        "epoch_seconds": epoch_seconds,
        "steady_epoch_s": steady,
        "eval_seconds": eval_seconds,
        "nll_wall_s": nll_wall,
        "train_loss": train_losses,
        "test_nll": nlls,
        "nfe_per_step": nfe,
        "sample_points_per_s": sample_size / sample_s,
        "density_points_per_s": sample_size / density_s,
        "sample_points_per_s_single_call": sample_size / sample_one_s,
        "density_points_per_s_single_call": sample_size / density_one_s,
        "sample_s": sample_s,
        "density_s": density_s,
        "total_wall_s": time.time() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "compilation_cache": cache_dir or "off (cold start)",
        "versions": {
            "python": platform.python_version(),
            "ffjord": ffjord.__version__,
            "jax": jax.__version__,
            "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
            "diffrax": diffrax.__version__,
            "equinox": eqx.__version__,
            "numpy": np.__version__,
        },
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "threads": {
            "os_cpu_count": os.cpu_count(),
            "sched_affinity": len(os.sched_getaffinity(0)),
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "XLA_FLAGS") if k in os.environ},
        },
        "settings": {
            "solver": f"diffrax.{_spec.SOLVERS[args.solver].__name__}() rtol 1e-3 atol 1e-5",
            "trace": "ffjord.ExactTrace()",
            "optimizer": f"optax.adam({cfg['learning_rate']})",
            "stacked_ffjords": cfg["blocks"],
            "mlp": [cfg["hidden"], cfg["layers"], 2],
            "base": f"MultivariateNormalDiag([0,0],[{scale},{scale}])",
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    nll_last = f"{nlls[-1]:.4f}" if nlls else "n/a"
    steady_txt = f"{steady:.2f}" if steady is not None else "n/a"
    nfe_txt = f"{nfe['forward_total']:.0f}" if nfe else "n/a"
    first = result["process_start_to_first_step_s"] or float("nan")
    print(
        f"ffjord: first epoch done at {first:.1f} s, steady epoch {steady_txt} s, "
        f"test NLL {nll_last}, NFE fwd/step {nfe_txt}, "
        f"sample {result['sample_points_per_s']:.0f} pts/s, "
        f"density {result['density_points_per_s']:.0f} pts/s -> {args.out}"
    )


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover
        return None


if __name__ == "__main__":
    main()
