"""The training engine behind `ffjord.fit` and `ffjord train`, and `fit_to_density`.

One loop for every objective: epochs of compiled steps, the exact held-out likelihood
after each, early stopping on a validation split, and (with `run_dir`) the run
directory: config, checkpoint, metrics and snapshots, written so that a killed run
resumes exactly where its last checkpoint left it.
"""

import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from ._bijector import StandardizedContext
from ._distributed import Watchdog
from ._distributions import TransformedDistribution
from ._errors import InputError
from ._keys import key_bits
from ._objectives import AbstractObjective, ReverseKL
from ._run import FORMAT_VERSION, RunDir, Snapshotter
from ._spec import describe
from ._trainer import Trainer, TrainState, check_data, check_progress, resolve_devices
from ._version import __version__


@dataclasses.dataclass(frozen=True)
class Names:
    """How options are called in error messages (Python keywords or command-line flags)."""

    run_dir: str = "run_dir"
    resume: str = "resume=True"
    epochs: str = "epochs"
    batch_size: str = "batch_size"
    validation: str = "validation"
    patience: str = "patience"
    devices: str = "devices"
    test_every: str = "test_every"


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """A first stage of training under another objective (flow matching), from which the
    run's own objective starts: `epochs` of `objective` in batches of `batch_size` with
    `optimizer`, on the run's training rows, validation split and patience. With a run
    directory it is written to `RUN/warm-start` (a run directory of its own, resumed
    like the run); the run's first epoch starts from its kept model.

    Flow matching needs no ODE solve, so it finds the modes of a posterior in a fraction of
    likelihood training's time; likelihood training then sharpens the density
    (docs/DEFAULTS.md).
    """

    epochs: int
    objective: AbstractObjective
    optimizer: optax.GradientTransformation
    batch_size: int = 64

    def to_config(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size,
                "loss": self.objective.to_config()}  # fmt: skip


WARM_START_DIR = "warm-start"  # the warm start's run directory inside the run's


@dataclasses.dataclass
class Training:
    """What a finished (or stopped) training leaves: the model, its history and state."""

    dist: TransformedDistribution
    history: list[dict]
    trainer: Trainer
    state: TrainState
    test_nll: float | None = None  # the kept model's held-out NLL (with test data)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_validation(validation: Any, patience: Any, names: Names) -> tuple[float, int | None]:
    """`(validation, patience)` checked: a fraction in [0, 1) and `None` or a positive
    integer that needs a validation split; one-line `InputError`s naming `names`'s options."""
    ok = isinstance(validation, int | float) and not isinstance(validation, bool)
    if not ok or not math.isfinite(validation) or not 0 <= validation < 1:
        raise InputError(f"{names.validation} must be a fraction in [0, 1), got {validation!r}")
    if patience is not None:
        patience = _positive_int(patience, names.patience)
        if validation == 0:
            raise InputError(
                f"{names.patience} needs a validation split to watch: give {names.validation} "
                "> 0 (e.g. 0.1)"
            )
    return float(validation), patience


def fit_size(n: int, validation: float) -> int:
    """How many of `n` training rows are fitted when `validation` of them are held out."""
    return n - int(round(validation * n))


def _split(key_data, n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): a fixed split of `n` rows from the key."""
    seed = np.random.SeedSequence([*np.asarray(key_data).ravel().tolist(), 0x5EED])
    order = np.argsort(np.random.PCG64(seed).random_raw(n), kind="stable")
    n_fit = fit_size(n, fraction)
    return np.sort(order[:n_fit]), np.sort(order[n_fit:])


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _differences(saved: dict[str, Any], config: dict[str, Any], names: Names) -> str | None:
    """The first setting a resumed run would change, as a message (None: all the same)."""
    ignored = {"epochs", "ffjord_version"}
    config = json.loads(json.dumps(config))  # compare as stored
    for name in sorted((set(saved) | set(config)) - ignored):
        if saved.get(name) != config.get(name):
            if name == "model":
                what = "the model differs from the run's (config.json's model)"
            elif name == "train_sha256":
                what = "the training data differ from the run's"
            else:
                what = f"{name} {config.get(name)!r} differs from the run's {saved.get(name)!r}"
            return f"{what}; a resumed run keeps its own settings (only {names.epochs} may change)"
    return None


def every_process_checked(name: str) -> None:
    """A barrier: with several processes, none goes on (to write) before all have checked."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_context_width(dist: TransformedDistribution, width: int) -> None:
    """One-line errors when conditions of `width` columns (0: none) do not suit `dist`."""
    takes = dist.bijector.context_dim
    if takes is None or takes == width:
        return
    if width == 0:
        raise InputError(
            f"the model is conditional (its fields take {takes}-dimensional contexts): "
            "give context=, one condition per data row"
        )
    if takes == 0:
        raise InputError(
            f"context has {width} columns but the model is unconditional; build its fields "
            f"with context_dim={width}"
        )
    raise InputError(f"context has {width} columns but the model's fields take {takes}")


