"""The compiled pieces of training: the jitted epoch under an objective, and exact evaluation."""

import contextlib
import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from ._bijector import AbstractBijector, StepsFollow
from ._checks import positive_int
from ._chunks import map_chunks
from ._distributions import TransformedDistribution
from ._errors import InputError
from ._keys import as_typed_key, key_bits
from ._objectives import AbstractObjective, MaximumLikelihood
from ._trace import AbstractTrace, ExactTrace
from ._vector_field import AbstractVectorField


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite losses or failed solves; the message says what to try.

    Example:
        >>> import ffjord
        >>> issubclass(ffjord.TrainingDiverged, RuntimeError)
        True
    """


class TrainState(eqx.Module):
    """Everything needed to continue training exactly where it stopped.

    `params` are the trainable arrays of the flow, `opt_state` the optimiser's state,
    `epoch` the number of finished epochs and `key` the raw data of the key that
    fixes every epoch's shuffle and every step's randomness. Early stopping keeps
    `best_params` (those of `best_epoch`, with validation loss `best_loss`: the NLL, or
    the objective's own loss, `Trainer.validation_loss`) and counts `bad_epochs` since
    the best one.
    """

    params: Any
    epoch: Array
    key: Array
    best_params: Any
    best_loss: Array
    best_epoch: Array
    bad_epochs: Array
    opt_state: Any  # last: a reader of the model alone stops before it (`ffjord.load`)

    def record_validation(self, loss: float) -> "TrainState":
        """The state after an epoch whose validation loss is `loss`."""
        if loss < float(self.best_loss):
            return eqx.tree_at(
                lambda s: (s.best_params, s.best_loss, s.best_epoch, s.bad_epochs),
                self,
                (self.params, jnp.asarray(loss, self.best_loss.dtype), self.epoch, 0 * self.epoch),
            )
        return eqx.tree_at(lambda s: s.bad_epochs, self, self.bad_epochs + 1)

    @property
    def kept_epoch(self) -> int:
        """The epoch whose parameters the run keeps: the best one when a validation split
        chose one, else the last."""
        return int(self.best_epoch) if int(self.best_epoch) > 0 else int(self.epoch)


def trainable(dist: TransformedDistribution) -> Any:
    """The filter of trainable leaves: the bijector's float arrays, except those of the
    parts that declare themselves fixed (`AbstractBijector.frozen`, e.g. `Affine`)."""

    def is_frozen(node) -> bool:
        return isinstance(node, AbstractBijector) and node.frozen

    spec = jax.tree.map(lambda _: False, dist)
    bij_spec = jax.tree.map(
        lambda node: False if is_frozen(node) else eqx.is_inexact_array(node),
        dist.bijector,
        is_leaf=is_frozen,
    )
    return eqx.tree_at(lambda d: d.bijector, spec, bij_spec)


def for_inference(tree: Any) -> Any:
    """`tree` with every vector field ([`ffjord.AbstractVectorField`][]) in its fastest
    form for evaluation without derivatives (its `for_inference()`, e.g. `MLPField`'s
    unit-by-unit form); values agree to rounding.

    Example:
        >>> import equinox as eqx, jax, jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> fast = ffjord.for_inference(dist)
        >>> fast.bijector.field.unit_by_unit
        True
        >>> points = jnp.ones((5, 2))
        >>> eqx.filter_jit(fast.log_prob)(points).shape  # about 2x faster for the tutorial's model
        (5,)
    """

    def is_field(node) -> bool:
        return isinstance(node, AbstractVectorField)

    return jax.tree.map(
        lambda node: node.for_inference() if is_field(node) else node, tree, is_leaf=is_field
    )


def exact_trace(dist: TransformedDistribution) -> TransformedDistribution:
    """The same model with every stochastic trace replaced by the exact one."""
    return jax.tree.map(
        lambda node: ExactTrace() if isinstance(node, AbstractTrace) else node,
        dist,
        is_leaf=lambda node: isinstance(node, AbstractTrace),
    )


def check_data(data, name: str, dim: int | None, rows: int | None = None) -> np.ndarray:
    """`data` as a finite float array of shape (n, dim), or a one-line `InputError`.

    `dim=None` accepts any width; `rows` requires that many rows (a context aligned
    with its data).
    """
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[0] == 0:
        shape = f"(n, {dim})" if dim is not None else "(n, k)"
        raise InputError(f"{name} must be a non-empty array of shape {shape}, got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{name} has dimension {arr.shape[1]} but the model is {dim}-dimensional")
    if rows is not None and arr.shape[0] != rows:
        raise InputError(f"{name} has {arr.shape[0]} rows but its data has {rows}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise InputError(f"{name} has {bad} rows with NaN or inf; remove them first")
    if arr.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise InputError(
            f"{name} is float64 but JAX is in 32-bit mode; cast it to float32 explicitly or "
            'enable float64 with jax.config.update("jax_enable_x64", True)'
        )
    return arr


def resolve_devices(devices: Any, batch_size: int, name: str = "devices") -> list[Any] | None:
    """The devices a batch is split over: None (one device, no mesh) for ``None`` or 1, the
    first N of ``jax.devices()`` for an integer N, or the given devices; one-line errors
    for anything else, or for a batch that does not split evenly.

    Example:
        >>> resolve_devices(None, 256) is None
        True
    """
    available = jax.devices()  # with several processes: all of theirs
    if devices is None:
        if jax.process_count() == 1:
            return None
        devices = len(available)
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if devices < 1:
            raise InputError(f"{name} must be at least 1, got {devices}", parameters=(name,))
        if devices > len(available):
            platform = available[0].platform
            hint = (
                f"; start with XLA_FLAGS=--xla_force_host_platform_device_count={devices} "
                "for that many CPU devices"
                if platform == "cpu"
                else ""
            )
            raise InputError(
                f"{name} {devices}: JAX sees only {len(available)} {platform} device(s){hint}",
                parameters=(name,),
            )
        chosen = available[: int(devices)]
    elif (
        isinstance(devices, list | tuple)
        and devices
        and all(isinstance(d, jax.Device) for d in devices)
    ):
        chosen = list(devices)
        if len({d.id for d in chosen}) != len(chosen):
            raise InputError(f"{name} lists a device more than once", parameters=(name,))
    else:
        raise InputError(
            f"{name} must be a positive integer or a list of jax devices, got {devices!r}",
            parameters=(name,),
        )
    if len(chosen) == 1:
        return None if chosen[0] == available[0] else chosen
    if batch_size % len(chosen):
        raise InputError(
            f"a batch of {batch_size} does not split evenly over {len(chosen)} devices; "
            f"give a batch size that is a multiple of {len(chosen)}"
        )
    return chosen


def local_copy(tree: Any) -> Any:
    """Replicated arrays as this process' copy on its first device: what evaluation,
    sampling and checkpoints use (they run on one process' devices)."""

    def local(leaf):
        if isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(local, tree)


class Trainer:
    """The compiled pieces of training a `TransformedDistribution` under an objective.

    `ffjord.fit` (and so `ffjord train`) drives a `Trainer` epoch by epoch. An epoch
    is one compiled `lax.scan` over its shuffled full batches (static shapes: epochs
    after the first reuse the program); evaluation is the exact log-likelihood in
    fixed-size chunks.

    With `devices` (several), every batch is split over them along a one-axis mesh
    (`jax.sharding.NamedSharding`, an `AxisType.Auto` axis) and the parameters and
    optimiser state are replicated: XLA partitions the compiled epoch and sums the
    gradients across devices. The ODE solves of a batch share their adaptive steps, so
    the numbers are one device's up to the order of floating-point sums.
    """

    def __init__(
        self,
        dist: TransformedDistribution,
        *,
        objective: AbstractObjective | None = None,
        batch_size: int = 256,
        optimizer: optax.GradientTransformation | None = None,
        eval_batch_size: int = 1024,
        devices: Any = None,
    ):
        batch_size = positive_int(batch_size, "batch_size")
        eval_batch_size = positive_int(eval_batch_size, "eval_batch_size")
        optimizer = optax.adam(1e-2) if optimizer is None else optimizer  # evaluation-only use
        objective = MaximumLikelihood() if objective is None else objective
        if not isinstance(objective, AbstractObjective):
            raise InputError(
                "objective must be ffjord.MaximumLikelihood(...) or ffjord.FlowMatching(...), "
                f"got {objective!r}"
            )
        objective.check(dist)
        self.dist = dist
        self.objective = objective
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.optimizer = optimizer
        self.filter_spec = trainable(dist)
        self._static = eqx.partition(dist, self.filter_spec)[1]  # the frozen rest, once
        self._prepares = objective.prepares
        self.devices = resolve_devices(devices, batch_size)
        self._batches_on = self._state_on = None
        if self.devices is not None:
            from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

            mesh = Mesh(np.asarray(self.devices), ("batch",), axis_types=(AxisType.Auto,))
            self._batches_on = NamedSharding(mesh, PartitionSpec(None, "batch"))
            self._state_on = NamedSharding(mesh, PartitionSpec())
        self._epoch_fn = eqx.filter_jit(self._epoch)
        self._eval_fn = eqx.filter_jit(self._log_prob_chunk)
        self._objective_fn = eqx.filter_jit(self._objective_mean)

    def with_optimizer(self, optimizer: optax.GradientTransformation) -> "Trainer":
        """This trainer with another `optimizer` (a schedule of another length, say); the
        evaluation programs, compiled or not, are shared with this one."""
        other = copy.copy(self)
        other.optimizer = optimizer
        other._epoch_fn = eqx.filter_jit(other._epoch)
        return other

    # State ---------------------------------------------------------------------------------

    def init(self, key: PRNGKeyArray) -> TrainState:
        """A fresh state: the model's current parameters, a new optimiser state, epoch 0."""
        params = eqx.filter(self.dist, self.filter_spec)
        zero = jnp.asarray(0, jnp.int32)
        return TrainState(
            params=params,
            opt_state=self.optimizer.init(params),
            epoch=zero,
            key=key_bits(key),
            best_params=params,
            best_loss=jnp.asarray(np.inf, jnp.result_type(float)),
            best_epoch=zero,
            bad_epochs=zero,
        )

    def start_from(self, state: TrainState, dist: TransformedDistribution) -> TrainState:
        """`state` (not yet trained) with the trainable arrays of `dist`, a model of the
        same structure (e.g. a warm start's), as its parameters."""
        params = eqx.filter(dist, self.filter_spec)
        return eqx.tree_at(lambda s: (s.params, s.best_params), state, (params, params))

    def model(self, state: TrainState) -> TransformedDistribution:
        """The distribution with the state's current parameters (this process' copy)."""
        return eqx.combine(local_copy(state.params), self._static)

    def kept_model(self, state: TrainState) -> TransformedDistribution:
        """The distribution with the parameters the run keeps (`TrainState.kept_epoch`)."""
        params = state.best_params if int(state.best_epoch) > 0 else state.params
        return eqx.combine(local_copy(params), self._static)

    # One epoch -----------------------------------------------------------------------------

    def _epoch(
        self,
        state: TrainState,
        batches: Array | None,
        contexts: Array | None,
        num_steps: int,
        prepared: Any,
    ):
        static = self._static
        optimizer, objective = self.optimizer, self.objective
        step_keys = _step_keys(state.key, state.epoch, num_steps)

        def loss_fn(params, batch, context, key, prepared):
            return objective.loss(eqx.combine(params, static), batch, context, key, prepared)

        def step(carry, xs):
            params, opt_state = carry
            batch, context, key, prepared = xs
            (loss, (stats, metrics)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
                params, batch, context, key, prepared
            )
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = eqx.apply_updates(params, updates)
            finite = jnp.isfinite(loss) & ~stats.failed
            for g in jax.tree.leaves(grads):
                finite = finite & jnp.all(jnp.isfinite(g))
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            params = jax.tree.map(keep, new_params, params)
            opt_state = jax.tree.map(keep, new_opt_state, opt_state)
            out = (loss, finite, stats.num_fn_evals, stats.num_steps, metrics)
            return (params, opt_state), out

        (params, opt_state), outputs = jax.lax.scan(
            step, (state.params, state.opt_state), (batches, contexts, step_keys, prepared)
        )
        new_state = eqx.tree_at(
            lambda s: (s.params, s.opt_state, s.epoch), state, (params, opt_state, state.epoch + 1)
        )
        return new_state, outputs

    def _epoch_batches(self, state: TrainState, data: np.ndarray, context: np.ndarray | None):
        """The epoch's shuffled full batches, `(n_batches, batch_size, d)` (and contexts)."""
        n_batches = data.shape[0] // self.batch_size
        order = _epoch_order(state.key, int(state.epoch), data.shape[0])
        used = order[: n_batches * self.batch_size]  # drop the last partial batch

        def batched(a: np.ndarray) -> Array:
            rows = a[used].reshape(n_batches, self.batch_size, a.shape[1])
            return jnp.asarray(rows) if self._batches_on is None else self._put(rows)

        return batched(data), None if context is None else batched(context)

    def compile_epoch(
        self,
        state: TrainState,
        data: np.ndarray,
        context: np.ndarray | None = None,
        meanwhile: Callable[[], Any] | None = None,
    ) -> threading.Thread | None:
        """Compile the epoch ahead of time, then start `meanwhile` in a thread.

        XLA compiles the epoch on both cores, so `meanwhile` (e.g. compiling the
        evaluation functions) starts only after it and overlaps the first epoch instead,
        which runs on one core: the first step comes 1.5 s sooner on 2 cores than when
        both compile at once. The thread is returned still running: join it before
        using what it prepares.
        """
        batches, contexts = self._epoch_batches(state, data, context)
        n = batches.shape[0]
        state = self.place(state)
        prepared = self._prepare(state, batches, contexts, n)
        self._epoch_fn.lower(state, batches, contexts, n, prepared).compile()
        if meanwhile is None:
            return None
        worker = threading.Thread(target=_quietly(meanwhile), daemon=True)
        worker.start()
        return worker

    def run_epoch(
        self, state: TrainState, data: np.ndarray, context: np.ndarray | None = None
    ) -> tuple[TrainState, dict]:
        """Train one epoch over shuffled full batches; return the new state and its record."""
        if data.shape[0] < self.batch_size:
            raise InputError(
                f"the training set has {data.shape[0]} points, fewer than one batch of "
                f"{self.batch_size}; lower the batch size"
            )
        batches, contexts = self._epoch_batches(state, data, context)
        return self._run(state, batches, contexts, batches.shape[0])

    def run_steps(
        self, state: TrainState, num_steps: int, context: np.ndarray | None = None
    ) -> tuple[TrainState, dict]:
        """`num_steps` steps of an objective that draws its own samples (no data), e.g.
        `fit_to_density`'s; `context` (one condition) is given to every step."""
        contexts = None
        if context is not None:
            contexts = jnp.broadcast_to(jnp.asarray(context), (num_steps, *np.shape(context)))
        return self._run(state, None, contexts, num_steps)

    def _prepare(self, state: TrainState, batches, contexts, num_steps: int) -> Any:
        """The objective's parameter-free work for the epoch (e.g. OT pairings), done on the
        host before the epoch's compiled steps run: host work inside a compiled program
        (a callback) runs 1.5-3x slower while XLA's threads wait on the same cores."""
        if batches is None or not self._prepares:
            return None  # nothing to prepare: neither the model nor the keys are built
        keys = _step_keys(state.key, state.epoch, num_steps)
        return self.objective.prepare(self.model(state), batches, contexts, keys)

    def place(self, state: TrainState) -> TrainState:
        """The state where the epoch wants it: replicated over the devices (if several).

        Every process holds the same state, so each fills in its own devices' copies
        (`jax.make_array_from_callback`); arrays already placed stay as they are."""
        on = self._state_on
        if on is None:
            return state

        def put(leaf):
            if not isinstance(leaf, jax.Array) or leaf.sharding == on:
                return leaf
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, on, lambda index: host[index])

        return jax.tree.map(put, state)

    def _put(self, rows: np.ndarray) -> Array:
        """Batches `(n_batches, batch, ...)` split over the devices along the batch axis:
        every process feeds its own devices' share of every batch."""
        on = self._batches_on
        assert on is not None  # only called with several devices
        return jax.make_array_from_callback(rows.shape, on, lambda index: rows[index])

    def _run(self, state, batches, contexts, num_steps: int) -> tuple[TrainState, dict]:
        start = time.perf_counter()
        state = self.place(state)
        prepared = self._prepare(state, batches, contexts, num_steps)
        new_state, outputs = self._epoch_fn(state, batches, contexts, num_steps, prepared)
        losses, ok, nfe, steps, metrics = jax.device_get(local_copy(outputs))
        seconds = time.perf_counter() - start
        n_ok = int(np.sum(ok))

        def mean_ok(values) -> float:
            return float(np.mean(values[ok])) if n_ok else float("nan")

        record = {
            "epoch": int(new_state.epoch),
            "train_loss": mean_ok(losses),
            "seconds": seconds,
            "steps": n_ok,
            "nfe": float(np.mean(nfe)),
            "solver_steps": float(np.mean(steps)),
            "rejected_steps": int(len(ok) - n_ok),
            "devices": 1 if self.devices is None else len(self.devices),
        }
        if len(metrics) > 1:  # the parts of a composite loss (e.g. RNODE's)
            record.update({f"train_{name}": mean_ok(v) for name, v in metrics.items()})
        return new_state, record

    # Evaluation ----------------------------------------------------------------------------

    def _log_prob_chunk(self, dist, chunk: Array):
        """Exact log p of the points in `chunk` (their conditions in its last columns) and,
        in a second column, the solve's field evaluations."""
        d = dist.dim
        context = chunk[:, d:] if chunk.shape[1] > d else None
        lp, stats = dist.log_prob_with_stats(chunk[:, :d], context=context)
        nfe = jnp.broadcast_to(stats.num_fn_evals.astype(lp.dtype), lp.shape)
        return jnp.stack([lp, nfe], axis=1)

    def evaluate(
        self, state_or_dist, points: np.ndarray, context: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """Exact log-density of `points` (n, d), in chunks of `eval_batch_size` points, and
        the mean field evaluations of a chunk's solve (all blocks).

        Every chunk has the same shape (the last one is padded), so any number of
        points reuses one compiled program; chunks run on every core.
        """
        dist = self.model(state_or_dist) if isinstance(state_or_dist, TrainState) else state_or_dist
        dist = for_inference(exact_trace(dist))
        rows = points if context is None else np.concatenate([points, context], axis=1)
        out = map_chunks(self._eval_fn, rows, self.eval_batch_size, dist)
        return out[:, 0], float(np.mean(out[:, 1]))

    def validation_loss(
        self, state: TrainState, points: np.ndarray, context: np.ndarray | None = None
    ) -> tuple[float, float | None]:
        """The number that chooses the best epoch, and its solves' field evaluations (None
        without a solve).

        The exact mean NLL of `points`, or, for an objective whose `validation_metric`
        is ``"loss"`` (flow matching), its own loss on them: the rows, cycled to at least
        `VALIDATION_DRAWS` of them, in batches of the training batch size, with draws that
        are the same every epoch (a stream of the run's key no step uses), so that epochs
        are compared on equal terms.
        """
        if self.objective.validation_metric == "nll":
            lp, nfe = self.evaluate(state, points, context)
            return float(-np.mean(lp)), nfe
        n, batch = points.shape[0], self.batch_size
        n_batches = -(-max(n, VALIDATION_DRAWS) // batch)
        rows = np.arange(n_batches * batch) % n  # every row about equally often

        def batched(a: np.ndarray) -> Array:
            return jnp.asarray(a[rows].reshape(n_batches, batch, a.shape[1]))

        contexts = None if context is None else batched(context)
        key = jax.random.fold_in(as_typed_key(state.key), VALIDATION_STREAM)
        keys = jax.random.split(key, n_batches)
        loss = self._objective_fn(self.model(state), batched(points), contexts, keys)
        return float(loss), None

    def _objective_mean(self, dist, batches: Array, contexts: Array | None, keys: Array):
        def one(xs):
            batch, context, key = xs
            return self.objective.loss(dist, batch, context, key)[0]

        return jnp.mean(jax.lax.map(one, (batches, contexts, keys)))

    def log_prob(
        self, state_or_dist, points: np.ndarray, context: np.ndarray | None = None
    ) -> np.ndarray:
        """Exact log-density of `points` (n, d) (see `evaluate`)."""
        return self.evaluate(state_or_dist, points, context)[0]

    def nll(self, state: TrainState, points: np.ndarray, context: np.ndarray | None = None):
        """Mean negative log-likelihood (nats per point)."""
        return float(-np.mean(self.log_prob(state, points, context)))


VALIDATION_DRAWS = 4096  # rows (cycled) of a validation loss that is not the NLL (8192: the
# same epochs chosen on bernoulli_glm_raw, at 12.5 instead of 7.5 ms an epoch)
VALIDATION_STREAM = 2**32 - 1  # folded into the run's key for those draws: no epoch's number


@eqx.filter_jit
def _step_keys(key_data: Array, epoch: Array, num_steps: int) -> Array:
    """The keys of an epoch's steps, fixed by (key, epoch)."""
    return jax.random.split(jax.random.fold_in(as_typed_key(key_data), epoch), num_steps)


CHUNK = 4096  # points per compiled forward pass of `transform` (fixed shape: one compilation)


@eqx.filter_jit
def _forward(bijector, rows):
    # The state alone (no log-determinant: half the work), never raising on a failed solve.
    # Columns beyond the flow's dimension are the points' conditions.
    d = rows.shape[1] if bijector.dim is None else bijector.dim  # no dim: no condition columns
    context = rows[:, d:] if rows.shape[1] > d else None
    return bijector.transform(rows[:, :d], context=context, log_det=False, throw=False)[0]


@eqx.filter_jit
def _forward_with_log_det(bijector, steps_follow: StepsFollow, rows):
    # The state and the log-determinant of its Jacobian, as one more column.
    d = rows.shape[1] if bijector.dim is None else bijector.dim
    context = rows[:, d:] if rows.shape[1] > d else None
    y, log_det, _ = bijector.transform(
        rows[:, :d], context=context, throw=False, steps_follow=steps_follow
    )
    return jnp.concatenate([y, log_det[:, None].astype(y.dtype)], axis=1)


def _chunk_rows(points: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    return points if context is None else np.concatenate([points, context], axis=1)


def transform(bijector, points: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """Push points (n, d) (under their conditions (n, k)) through the flow in fixed-size
    chunks (one compilation, every core)."""
    if points.shape[0] == 0:
        return np.zeros((0, points.shape[1]), points.dtype)
    return map_chunks(_forward, _chunk_rows(points, context), CHUNK, for_inference(bijector))


def transform_with_log_det(
    bijector,
    points: np.ndarray,
    context: np.ndarray | None = None,
    steps_follow: StepsFollow = "all",
) -> tuple[np.ndarray, np.ndarray]:
    """`transform`, and the log-determinants (n,) of the map's Jacobian at the points from
    the same solves (`steps_follow`: what the step size controls, as in `ffjord.Mode`)."""
    n, d = points.shape
    if n == 0:
        return np.zeros((0, d), points.dtype), np.zeros(0, points.dtype)
    rows = _chunk_rows(points, context)
    fast = for_inference(bijector)
    out = map_chunks(_forward_with_log_det, rows, CHUNK, fast, steps_follow)
    return out[:, :d], out[:, d]


def _epoch_order(key_data: Array, epoch: int, n: int) -> np.ndarray:
    """The epoch's data order, fixed by (key, epoch): host-side, nothing to compile.

    The argsort of raw PCG64 output (a stream NumPy keeps fixed across versions) seeded
    with the key's bits and the epoch.
    """
    seed = np.random.SeedSequence([*np.asarray(key_data).ravel().tolist(), epoch])
    return _stable_argsort(np.random.PCG64(seed).random_raw(n))


def _stable_argsort(values: np.ndarray) -> np.ndarray:
    """`np.argsort(values, kind="stable")`, 4-5x faster for distinct values (the usual
    case of 64-bit random numbers): any sort orders distinct values the same way, so the
    default sort is used unless the sorted values show ties."""
    order = np.argsort(values)
    ranked = values[order]
    if np.any(ranked[1:] == ranked[:-1]):
        return np.argsort(values, kind="stable")
    return order


def _quietly(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(Exception):  # a warm-up: the real call reports problems
            fn()

    return run


def check_progress(record: dict, num_steps: int) -> None:
    """Stop with a clear message when most of an epoch's steps had to be rejected."""
    if record["rejected_steps"] * 2 > num_steps:
        raise TrainingDiverged(
            f"training diverged in epoch {record['epoch']}: {record['rejected_steps']} of "
            f"{num_steps} steps gave a non-finite loss or an exhausted ODE solver; lower the "
            "learning rate, loosen rtol/atol or raise max_steps (the last good state is kept)"
        )
