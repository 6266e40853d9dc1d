"""Peer side of the speed benchmark: TensorFlow Probability's FFJORD tutorial, timed.

This script runs the code of TFP's FFJORD tutorial (FFJORD_Demo) unchanged in spirit -- same
data, same model, same solver, same optimiser, same ``@tf.function`` training step -- and
measures it, so that it can be compared with the ``ffjord`` (JAX) library side by side. It
imports nothing from the ``ffjord`` package.

Peer environment (kept apart from the project's own environment)::

    python3.11 -m venv .venv-peers
    .venv-peers/bin/pip install 'tensorflow==2.21.0' 'tensorflow-probability==0.25.0' \\
        'tf-keras==2.21.0' 'dm-sonnet==2.0.2' 'scikit-learn==1.9.1' 'numpy==2.4.6'

(any ``tensorflow>=2.15`` with the matching ``tensorflow-probability`` and ``tf-keras`` should
do; the versions above are the ones this script was checked with.)

Run::

    .venv-peers/bin/python benchmarks/peer_tfp.py --epochs 40 --seed 0 --out runs/peer_tfp.json

To include interpreter start-up in ``process_start_to_first_step_s``, export an earlier epoch
timestamp, e.g. ``FFJORD_BENCH_T0=$(date +%s.%N) .venv-peers/bin/python benchmarks/...``.

Measured (one JSON object written to ``--out``, one summary line on stdout):

* ``process_start_to_first_step_s``: process start (or ``FFJORD_BENCH_T0``) until the first
  training step has finished (the loss converted to numpy); mostly TF graph tracing.
* ``epoch_seconds``: wall seconds per epoch (32 batches of 256); the steady state is the median
  of the epochs after the first (``steady_epoch_s``).
* ``test_nll``: mean ``-log_prob`` (nats/point) on 4096 fresh moons
  (``make_moons(4096, noise=0.06, random_state=seed + 1)``) after every epoch; its time is
  kept out of ``epoch_seconds`` and reported as ``eval_seconds``.
* ``nfe_per_step``: vector-field (MLP) evaluations per training step, counted by a
  ``tf.Variable`` that a wrapper around each block's ``state_time_derivative_fn`` increments;
  the mean over the first epoch, per block and total, for the forward pass (``log_prob``) and
  for the whole step (forward + TFP's adjoint backward pass).
* ``sample_points_per_s`` / ``density_points_per_s``: 8192 samples from the trained
  ``TransformedDistribution`` / exact ``log_prob`` of 8192 points, each inside a
  ``tf.function`` after one warm-up call; median of 9.
"""

import time

_T_IMPORT = time.time()  # the very first thing: before numpy / tensorflow are imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import harness  # noqa: E402  (standard library only: it runs in the peer venv too)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "--smoke" in sys.argv and not harness.peer_available("tensorflow_probability", "sonnet"):
    harness.skip_peer("tensorflow_probability / sonnet")  # nothing of ffjord's runs here
    sys.exit(0)

import numpy as np  # noqa: E402
import sklearn.datasets as skd  # noqa: E402
import sonnet as snt  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

_T_IMPORTED = time.time()

tfb = tfp.bijectors
tfd = tfp.distributions

# Settings of the tutorial.
DATASET_SIZE = 1024 * 8
BATCH_SIZE = 256
SAMPLE_SIZE = DATASET_SIZE
LR = 1e-2
STACKED_FFJORDS = 4
NUM_HIDDEN = 8
NUM_LAYERS = 3
NUM_OUTPUT = 2
TEST_SIZE = 4096


class MLP_ODE(snt.Module):  # noqa: N801 - the tutorial's name
    """Multi-layer NN ode_fn (verbatim from the tutorial)."""

    def __init__(self, num_hidden, num_layers, num_output, name="mlp_ode"):
        super().__init__(name=name)
        self._num_hidden = num_hidden
        self._num_output = num_output
        self._num_layers = num_layers
        self._modules = []
        for _ in range(self._num_layers - 1):
            self._modules.append(snt.Linear(self._num_hidden))
            self._modules.append(tf.math.tanh)
        self._modules.append(snt.Linear(self._num_output))
        self._model = snt.Sequential(self._modules)

    def __call__(self, t, inputs):
        inputs = tf.concat([tf.broadcast_to(t, inputs.shape), inputs], -1)
        return self._model(inputs)


class CountingField:
    """Benchmark instrumentation: counts calls of a vector field in a non-trainable variable.

    The increment is a stateful op inside the solver's ``tf.while_loop`` body, so it runs once
    per evaluation of the traced graph (not once per trace).
    """

    def __init__(self, fn, counter):
        self._fn = fn
        self._counter = counter

    def __call__(self, t, z, **kwargs):
        self._counter.assign_add(1)
        return self._fn(t, z, **kwargs)


