"""A run directory: its configuration, model, data, checkpoint and metrics.

```
DIR/config.json        every setting (format_version, data, model, solver, training)
DIR/checkpoint.eqx     TrainState: parameters, optimiser state, epoch, RNG key (no pickle)
DIR/metrics.jsonl      one JSON object per finished epoch
DIR/snapshots/         transformed samples and grid after each epoch (2-D data)
DIR/figures/           the figures
```
Every file is written atomically; each epoch appends its metrics line first and then
replaces the checkpoint, and `--resume` trims the metrics to the checkpoint's epoch,
so after any crash every epoch appears exactly once and matches the checkpoint.
"""

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import datasets
from ._bijector import Affine, Chain
from ._distributions import MultivariateNormalDiag, TransformedDistribution
from ._errors import InputError
from ._ffjord import FFJORD
from ._io import atomic_write, atomic_write_text
from ._keys import as_typed_key, key_bits
from ._trace import ExactTrace, HutchinsonTrace
from ._train import Trainer, TrainState
from ._vector_field import MLPField

FORMAT_VERSION = 1

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "dopri5": diffrax.Dopri5,
    "tsit5": diffrax.Tsit5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
}
TRACES = ("exact", "hutchinson")
SCHEDULES = ("constant", "cosine")

# The tutorial: moons, 4 blocks of MLP(8, 3), Dopri5 rtol 1e-3 atol 1e-5, Adam 1e-2, 40 epochs.
TUTORIAL: dict[str, Any] = {
    "data": "moons",
    "epochs": 40,
    "batch_size": 256,
    "lr": 1e-2,
    "schedule": "constant",
    "blocks": 4,
    "hidden": 8,
    "layers": 3,
    "trace": "exact",
    "solver": "dopri5",
    "rtol": 1e-3,
    "atol": 1e-5,
    "max_steps": 1000,
    "seed": 0,
    "n_train": 8192,
    "n_test": 4096,
}
BASE_SCALE_TOY = 0.8  # the tutorial's base N(0, 0.8^2 I)
BASE_SCALE_FILE = 1.0  # user data is standardised, so a unit Gaussian fits it best
TEST_SEED_OFFSET = 1_000_003  # held-out toy data: fresh draws with another seed


def validate_options(cfg: dict[str, Any]) -> None:
    """One-line errors for settings that cannot work."""
    for name in ("epochs", "batch_size", "blocks", "hidden", "layers", "max_steps"):
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be a positive integer, got {value!r}")
    for name in ("lr", "rtol", "atol"):
        value = cfg[name]
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise InputError(f"--{name} must be a positive number, got {value!r}")
    if cfg["solver"] not in SOLVERS:
        raise InputError(f"unknown solver {cfg['solver']!r}; choose one of: {', '.join(SOLVERS)}")
    if cfg["trace"] not in TRACES:
        raise InputError(f"unknown trace {cfg['trace']!r}; choose one of: {', '.join(TRACES)}")
    if cfg["schedule"] not in SCHEDULES:
        raise InputError(
            f"unknown schedule {cfg['schedule']!r}; choose one of: {', '.join(SCHEDULES)}"
        )
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InputError(f"--seed must be an integer in [0, 2^31), got {seed!r}")


# Data ----------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill in what the data fixes: dimension, sizes, standardisation, plot limits."""
    name = cfg["data"]
    if name in datasets.TOY_DATASETS:
        cfg["dim"] = 2
        cfg["standardize"] = None
        cfg["base_scale"] = BASE_SCALE_TOY
        if name == "moons":  # the tutorial's fixed limits
            cfg["limits"] = [-3.0, 3.0, -3.0, 3.0]
        else:
            cfg["limits"] = _limits(datasets.sample_toy(name, cfg["n_train"], cfg["seed"]))
        return cfg
    path = Path(name).expanduser()
    if path.suffix.lower() not in (".npy", ".csv") and not path.exists():
        raise InputError(
            f"unknown data set {name!r}: choose one of {', '.join(datasets.TOY_DATASETS)} "
            "or give a .npy or .csv file"
        )
    data = datasets.load_array(path)
    cfg["data"] = str(path.resolve())
    cfg["data_sha256"] = _sha256(path)
    train, test = datasets.split_holdout(data, 0.1, cfg["seed"])
    cfg["n_train"], cfg["n_test"] = int(train.shape[0]), int(test.shape[0])
    cfg["dim"] = int(data.shape[1])
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    cfg["standardize"] = {
        "shift": [float(v) for v in train.mean(axis=0)],
        "scale": [float(v) for v in std],
    }
    cfg["base_scale"] = BASE_SCALE_FILE
    cfg["limits"] = _limits(train) if cfg["dim"] == 2 else None
    return cfg


def _limits(points: np.ndarray) -> list[float]:
    lo, hi = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    centre, half = (lo + hi) / 2, float(np.max(hi - lo)) * 0.65
    box = [centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half]
    return [float(v) for v in box]