def with_context_map(dist: TransformedDistribution, context: np.ndarray) -> TransformedDistribution:
    """`dist` whose bijector standardises its conditions with the mean and standard
    deviation of `context` (a constant column keeps scale 1), unless it already has a
    `StandardizedContext`."""
    is_map = lambda node: isinstance(node, StandardizedContext)  # noqa: E731
    if any(is_map(node) for node in jax.tree.leaves(dist.bijector, is_leaf=is_map)):
        return dist
    std = context.std(axis=0)
    std = np.where(std > 0, std, 1.0).astype(context.dtype)
    wrapped = StandardizedContext(dist.bijector, context.mean(axis=0).astype(context.dtype), std)
    return eqx.tree_at(lambda d: d.bijector, dist, wrapped)


def run_training(
    key: PRNGKeyArray,
    dist: TransformedDistribution,
    data,
    *,
    context=None,
    test_data=None,
    test_context=None,
    objective: AbstractObjective | None = None,
    epochs: int = 40,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    validation: float = 0.0,
    patience: int | None = None,
    test_every: int = 1,
    run_dir=None,
    resume: bool = False,
    devices: Any = None,
    callback: Callable[[dict, TransformedDistribution], None] | None = None,
    show_progress: bool = True,
    settings: dict[str, Any] | None = None,
    names: Names = Names(),
    started: float | None = None,
    warm_start: WarmStart | None = None,
) -> Training:
    """The engine: `fit`'s arguments, plus what the command line adds (`settings` written
    to `config.json`, option `names` for messages, the process' `started` time, a
    `warm_start` stage before the objective)."""
    started = time.perf_counter() if started is None else started
    epochs = _positive_int(epochs, names.epochs)
    test_every = _positive_int(test_every, names.test_every)
    validation, patience = check_validation(validation, patience, names)
    devices = resolve_devices(devices, batch_size, names.devices)
    if resume and run_dir is None:
        raise InputError(f"{names.resume} continues a run directory: give {names.run_dir}")
    train = check_data(data, "data", dist.dim)
    ctx = None if context is None else check_data(context, "context", None, len(train))
    test = None if test_data is None else check_data(test_data, "test_data", dist.dim)
    test_ctx = None
    if (test_context is None) != (context is None or test is None):
        raise InputError(
            "give test_context exactly when the data have a context and test_data is given"
        )
    if test is not None and test_context is not None:
        test_ctx = check_data(test_context, "test_context", ctx.shape[1], len(test))  # type: ignore[union-attr]
    check_context_width(dist, 0 if ctx is None else ctx.shape[1])
    if ctx is not None:
        dist = with_context_map(dist, ctx)
    key_data = key_bits(key)
    all_rows, all_ctx = train, ctx  # a warm start splits them the same way
    val = val_ctx = None
    if validation > 0:
        rows, val_rows = _split(key_data, len(train), validation)
        if len(val_rows) == 0 or len(rows) == 0:
            raise InputError(
                f"{names.validation}={validation} leaves no validation or training points "
                f"out of {len(train)}"
            )
        val = train[val_rows]
        val_ctx = None if ctx is None else ctx[val_rows]
        train = train[rows]
        ctx = None if ctx is None else ctx[rows]
    trainer = Trainer(
        dist,
        objective=objective,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        devices=devices,
    )
    if train.shape[0] < batch_size:
        raise InputError(
            f"the training set has {train.shape[0]} points, fewer than one batch of "
            f"{batch_size}; lower {names.batch_size}"
        )
    state = trainer.init(key)
    history: list[dict] = []
    run = None
    if run_dir is not None:
        run = RunDir(run_dir)
        config = {
            "format_version": FORMAT_VERSION,
            "ffjord_version": __version__,
            **(settings or {}),  # the command line's own settings; the engine's follow
            "model": describe(dist),
            "loss": trainer.objective.to_config(),
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "adam" if optimizer is None else "custom",
            "learning_rate": float(learning_rate) if optimizer is None else None,
            "validation": validation,
            "patience": patience,
            "dim": dist.dim,
            "context_dim": 0 if ctx is None else int(ctx.shape[1]),
            "sizes": {
                "train": int(train.shape[0]),
                "validation": 0 if val is None else int(val.shape[0]),
                "test": 0 if test is None else int(test.shape[0]),
            },
            "train_sha256": _digest(train, ctx),
        }
        if warm_start is not None:
            config["warm_start_stage"] = warm_start.to_config()
        if val is not None and trainer.objective.validation_metric != "nll":
            config["validation_metric"] = trainer.objective.validation_metric  # runs before: nll
        saved = None
        if resume:
            saved = run.require()
            problem = _differences(saved, config, names)
            if problem:
                raise InputError(problem)
            if warm_start is None or run.checkpoint.exists():  # else: stopped while warming
                state = run.load_checkpoint(state)
            if epochs < int(state.epoch):
                raise InputError(
                    f"{names.epochs} {epochs} is fewer than the {int(state.epoch)} epochs this "
                    "run has already trained; give a larger number"
                )
        else:
            if run.path.exists() and not run.path.is_dir():
                raise InputError(
                    f"{names.run_dir} {run.path} is an existing file; give a new directory"
                )
            leftovers = set(run.stale_temps())  # a killed first attempt's temporaries only
            if run.path.is_dir() and any(p not in leftovers for p in run.path.iterdir()):
                raise InputError(
                    f"{names.run_dir} {run.path} already holds files; use {names.resume} to "
                    "continue that run or choose a new directory"
                )
        # Every input is checked: only now create the run or record a new epoch count, so
        # a refused call leaves no half-made directory and changes nothing in a run.
        history = run.read_metrics(int(state.epoch))
        every_process_checked("run directory checked")
        if jax.process_index() == 0:  # the one process that writes
            if saved is None or saved.get("epochs") != epochs:
                run.path.mkdir(parents=True, exist_ok=True)
                run.write_config(config)
            run.remove_stale_temps()
            run.write_metrics(history)
        else:
            run = None

    def finished(state: TrainState) -> bool:
        stopped = patience is not None and int(state.bad_epochs) >= patience
        return int(state.epoch) >= epochs or stopped

    if warm_start is not None and int(state.epoch) == 0:
        warm_dir = None if run_dir is None else RunDir(run_dir).path / WARM_START_DIR
        warmed = run_training(
            key, dist, all_rows, context=all_ctx,
            objective=warm_start.objective, epochs=warm_start.epochs,
            batch_size=warm_start.batch_size, optimizer=warm_start.optimizer,
            validation=validation, patience=patience, run_dir=warm_dir,
            resume=warm_dir is not None and RunDir(warm_dir).config.exists(),
            devices=devices, show_progress=show_progress, names=names, started=started,
        )  # fmt: skip
        state = trainer.start_from(state, warmed.dist)

    if not finished(state):
        with Watchdog():
            state = _loop(
                trainer, state, train, ctx, test, test_ctx, val, val_ctx, run, history,
                epochs=epochs, test_every=test_every, callback=callback,
                show_progress=show_progress and
                jax.process_index() == 0, started=started, finished=finished,
            )  # fmt: skip
    kept = trainer.kept_model(state)
    test_nll = None
    if test is not None:
        best = state.kept_epoch
        test_nll = history[best - 1].get("test_nll") if 0 < best <= len(history) else None
        if test_nll is None:  # an epoch between `test_every`'s: measure the kept model now
            test_nll = float(-np.mean(trainer.log_prob(kept, test, test_ctx)))
    return Training(kept, history, trainer, state, test_nll)