def _thread_info(args):
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    return {
        "os_cpu_count": os.cpu_count(),
        "sched_affinity": affinity,
        "tf_intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "requested_intra": args.intra_threads,
        "requested_inter": args.inter_threads,
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
            if k in os.environ
        },
        "note": "0 means TensorFlow's default (all cores)",
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file to write (required unless --smoke)")
    p.add_argument("--eval-batch", type=int, default=1024, help="batch size of the test NLL")
    p.add_argument("--intra-threads", type=int, default=None, help="TF intra-op threads")
    p.add_argument("--inter-threads", type=int, default=None, help="TF inter-op threads")
    harness.add_smoke(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.out = 1, str(harness.smoke_dir(__file__) / "tfp.json")
    elif not args.out:
        p.error("--out is required")

    env_t0 = os.environ.get("FFJORD_BENCH_T0")
    t0 = float(env_t0) if env_t0 else _T_IMPORT
    t0 = min(t0, _T_IMPORT)

    if args.intra_threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_threads)
    if args.inter_threads is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_threads)

    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)

    # --- Data (tutorial; random_state added for reproducibility) -----------------------------
    moons = skd.make_moons(n_samples=DATASET_SIZE, noise=0.06, random_state=args.seed)[0]
    moons = moons.astype(np.float32)
    moons_ds = tf.data.Dataset.from_tensor_slices(moons)
    moons_ds = moons_ds.prefetch(tf.data.experimental.AUTOTUNE)
    moons_ds = moons_ds.cache()
    moons_ds = moons_ds.shuffle(DATASET_SIZE)
    moons_ds = moons_ds.batch(BATCH_SIZE)

    test = skd.make_moons(n_samples=TEST_SIZE, noise=0.06, random_state=args.seed + 1)[0]
    test = test.astype(np.float32)

    # --- Model (tutorial) -------------------------------------------------------------------
    base_loc = np.array([0.0, 0.0]).astype(np.float32)
    base_sigma = np.array([0.8, 0.8]).astype(np.float32)
    base_distribution = tfd.MultivariateNormalDiag(base_loc, base_sigma)

    solver = tfp.math.ode.DormandPrince(atol=1e-5)
    ode_solve_fn = solver.solve
    trace_augmentation_fn = tfb.ffjord.trace_jacobian_exact

    counters = [
        tf.Variable(0, dtype=tf.int64, trainable=False, name=f"nfe_{i}")
        for i in range(STACKED_FFJORDS)
    ]
    bijectors = []
    for i in range(STACKED_FFJORDS):
        mlp_model = MLP_ODE(NUM_HIDDEN, NUM_LAYERS, NUM_OUTPUT)
        next_ffjord = tfb.FFJORD(
            state_time_derivative_fn=CountingField(mlp_model, counters[i]),
            ode_solve_fn=ode_solve_fn,
            trace_augmentation_fn=trace_augmentation_fn,
        )
        bijectors.append(next_ffjord)

    stacked_ffjord = tfb.Chain(bijectors[::-1])
    transformed_distribution = tfd.TransformedDistribution(
        distribution=base_distribution, bijector=stacked_ffjord
    )

    # --- Training step (tutorial, plus reads of the NFE counters) --------------------------
    @tf.function
    def train_step(optimizer, target_sample):
        for c in counters:
            c.assign(0)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(transformed_distribution.log_prob(target_sample))
        nfe_fwd = tf.stack([c.read_value() for c in counters])
        variables = tape.watched_variables()
        gradients = tape.gradient(loss, variables)
        optimizer.apply(gradients, variables)
        nfe_total = tf.stack([c.read_value() for c in counters])
        return loss, nfe_fwd, nfe_total

    @tf.function
    def eval_log_prob(x):
        return transformed_distribution.log_prob(x)

    @tf.function
    def draw_samples():
        return transformed_distribution.sample(SAMPLE_SIZE)

    def test_nll():
        total = 0.0
        for s in range(0, TEST_SIZE, args.eval_batch):
            total += float(tf.reduce_sum(eval_log_prob(test[s : s + args.eval_batch])).numpy())
        return -total / TEST_SIZE

    learning_rate = tf.Variable(LR, trainable=False)
    optimizer = snt.optimizers.Adam(learning_rate)

    # --- Training loop ----------------------------------------------------------------------
    epoch_seconds, eval_seconds, nlls, train_losses = [], [], [], []
    first_step_s = first_step_only_s = None
    t_setup_done = time.time()
    nfe_fwd_all, nfe_total_all, nfe_first_epoch = [], [], None
    for epoch in range(args.epochs):
        t_ep = time.time()
        losses = []
        for batch in moons_ds:
            loss, nfe_fwd, nfe_total = train_step(optimizer, batch)
            if first_step_s is None:
                loss = loss.numpy()  # force completion of the first step
                first_step_s = time.time() - t0
                first_step_only_s = time.time() - t_setup_done
            losses.append(loss)
            nfe_fwd_all.append(nfe_fwd)
            nfe_total_all.append(nfe_total)
        losses = [float(x) for x in losses]  # forces completion of the epoch
        epoch_seconds.append(time.time() - t_ep)
        if epoch == 0:
            nfe_first_epoch = (
                np.array([x.numpy() for x in nfe_fwd_all], dtype=np.float64),
                np.array([x.numpy() for x in nfe_total_all], dtype=np.float64),
            )
        nfe_fwd_all, nfe_total_all = [], []
        train_losses.append(float(np.mean(losses)))

        t_ev = time.time()
        nlls.append(test_nll())
        eval_seconds.append(time.time() - t_ev)
        print(
            f"epoch {epoch + 1}/{args.epochs}: {epoch_seconds[-1]:.2f} s, "
            f"train loss {train_losses[-1]:.4f}, test NLL {nlls[-1]:.4f} "
            f"(eval {eval_seconds[-1]:.2f} s)",
            file=sys.stderr,
            flush=True,
        )

    # --- Throughput of the trained distribution ----------------------------------------------
    def timed(fn, *a):
        out = fn(*a)
        _ = out.numpy()  # warm-up (tracing)
        ts = []
        for _ in range(9):
            t = time.time()
            _ = fn(*a).numpy()
            ts.append(time.time() - t)
        return harness.median(ts)

    density_pts = tf.constant(moons[:SAMPLE_SIZE])
    sample_s = timed(draw_samples)
    density_s = timed(eval_log_prob, density_pts)

    nfe = None
    if nfe_first_epoch is not None:
        fwd, tot = nfe_first_epoch
        nfe = {
            "forward_per_block": [float(v) for v in fwd.mean(axis=0)],
            "forward_total": float(fwd.sum(axis=1).mean()),
            "step_per_block": [float(v) for v in tot.mean(axis=0)],
            "step_total": float(tot.sum(axis=1).mean()),
            "backward_total": float((tot - fwd).sum(axis=1).mean()),
            "steps_averaged": int(fwd.shape[0]),
            "note": (
                "MLP calls per training step, mean over the first epoch; forward = log_prob "
                "(inverse solves), step = forward + TFP adjoint backward pass. Counts every MLP "
                "call, i.e. per solve one more than DormandPrince's num_ode_fn_evaluations "
                "(which leaves out its derivative at the final time)"
            ),
        }

    result = {
        "peer": "tfp",
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": BATCH_SIZE,
        "dataset_size": DATASET_SIZE,
        "eval_batch": args.eval_batch,
        "process_start_to_first_step_s": first_step_s,
        "t0_source": "FFJORD_BENCH_T0" if env_t0 else "first statement of script",
        "import_s": _T_IMPORTED - _T_IMPORT,
        "setup_to_first_step_s": first_step_only_s,
        "epoch_seconds": epoch_seconds,
        "steady_epoch_s": harness.median(epoch_seconds[1:]),
        "eval_seconds": eval_seconds,
        "train_loss": train_losses,
        "test_nll": nlls,
        "nfe_per_step": nfe,
        "sample_points_per_s": SAMPLE_SIZE / sample_s,
        "density_points_per_s": SAMPLE_SIZE / density_s,
        "sample_s": sample_s,
        "density_s": density_s,
        "total_wall_s": time.time() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "versions": {
            "python": platform.python_version(),
            "tf": tf.__version__,
            "tfp": tfp.__version__,
            "sonnet": snt.__version__,
            "numpy": np.__version__,
        },
        "threads": _thread_info(args),
        "settings": {
            "solver": "tfp.math.ode.DormandPrince(atol=1e-5) (default rtol 1e-3)",
            "trace": "tfb.ffjord.trace_jacobian_exact",
            "optimizer": f"snt.optimizers.Adam({LR})",
            "stacked_ffjords": STACKED_FFJORDS,
            "mlp": [NUM_HIDDEN, NUM_LAYERS, NUM_OUTPUT],
            "base": "MultivariateNormalDiag([0,0],[0.8,0.8])",
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    nll_last = f"{nlls[-1]:.4f}" if nlls else "n/a"
    steady = result["steady_epoch_s"]
    steady_txt = f"{steady:.2f}" if steady is not None else "n/a"
    nfe_txt = f"{nfe['forward_total']:.0f}" if nfe else "n/a"
    print(
        f"tfp: first step at {first_step_s or float('nan'):.1f} s, steady epoch {steady_txt} s, "
        f"test NLL {nll_last}, NFE fwd/step {nfe_txt}, "
        f"sample {result['sample_points_per_s']:.0f} pts/s, "
        f"density {result['density_points_per_s']:.0f} pts/s -> {args.out}"
    )


if __name__ == "__main__":
    main()
