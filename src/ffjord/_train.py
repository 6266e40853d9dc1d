"""The training engine behind `ffjord.fit` and `ffjord train`, and `fit_to_density`.

One loop for every objective: epochs of compiled steps, the exact held-out likelihood
after each, early stopping on a validation split, and (with `run_dir`) the run
directory: config, checkpoint, metrics and snapshots, written so that a killed run
resumes exactly where its last checkpoint left it.
"""

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from ._bijector import StandardizedContext
from ._checks import positive_int, positive_number
from ._distributed import Watchdog
from ._distributions import TransformedDistribution
from ._errors import InputError
from ._keys import key_bits
from ._objectives import AbstractObjective, MaximumLikelihood, ReverseKL
from ._options import WARM_START_DIR, TrainingOptions, WarmStart
from ._run import FORMAT_VERSION, RunDir, Snapshotter
from ._source import DataSource
from ._spec import describe
from ._trainer import Trainer, TrainState, check_data, check_progress
from ._version import __version__


@dataclasses.dataclass(frozen=True)
class Points:
    """Rows of points `(n, d)` and, for a conditional flow, their conditions `(n, k)`."""

    points: np.ndarray
    context: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def take(self, rows: np.ndarray) -> "Points":
        return Points(self.points[rows], None if self.context is None else self.context[rows])


@dataclasses.dataclass(frozen=True)
class Splits:
    """What one run trains on (`train`), chooses its best epoch on (`validation`) and
    reports its held-out likelihood on (`test`, never used to choose anything)."""

    train: Points
    validation: Points | None = None
    test: Points | None = None


@dataclasses.dataclass(frozen=True)
class RunTarget:
    """The run directory a training writes: `path`, whether to `resume` the run there,
    and (`ffjord train`) the `source` of its data and the settings `chosen_for_data`,
    recorded in `config.json` so that the run can be resumed, plotted and sampled."""

    path: Path
    resume: bool = False
    source: DataSource | None = None
    chosen_for_data: tuple[str, ...] = ()
    time_budget: dict[str, Any] | None = None  # what a time budget chose (`ffjord._budget`)


@dataclasses.dataclass
class Training:
    """What a finished training leaves (`ffjord.train`): the kept model `dist` (the best
    epoch's with `validation`, else the last's), the per-epoch `history` (the rows of
    `metrics.jsonl`), the `trainer` and its final `state`, the training `options` and
    the kept model's held-out NLL `test_nll` (None without test data).

    Example:
        >>> import os, tempfile, ffjord
        >>> run_dir = os.path.join(tempfile.mkdtemp(), "run")
        >>> done = ffjord.train(run_dir, data="circles", epochs=2, blocks=1, hidden=4,
        ...                     validation=0.1, show_progress=False)
        >>> done.options.validation, int(done.state.epoch), done.state.kept_epoch in (1, 2)
        (0.1, 2, True)
    """

    dist: TransformedDistribution
    history: list[dict]
    trainer: Trainer
    state: TrainState
    options: TrainingOptions
    test_nll: float | None = None  # the kept model's held-out NLL (with test data)


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


def _differences(saved: dict[str, Any], config: dict[str, Any]) -> InputError | None:
    """The first setting a resumed run would change (None: all the same). Settings the
    saved run does not record (made before them) are not compared."""
    config = json.loads(json.dumps(config))  # compare as stored
    ignored = {"ffjord_version", "format_version", "time_budget"}  # a budget's: measured
    pairs = [(k, saved[k], config.get(k)) for k in sorted(set(saved) - ignored)]
    training = saved.get("training", {})
    unrecorded = ("learning_rate", "schedule", "weight_decay", "optimizer")
    custom = training.get("optimizer") == "custom"  # a custom optimizer is not recorded
    pairs += [
        (k, v, config["training"].get(k))
        for k, v in training.items()
        if not (custom and k in unrecorded)
    ]
    for name, old, new in pairs:
        if name in ("training", "epochs") or old == new:
            continue
        if name == "model":
            what = "the model differs from the run's (config.json's model)"
        elif name == "train_sha256":
            what = "the training data differ from the run's"
        else:
            what = f"{name} {new!r} differs from the run's {old!r}"
        return InputError(
            f"{what}; a resumed run keeps its own settings (only epochs may change)",
            parameters=(name, "epochs"),
        )
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


