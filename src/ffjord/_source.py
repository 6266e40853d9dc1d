"""Where a command-line run's rows come from: a built-in set, a simulator or a file."""

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from . import datasets, simulators
from ._checks import is_int
from ._errors import InputError

TOY_ROWS = (8192, 4096)  # (training, held-out): the tutorial's fresh draws
SIMULATIONS = (10_000, 2_000)  # built-in simulators: pairs drawn
TEST_SEED_OFFSET = 1_000_003  # held-out toy data: fresh draws with another seed
FILE_TEST_SHARE = 0.1  # a file's rows held out for the test NLL (a fixed split from the seed)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bound(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(number)
    return number


def _show(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _first_outside(column: np.ndarray, low: float, high: float) -> float:
    return float(column[(column < low) | (column > high)][0])


def plot_limits(points: np.ndarray) -> list[float]:
    """A square box around the middle 99% of 2-D points, with a margin."""
    lo, hi = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    centre, half = (lo + hi) / 2, float(np.max(hi - lo)) * 0.65
    box = [centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half]
    return [float(v) for v in box]


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The rows a run trains and tests on, and what they show.

    `name` is a built-in set (`moons`, `digits`, ...), a built-in simulator (`arcs`) or the
    absolute path of a `.npy`/`.csv` file (checked against `sha256` when read again);
    `context_dims` of its last columns are conditions. `limits` (2-D data: the figures'
    box), `value_range` (every value of the points) and `data_range` (per column, for
    conditional data) describe the training points. `support` is the box `ffjord sample`
    keeps draws within (`low` / `high` per data column, `None` unbounded) and where it came
    from: `"given"` (`with_support`), or for conditional data `"training data"` (its
    `data_range`, as a uniform prior's box); `None`: draws are not restricted.
    `context_shape` `(T, C)` says how a condition row is laid out (`with_context_shape`):
    T time steps (or i.i.d. trials) of C values, `row.reshape(T, C)`.

    Example:
        >>> source, train, test = DataSource.open("moons", seed=0)
        >>> source.dim, train.shape, test.shape
        (2, (8192, 2), (4096, 2))
    """

    name: str
    seed: int
    dim: int
    n_train: int
    n_test: int
    context_dims: int = 0
    sha256: str | None = None
    limits: list[float] | None = None
    value_range: list[float] | None = None
    data_range: dict[str, list[float]] | None = None
    support: dict[str, Any] | None = None
    context_shape: tuple[int, int] | None = None

    @classmethod
    def open(
        cls, name: str, seed: int = 0, context_dims: int = 0
    ) -> tuple["DataSource", np.ndarray, np.ndarray]:
        """(the source, its training rows, its held-out rows), reading the data once."""
        builtin = name in datasets.TOY_DATASETS or name in datasets.REAL_DATASETS
        if builtin and context_dims:
            raise InputError(
                f"context_dims applies to a data file; the built-in set {name} has no conditions",
                parameters=("context_dims",),
            )
        if name in datasets.TOY_DATASETS:
            source = cls(name, seed, 2, *TOY_ROWS)
            train, test = source.load()
            limits = [-3.0, 3.0, -3.0, 3.0] if name == "moons" else plot_limits(train)
            return dataclasses.replace(source, limits=limits), train, test  # the tutorial's
        if name in datasets.REAL_DATASETS:
            train, test = datasets.load_digits(seed)
            source = cls(name, seed, train.shape[1], len(train), len(test))
            return source.described(train), train, test
        if name in simulators.CONDITIONAL_DATASETS:
            if context_dims not in (0, simulators.X_DIM):
                raise InputError(
                    f"the built-in simulator {name} has {simulators.X_DIM} condition columns, "
                    f"not context_dims {context_dims}",
                    parameters=("context_dims",),
                )
            source = cls(name, seed, 2, *SIMULATIONS, context_dims=simulators.X_DIM)
            train, test = source.load()
            return source.described(train), train, test
        return cls._open_file(name, seed, context_dims)

    @classmethod
    def _open_file(cls, name: str, seed: int, k: int) -> tuple["DataSource", Any, Any]:
        path = Path(name).expanduser()
        if path.suffix.lower() not in (".npy", ".csv") and not path.exists():
            choices = (
                datasets.TOY_DATASETS + datasets.REAL_DATASETS + simulators.CONDITIONAL_DATASETS
            )
            raise InputError(
                f"unknown data set {name!r}: choose one of {', '.join(choices)} or give a .npy "
                "or .csv file"
            )
        data = datasets.load_array(path)
        columns = data.shape[1]
        if k >= columns:
            raise InputError(
                f"context_dims {k} leaves no data columns: {path.name} has {columns} columns; "
                f"give 1..{columns - 1}"
                if columns > 1
                else f"context_dims {k}: {path.name} has a single column, so no room for "
                "conditions",
                parameters=("context_dims",),
            )
        train, test = datasets.split_holdout(data, FILE_TEST_SHARE, seed)
        source = cls(
            str(path.resolve()), seed, columns - k, len(train), len(test), k, _sha256(path)
        )
        return source.described(train), train, test

    def described(self, train: np.ndarray) -> "DataSource":
        """This source with what its training rows show filled in."""
        points, context = self.split(train)
        data_range = None
        if context is not None:  # `ffjord sample` keeps a posterior's draws in this box
            data_range = {"low": points.min(axis=0).tolist(), "high": points.max(axis=0).tolist()}
        return dataclasses.replace(
            self,
            limits=plot_limits(points) if self.dim == 2 else None,
            value_range=[float(points.min()), float(points.max())],
            data_range=data_range,
            support=None if data_range is None else {**data_range, "from": "training data"},
        )

    def with_support(self, bounds: Any, train: np.ndarray) -> "DataSource":
        """This source with the support `bounds` given: one `(low, high)` per data column,
        `None` for an unbounded side; every training row must lie within it."""
        try:
            pairs = [(_bound(low), _bound(high)) for low, high in bounds]
        except (TypeError, ValueError):
            raise InputError(
                f"support must give (low, high) for each data column, got {bounds!r}",
                parameters=("support",),
            ) from None
        if len(pairs) != self.dim:
            raise InputError(
                f"support gives {len(pairs)} (low, high) pairs but the data have {self.dim} "
                "columns",
                parameters=("support",),
            )
        points, _ = self.split(train)
        for j, (low, high) in enumerate(pairs):
            if low is not None and high is not None and not low < high:
                raise InputError(
                    f"support of column {j} needs low < high, got {low:g}:{high:g}",
                    parameters=("support",),
                )
            lo = -np.inf if low is None else low
            hi = np.inf if high is None else high
            outside = int(np.sum((points[:, j] < lo) | (points[:, j] > hi)))
            if outside:
                raise InputError(
                    f"{outside} training rows lie outside the support of column {j} "
                    f"({_show(low)}:{_show(high)}), e.g. {_first_outside(points[:, j], lo, hi):g}",
                    parameters=("support",),
                )
        low, high = [p[0] for p in pairs], [p[1] for p in pairs]
        return dataclasses.replace(self, support={"low": low, "high": high, "from": "given"})

    def with_context_shape(self, shape: Any) -> "DataSource":
        """This source with its condition rows read as `shape = (T, C)`, T * C of them."""
        ok = isinstance(shape, (tuple, list)) and len(shape) == 2
        if not ok or not all(is_int(v) and v >= 1 for v in shape):
            raise InputError(
                f"context_shape must be two positive integers T, C, got {shape!r}",
                parameters=("context_shape",),
            )
        steps, channels = shape
        if not self.context_dims:
            raise InputError(
                "context_shape lays out condition rows; give context_dims K as well",
                parameters=("context_shape", "context_dims"),
            )
        if steps * channels != self.context_dims:
            raise InputError(
                f"context_shape {steps},{channels} holds {steps * channels} values, but a "
                f"condition row has {self.context_dims} columns (context_dims "
                f"{self.context_dims})",
                parameters=("context_shape", "context_dims"),
            )
        return dataclasses.replace(self, context_shape=(int(steps), int(channels)))

    def sampling_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) per data column that draws are kept within (infinite where
        unbounded), or None."""
        box = self.support or self.data_range  # runs made before `support` was recorded
        if box is None:
            return None
        low = np.array([-np.inf if v is None else v for v in box["low"]], np.float64)
        high = np.array([np.inf if v is None else v for v in box["high"]], np.float64)
        return low, high

    @property
    def in_unit_cube(self) -> bool:
        """Whether every value of the training points lies in [0, 1] (pixels, proportions)."""
        span = self.value_range
        return span is not None and span[0] >= 0.0 and span[1] <= 1.0

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(points, conditions or None): rows split into data and condition columns."""
        return rows[:, : self.dim], (rows[:, self.dim :] if self.context_dims else None)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The training and held-out rows, exactly as when the run started."""
        name, seed = self.name, self.seed
        if name in datasets.TOY_DATASETS:
            train = datasets.sample_toy(name, self.n_train, seed)
            return train, datasets.sample_toy(name, self.n_test, seed + TEST_SEED_OFFSET)
        if name in datasets.REAL_DATASETS:
            return datasets.load_digits(seed)
        if name in simulators.CONDITIONAL_DATASETS:  # rows: parameters, then observations
            pairs = (
                simulators.simulate(self.n_train, seed),
                simulators.simulate(self.n_test, seed + TEST_SEED_OFFSET),
            )
            train, test = (np.concatenate(pair, axis=1) for pair in pairs)
            return train, test
        path = Path(name)
        if not path.exists():
            raise InputError(f"the run's data file {name} no longer exists")
        if self.sha256 and _sha256(path) != self.sha256:
            raise InputError(f"the run's data file {name} has changed since the run started")
        return datasets.split_holdout(datasets.load_array(path), FILE_TEST_SHARE, seed)

    def to_config(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        for name in ("support", "context_shape"):  # as runs made before they were recorded
            if config[name] is None:
                del config[name]
        if self.context_shape is not None:
            config["context_shape"] = list(self.context_shape)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DataSource":
        shape = config.get("context_shape")
        if shape is not None:
            config = {**config, "context_shape": tuple(shape)}
        try:
            return cls(**config)
        except TypeError as err:
            raise InputError(f"the data description is incomplete or corrupt ({err})") from None