def _loop(
    trainer: Trainer,
    state: TrainState,
    train, ctx, test, test_ctx, val, val_ctx,
    run: RunDir | None,
    history: list[dict],
    *,
    epochs: int,
    test_every: int,
    callback,
    show_progress: bool,
    started: float,
    finished: Callable[[TrainState], bool],
) -> TrainState:  # fmt: skip
    """Epochs until `finished`: train, evaluate, keep the best, write the run directory."""
    snapshot = None
    if run is not None and trainer.dist.dim == 2 and ctx is None:
        snapshot = Snapshotter(run, trainer)
    start_state = state

    def meanwhile() -> None:  # compiles evaluation and snapshots on the other core
        if test is not None:
            trainer.evaluate(start_state, test, test_ctx)
        if val is not None:
            trainer.validation_loss(start_state, val, val_ctx)
        if snapshot is not None:
            if int(start_state.epoch) == 0:
                snapshot(0, start_state)
            else:
                snapshot.warm_up(start_state)

    warm_up = trainer.compile_epoch(state, train, ctx, meanwhile=meanwhile)
    steps_per_epoch = train.shape[0] // trainer.batch_size
    from tqdm.auto import tqdm

    bar = tqdm(
        total=epochs,
        initial=int(state.epoch),
        desc="ffjord train" if run is not None else "training",
        unit="epoch",
        disable=not show_progress or None,
        file=sys.stderr,
    )
    try:
        while not finished(state):
            if snapshot is not None:  # the epoch's timed `seconds` get the cores to themselves
                snapshot.wait()
            new_state, record = trainer.run_epoch(state, train, ctx)
            if warm_up is not None:  # evaluation and snapshots compiled meanwhile
                warm_up.join()
                warm_up = None
                if snapshot is not None and not run.snapshot_path(0).exists():  # type: ignore[union-attr]
                    snapshot(0, start_state)  # the warm-up failed: retry where errors show
            check_progress(record, steps_per_epoch)
            state = new_state
            if snapshot is not None:  # drawn on the other core while this epoch is evaluated
                snapshot.submit(int(state.epoch), state)
            eval_start = time.perf_counter()
            record["test_nll"] = record["eval_nfe"] = None
            if val is not None:
                loss, record["eval_nfe"] = trainer.validation_loss(state, val, val_ctx)
                record[f"validation_{trainer.objective.validation_metric}"] = loss
                state = state.record_validation(loss)
                record["best_epoch"] = int(state.best_epoch)
            if test is not None and (int(state.epoch) % test_every == 0 or finished(state)):
                lp, record["eval_nfe"] = trainer.evaluate(state, test, test_ctx)
                record["test_nll"] = float(-np.mean(lp))
            record["eval_seconds"] = time.perf_counter() - eval_start
            record["wall_seconds"] = time.perf_counter() - started
            if run is not None:
                run.append_metrics(record)  # metrics first, then the checkpoint: see _run.py
                run.save_checkpoint(state)
            history.append(record)
            postfix = {"loss": f"{record['train_loss']:.3f}", "nfe": f"{record['nfe']:.0f}"}
            for name in ("test_nll", "validation_nll"):
                if record.get(name) is not None:
                    postfix[name] = f"{record[name]:.3f}"
            bar.set_postfix(postfix)
            bar.update()
            if callback is not None:
                callback(record, trainer.model(state))
    finally:
        bar.close()
        if snapshot is not None:
            snapshot.wait()  # a failed snapshot (e.g. a full disk) is reported here
    return state


