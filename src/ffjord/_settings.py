"""The command line's settings: defaults (the tutorial's), validation, and the data,
model and optimiser a configuration describes."""

import hashlib
import math
from pathlib import Path
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import datasets, simulators
from ._bijector import Affine, Chain, ProjectedContext, StandardizedContext, UnitInterval
from ._distributions import MultivariateNormalDiag, TransformedDistribution
from ._errors import InputError
from ._ffjord import FFJORD
from ._keys import as_typed_key, key_bits
from ._objectives import COUPLINGS, AbstractObjective, FlowMatching, MaximumLikelihood
from ._spec import ADJOINTS, SOLVERS, make_adjoint
from ._trace import ExactTrace, HutchinsonTrace
from ._train import Names, WarmStart, check_validation, fit_size
from ._trainer import Trainer
from ._vector_field import ACTIVATIONS, MLPField

TRACES = ("exact", "hutchinson")
SCHEDULES = ("constant", "cosine")
OBJECTIVES = ("likelihood", "flow-matching")
CLI_NAMES = Names(  # the engine's options as the command line calls them, for messages
    run_dir="--out",
    resume="--resume",
    epochs="--epochs",
    batch_size="--batch-size",
    validation="--validation",
    patience="--patience",
    devices="--devices",
    test_every="--test-every",
)

# The tutorial: moons, 4 blocks of MLP(8, 3), Dopri5 rtol 1e-3 atol 1e-5, Adam 1e-2, 40 epochs.
TUTORIAL: dict[str, Any] = {
    "data": "moons",
    "epochs": 40,
    "batch_size": 256,
    "lr": 1e-2,
    "schedule": "constant",
    "weight_decay": 0.0,
    "blocks": 4,
    "hidden": 8,
    "layers": 3,
    "activation": "tanh",
    "trace": "exact",
    "solver": "dopri5",
    "rtol": 1e-3,
    "atol": 1e-5,
    "max_steps": 1000,
    "adjoint": "backprop",
    "checkpoints": None,
    "logit": 0.0,
    "objective": "likelihood",
    "warm_start": 0,
    "coupling": "independent",
    "kinetic": 0.0,
    "jacobian_frobenius": 0.0,
    "validation": 0.0,
    "patience": None,
    "test_every": 1,
    "seed": 0,
    "context_dims": 0,
    "context_features": 0,
    "n_train": 8192,
    "n_test": 4096,
}
# Flow matching's defaults where the tutorial's do not suit it (measured on the toy
# sets, docs/OBJECTIVES.md): one block (flow matching trains a single block) of a deeper,
# wider SiLU field (depth mattered most: 4 hidden layers of 48 beat 3 of 64 or 128),
# minibatch OT coupling (straighter paths: a better likelihood and fewer evaluations per
# held-out solve), and small batches for many cheap steps per epoch.
FLOW_MATCHING: dict[str, Any] = {
    "blocks": 1,
    "hidden": 48,
    "layers": 5,
    "activation": "silu",
    "coupling": "ot",
    "batch_size": 64,
    "epochs": 40,
    "lr": 1e-2,
    "schedule": "cosine",
}
OBJECTIVE_OPTIONS = {
    "likelihood": ("kinetic", "jacobian_frobenius", "warm_start"),
    "flow-matching": ("coupling",),
}
SIMULATIONS = {"n_train": 10_000, "n_test": 2_000}  # built-in simulators: pairs drawn
BASE_SCALE_TOY = 0.8  # the tutorial's base N(0, 0.8^2 I)
BASE_SCALE_FILE = 1.0  # user data is standardised, so a unit Gaussian fits it best
PROJECTION_STREAM = 2  # `ProjectedContext`'s initial weight: fold_in(key(seed), 2)
TEST_SEED_OFFSET = 1_000_003  # held-out toy data: fresh draws with another seed