def checked_points(dist: TransformedDistribution, data: Points, test: Points | None):
    """`(data, test)` as finite float arrays of the model's dimension, their conditions
    row-aligned and of the width the model takes; one-line errors otherwise."""
    train = check_data(data.points, "data", dist.dim)
    constant = np.flatnonzero(np.all(train == train[:1], axis=0)) if len(train) > 1 else []
    if len(constant):
        column = int(constant[0])
        raise InputError(
            f"data column {column} (counting from 0) has no spread: every row holds "
            f"{float(train[0, column]):g}, and a density cannot be fitted to a constant; "
            "drop the column"
        )
    ctx = None if data.context is None else check_data(data.context, "context", None, len(train))
    if test is not None:
        if (test.context is None) != (ctx is None):
            raise InputError(
                "give test_context exactly when the data have a context and test_data is given"
            )
        test_points = check_data(test.points, "test_data", dist.dim)
        test_ctx = None
        if ctx is not None:
            test_ctx = check_data(test.context, "test_context", ctx.shape[1], len(test_points))
        test = Points(test_points, test_ctx)
    check_context_width(dist, 0 if ctx is None else ctx.shape[1])
    return Points(train, ctx), test


def run_training(
    key: PRNGKeyArray,
    dist: TransformedDistribution,
    data: Points,
    *,
    test: Points | None = None,
    objective: AbstractObjective | None = None,
    options: TrainingOptions | None = None,
    warm_start: WarmStart | None = None,
    run: RunTarget | None = None,
    callback: Callable[[dict, TransformedDistribution], None] | None = None,
    show_progress: bool = True,
    after_warm_start: Callable[[float], tuple[TrainingOptions, dict[str, Any]]] | None = None,
) -> Training:
    """The engine behind `fit` and `ffjord train`: train `dist` on `data` under
    `objective` with `options`, after a `warm_start` stage if given, writing `run`.
    With a `deadline` in `options` (and in the warm start's), training stops before an
    epoch that would not end in time (its last record says `"stopped": "time budget"`).
    `after_warm_start` (a time budget's) is given how many times more field evaluations
    the warm-started flow's solves take than the untrained flow's, and returns the
    training options to use instead of `options` and the budget's record for `run`."""
    started = time.perf_counter()
    options = TrainingOptions() if options is None else options
    data, test = checked_points(dist, data, test)
    if data.context is not None:
        dist = with_context_map(dist, data.context)
    key_data = key_bits(key)
    splits = Splits(data, None, test)
    if options.validation > 0:
        rows, val_rows = _split(key_data, len(data), options.validation)
        if len(val_rows) == 0 or len(rows) == 0:
            raise InputError(
                f"validation={options.validation} leaves no validation or training points "
                f"out of {len(data)}",
                parameters=("validation",),
            )
        splits = Splits(data.take(rows), data.take(val_rows), test)
    objective = MaximumLikelihood() if objective is None else objective
    steps_per_epoch = max(len(splits.train) // options.batch_size, 1)
    trainer = Trainer(
        dist,
        objective=objective,
        batch_size=options.batch_size,
        optimizer=options.make_optimizer(steps_per_epoch),
        devices=options.devices,
    )
    if len(splits.train) < options.batch_size:
        raise InputError(
            f"the training set has {len(splits.train)} points, fewer than one batch of "
            f"{options.batch_size}; lower batch_size",
            parameters=("batch_size",),
        )
    state = trainer.init(key)
    history: list[dict] = []
    run_dir = None
    if run is not None:
        config = _run_config(trainer, splits, options, warm_start, run)
        run_dir, state, history = _open_run_dir(run, config, trainer, state, warm_start)
    if warm_start is not None and int(state.epoch) == 0:
        warm_run = None
        if run is not None:
            path = run.path / WARM_START_DIR
            warm_run = RunTarget(path, resume=(path / "config.json").exists())
        warmed = run_training(
            key,
            dist,
            data,
            objective=warm_start.objective,
            options=warm_start.options.replace(devices=options.devices),
            run=warm_run,
            show_progress=show_progress,
        )
        if after_warm_start is not None:
            options, record = after_warm_start(_solve_growth(trainer, dist, warmed.dist, splits))
            trainer = trainer.with_optimizer(options.make_optimizer(steps_per_epoch))
            state = trainer.init(key)
            if run_dir is not None and run is not None:
                run = dataclasses.replace(run, time_budget=record)
                run_dir.write_config(_run_config(trainer, splits, options, warm_start, run))
        state = trainer.start_from(state, warmed.dist)
    if not _finished(state, options):
        with Watchdog():
            state = _loop(
                trainer,
                state,
                splits,
                run_dir,
                history,
                options=options,
                callback=callback,
                show_progress=show_progress and jax.process_index() == 0,
                started=started,
            )
    kept = trainer.kept_model(state)
    test_nll = None
    if test is not None:
        best = state.kept_epoch
        test_nll = history[best - 1].get("test_nll") if 0 < best <= len(history) else None
        if test_nll is None:  # an epoch between `test_every`'s: measure the kept model now
            test_nll = float(-np.mean(trainer.log_prob(kept, test.points, test.context)))
    return Training(kept, history, trainer, state, options, test_nll)


def _solve_growth(
    trainer: Trainer, before: TransformedDistribution, after: TransformedDistribution, splits
) -> float:
    """How many times the field evaluations of an exact solve grew from the flow `before`
    to the flow `after` (the same rows, the same compiled evaluation): what a likelihood
    epoch's solves cost more once a warm start has trained the flow."""
    points = splits.validation if splits.validation is not None else splits.train
    rows = points.take(np.arange(min(len(points), GROWTH_ROWS)))
    nfe_before = trainer.evaluate(before, rows.points, rows.context)[1]
    nfe_after = trainer.evaluate(after, rows.points, rows.context)[1]
    return float(nfe_after / nfe_before)


GROWTH_ROWS = 1024  # rows whose solves measure the growth (a few tenths of a second)


def _run_config(
    trainer: Trainer,
    splits: Splits,
    options: TrainingOptions,
    warm_start: WarmStart | None,
    run: RunTarget,
) -> dict[str, Any]:
    """The run's `config.json` (format 3): one schema for `fit` and `ffjord train`."""
    train, val, test = splits.train, splits.validation, splits.test
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "ffjord_version": __version__,
        "made_by": "ffjord.fit" if run.source is None else "ffjord train",
        "data": None if run.source is None else run.source.to_config(),
        "model": describe(trainer.dist),
        "objective": trainer.objective.to_config(),
        "training": options.to_config(),
        "warm_start": None if warm_start is None else warm_start.to_config(),
        "dim": trainer.dist.dim,
        "context_dim": 0 if train.context is None else int(train.context.shape[1]),
        "sizes": {
            "train": len(train),
            "validation": 0 if val is None else len(val),
            "test": 0 if test is None else len(test),
        },
        "train_sha256": _digest(train.points, train.context),
    }
    if run.source is not None:
        config["chosen_for_data"] = list(run.chosen_for_data)
    if run.time_budget is not None:
        config["time_budget"] = run.time_budget
    if val is not None and trainer.objective.validation_metric != "nll":
        config["validation_metric"] = trainer.objective.validation_metric
    return config