def fit(
    key: PRNGKeyArray,
    dist: TransformedDistribution,
    data,
    *,
    context=None,
    test_data=None,
    test_context=None,
    objective: AbstractObjective | None = None,
    epochs: int = 40,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    validation: float = 0.0,
    patience: int | None = None,
    test_every: int = 1,
    run_dir=None,
    resume: bool = False,
    devices: Any = None,
    callback: Callable[[dict, TransformedDistribution], None] | None = None,
    show_progress: bool = True,
) -> tuple[TransformedDistribution, list[dict]]:
    """Fit `dist` to `data` (n, d) under `objective` (default: maximum likelihood).

    Every epoch shuffles the data (with `key`), drops the last partial batch so shapes
    stay static, and runs all its steps inside one compiled `lax.scan`. A step whose
    loss or gradient is not finite, or whose ODE solve fails, is rejected (the state
    stays at the last good one); if most of an epoch is rejected, `TrainingDiverged`
    is raised. After each epoch the exact held-out NLL of `test_data` is measured
    (see `test_every`) and the record (`epoch`, `train_loss`, `test_nll`, `seconds`,
    `steps`, `nfe`, `eval_nfe`, ...) is passed to `callback(record, dist)`.

    - `objective`: `ffjord.MaximumLikelihood(kinetic=, jacobian_frobenius=)` or
      `ffjord.FlowMatching(coupling=, sigma=)`.
    - `validation`: a fraction of `data` held out (a fixed split from `key`) to choose
      the best epoch, whose parameters are returned; `patience` stops after that many
      epochs without a better validation loss (the exact NLL; flow matching's own loss,
      with the same draws every epoch, under `FlowMatching`). `test_data` never
      chooses anything.
    - `test_every`: measure the held-out NLL of `test_data` every that many epochs (and
      after the last one) rather than after each: under flow matching an epoch costs
      far less than an exact evaluation. Records in between hold `test_nll=None`.
    - `run_dir`: write the run directory `ffjord train` writes (config, checkpoint,
      metrics, snapshots); `resume=True` continues it from its checkpoint, with the
      same numbers as an uninterrupted run. `ffjord.load(run_dir)` gives the model.
    - `context`: conditions `(n, k)` row-aligned with `data` (conditional flows; give
      `test_context` with `test_data`). They are standardised with their mean and
      standard deviation by a fixed `StandardizedContext` that becomes part of the
      returned model (unless `dist` has one already), so `log_prob(y, context=c)` and
      `sample(key, (n,), context=c)` take raw conditions.
    - `devices`: data parallelism: an integer N (the first N of `jax.devices()`) or a
      list of devices. Every batch is split over them (`batch_size` a multiple of N),
      parameters are replicated and XLA sums the gradients; the losses are one
      device's up to floating-point rounding.

    Only the bijector's arrays are trained (the base and `Affine` maps stay fixed).

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> data = np.random.default_rng(0).standard_normal((64, 2), dtype=np.float32)
        >>> dist, history = ffjord.fit(jax.random.key(0), dist, data, epochs=1, batch_size=32,
        ...                            objective=ffjord.FlowMatching(), show_progress=False)
        >>> record = history[-1]
        >>> len(history), record["epoch"], record["steps"]  # one epoch of 64 // 32 steps
        (1, 1, 2)
    """
    result = run_training(
        key,
        dist,
        data,
        context=context,
        test_data=test_data,
        test_context=test_context,
        objective=objective,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        validation=validation,
        patience=patience,
        test_every=test_every,
        run_dir=run_dir,
        resume=resume,
        devices=devices,
        callback=callback,
        show_progress=show_progress,
    )
    return result.dist, result.history


