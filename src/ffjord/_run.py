"""A run directory: its configuration, model, data, checkpoint and metrics.

```
DIR/config.json        every setting (format_version, data, model, solver, training)
DIR/checkpoint.eqx     TrainState: parameters (and the best epoch's), epoch, RNG key,
                       early-stopping counters, optimiser state (no pickle)
DIR/metrics.jsonl      one JSON object per finished epoch
DIR/snapshots/         transformed samples and grid after each epoch (2-D data)
DIR/figures/           the figures
```
Every file is written atomically; each epoch appends its metrics line first and then
replaces the checkpoint, and a resumed run trims the metrics to the checkpoint's epoch,
so after any crash every epoch appears exactly once and matches the checkpoint.
"""

import concurrent.futures
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._distributions import TransformedDistribution
from ._errors import InputError
from ._format2 import upgrade
from ._io import atomic_write, atomic_write_text
from ._keys import as_typed_key
from ._spec import build
from ._trainer import Trainer, TrainState, transform

FORMAT_VERSION = 3  # 2: ffjord 0.2, read by `_format2.upgrade`


def _load_leaf(f, like):
    """One checkpoint leaf. A float array takes the precision of `like`, so a run saved
    in JAX's default 32-bit mode also opens under JAX_ENABLE_X64 (and vice versa)."""
    if isinstance(like, jax.Array) and jnp.issubdtype(like.dtype, jnp.floating):
        value = np.load(f, allow_pickle=False)
        if np.issubdtype(value.dtype, np.floating):
            return jnp.asarray(value, dtype=like.dtype)
        return jnp.asarray(value)  # a wrong kind is refused by the shape/dtype check
    return eqx.default_deserialise_filter_spec(f, like)


def training_dtype() -> type:
    """float32, or float64 throughout when JAX's float64 is enabled (explicitly, never by
    accident: the command line's models are then float64 too)."""
    return np.float64 if jax.config.read("jax_enable_x64") else np.float32


