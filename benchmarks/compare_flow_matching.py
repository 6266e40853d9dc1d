"""Flow matching against its PyTorch peers: torchcfm (training), Meta's flow_matching (density).

One invocation runs the peers and ffjord one after the other on the same machine, the same
data and the same function class, and writes one JSON report (and prints a table):

* Data: ``ffjord.datasets.sample_toy("moons", 8192, 0)`` for training and
  ``sample_toy("moons", 4096, 1_000_003)`` held out. Base N(0, I) on both sides.
* Field: an MLP on ``[x, y, t]`` with 3 hidden tanh layers of 64 and 2 outputs. In ffjord that
  is ``ffjord.MLPField(2, 64, 4)`` (its input is ``[t, t, x, y]``: the two time columns act as
  one), in torch ``Linear(3, 64)-tanh-Linear(64, 64)-tanh-Linear(64, 64)-tanh-Linear(64, 2)``.
  The torch MLP starts from ffjord's initial weights, so both sides train the same function
  from the same point.

1. Training speed (ms per step). Adam 1e-3, batch 256, ``--steps`` steps (epochs of 32
   shuffled batches; default 2048 = 64 epochs), for both couplings:
   ``torchcfm.conditional_flow_matching.ConditionalFlowMatcher(sigma=0.0)`` /
   ``ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)`` in an ordinary eager loop, against
   ``ffjord.FlowMatching(coupling="independent")`` / ``coupling="ot"`` through ffjord's engine
   (``Trainer.run_epoch``: one compiled ``lax.scan`` per epoch, results fetched with
   ``device_get``). Both sides are timed per epoch of 32 steps; ``ms_per_step`` is the median
   over the epochs after the first, ``ms_per_step_min`` the fastest such epoch (less sensitive
   to other load). ffjord's compilation (``.lower().compile()`` of the epoch) is reported apart.
   torch runs with ``torch.set_num_threads(os.cpu_count())`` and again with one thread; the
   ratio uses torch's faster setting (on a loaded machine two threads can be much slower).
2. Likelihood. ffjord's trained model (independent coupling, trained by ``ffjord.fit`` into a
   run directory; the same numbers as in 1) is copied into the torch module (first layer:
   ``[x, y, t]`` weights = ffjord's z columns and the sum of its two t columns), checked to give
   the same velocities to 1e-5, and the exact log-density of the 4096 held-out points is computed
   by ``flow_matching.solver.ODESolver(...).compute_likelihood(method="dopri5", rtol=1e-3,
   atol=1e-5, exact_divergence=True, time_grid=[1, 0])`` and by ffjord (exact trace, Dopri5,
   rtol 1e-3, atol 1e-5) two ways: ``Trainer(dist).log_prob`` (fixed-size chunks on every core,
   the ``ffjord density`` path) and one compiled ``dist.log_prob`` call (in the JSON also
   ``Trainer`` with one chunk of 4096). Reference: ffjord in float64 (a subprocess with
   ``jax_enable_x64``), Dopri5 at rtol 1e-9 / atol 1e-11, cross-checked against Dopri8 at
   rtol 1e-11 / atol 1e-13. Reported: mean and max |error| against the
   reference, the solver's field evaluations, points per second (median of ``--repeats`` calls
   after a warm-up call) and ratios.
3. Whole process: wall time of ``ffjord density RUN --points FILE -o OUT.npy`` on that run
   directory with a cold (empty ``FFJORD_CACHE_DIR``) and a warm compilation cache, and of the
   peer's equivalent (a fresh Python that imports torch and flow_matching, builds the module
   from the saved weights, computes and saves the log-densities).

Needs the peers (never needed by ffjord itself), the ``fm-peers`` extra. On Linux a plain
``pip install`` brings a CUDA torch; install a CPU one first and pin it while adding the rest
(torchvision, which torchcfm needs, otherwise pulls a newer torch)::

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    echo "torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')" > pin.txt
    pip install -e '.[fm-peers]' -c pin.txt

Part 2 uses ``eqx.filter_jit(dist.log_prob)`` for the single compiled call: ``jax.jit`` of the
bound method of an equinox Module fails (the method is a Module holding arrays: unhashable).
Everything runs in this process except the float64 reference, ``ffjord density`` and the
peer's whole-process run (``--worker``, hidden options of this script).

Run from the repository root::

    python benchmarks/compare_flow_matching.py            # full run, a few minutes on 2 cores
    python benchmarks/compare_flow_matching.py --quick    # smoke run (256 steps, 2 repeats),
                                                          # into runs/flow_matching_peers_quick.json
    python benchmarks/compare_flow_matching.py --out runs/fm.json --steps 4096

Writes ``docs/benchmarks/flow_matching_peers.json`` unless ``--out`` says otherwise.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import harness

N_TRAIN, N_TEST = 8192, 4096
TRAIN_SEED, TEST_SEED = 0, 1_000_003
HIDDEN, LAYERS = 64, 4  # MLPField layers: 3 hidden tanh layers of 64, then the output layer
BATCH, LR = 256, 1e-3
STEPS_PER_EPOCH = N_TRAIN // BATCH  # 32
BASE_SCALE = 1.0  # base N(0, I) on both sides
RTOL, ATOL = 1e-3, 1e-5  # the likelihood solves compared
REF_RTOL, REF_ATOL = 1e-9, 1e-11  # the float64 reference (Dopri5)
CHECK_RTOL, CHECK_ATOL = 1e-11, 1e-13  # the reference's own cross-check (Dopri8)
VELOCITY_TOL = 1e-5
DEFAULT_OUT = "docs/benchmarks/flow_matching_peers.json"
QUICK_OUT = "runs/flow_matching_peers_quick.json"  # --quick never overwrites the real report


# Models on both sides ------------------------------------------------------------------------


def torch_field():
    """The torch twin of ``MLPField(2, 64, 4)``: an MLP on ``[x, y, t]``, called as
    ``field(x, t)`` (t of shape (n,) while training, 0-d inside flow_matching's solver)."""
    import torch

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [3] + [HIDDEN] * (LAYERS - 1) + [2]
            layers = []
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                layers.append(torch.nn.Linear(n_in, n_out))
                if i < LAYERS - 1:
                    layers.append(torch.nn.Tanh())
            self.net = torch.nn.Sequential(*layers)
            self.calls = 0  # field evaluations (each on a whole batch)

        def forward(self, x, t):
            self.calls += 1
            t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
            return self.net(torch.cat([x, t], dim=1))

    return Field()


def ffjord_model(key):
    """One FFJORD block of ``MLPField(2, 64, 4)`` (exact trace, Dopri5 rtol 1e-3, atol 1e-5)
    on the base N(0, I)."""
    import jax.numpy as jnp

    import ffjord

    field = ffjord.MLPField(2, HIDDEN, LAYERS, key=key)
    block = ffjord.FFJORD(field, rtol=RTOL, atol=ATOL)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), BASE_SCALE * jnp.ones(2))
    return ffjord.TransformedDistribution(base, block)