def _open_run_dir(
    run: RunTarget,
    config: dict[str, Any],
    trainer: Trainer,
    state: TrainState,
    warm_start: WarmStart | None,
) -> tuple[RunDir | None, TrainState, list[dict]]:
    """(the run directory this process writes, or None; the state to start from; the
    history so far): a new run checked and created, or a run resumed from its checkpoint.
    Every input is checked before anything is written, so a refused call leaves no
    half-made directory and changes nothing in a run."""
    run_dir = RunDir(run.path)
    epochs = config["training"]["epochs"]
    saved = None
    if run.resume:
        saved = run_dir.require()
        problem = _differences(saved, config)
        if problem:
            raise problem
        if warm_start is None or run_dir.checkpoint.exists():  # else: stopped while warming
            state = run_dir.load_checkpoint(state)
        if epochs < int(state.epoch):
            raise InputError(
                f"epochs {epochs} is fewer than the {int(state.epoch)} this run has already "
                "trained; give a larger number",
                parameters=("epochs",),
            )
    else:
        if run_dir.path.exists() and not run_dir.path.is_dir():
            raise InputError(
                f"run_dir {run_dir.path} is an existing file; give a new directory",
                parameters=("run_dir",),
            )
        leftovers = set(run_dir.stale_temps())  # a killed first attempt's temporaries only
        if run_dir.path.is_dir() and any(p not in leftovers for p in run_dir.path.iterdir()):
            raise InputError(
                f"run_dir {run_dir.path} already holds files; use resume=True to continue that "
                "run or choose a new directory",
                parameters=("run_dir", "resume=True"),
            )
    history = run_dir.read_metrics(int(state.epoch))
    every_process_checked("run directory checked")
    if jax.process_index() > 0:  # one process writes
        return None, state, history
    if saved is None or saved["training"]["epochs"] != epochs or run_dir.upgraded:
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.write_config(config)
    run_dir.remove_stale_temps()
    run_dir.write_metrics(history)
    return run_dir, state, history