class RunDir:
    """Paths and atomic reads/writes of one run directory."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.checkpoint = self.path / "checkpoint.eqx"
        self.metrics = self.path / "metrics.jsonl"
        self.snapshots = self.path / "snapshots"
        self.figures = self.path / "figures"
        self.upgraded = False  # `require` read a format-2 config (rewritten when resumed)

    def require(self) -> dict[str, Any]:
        """Load the configuration of an existing run (one-line error if there is none)."""
        if not self.path.exists():
            raise InputError(f"no run directory at {self.path}; train one with ffjord train")
        if not self.path.is_dir():
            raise InputError(f"{self.path} is a file, not a run directory")
        if not self.config.exists():
            raise InputError(f"{self.path} is not a run directory (no config.json)")
        try:
            cfg = json.loads(self.config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{self.config} is corrupt ({err}); it cannot be used") from None
        version = cfg.get("format_version") if isinstance(cfg, dict) else None
        if version not in (2, FORMAT_VERSION):
            raise InputError(
                f"{self.config} has format version {version!r}; this ffjord reads versions 2 "
                f"and {FORMAT_VERSION}"
            )
        try:
            if version == 2:
                cfg = upgrade(cfg)
                self.upgraded = True
            for name in ("dim", "epochs", "batch_size"):
                value = cfg["dim"] if name == "dim" else cfg["training"][name]
                if int(value) < 1:
                    raise ValueError(f"{name} must be positive")
            for name in ("model", "objective"):
                if name not in cfg:
                    raise KeyError(name)
        except (KeyError, TypeError, ValueError, InputError) as err:
            raise InputError(f"{self.config} is incomplete or corrupt ({err})") from None
        return cfg

    def write_config(self, cfg: dict[str, Any]) -> None:
        atomic_write_text(self.config, json.dumps(cfg, indent=2) + "\n")

    def save_checkpoint(self, state: TrainState) -> None:
        atomic_write(self.checkpoint, lambda f: eqx.tree_serialise_leaves(f, state))

    def load_checkpoint(self, template: TrainState) -> TrainState:
        """Read the checkpoint into the shape of `template`; refuse anything that does not fit."""
        return self._read_checkpoint(template, whole=True)

    def saved_epoch(self) -> int:
        """The epoch of the checkpoint on disk (0 if there is none or it cannot be read)."""
        if not (self.checkpoint.exists() and self.config.exists()):
            return 0
        try:
            return int(open_run(self.path)[3].epoch)
        except (InputError, KeyError, TypeError):
            return 0

    def saved_progress(self, warm_start: str) -> str:
        """What an interrupted run has on disk, in words: its checkpoint's epoch, else its
        warm start's (in the sub-directory `warm_start`), else that no epoch finished."""
        if saved := self.saved_epoch():
            return f"the checkpoint of epoch {saved} is saved in {self.path}"
        warm = RunDir(self.path / warm_start)
        if warmed := warm.saved_epoch():
            return f"the warm start's checkpoint of epoch {warmed} is saved in {warm.path}"
        return "no epoch had finished"

    def require_made_by_train(self, what: str) -> dict[str, Any]:
        """The config of a run `ffjord train` made, which records its data (`what`: the
        verb of the refused action, e.g. "resume")."""
        config = self.require()
        if config.get("made_by") != "ffjord train":
            raise InputError(
                f"{self.path} was made by ffjord.fit, which does not store its data; {what} "
                "it from Python (ffjord.fit(..., run_dir=..., resume=True), ffjord.load)"
            )
        return config

    def read_rows(self, path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(points, conditions or None) of a data file laid out like the run's data (its
        condition columns last), in the dtype training uses (`training_dtype`)."""
        from . import datasets

        config = self.require()
        rows = datasets.validate_points(datasets.load_array(path), what=what)
        dim, k = config["dim"], config.get("context_dim", 0)
        if rows.shape[1] != dim + k:
            layout = f" ({dim} data + {k} condition columns)" if k else ""
            raise InputError(
                f"{what} {Path(path).name} has {rows.shape[1]} columns but the run's data "
                f"have {dim + k}{layout}"
            )
        rows = rows.astype(training_dtype())
        return rows[:, :dim], (rows[:, dim:] if k else None)

    def load_model_state(self, template: TrainState) -> TrainState:
        """The checkpoint's parameters, epoch and early-stopping fields, without knowing the
        optimiser: `template.opt_state` is ignored (the file's last part is only checked
        to be complete)."""
        head = eqx.tree_at(lambda s: s.opt_state, template, None)
        return self._read_checkpoint(head, whole=False)

    def _read_checkpoint(self, template: TrainState, *, whole: bool) -> TrainState:
        if not self.checkpoint.exists():
            raise InputError(f"{self.path} has no checkpoint yet; train it first")
        try:
            with open(self.checkpoint, "rb") as f:
                state = eqx.tree_deserialise_leaves(f, template, filter_spec=_load_leaf)
                if whole and f.read(1):
                    raise ValueError("trailing bytes")
                while not whole and f.read(1):  # the optimiser's arrays: complete records
                    f.seek(-1, os.SEEK_CUR)
                    np.load(f, allow_pickle=False)
        except Exception as err:  # any malformed content: never a traceback
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(
                f"checkpoint {self.checkpoint} is corrupt or from an incompatible run "
                f"({reason[:120]}); delete the run directory or train again"
            ) from None
        leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.best_params))]
        if not all(np.all(np.isfinite(x)) for x in leaves):
            raise InputError(f"checkpoint {self.checkpoint} holds non-finite parameters")
        return state

    def read_metrics(self, up_to_epoch: int | None = None) -> list[dict[str, Any]]:
        """The metrics of epochs 1..up_to_epoch, each once (torn or extra lines dropped)."""
        if not self.metrics.exists():
            return []
        by_epoch: dict[int, dict[str, Any]] = {}
        for line in self.metrics.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
                epoch = int(record["epoch"])
            except (ValueError, KeyError, TypeError):
                continue
            if up_to_epoch is None or epoch <= up_to_epoch:
                by_epoch[epoch] = record
        return [by_epoch[e] for e in sorted(by_epoch)]

    def stale_temps(self) -> list[Path]:
        """Temporary files left by a writer that was killed (`atomic_write`'s `.NAME.*.tmp`)."""
        folders = (self.path, self.snapshots, self.figures)
        return [p for d in folders if d.is_dir() for p in d.glob(".*.tmp") if p.is_file()]

    def remove_stale_temps(self) -> None:
        for path in self.stale_temps():
            path.unlink(missing_ok=True)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def snapshot_path(self, epoch: int) -> Path:
        return self.snapshots / f"epoch_{epoch:04d}.npz"

    def save_snapshot(self, epoch: int, samples: np.ndarray, grid: np.ndarray) -> None:
        def write(f):
            np.savez(f, samples=samples, grid=grid)

        atomic_write(self.snapshot_path(epoch), write)

    def load_snapshots(self, up_to_epoch: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        out = []
        for epoch in range(up_to_epoch + 1):
            path = self.snapshot_path(epoch)
            if not path.exists():
                continue
            try:
                with np.load(path, allow_pickle=False) as z:
                    out.append((epoch, z["samples"], z["grid"]))
            except Exception:  # a damaged snapshot only costs one animation frame
                continue
        return out


# Snapshots -------------------------------------------------------------------------------------

SNAPSHOT_POINTS = 8192  # the tutorial's number of base samples per snapshot
SNAPSHOT_SAMPLES = SNAPSHOT_POINTS - 2 * 4 * 100  # the rest are the grid's 8 lines


def base_grid() -> np.ndarray:
    """The tutorial's grid: 4 horizontal and 4 vertical lines of 100 points over [-3, 3]^2
    in base space, where the base N(0, 0.8^2 I) lives."""
    from .plotting import make_grid  # matplotlib: imported only when a run draws

    return make_grid(-3.0, 3.0, -3.0, 3.0, gridlines=4, pts=100)


def base_samples(dist, state: TrainState, n: int = SNAPSHOT_SAMPLES) -> np.ndarray:
    """`n` fixed draws from the base, the same in every snapshot and figure of a run."""
    key = jax.random.fold_in(as_typed_key(state.key), 2)
    return np.asarray(dist.base.sample(key, (n,)), np.float32)


class Snapshotter:
    """Saves the image of fixed base samples and of the tutorial's grid after each epoch,
    in a background thread (one at a time) so that the next epoch trains meanwhile."""

    def __init__(self, run: RunDir, trainer: Trainer):
        self.run = run
        self.trainer = trainer
        self._points: np.ndarray | None = None  # base samples + grid, drawn on first use
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "ffjord-snapshot")
        self._pending: concurrent.futures.Future | None = None

    def _moved(self, state: TrainState) -> tuple[np.ndarray, np.ndarray]:
        if self._points is None:
            samples = base_samples(self.trainer.dist, state)
            self._points = np.concatenate([samples, base_grid().astype(np.float32)])
        moved = transform(self.trainer.model(state).bijector, self._points)
        return moved[:SNAPSHOT_SAMPLES], moved[SNAPSHOT_SAMPLES:]

    def __call__(self, epoch: int, state: TrainState) -> None:
        self.run.save_snapshot(epoch, *self._moved(state))

    def submit(self, epoch: int, state: TrainState) -> None:
        """Save the snapshot in a background thread (one at a time)."""
        self.wait()
        self._pending = self._executor.submit(self, epoch, state)

    def wait(self) -> None:
        """Wait for the snapshot in flight; its errors surface here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def warm_up(self, state: TrainState) -> None:
        """Compile the snapshot's forward pass without saving anything."""
        self._moved(state)


# Loading a trained model -----------------------------------------------------------------------


def open_run(
    run_dir: str | os.PathLike[str], like: TransformedDistribution | None = None
) -> tuple[RunDir, dict[str, Any], Trainer, TrainState]:
    """(run, config, a trainer of its model, the checkpoint's state without the optimiser)."""
    run = RunDir(run_dir)
    cfg = run.require()
    if like is None:
        if cfg["model"] is None:
            raise InputError(
                f"the model of {run.path} has a part ffjord cannot rebuild (e.g. your own "
                "vector field); pass like=, a model of the same structure"
            )
        like = build(cfg["model"])
    trainer = Trainer(like)
    state = run.load_model_state(trainer.init(jax.random.key(0)))
    return run, cfg, trainer, state


def load(run_dir: str | os.PathLike[str], *, like: TransformedDistribution | None = None):
    """The trained model of a run directory, made by `ffjord train` or `ffjord.fit`.

    With early stopping (`validation`), the best epoch's parameters; otherwise the last
    epoch's. The model is rebuilt from the description in `config.json`; a model with a
    part ffjord cannot describe (e.g. your own vector field) needs `like=`, a model of
    the same structure (its arrays are replaced).

    Example:
        >>> import os, tempfile, equinox as eqx, jax, jax.numpy as jnp, numpy as np, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> data = np.random.default_rng(0).standard_normal((64, 2), dtype=np.float32)
        >>> run_dir = os.path.join(tempfile.mkdtemp(), "run")
        >>> trained, _ = ffjord.fit(jax.random.key(0), dist, data, epochs=1, batch_size=32,
        ...                         objective=ffjord.FlowMatching(), run_dir=run_dir,
        ...                         show_progress=False)
        >>> dist = ffjord.load(run_dir)
        >>> bool(eqx.tree_equal(dist, trained))
        True
    """
    _, cfg, trainer, state = open_run(run_dir, like)
    return trainer.kept_model(state)