def the_block(dist):
    """The model's single FFJORD block (directly, or inside a Chain as `ffjord.load` gives)."""
    import ffjord

    bijector = dist.bijector
    while isinstance(bijector, ffjord.Chain):
        (bijector,) = bijector.bijectors
    return bijector


def ffjord_weights(dist) -> list[tuple[np.ndarray, np.ndarray]]:
    """The field's (weight (out, in), bias) per layer; the first layer's input is [t, t, x, y]."""
    return [
        (np.asarray(layer.weight), np.asarray(layer.bias)) for layer in the_block(dist).field.layers
    ]


def with_weights(dist, weights):
    """`dist` with its field's layers set to `weights` (in the field's own dtype)."""
    import equinox as eqx
    import jax.numpy as jnp

    layers = the_block(dist).field.layers
    leaves = [layer.weight for layer in layers] + [layer.bias for layer in layers]
    values = [w for w, _ in weights] + [b for _, b in weights]
    new = [jnp.asarray(v, dtype=leaf.dtype) for leaf, v in zip(leaves, values, strict=True)]
    return eqx.tree_at(
        lambda d: (
            [la.weight for la in the_block(d).field.layers]
            + [la.bias for la in the_block(d).field.layers]
        ),
        dist,
        new,
    )


def to_torch_weights(weights):
    """ffjord's layers as the torch MLP's: the first layer over [x, y, t] takes ffjord's z columns
    and the sum of its two t columns (t enters both)."""
    (w0, b0), *rest = weights
    first = np.concatenate([w0[:, 2:4], w0[:, :2].sum(axis=1, keepdims=True)], axis=1)
    return [(first, b0), *rest]


def from_torch_weights(weights):
    """The torch MLP's layers as ffjord's: t-columns [w_t, 0] (the same function)."""
    (w0, b0), *rest = weights
    first = np.concatenate([w0[:, 2:3], np.zeros_like(w0[:, 2:3]), w0[:, :2]], axis=1)
    return [(first, b0), *rest]