def validate_options(cfg: dict[str, Any]) -> None:
    """One-line errors for settings that cannot work."""
    for name in ("epochs", "batch_size", "blocks", "hidden", "layers", "max_steps", "test_every"):
        value = cfg.get(name, 1)  # runs made before `test_every` have none
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
    dims = cfg.get("context_dims", 0)  # runs made before conditional flows have none
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 0:
        raise InputError(f"--context-dims must be a non-negative integer, got {dims!r}")
    features = cfg.get("context_features", 0)  # runs made before it have none
    if isinstance(features, bool) or not isinstance(features, int) or features < 0:
        raise InputError(
            f"--context-features must be a non-negative integer (0: off), got {features!r}"
        )
    if features and not dims:
        raise InputError(
            "--context-features applies to conditional data; give --context-dims K as well"
        )
    if features > dims:
        raise InputError(
            f"--context-features {features} exceeds the {dims} condition columns "
            f"(--context-dims {dims})"
        )
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InputError(f"--seed must be an integer in [0, 2^31), got {seed!r}")
    for name, choices in (
        ("activation", ACTIVATIONS),
        ("adjoint", ADJOINTS),
        ("objective", OBJECTIVES),
        ("coupling", COUPLINGS),
    ):
        if cfg[name] not in choices:
            raise InputError(f"unknown {name} {cfg[name]!r}; choose one of: {', '.join(choices)}")
    logit = cfg.get("logit", 0.0)  # runs made before it have none
    if isinstance(logit, bool) or not isinstance(logit, int | float) or not 0 <= logit < 0.5:
        raise InputError(f"--logit must be a number in [0, 0.5) (0: off), got {logit!r}")
    for name in ("kinetic", "jacobian_frobenius", "weight_decay"):
        value = cfg.get(name, 0.0)  # runs made before weight decay have none
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be a non-negative number, got {value!r}")
    check_validation(cfg["validation"], cfg["patience"], CLI_NAMES)
    checkpoints = cfg.get("checkpoints")  # runs made before it have none
    if checkpoints is not None:
        if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1:
            raise InputError(f"--checkpoints must be a positive integer, got {checkpoints!r}")
        if cfg["adjoint"] != "backprop":
            raise InputError(
                f"--checkpoints applies to --adjoint backprop, not {cfg['adjoint']} "
                "(backsolve keeps no checkpoints)"
            )
    warm = cfg.get("warm_start", 0)  # runs made before it have none
    if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
        raise InputError(f"--warm-start must be a non-negative integer (0: off), got {warm!r}")
    if cfg["objective"] == "flow-matching" and cfg["blocks"] != 1:
        raise InputError(
            f"flow matching trains a single FFJORD block, but --blocks is {cfg['blocks']}; "
            "use --blocks 1"
        )
    if warm and cfg["blocks"] != 1:
        raise InputError(
            f"--warm-start trains by flow matching, which trains a single FFJORD block, but "
            f"--blocks is {cfg['blocks']}; use --blocks 1"
        )