def load_data(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The run's training and held-out points, exactly as when it started."""
    name = cfg["data"]
    if name in datasets.TOY_DATASETS:
        train = datasets.sample_toy(name, cfg["n_train"], cfg["seed"])
        test = datasets.sample_toy(name, cfg["n_test"], cfg["seed"] + TEST_SEED_OFFSET)
        return train, test
    path = Path(name)
    if not path.exists():
        raise InputError(f"the run's data file {name} no longer exists")
    if cfg.get("data_sha256") and _sha256(path) != cfg["data_sha256"]:
        raise InputError(f"the run's data file {name} has changed since the run started")
    data = datasets.load_array(path)
    return datasets.split_holdout(data, 0.1, cfg["seed"])


def as_training_array(points: np.ndarray) -> np.ndarray:
    """Training runs in float32 (explicitly, not by accident) unless float64 is enabled."""
    if jax.config.read("jax_enable_x64"):
        return points
    return points.astype(np.float32)


# Model ---------------------------------------------------------------------------------------


def _init_fields(key, dim: int, hidden: int, layers: int, blocks: int) -> list[MLPField]:
    """Every block's field, each from its own key (split once, no per-block JAX calls)."""
    split = np.asarray(key_bits(jax.random.split(key, blocks)))
    return [MLPField(dim, hidden, layers, key=as_typed_key(k)) for k in split]


def build_model(cfg: dict[str, Any]) -> TransformedDistribution:
    """The flow of a configuration, with its initial parameters (from `seed`)."""
    dim = cfg["dim"]
    fields = _init_fields(
        jax.random.key(cfg["seed"]), dim, cfg["hidden"], cfg["layers"], cfg["blocks"]
    )
    trace = ExactTrace() if cfg["trace"] == "exact" else HutchinsonTrace()
    solver = SOLVERS[cfg["solver"]]()
    blocks = [
        FFJORD(
            field,
            trace=trace,
            solver=solver,
            rtol=cfg["rtol"],
            atol=cfg["atol"],
            max_steps=cfg["max_steps"],
        )
        for field in fields
    ]
    bijector = Chain(blocks)
    if cfg.get("standardize"):
        shift = jnp.asarray(cfg["standardize"]["shift"], jnp.float32)
        scale = jnp.asarray(cfg["standardize"]["scale"], jnp.float32)
        bijector = Chain([bijector, Affine(shift, scale)])
    base = MultivariateNormalDiag(jnp.zeros(dim), cfg["base_scale"] * jnp.ones(dim))
    return TransformedDistribution(base, bijector)


def make_optimizer(cfg: dict[str, Any], steps_per_epoch: int) -> optax.GradientTransformation:
    if cfg["schedule"] == "cosine":
        lr = optax.cosine_decay_schedule(cfg["lr"], cfg["epochs"] * steps_per_epoch, alpha=0.05)
        return optax.adam(lr)
    return optax.adam(cfg["lr"])


def make_trainer(cfg: dict[str, Any]) -> Trainer:
    steps_per_epoch = max(cfg["n_train"] // cfg["batch_size"], 1)
    return Trainer(
        build_model(cfg),
        batch_size=cfg["batch_size"],
        optimizer=make_optimizer(cfg, steps_per_epoch),
    )


def train_key(cfg: dict[str, Any]) -> jax.Array:
    return jax.random.fold_in(jax.random.key(cfg["seed"]), 1)


# Files ---------------------------------------------------------------------------------------


def _load_leaf(f, like):
    """One checkpoint leaf. A float array takes the precision of `like`, so a run saved
    in JAX's default 32-bit mode also opens under JAX_ENABLE_X64 (and vice versa)."""
    if isinstance(like, jax.Array) and jnp.issubdtype(like.dtype, jnp.floating):
        value = np.load(f, allow_pickle=False)
        if np.issubdtype(value.dtype, np.floating):
            return jnp.asarray(value, dtype=like.dtype)
        return jnp.asarray(value)  # a wrong kind is refused by the shape/dtype check
    return eqx.default_deserialise_filter_spec(f, like)


class RunDir:
    """Paths and atomic reads/writes of one run directory."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.checkpoint = self.path / "checkpoint.eqx"
        self.metrics = self.path / "metrics.jsonl"
        self.snapshots = self.path / "snapshots"
        self.figures = self.path / "figures"

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
        if not isinstance(cfg, dict) or cfg.get("format_version") != FORMAT_VERSION:
            version = cfg.get("format_version") if isinstance(cfg, dict) else None
            raise InputError(
                f"{self.config} has format version {version!r}; this ffjord reads version "
                f"{FORMAT_VERSION}"
            )
        try:
            validate_options(cfg)
            for name in ("dim", "n_train", "n_test"):
                if int(cfg[name]) < 1:
                    raise ValueError(f"{name} must be positive")
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{self.config} is incomplete or corrupt ({err})") from None
        return cfg

    def write_config(self, cfg: dict[str, Any]) -> None:
        atomic_write_text(self.config, json.dumps(cfg, indent=2) + "\n")

    def save_checkpoint(self, state: TrainState) -> None:
        atomic_write(self.checkpoint, lambda f: eqx.tree_serialise_leaves(f, state))

    def load_checkpoint(self, template: TrainState) -> TrainState:
        """Read the checkpoint into the shape of `template`; refuse anything that does not fit."""
        if not self.checkpoint.exists():
            raise InputError(f"{self.path} has no checkpoint yet; train it first")
        try:
            with open(self.checkpoint, "rb") as f:
                state = eqx.tree_deserialise_leaves(f, template, filter_spec=_load_leaf)
                if f.read(1):
                    raise ValueError("trailing bytes")
        except Exception as err:  # any malformed content: never a traceback
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(
                f"checkpoint {self.checkpoint} is corrupt or from an incompatible run "
                f"({reason[:120]}); delete the run directory or train again"
            ) from None
        leaves = [np.asarray(x) for x in jax.tree.leaves(state.params)]
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