def load_torch(field, weights) -> None:
    import torch

    linears = [m for m in field.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear, (w, b) in zip(linears, weights, strict=True):
            linear.weight.copy_(torch.from_numpy(np.array(w, np.float32)))
            linear.bias.copy_(torch.from_numpy(np.array(b, np.float32)))


def torch_weights(field):
    import torch

    linears = [m for m in field.net if isinstance(m, torch.nn.Linear)]
    return [
        (lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()) for lin in linears
    ]


def check_same_velocities(dist, field, n: int = 4096) -> float:
    """Max |ffjord's velocity - torch's| on random (t, z); raises if above VELOCITY_TOL."""
    import jax
    import torch

    rng = np.random.default_rng(123)
    z = (2.0 * rng.standard_normal((n, 2))).astype(np.float32)
    t = rng.uniform(0.0, 1.0, n).astype(np.float32)
    jax_v = np.asarray(jax.jit(jax.vmap(the_block(dist).field))(t, z))
    with torch.no_grad():
        torch_v = field(torch.from_numpy(z), torch.from_numpy(t)).numpy()
    err = float(np.max(np.abs(jax_v - torch_v)))
    assert err <= VELOCITY_TOL, f"ffjord and torch velocities differ by {err:.2e} > {VELOCITY_TOL}"
    return err


# Timing helpers ------------------------------------------------------------------------------


def per_step_summary(epoch_seconds: list[float]) -> dict:
    """ms per step from per-epoch wall times: median and fastest over the epochs after the first."""
    steady = epoch_seconds[1:] or epoch_seconds
    ms = [1e3 * s / STEPS_PER_EPOCH for s in steady]
    return {
        "ms_per_step": statistics.median(ms),
        "ms_per_step_min": min(ms),
        "ms_per_step_mean": statistics.fmean(ms),
        "first_epoch_ms_per_step": 1e3 * epoch_seconds[0] / STEPS_PER_EPOCH,
        "epoch_seconds": [round(s, 5) for s in epoch_seconds],
    }


def timed_calls(fn, repeats: int):
    """(median seconds, last result) of `repeats` calls after one warm-up call."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds, result


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# 1. Training ---------------------------------------------------------------------------------


def train_torchcfm(
    coupling: str, init_weights, data: np.ndarray, epochs: int, threads: int, seed: int
):
    """torchcfm's recipe in an eager loop; returns (summary, trained field)."""
    import torch
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    field = torch_field()
    load_torch(field, to_torch_weights(init_weights))
    optimizer = torch.optim.Adam(field.parameters(), lr=LR)
    matcher = (
        ConditionalFlowMatcher(sigma=0.0)
        if coupling == "independent"
        else ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    )
    x = torch.from_numpy(data)
    epoch_seconds, losses = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(N_TRAIN)
        loss = None
        for b in range(STEPS_PER_EPOCH):
            x1 = x[order[b * BATCH : (b + 1) * BATCH]]
            x0 = BASE_SCALE * torch.randn_like(x1)
            t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
            loss = torch.mean((field(xt, t) - ut) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(float(loss.detach()))  # one sync per epoch (the step is eager anyway)
        epoch_seconds.append(time.perf_counter() - start)
    summary = {"threads": threads, **per_step_summary(epoch_seconds), "last_loss": losses[-1]}
    return summary, field


def train_ffjord(coupling: str, dist0, data: np.ndarray, epochs: int, key):
    """ffjord's engine (`Trainer.run_epoch`); returns (summary, trained model)."""
    import ffjord
    from ffjord._trainer import Trainer
    from trace_counts import traces

    epoch_traces = traces(Trainer, "_epoch")
    traced_before = epoch_traces()
    import optax

    trainer = Trainer(
        dist0,
        objective=ffjord.FlowMatching(coupling=coupling),
        batch_size=BATCH,
        optimizer=optax.adam(LR),
    )
    state = trainer.init(key)
    start = time.perf_counter()
    trainer.compile_epoch(state, data)  # tracing + XLA compilation of the epoch, nothing run
    compile_s = time.perf_counter() - start
    epoch_seconds, losses = [], []
    for _ in range(epochs):
        state, record = trainer.run_epoch(state, data)
        epoch_seconds.append(record["seconds"])
        losses.append(record["train_loss"])
    summary = {
        "compile_s": compile_s,
        **per_step_summary(epoch_seconds),
        "last_loss": losses[-1],
        "num_traces": epoch_traces() - traced_before,
    }
    return summary, trainer.model(state)


def train_command(coupling: str, train: np.ndarray, epochs: int, seed: int, tmp: Path) -> dict:
    """ms per step of `ffjord train` itself (`seconds / steps` in its metrics.jsonl, the
    epochs after the first) on the same points, field, optimiser and batch size."""
    data = tmp / f"moons_{coupling}.npy"
    held_out = 0.1  # `ffjord train --data FILE` holds out this share of the rows
    rows = int(np.ceil(len(train) / (1 - held_out))) + 1  # training split >= len(train)
    extra = train[: rows - len(train)] if rows - len(train) <= len(train) else train
    np.save(data, np.concatenate([train, extra]))
    out = tmp / f"command_{coupling}"
    flags = {"objective": "flow-matching", "coupling": coupling, "batch-size": BATCH,
             "blocks": 1, "hidden": HIDDEN, "layers": LAYERS, "activation": "tanh",
             "lr": LR, "schedule": "constant", "weight-decay": 0, "logit": 0,
             "validation": 0, "epochs": epochs, "test-every": epochs, "seed": seed}  # fmt: skip
    argv = [arg for k, v in flags.items() for arg in (f"--{k}", str(v))]
    done = harness.run([*harness.ffjord(), "train", "--data", str(data), "--out", str(out),
                        *argv, "--quiet", "--no-figures"]).check()  # fmt: skip
    records = harness.read_jsonl(out / "metrics.jsonl")
    per_step = [1e3 * r["seconds"] / r["steps"] for r in records[1:]]
    return {
        "ms_per_step": harness.median(per_step),
        "ms_per_step_min": min(per_step),
        "steps_per_epoch": records[0]["steps"],
        "process_seconds": done.seconds,
    }


def time_ot_solvers(data: np.ndarray, seed: int, batches: int = 16) -> dict:
    """ms per batch of the two OT pairings alone, on the same batches of 256: ffjord's
    (SciPy's `linear_sum_assignment` on the float64 squared distances) and torchcfm's
    (`OTPlanSampler("exact").sample_plan`: POT's `emd`, then pairs drawn from the plan)."""
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchcfm.optimal_transport import OTPlanSampler

    rng = np.random.default_rng(seed)
    pairs = [
        (
            BASE_SCALE * rng.standard_normal((BATCH, 2)).astype(np.float32),
            data[i * BATCH : (i + 1) * BATCH],
        )
        for i in range(batches)
    ]
    sampler = OTPlanSampler(method="exact")

    def scipy_pairing(x0, x1):
        linear_sum_assignment(np.sum((x0[:, None] - x1[None]) ** 2, axis=-1).astype(np.float64))

    def torchcfm_pairing(x0, x1):
        sampler.sample_plan(torch.from_numpy(x0), torch.from_numpy(x1))

    out = {}
    for name, pairing in (
        ("ffjord_scipy_lsa", scipy_pairing),
        ("torchcfm_pot_emd", torchcfm_pairing),
    ):
        pairing(*pairs[0])
        start = time.perf_counter()
        for x0, x1 in pairs:
            pairing(x0, x1)
        out[name] = 1e3 * (time.perf_counter() - start) / batches
    return out


def held_out_nll(dist, test: np.ndarray) -> float:
    from ffjord._trainer import Trainer

    return float(-np.mean(Trainer(dist).log_prob(dist, test)))


# 2. Likelihood -------------------------------------------------------------------------------


def flow_matching_log_prob(field, points):
    """flow_matching's exact log-density of `points` (a torch tensor) under `field`."""
    import torch
    from flow_matching.solver import ODESolver

    def log_p0(x):
        return torch.distributions.Normal(0.0, BASE_SCALE).log_prob(x).sum(dim=1)

    solver = ODESolver(velocity_model=lambda x, t: field(x, t))
    _, log_p = solver.compute_likelihood(
        x_1=points,
        log_p0=log_p0,
        step_size=None,
        method="dopri5",
        atol=ATOL,
        rtol=RTOL,
        exact_divergence=True,
        time_grid=torch.tensor([1.0, 0.0]),
    )
    return log_p.numpy()


def errors(lp: np.ndarray, reference: np.ndarray) -> dict:
    diff = np.abs(lp.astype(np.float64) - reference)
    return {
        "mean_abs_error": float(np.mean(diff)),
        "max_abs_error": float(np.max(diff)),
        "nll": float(-np.mean(lp)),
    }


def reference_worker(weights_path: str, points_path: str, out_path: str) -> None:
    """(subprocess) ffjord in float64: Dopri5 at REF tolerances, Dopri8 tighter as a check."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp

    import ffjord

    saved = np.load(weights_path)
    weights = [(saved[f"w{i}"], saved[f"b{i}"]) for i in range(LAYERS)]
    points = np.load(points_path).astype(np.float64)
    field = ffjord.MLPField(2, HIDDEN, LAYERS, key=jax.random.key(0))  # float64 under x64
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), BASE_SCALE * jnp.ones(2))
    out = {}
    for name, solver, rtol, atol in (
        ("dopri5", diffrax.Dopri5(), REF_RTOL, REF_ATOL),
        ("dopri8", diffrax.Dopri8(), CHECK_RTOL, CHECK_ATOL),
    ):
        block = ffjord.FFJORD(field, solver=solver, rtol=rtol, atol=atol, max_steps=100_000)
        dist = with_weights(ffjord.TransformedDistribution(base, block), weights)
        start = time.perf_counter()
        lp, stats = eqx.filter_jit(lambda d, x: d.log_prob_with_stats(x))(dist, points)
        out[name] = np.asarray(lp)
        out[f"{name}_seconds"] = np.asarray(time.perf_counter() - start)
        out[f"{name}_steps"] = np.asarray(stats.num_steps)
    np.savez(out_path, **out)


def peer_density_worker(weights_path: str, points_path: str, out_path: str, threads: int) -> None:
    """(subprocess) the peer's whole process: import, build the module, compute, save."""
    import torch

    torch.set_num_threads(threads)
    saved = np.load(weights_path)
    field = torch_field()
    load_torch(field, to_torch_weights([(saved[f"w{i}"], saved[f"b{i}"]) for i in range(LAYERS)]))
    points = torch.from_numpy(np.load(points_path).astype(np.float32))
    np.save(out_path, flow_matching_log_prob(field, points))


def save_weights(path: Path, weights) -> None:
    arrays = {}
    for i, (w, b) in enumerate(weights):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    np.savez(path, **arrays)


# The benchmark -------------------------------------------------------------------------------


def benchmark(args) -> dict:
    started = time.perf_counter()
    import equinox as eqx
    import jax
    import torch

    import ffjord
    from ffjord.datasets import sample_toy

    cores = os.cpu_count() or 1
    thread_settings = sorted({cores, 1}, reverse=True)
    epochs = max(args.steps // STEPS_PER_EPOCH, 2)
    train = sample_toy("moons", N_TRAIN, TRAIN_SEED)
    test = sample_toy("moons", N_TEST, TEST_SEED)
    init_key, train_key = jax.random.split(jax.random.key(args.seed))
    dist0 = ffjord_model(init_key)
    init_weights = ffjord_weights(dist0)
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "data": f"moons: {N_TRAIN} training points (seed {TRAIN_SEED}), {N_TEST} held out "
            f"(seed {TEST_SEED})",
            "field": f"MLP [x, y, t] -> {HIDDEN} -> {HIDDEN} -> {HIDDEN} -> 2, tanh "
            f"(ffjord.MLPField(2, {HIDDEN}, {LAYERS}))",
            "base": f"N(0, {BASE_SCALE}^2 I)",
            "optimizer": f"Adam {LR}",
            "batch_size": BATCH,
            "steps": epochs * STEPS_PER_EPOCH,
            "epochs": epochs,
            "likelihood_solver": f"dopri5 rtol {RTOL} atol {ATOL}, exact divergence",
            "reference": f"ffjord float64 dopri5 rtol {REF_RTOL} atol {REF_ATOL}",
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": cores,
            "loadavg_start": loadavg(),
        },
        "versions": {
            "python": platform.python_version(),
            "ffjord": ffjord.__version__,
            "jax": jax.__version__,
            "torch": torch.__version__,
            "torchcfm": harness.version("torchcfm"),
            "flow_matching": harness.version("flow_matching"),
            "torchdiffeq": harness.version("torchdiffeq"),
            "POT": harness.version("POT"),
        },
    }

    # 1. Training speed: the peers first, then ffjord.
    training: dict = {}
    trained = {}
    for coupling in ("independent", "ot"):
        runs = {}
        for threads in thread_settings:
            log(f"torchcfm {coupling}: {epochs * STEPS_PER_EPOCH} steps, {threads} thread(s)")
            runs[threads], field = train_torchcfm(
                coupling, init_weights, train, epochs, threads, args.seed
            )
            if threads == cores:
                trained[("torchcfm", coupling)] = field
        best = min(runs.values(), key=lambda r: r["ms_per_step"])
        training[coupling] = {
            "torchcfm": {"best_threads": best["threads"], "by_threads": runs},
            "torchcfm_ms_per_step": best["ms_per_step"],
        }
    for coupling in ("independent", "ot"):
        log(f"ffjord {coupling}: {epochs * STEPS_PER_EPOCH} steps")
        summary, trained[("ffjord", coupling)] = train_ffjord(
            coupling, dist0, train, epochs, train_key
        )
        entry = training[coupling]
        entry["ffjord"] = summary
        entry["ffjord_ms_per_step"] = summary["ms_per_step"]
        entry["ratio_torchcfm_over_ffjord"] = entry["torchcfm_ms_per_step"] / summary["ms_per_step"]
        best_torch = entry["torchcfm"]["by_threads"][entry["torchcfm"]["best_threads"]]
        entry["ratio_fastest_epochs"] = best_torch["ms_per_step_min"] / summary["ms_per_step_min"]
    with tempfile.TemporaryDirectory(prefix="fm-command-") as tmp_name:
        for coupling in ("independent", "ot"):
            log(f"ffjord train (the command) {coupling}: {epochs} epochs")
            entry = training[coupling]
            entry["command"] = train_command(coupling, train, epochs, args.seed, Path(tmp_name))
            command_ms = entry["command"]["ms_per_step"]
            entry["ratio_torchcfm_over_command"] = entry["torchcfm_ms_per_step"] / command_ms
    training["ot"]["assignment_alone_ms"] = time_ot_solvers(train, args.seed)
    report["training"] = training

    # Quality of the four trained models: held-out NLL, all evaluated by ffjord (rtol 1e-3).
    log("held-out NLL of the trained models")
    quality = {}
    for (side, coupling), model in trained.items():
        if side == "torchcfm":
            model = with_weights(dist0, from_torch_weights(torch_weights(model)))
        quality[f"{side}_{coupling}"] = held_out_nll(model, test)
    report["held_out_nll"] = quality

    # 2. Likelihood on ffjord's trained model (independent coupling), from a run directory.
    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory(prefix="fm-peers-") as tmp_name:
        tmp = Path(tmp_name)
        run_dir = tmp / "run"
        log("ffjord.fit into a run directory (the model the likelihood part uses)")
        ffjord.fit(
            train_key,
            dist0,
            train,
            objective=ffjord.FlowMatching(coupling="independent"),
            epochs=epochs,
            batch_size=BATCH,
            learning_rate=LR,
            run_dir=run_dir,
            show_progress=False,
        )
        model = ffjord.load(run_dir)
        weights = ffjord_weights(model)
        same_as_timed = max(
            float(np.max(np.abs(a - b)))
            for pair in zip(
                weights, ffjord_weights(trained[("ffjord", "independent")]), strict=True
            )
            for a, b in zip(*pair, strict=True)
        )
        field = torch_field()
        load_torch(field, to_torch_weights(weights))
        velocity_err = check_same_velocities(model, field)
        points_path, weights_path = tmp / "points.npy", tmp / "weights.npz"
        np.save(points_path, test)
        save_weights(weights_path, weights)

        log("float64 reference (subprocess)")
        ref_path = tmp / "reference.npz"
        worker = [sys.executable, __file__, "--worker", "reference"]
        worker += [str(weights_path), str(points_path), str(ref_path)]
        ref_wall = harness.run(worker).check().seconds
        ref = np.load(ref_path)
        reference = ref["dopri5"]

        likelihood: dict = {
            "model": "ffjord FlowMatching(coupling='independent'), trained by ffjord.fit",
            "max_param_diff_vs_timed_training": same_as_timed,
            "max_velocity_diff_ffjord_vs_torch": velocity_err,
            "reference": {
                "solver": f"dopri5 rtol {REF_RTOL} atol {REF_ATOL}, float64",
                "steps": int(ref["dopri5_steps"]),
                "check": f"dopri8 rtol {CHECK_RTOL} atol {CHECK_ATOL}, float64",
                "check_steps": int(ref["dopri8_steps"]),
                "max_abs_diff_dopri5_vs_dopri8": float(np.max(np.abs(reference - ref["dopri8"]))),
                "nll": float(-np.mean(reference)),
                "process_wall_s": ref_wall,
            },
        }

        log("ffjord likelihood: Trainer.log_prob (chunked) and one jax.jit(dist.log_prob) call")
        from ffjord._trainer import Trainer

        trainer = Trainer(model)
        med, runs, lp = timed_calls(lambda: trainer.log_prob(model, test), args.repeats)
        _, nfe = trainer.evaluate(model, test)
        likelihood["ffjord_chunked"] = {
            "how": f"Trainer(dist).log_prob: chunks of {trainer.eval_batch_size} on every core",
            **errors(lp, reference),
            "nfe_per_chunk": nfe,
            "seconds": med,
            "seconds_all": runs,
            "points_per_s": N_TEST / med,
        }
        chunked_lp = lp
        one_chunk = Trainer(model, eval_batch_size=N_TEST)
        med, runs, lp = timed_calls(lambda: one_chunk.log_prob(model, test), args.repeats)
        likelihood["ffjord_one_chunk"] = {
            "how": f"Trainer(dist, eval_batch_size={N_TEST}).log_prob: one chunk, one thread",
            **errors(lp, reference),
            "seconds": med,
            "seconds_all": runs,
            "points_per_s": N_TEST / med,
        }
        jit_log_prob = eqx.filter_jit(model.log_prob)  # jax.jit of a bound method of a Module
        test_j = jax.numpy.asarray(test)
        med, runs, lp = timed_calls(
            lambda: np.asarray(jax.block_until_ready(jit_log_prob(test_j))), args.repeats
        )
        _, stats = eqx.filter_jit(model.log_prob_with_stats)(test_j)
        likelihood["ffjord_jit"] = {
            "how": "eqx.filter_jit(dist.log_prob): one compiled call on all points",
            **errors(lp, reference),
            "nfe": int(stats.num_fn_evals),
            "seconds": med,
            "seconds_all": runs,
            "points_per_s": N_TEST / med,
        }

        peer, peer_lp = {}, {}
        points_t = torch.from_numpy(test)
        for threads in thread_settings:
            log(f"flow_matching likelihood, {threads} thread(s)")
            torch.set_num_threads(threads)
            field.calls = 0
            flow_matching_log_prob(field, points_t)
            nfe_peer = field.calls
            med, runs, lp = timed_calls(
                lambda: flow_matching_log_prob(field, points_t), args.repeats
            )
            peer_lp[threads] = lp
            peer[threads] = {
                "threads": threads,
                **errors(lp, reference),
                "nfe": nfe_peer,
                "seconds": med,
                "seconds_all": runs,
                "points_per_s": N_TEST / med,
            }
        best_peer = max(peer.values(), key=lambda r: r["points_per_s"])
        likelihood["flow_matching"] = {
            "how": "ODESolver.compute_likelihood(method='dopri5', exact_divergence=True), "
            "one call on all points",
            "best_threads": best_peer["threads"],
            "by_threads": peer,
            "points_per_s": best_peer["points_per_s"],
        }
        likelihood["ratio_points_per_s_chunked"] = (
            likelihood["ffjord_chunked"]["points_per_s"] / best_peer["points_per_s"]
        )
        likelihood["ratio_points_per_s_jit"] = (
            likelihood["ffjord_jit"]["points_per_s"] / best_peer["points_per_s"]
        )
        report["likelihood"] = likelihood

        # 3. Whole process.
        log("whole process: ffjord density (cold, then warm cache) and the peer's script")
        cache = tmp / "jax-cache"
        env = {**os.environ, "FFJORD_CACHE_DIR": str(cache)}
        env.pop("FFJORD_NO_CACHE", None)
        out_npy = tmp / "log_prob.npy"
        density = [*harness.ffjord(), "density", str(run_dir), "--points", str(points_path),
                   "-o", str(out_npy), "--force"]  # fmt: skip
        cold = harness.run(density, env=env).check().seconds
        cli_lp = np.load(out_npy)
        warm = [harness.run(density, env=env).check().seconds for _ in range(args.cli_repeats)]
        peer_out = tmp / "peer.npy"
        peer_cmd = [sys.executable, __file__, "--worker", "peer-density", str(weights_path)]
        peer_cmd += [str(points_path), str(peer_out), "--threads", str(best_peer["threads"])]
        peer_runs = [harness.run(peer_cmd).check().seconds for _ in range(args.cli_repeats)]
        report["whole_process"] = {
            "ffjord_command": "ffjord density RUN --points POINTS.npy -o OUT.npy",
            "ffjord_cold_cache_s": cold,
            "ffjord_warm_cache_s": statistics.median(warm),
            "ffjord_warm_cache_all_s": warm,
            "ffjord_cli_max_abs_diff_vs_trainer": float(np.max(np.abs(cli_lp - chunked_lp))),
            "peer_command": "python compare_flow_matching.py --worker peer-density ... "
            "(import torch + flow_matching, build, compute, save)",
            "peer_s": statistics.median(peer_runs),
            "peer_all_s": peer_runs,
            "peer_max_abs_diff_vs_in_process": float(
                np.max(np.abs(np.load(peer_out) - peer_lp[best_peer["threads"]]))
            ),
            "ratio_peer_over_ffjord_warm": statistics.median(peer_runs) / statistics.median(warm),
            "ratio_peer_over_ffjord_cold": statistics.median(peer_runs) / cold,
        }

    report["machine"]["loadavg_end"] = loadavg()
    report["total_wall_s"] = time.perf_counter() - started
    return report


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(report: dict) -> str:
    tr, lk, wp = report["training"], report["likelihood"], report["whole_process"]
    rows = [("", "peer", "ffjord", "ratio")]
    for coupling in ("independent", "ot"):
        entry = tr[coupling]
        threads = entry["torchcfm"]["best_threads"]
        rows.append(
            (
                f"train ms/step, {coupling} (torchcfm {threads} thr.; median)",
                f"{entry['torchcfm_ms_per_step']:.3f}",
                f"{entry['ffjord_ms_per_step']:.3f}",
                f"{entry['ratio_torchcfm_over_ffjord']:.1f}x",
            )
        )
        best_torch = entry["torchcfm"]["by_threads"][threads]
        rows.append(
            (
                f"  fastest epoch, {coupling}",
                f"{best_torch['ms_per_step_min']:.3f}",
                f"{entry['ffjord']['ms_per_step_min']:.3f}",
                f"{entry['ratio_fastest_epochs']:.1f}x",
            )
        )
        rows.append(
            (f"  ffjord compile, {coupling} (s)", "", f"{entry['ffjord']['compile_s']:.2f}", "")
        )
        rows.append(
            (
                f"  through `ffjord train`, {coupling} (seconds / steps, median)",
                f"{entry['torchcfm_ms_per_step']:.3f}",
                f"{entry['command']['ms_per_step']:.3f}",
                f"{entry['ratio_torchcfm_over_command']:.1f}x",
            )
        )
    ot_alone = tr["ot"]["assignment_alone_ms"]
    rows.append(
        (
            "  OT pairing alone, ms/batch (POT emd; SciPy LSA)",
            f"{ot_alone['torchcfm_pot_emd']:.3f}",
            f"{ot_alone['ffjord_scipy_lsa']:.3f}",
            "",
        )
    )
    nll = report["held_out_nll"]
    for coupling in ("independent", "ot"):
        rows.append(
            (
                f"held-out NLL after training, {coupling}",
                f"{nll[f'torchcfm_{coupling}']:.3f}",
                f"{nll[f'ffjord_{coupling}']:.3f}",
                "",
            )
        )
    fm = lk["flow_matching"]["by_threads"][lk["flow_matching"]["best_threads"]]
    for name, label in (("ffjord_chunked", "Trainer.log_prob"), ("ffjord_jit", "jit log_prob")):
        ours = lk[name]
        rows.append(
            (
                f"likelihood mean |err| ({label})",
                f"{fm['mean_abs_error']:.2e}",
                f"{ours['mean_abs_error']:.2e}",
                "",
            )
        )
        rows.append(
            (
                f"likelihood points/s ({label})",
                f"{fm['points_per_s']:,.0f}",
                f"{ours['points_per_s']:,.0f}",
                f"{ours['points_per_s'] / fm['points_per_s']:.1f}x",
            )
        )
    nfe_ours = f"{lk['ffjord_chunked']['nfe_per_chunk']:.0f}/chunk, {lk['ffjord_jit']['nfe']} jit"
    rows.append(("likelihood field evaluations", f"{fm['nfe']}", nfe_ours, ""))
    rows.append(
        (
            "whole process s (peer script; ffjord density, warm cache)",
            f"{wp['peer_s']:.2f}",
            f"{wp['ffjord_warm_cache_s']:.2f}",
            f"{wp['ratio_peer_over_ffjord_warm']:.1f}x",
        )
    )
    rows.append(
        (
            "whole process s (peer script; ffjord density, cold cache)",
            f"{wp['peer_s']:.2f}",
            f"{wp['ffjord_cold_cache_s']:.2f}",
            f"{wp['ratio_peer_over_ffjord_cold']:.1f}x",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)


def smoke_without_peers() -> int:
    """ffjord's side alone: both couplings for two epochs through `ffjord.fit`."""
    import jax

    import ffjord
    from ffjord.datasets import sample_toy

    harness.skip_peer("torch / torchcfm / flow_matching")
    train, test = sample_toy("moons", N_TRAIN, TRAIN_SEED), sample_toy("moons", 512, TEST_SEED)
    for coupling in ("independent", "ot"):
        _, history = ffjord.fit(
            jax.random.key(0),
            ffjord_model(jax.random.key(1)),
            train,
            test_data=test,
            objective=ffjord.FlowMatching(coupling=coupling),
            epochs=2,
            batch_size=BATCH,
            learning_rate=LR,
            test_every=2,
            show_progress=False,
        )
        ms = 1e3 * history[-1]["seconds"] / history[-1]["steps"]
        print(f"{coupling}: {ms:.3f} ms/step, held-out NLL {history[-1]['test_nll']:.3f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help=f"JSON report (default {DEFAULT_OUT}; with --quick {QUICK_OUT})")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 steps, 2 repeats")
    p.add_argument("--steps", type=int, default=2048, help="training steps (multiple of 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed likelihood calls (median)")
    p.add_argument("--cli-repeats", type=int, default=3, help="warm whole-process runs (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=("reference", "peer-density"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    harness.add_smoke(p)
    args = p.parse_args()
    if args.smoke and not harness.peer_available("torch", "torchcfm", "flow_matching"):
        return smoke_without_peers()
    if args.smoke:
        args.quick, args.out = True, str(harness.smoke_dir(__file__) / "fm.json")
    if args.worker == "reference":
        reference_worker(*args.paths)
        return 0
    if args.worker == "peer-density":
        peer_density_worker(*args.paths, threads=args.threads)
        return 0
    if args.quick:
        args.steps, args.repeats, args.cli_repeats = 256, 2, 1
    out = Path(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT))
    report = benchmark(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"total {report['total_wall_s']:.0f} s; report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