def _out_of_time(record: dict, deadline: float | None, final_test: float) -> bool:
    """Whether another epoch like the one `record` describes, then a final held-out
    evaluation taking `final_test` seconds, would end after `deadline`."""
    if deadline is None:
        return False
    per_epoch = record["seconds"] + record["eval_seconds"]
    return time.perf_counter() + per_epoch + final_test > deadline


def _finished(state: TrainState, options: TrainingOptions) -> bool:
    stopped = options.patience is not None and int(state.bad_epochs) >= options.patience
    return int(state.epoch) >= options.epochs or stopped


def _loop(
    trainer: Trainer,
    state: TrainState,
    splits: Splits,
    run: RunDir | None,
    history: list[dict],
    *,
    options: TrainingOptions,
    callback,
    show_progress: bool,
    started: float,
) -> TrainState:
    """Epochs until finished (or until the next would end after `options.deadline`):
    train, evaluate, keep the best, write the run directory."""
    deadline = options.deadline
    train, val, test = splits.train, splits.validation, splits.test
    snapshot = None
    if run is not None and trainer.dist.dim == 2 and train.context is None:
        snapshot = Snapshotter(run, trainer)
    start_state = state

    def meanwhile() -> None:  # compiles evaluation and snapshots on the other core
        if test is not None:
            trainer.evaluate(start_state, test.points, test.context)
        if val is not None:
            trainer.validation_loss(start_state, val.points, val.context)
        if snapshot is not None:
            if int(start_state.epoch) == 0:
                snapshot(0, start_state)
            else:
                snapshot.warm_up(start_state)

    warm_up = trainer.compile_epoch(state, train.points, train.context, meanwhile=meanwhile)
    steps_per_epoch = len(train) // trainer.batch_size
    from tqdm.auto import tqdm

    bar = tqdm(
        total=options.epochs,
        initial=int(state.epoch),
        desc="ffjord train" if run is not None else "training",
        unit="epoch",
        disable=not show_progress or None,
        file=sys.stderr,
    )
    final_test = 0.0  # seconds of the last held-out evaluation: the run's last one
    out_of_time = False
    try:
        while not out_of_time and not _finished(state, options):
            if snapshot is not None:  # the epoch's timed `seconds` get the cores to themselves
                snapshot.wait()
            new_state, record = trainer.run_epoch(state, train.points, train.context)
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
                loss, record["eval_nfe"] = trainer.validation_loss(state, val.points, val.context)
                record[f"validation_{trainer.objective.validation_metric}"] = loss
                state = state.record_validation(loss)
                record["best_epoch"] = int(state.best_epoch)
            epoch = int(state.epoch)
            timed = deadline is None or final_test > 0  # with a deadline: measured at once
            due = epoch % options.test_every == 0 or _finished(state, options) or not timed
            if test is not None and due:
                test_start = time.perf_counter()
                lp, record["eval_nfe"] = trainer.evaluate(state, test.points, test.context)
                record["test_nll"] = float(-np.mean(lp))
                final_test = time.perf_counter() - test_start
            record["eval_seconds"] = time.perf_counter() - eval_start
            if not _finished(state, options) and _out_of_time(record, deadline, final_test):
                out_of_time = True
                record["stopped"] = "time budget"
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
    time_budget: float | None = None,
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
    - `time_budget`: seconds from this call; training stops before an epoch that would
      not end in time (its record says `"stopped": "time budget"`; the epochs are not
      rescaled: `ffjord.train(time_budget=)` also plans them).

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
    deadline = None
    if time_budget is not None:
        deadline = time.perf_counter() + positive_number(time_budget, "time_budget")
    options = TrainingOptions(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        validation=validation,
        patience=patience,
        test_every=test_every,
        devices=devices,
        deadline=deadline,
    )
    if resume and run_dir is None:
        raise InputError(
            "resume=True continues a run directory: give run_dir",
            parameters=("resume=True", "run_dir"),
        )
    if test_data is None and test_context is not None:
        raise InputError(
            "give test_context exactly when the data have a context and test_data is given"
        )
    result = run_training(
        key,
        dist,
        Points(data, context),
        test=None if test_data is None else Points(test_data, test_context),
        objective=objective,
        options=options,
        run=None if run_dir is None else RunTarget(Path(run_dir), resume=resume),
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
    steps = positive_int(steps, "steps")
    num_samples = positive_int(num_samples, "num_samples")
    steps_per_record = positive_int(steps_per_record, "steps_per_record")
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
    options = TrainingOptions(learning_rate=learning_rate, optimizer=optimizer)
    trainer = Trainer(
        dist,
        objective=ReverseKL(log_density, num_samples),
        optimizer=options.make_optimizer(steps),
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