def fit_to_density(
    key: PRNGKeyArray,
    dist: TransformedDistribution,
    log_density: Callable,
    *,
    steps: int = 2000,
    num_samples: int = 256,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    context=None,
    steps_per_record: int = 100,
    callback: Callable[[dict, TransformedDistribution], None] | None = None,
    show_progress: bool = True,
) -> tuple[TransformedDistribution, list[dict]]:
    """Fit `dist` to an unnormalised density by minimising the reverse KL divergence.

    Each step draws `num_samples` points from the model with their log-densities (one
    forward solve) and minimises `mean(log q(y) - log_density(y))`, which is
    `KL(q || p)` up to the unknown log-normaliser. `log_density` maps points `(n, d)`
    to `(n,)` (with `context`, one condition of shape `(k,)`: `log_density(y, context)`).
    Steps run `steps_per_record` at a time in one compiled scan; a non-finite step is
    rejected as in `fit`, and `TrainingDiverged` is raised when most of a record's
    steps are. Each record: `step`, `loss` (mean over its steps), `nfe`,
    `rejected_steps`, `seconds`.

    Example:
        >>> import diffrax, jax, jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> flow = ffjord.FFJORD(field, solver=diffrax.Euler(),  # fixed steps: quick to compile
        ...                      stepsize_controller=diffrax.ConstantStepSize(), dt0=0.5)
        >>> dist = ffjord.TransformedDistribution(base, flow)
        >>> log_p = lambda y: -0.5 * jnp.sum((y - 1.0) ** 2, axis=-1)
        >>> dist, history = ffjord.fit_to_density(jax.random.key(0), dist, log_p, steps=4,
        ...                                       num_samples=16, show_progress=False)
        >>> last = history[-1]
        >>> len(history), last["step"], bool(jnp.isfinite(last["loss"]))
        (1, 4, True)
    """
    steps = _positive_int(steps, "steps")
    num_samples = _positive_int(num_samples, "num_samples")
    steps_per_record = _positive_int(steps_per_record, "steps_per_record")
    if not callable(log_density):
        raise InputError(f"log_density must be a function of points (n, d), got {log_density!r}")
    context_arr = None
    if context is not None:
        context_arr = np.asarray(context)
        if context_arr.ndim != 1:
            raise InputError(
                f"context must be one condition of shape (k,), got {context_arr.shape}"
            )
    check_context_width(dist, 0 if context_arr is None else context_arr.shape[0])
    trainer = Trainer(
        dist,
        objective=ReverseKL(log_density, num_samples),
        optimizer=optimizer,
        learning_rate=learning_rate,
    )
    state = trainer.init(key)
    history: list[dict] = []
    from tqdm.auto import tqdm

    done = 0
    with tqdm(
        total=steps, desc="fit_to_density", unit="step", disable=not show_progress or None
    ) as bar:
        while done < steps:
            n = min(steps_per_record, steps - done)
            new_state, record = trainer.run_steps(state, n, context_arr)
            check_progress(record, n)
            state = new_state
            done += n
            entry = {
                "step": done,
                "loss": record["train_loss"],
                "nfe": record["nfe"],
                "rejected_steps": record["rejected_steps"],
                "seconds": record["seconds"],
            }
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", nfe=f"{entry['nfe']:.0f}")
            bar.update(n)
            if callback is not None:
                callback(entry, trainer.model(state))
    return trainer.model(state), history