def data_defaults(
    n_train: int,
    dim: int,
    context_dims: int,
    in_unit_cube: bool = False,
    objective: str | None = None,
) -> dict[str, Any]:
    """The settings `ffjord train --data FILE` chooses for `n_train` rows of `dim` data
    columns and `context_dims` condition columns (measured: docs/DEFAULTS.md), for
    `objective` (by default chosen too).

    Likelihood training of two blocks of a 3-layer SiLU MLP, the exact trace (the field's
    closed form costs less than one Hutchinson probe at every dimension: docs/TRACE.md),
    batches of 256 (fewer for small files), AdamW with cosine decay over about 2,500
    steps, and early stopping: 10% of the rows choose the best epoch, patience 20 epochs.
    Up to 16 data columns: 64 units, learning rate 5e-3, weight decay 0.1; beyond: 128
    units, learning rate 1e-2, weight decay 1.0 (measured on 64-D digits). Data whose
    values all lie in [0, 1] (`in_unit_cube`: pixels, proportions) are modelled in logit
    space (`UnitInterval` with alpha 0.01).

    Conditional data of 3 to 16 columns with few conditions: one block, warmed up by
    flow matching (about 25,000 steps of 64 rows at learning rate 3e-3, `--warm-start`),
    then about 1,250 steps of likelihood training at 2e-3: flow matching places the
    posterior's modes cheaply and likelihood training sharpens them.

    Many conditions (more than 32 columns, and more than twice the data's): the fields
    see 32 learned linear combinations of them (`ProjectedContext`), trained by flow
    matching (flow matching's field, learning rate 3e-3, about 25,000 steps of 64 rows,
    the held-out NLL after the last epoch only): likelihood training overfits such
    conditions, and its solves cost 10-20x more per step.

    Example:
        >>> data_defaults(9000, 2, 2)["warm_start"]  # 2-D: two blocks, likelihood only
        0
        >>> warmed = data_defaults(9000, 5, 8)
        >>> warmed["blocks"], warmed["warm_start"], warmed["epochs"]
        (1, 199, 41)
        >>> chosen = data_defaults(9000, 10, 100)
        >>> chosen["objective"], chosen["context_features"]
        ('flow-matching', 32)
    """
    validation = 0.1
    fitted = fit_size(n_train, validation)
    batch_size = 256 if fitted >= 4096 else max(16, 2 ** int(math.log2(max(fitted // 16, 1))))
    many = context_dims > MANY_CONDITIONS and context_dims > 2 * dim
    objective = objective or ("flow-matching" if many else "likelihood")
    chosen = {
        "objective": objective,
        "blocks": 2,
        "hidden": 64 if dim <= WIDE_ABOVE else 128,
        "layers": 3,
        "activation": "silu",
        "trace": "exact",
        "batch_size": batch_size,
        "epochs": _epochs_for(DEFAULT_STEPS, fitted, batch_size),
        "lr": 5e-3 if dim <= WIDE_ABOVE else 1e-2,
        "schedule": "cosine",
        "weight_decay": 0.1 if dim <= WIDE_ABOVE else 1.0,
        "validation": validation,
        "patience": 20,
        "logit": LOGIT_ALPHA if in_unit_cube else 0.0,
        "context_features": CONTEXT_FEATURES if many else 0,
        "warm_start": 0,
    }
    if objective == "likelihood" and context_dims and not many and 2 < dim <= WIDE_ABOVE:
        chosen.update(
            blocks=1,
            warm_start=_epochs_for(FLOW_MATCHING_STEPS, fitted, FLOW_MATCHING["batch_size"]),
            epochs=_epochs_for(WARM_STARTED_STEPS, fitted, batch_size),
            lr=2e-3,
        )
    if objective == "flow-matching":
        chosen.update(FLOW_MATCHING, coupling=coupling_for(context_dims))
        if many:
            batch = FLOW_MATCHING["batch_size"]
            epochs = _epochs_for(FLOW_MATCHING_STEPS, fitted, batch)
            chosen.update(lr=3e-3, epochs=epochs, test_every=epochs)
    return chosen


def _epochs_for(steps: int, fitted: int, batch_size: int) -> int:
    """Epochs of about `steps` optimiser steps (20 to 400)."""
    steps_per_epoch = max(fitted // batch_size, 1)
    return min(max(math.ceil(steps / steps_per_epoch), 20), 400)


LOGIT_ALPHA = 0.01  # data in [0, 1]: modelled as logit(alpha + (1 - 2 alpha) x)
DEFAULT_STEPS = 2500  # optimiser steps `data_defaults` plans for (early stopping may end sooner)
WIDE_ABOVE = 16  # data columns beyond which the field is wider and more regularised
MANY_CONDITIONS = 32  # condition columns beyond which (and beyond 2 d) they are projected
CONTEXT_FEATURES = 32  # the learned linear features of many conditions (`ProjectedContext`)
FLOW_MATCHING_STEPS = 25_000  # flow matching's steps on conditional data (200 epochs of 9k)
WARM_START_LR = 3e-3  # flow matching's learning rate before likelihood training
WARM_STARTED_STEPS = 1250  # likelihood training's steps after a warm start (40 epochs of 9k)
JVP_TRACE_UP_TO = 16  # a field without a closed-form trace (> 3 layers): exact up to this d


def new_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The settings of a new run, validated, with its data described (`describe_data`).

    The options `given` win; the rest are the tutorial's for the built-in 2-D sets, and
    for a file or a built-in simulator are chosen from the data's size and dimension
    (`data_defaults`). `objective="flow-matching"` takes flow matching's own defaults
    (independent coupling for conditional data: OT pairing ignores conditions). The
    keys chosen for the data are listed under `chosen_for_data`. An option of the other
    objective is refused rather than silently ignored.
    """
    dims = given.get("context_dims")
    if isinstance(dims, int) and dims < 1:
        raise InputError(
            f"--context-dims must be at least 1 (leave it out for no conditions), got {dims}"
        )
    cfg = {"format_version": 2, "made_by": "ffjord train", **TUTORIAL}
    cfg.update({k: v for k, v in given.items() if k in ("data", "seed", "context_dims")})
    validate_options(cfg)
    describe_data(cfg)
    chosen: dict[str, Any] = {}
    if cfg["data"] not in datasets.TOY_DATASETS:
        chosen = data_defaults(
            cfg["n_train"],
            cfg["dim"],
            cfg["context_dims"],
            _in_unit_cube(cfg),
            objective=given.get("objective"),
        )
    objective = given.get("objective", chosen.get("objective", TUTORIAL["objective"]))
    for other, options in OBJECTIVE_OPTIONS.items():
        for name in options:
            if other != objective and name in given:
                raise InputError(
                    f"--{name.replace('_', '-')} applies to --objective {other}, not {objective}"
                )
    cfg.update(chosen)
    if objective == "flow-matching" and not chosen:  # the built-in 2-D sets
        cfg.update(FLOW_MATCHING)
    cfg.update(given)
    if "test_every" in chosen and "test_every" not in given:
        chosen["test_every"] = cfg["test_every"] = cfg["epochs"]  # the end of the run only
    if chosen and "trace" not in given and cfg["layers"] > 3 and cfg["dim"] > JVP_TRACE_UP_TO:
        chosen["trace"] = cfg["trace"] = "hutchinson"  # no closed form: exact costs d JVPs
    cfg["chosen_for_data"] = sorted(k for k, v in chosen.items() if cfg[k] == v and k not in given)
    validate_options(cfg)
    if cfg["logit"]:
        if not _in_unit_cube(cfg):
            span = cfg.get("value_range")
            reach = f" (they span {span[0]:.4g}..{span[1]:.4g})" if span else ""
            raise InputError(
                f"--logit {cfg['logit']:g} models data in [0, 1], but the training data are "
                f"not all within it{reach}; leave --logit out"
            )
        describe_data(cfg)  # standardise the logits instead
    return cfg


def make_warm_start(cfg: dict[str, Any]) -> WarmStart | None:
    """The flow-matching stage before likelihood training (`warm_start` epochs; None when
    0): flow matching's batches of 64 at learning rate `WARM_START_LR`, decaying like the
    run's, independent coupling for conditional data."""
    epochs = cfg.get("warm_start", 0)  # runs made before it have none
    if not epochs:
        return None
    batch = min(FLOW_MATCHING["batch_size"], cfg["batch_size"])
    stage = {**cfg, "epochs": epochs, "lr": WARM_START_LR, "batch_size": batch}
    objective = FlowMatching(coupling=coupling_for(cfg.get("context_dims", 0)))
    return WarmStart(epochs, objective, make_optimizer(stage), batch)


def coupling_for(context_dims: int) -> Literal["independent", "ot"]:
    """Flow matching's coupling by default: OT pairing, but independent for conditional
    data (OT pairs base and data points regardless of their conditions)."""
    return "independent" if context_dims else cast(Literal["ot"], FLOW_MATCHING["coupling"])


def make_objective(cfg: dict[str, Any]) -> AbstractObjective:
    if cfg["objective"] == "flow-matching":
        return FlowMatching(coupling=cfg["coupling"])
    return MaximumLikelihood(kinetic=cfg["kinetic"], jacobian_frobenius=cfg["jacobian_frobenius"])


# Data ----------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill in what the data fix: dimension, conditions, sizes, standardisation, limits."""
    name = cfg["data"]
    if name in datasets.TOY_DATASETS:
        if cfg["context_dims"]:
            raise InputError(
                f"--context-dims applies to a data file; the built-in set {name} has no conditions"
            )
        cfg["dim"] = 2
        cfg["standardize"] = cfg["context_standardize"] = None
        cfg["base_scale"] = BASE_SCALE_TOY
        if name == "moons":  # the tutorial's fixed limits
            cfg["limits"] = [-3.0, 3.0, -3.0, 3.0]
        else:
            cfg["limits"] = _limits(datasets.sample_toy(name, cfg["n_train"], cfg["seed"]))
        return cfg
    if name in datasets.REAL_DATASETS:
        if cfg["context_dims"]:
            raise InputError(
                f"--context-dims applies to a data file; the built-in set {name} has no conditions"
            )
        train, test = load_data(cfg)
        cfg["n_train"], cfg["n_test"] = int(train.shape[0]), int(test.shape[0])
        return _describe_columns(cfg, train)
    if name in simulators.CONDITIONAL_DATASETS:
        if cfg["context_dims"] not in (0, simulators.X_DIM):
            raise InputError(
                f"the built-in simulator {name} has {simulators.X_DIM} condition columns, "
                f"not --context-dims {cfg['context_dims']}"
            )
        cfg["context_dims"] = simulators.X_DIM
        cfg.update(SIMULATIONS)
        return _describe_columns(cfg, load_data(cfg)[0])
    path = Path(name).expanduser()
    if path.suffix.lower() not in (".npy", ".csv") and not path.exists():
        choices = datasets.TOY_DATASETS + datasets.REAL_DATASETS + simulators.CONDITIONAL_DATASETS
        raise InputError(
            f"unknown data set {name!r}: choose one of {', '.join(choices)} or give a .npy "
            "or .csv file"
        )
    data = datasets.load_array(path)
    columns, k = data.shape[1], cfg["context_dims"]
    if k >= columns:
        raise InputError(
            f"--context-dims {k} leaves no data columns: {path.name} has {columns} columns; "
            f"give 1..{columns - 1}"
            if columns > 1
            else f"--context-dims {k}: {path.name} has a single column, so no room for conditions"
        )
    cfg["data"] = str(path.resolve())
    cfg["data_sha256"] = _sha256(path)
    train, test = datasets.split_holdout(data, 0.1, cfg["seed"])
    cfg["n_train"], cfg["n_test"] = int(train.shape[0]), int(test.shape[0])
    return _describe_columns(cfg, train)


def _standardisation(columns: np.ndarray) -> dict[str, list[float]]:
    std = columns.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return {"shift": [float(v) for v in columns.mean(axis=0)], "scale": [float(v) for v in std]}


def _in_unit_cube(cfg: dict[str, Any]) -> bool:
    """Whether every value of the run's training points lies in [0, 1] (files, digits)."""
    span = cfg.get("value_range")
    return span is not None and span[0] >= 0.0 and span[1] <= 1.0


def logits(points: np.ndarray, alpha: float) -> np.ndarray:
    """`UnitInterval`'s inverse map: ``logit(alpha + (1 - 2 alpha) x)``, in float64."""
    u = alpha + (1 - 2 * alpha) * np.asarray(points, np.float64)
    return np.log(u) - np.log1p(-u)


def _describe_columns(cfg: dict[str, Any], train: np.ndarray) -> dict[str, Any]:
    """Dimension, standardisations and plot limits of a file's (or simulator's) rows."""
    points, context = split_columns(cfg, train, dim=train.shape[1] - cfg["context_dims"])
    cfg["dim"] = int(points.shape[1])
    logit = cfg.get("logit", 0.0)  # modelled in logit space: standardise the logits
    cfg["standardize"] = _standardisation(logits(points, logit) if logit else points)
    cfg["context_standardize"] = None if context is None else _standardisation(context)
    cfg["base_scale"] = BASE_SCALE_FILE
    cfg["limits"] = _limits(points) if cfg["dim"] == 2 else None
    cfg["value_range"] = [float(points.min()), float(points.max())]  # in [0, 1]: logits?
    if context is not None:  # `ffjord sample` keeps a posterior's draws in this box
        low, high = points.min(axis=0), points.max(axis=0)
        cfg["data_range"] = {"low": low.tolist(), "high": high.tolist()}
    return cfg


def split_columns(
    cfg: dict[str, Any], rows: np.ndarray, dim: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(points, conditions or None): a run's rows split into its data and condition columns."""
    d = cfg["dim"] if dim is None else dim
    return rows[:, :d], (rows[:, d:] if cfg.get("context_dims") else None)


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
    if name in datasets.REAL_DATASETS:
        return datasets.load_digits(cfg["seed"])
    if name in simulators.CONDITIONAL_DATASETS:  # rows: parameters, then observations
        pairs = (
            simulators.simulate(cfg["n_train"], cfg["seed"]),
            simulators.simulate(cfg["n_test"], cfg["seed"] + TEST_SEED_OFFSET),
        )
        train, test = (np.concatenate(pair, axis=1) for pair in pairs)
        return train, test
    path = Path(name)
    if not path.exists():
        raise InputError(f"the run's data file {name} no longer exists")
    if cfg.get("data_sha256") and _sha256(path) != cfg["data_sha256"]:
        raise InputError(f"the run's data file {name} has changed since the run started")
    data = datasets.load_array(path)
    return datasets.split_holdout(data, 0.1, cfg["seed"])


def as_training_array(points: np.ndarray) -> np.ndarray:
    """Training runs in float32 (explicitly, not by accident), or in float64 throughout
    when JAX's float64 is enabled (the command line's models are then float64 too)."""
    if jax.config.read("jax_enable_x64"):
        return points.astype(np.float64)
    return points.astype(np.float32)


# Model ---------------------------------------------------------------------------------------


def _init_fields(cfg: dict[str, Any]) -> list[MLPField]:
    """Every block's field, each from its own key (split once, no per-block JAX calls);
    they see `context_features` projected conditions when it is set."""
    split = np.asarray(key_bits(jax.random.split(jax.random.key(cfg["seed"]), cfg["blocks"])))
    return [
        MLPField(
            cfg["dim"],
            cfg["hidden"],
            cfg["layers"],
            context_dim=cfg.get("context_features") or cfg.get("context_dims", 0),
            activation=cfg["activation"],
            key=as_typed_key(k),
        )
        for k in split
    ]


def build_model(cfg: dict[str, Any]) -> TransformedDistribution:
    """The flow of a configuration, with its initial parameters (from `seed`)."""
    dim = cfg["dim"]
    fields = _init_fields(cfg)
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
            adjoint=make_adjoint(cfg["adjoint"], cfg.get("checkpoints")),
        )
        for field in fields
    ]
    bijector = Chain(blocks)
    if cfg.get("standardize"):
        shift = jnp.asarray(cfg["standardize"]["shift"], jnp.float32)
        scale = jnp.asarray(cfg["standardize"]["scale"], jnp.float32)
        bijector = Chain([bijector, Affine(shift, scale)])
    if cfg.get("logit"):  # runs made before it have none
        bijector = Chain([bijector, UnitInterval(dim, alpha=cfg["logit"])])
    if cfg.get("context_features"):  # runs made before it have none
        key = jax.random.fold_in(jax.random.key(cfg["seed"]), PROJECTION_STREAM)
        bijector = ProjectedContext(bijector, cfg["context_dims"], cfg["context_features"], key=key)
    if cfg.get("context_standardize"):
        shift = jnp.asarray(cfg["context_standardize"]["shift"], jnp.float32)
        scale = jnp.asarray(cfg["context_standardize"]["scale"], jnp.float32)
        bijector = StandardizedContext(bijector, shift, scale)
    base = MultivariateNormalDiag(jnp.zeros(dim), cfg["base_scale"] * jnp.ones(dim))
    return TransformedDistribution(base, bijector)


def make_optimizer(cfg: dict[str, Any]) -> optax.GradientTransformation:
    """Adam at `lr`, constant or decaying to 5% over the run's steps (`schedule`);
    AdamW (decoupled weight decay, scaled by the learning rate) when `weight_decay` > 0."""
    lr = cfg["lr"]
    if cfg["schedule"] == "cosine":
        fitted = fit_size(cfg["n_train"], cfg["validation"])
        steps_per_epoch = max(fitted // cfg["batch_size"], 1)
        lr = optax.cosine_decay_schedule(lr, cfg["epochs"] * steps_per_epoch, alpha=0.05)
    decay = cfg.get("weight_decay", 0.0)
    return optax.adamw(lr, weight_decay=decay) if decay > 0 else optax.adam(lr)


def make_trainer(cfg: dict[str, Any]) -> Trainer:
    return Trainer(
        build_model(cfg),
        objective=make_objective(cfg),
        batch_size=cfg["batch_size"],
        optimizer=make_optimizer(cfg),
    )


def train_key(cfg: dict[str, Any]) -> jax.Array:
    return jax.random.fold_in(jax.random.key(cfg["seed"]), 1)
