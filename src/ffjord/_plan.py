"""A run of `ffjord train`, from Python (`train`) and the command line: what it trains, as
typed values (the model, `ModelOptions`), and the settings chosen from the data
(`data_defaults`).

Its options are flat (`blocks`, `learning_rate`, ...): the tutorial's defaults
(`TUTORIAL`), or for a data file those `data_defaults` chooses from its size and
dimension. `RunPlan.from_settings` turns them into one typed description of a run:
`ModelOptions` (which `build` turns into a model), `TrainingOptions`, an objective and
an optional `WarmStart`, each validated when made, with messages that name the
parameter.

Example:
    >>> plan = RunPlan.from_settings(TUTORIAL)
    >>> plan.model.blocks, plan.training.epochs, type(plan.objective).__name__
    (4, 40, 'MaximumLikelihood')
"""

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import jax
import numpy as np

from ._budget import BudgetPlan, plan_budget
from ._checks import non_negative_int, one_of, positive_number
from ._distributed import process_zeros
from ._embedding import EMBEDDINGS, SHAPED_EMBEDDINGS
from ._errors import InputError
from ._model_options import ModelOptions, is_toy
from ._objectives import COUPLINGS, AbstractObjective, FlowMatching, MaximumLikelihood
from ._options import TrainingOptions, WarmStart
from ._run import RunDir, training_dtype
from ._source import DataSource
from ._train import Points, RunTarget, Training, fit_size, run_training
from ._trainer import Trainer

OBJECTIVES = ("likelihood", "flow-matching")

# The tutorial: moons, 4 blocks of MLP(8, 3), Dopri5 rtol 1e-3 atol 1e-5, Adam 1e-2, 40 epochs.
TUTORIAL: dict[str, Any] = {
    "data": "moons",
    "epochs": 40,
    "batch_size": 256,
    "learning_rate": 1e-2,
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
    "embedding": "none",
    "embedding_features": 0,
    "context_shape": None,
    "support": None,
    "time_budget": None,
}
SETTINGS = (*TUTORIAL, "context_features")  # `train`'s settings: these and an alias
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
    "learning_rate": 1e-2,
    "schedule": "cosine",
}
OBJECTIVE_OPTIONS = {
    "likelihood": ("kinetic", "jacobian_frobenius", "warm_start"),
    "flow-matching": ("coupling",),
}


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One typed description of a run: the `model`, how it is `trained`, its `objective`,
    an optional `warm_start` stage before it, and the `seed` of its initial arrays and
    shuffles. `from_settings` makes one from flat settings; `build` makes its model.

    Example:
        >>> plan = RunPlan.from_settings({**TUTORIAL, "objective": "flow-matching",
        ...                                "blocks": 1, "coupling": "ot"})
        >>> plan.objective.coupling, plan.warm_start is None
        ('ot', True)
    """

    model: ModelOptions
    training: TrainingOptions
    objective: AbstractObjective
    warm_start: WarmStart | None
    seed: int

    @classmethod
    def from_settings(cls, settings: dict[str, Any], devices: Any = None) -> "RunPlan":
        """The plan flat settings (`TUTORIAL`'s keys) give, every value checked."""
        check_settings(settings)
        return cls(
            ModelOptions.from_settings(settings),
            TrainingOptions.from_settings(settings, devices),
            objective_of(settings),
            make_warm_start(settings),
            settings["seed"],
        )

    def within(self, budget: BudgetPlan, given: Sequence[str] = ()) -> "RunPlan":
        """This plan with the epochs a time `budget` chose; unless `given`, the held-out
        NLL is measured after the last epoch only and no early stopping cuts the schedule
        short (the validation split still keeps the best epoch)."""
        epochs = budget.epochs
        test_every = self.training.test_every if "test_every" in given else epochs
        patience = self.training.patience if "patience" in given else None
        training = self.training.replace(epochs=epochs, test_every=test_every, patience=patience)
        warm = self.warm_start
        if warm is not None:
            options = warm.options.replace(epochs=budget.warm_start, patience=patience)
            warm = dataclasses.replace(warm, options=options)
        return dataclasses.replace(self, training=training, warm_start=warm)

    def until(self, warm_deadline: float, deadline: float) -> "RunPlan":
        """This plan with its stages' deadlines (`time.perf_counter`'s clock)."""
        warm = self.warm_start
        if warm is not None:
            warm = dataclasses.replace(warm, options=warm.options.replace(deadline=warm_deadline))
        return dataclasses.replace(
            self, training=self.training.replace(deadline=deadline), warm_start=warm
        )

    @property
    def key(self) -> jax.Array:
        """The key of training's randomness (shuffles, probes), apart from initialisation."""
        return jax.random.fold_in(jax.random.key(self.seed), 1)

    def trainer(self, source: DataSource, train: np.ndarray) -> Trainer:
        """A `Trainer` of the plan (no run directory), for tools that drive epochs
        themselves (benchmarks, tests)."""
        steps_per_epoch = fit_size(len(train), self.training.validation) // self.training.batch_size
        return Trainer(
            self.model.build(source, train, self.seed),
            objective=self.objective,
            batch_size=self.training.batch_size,
            optimizer=self.training.make_optimizer(max(steps_per_epoch, 1)),
        )


def check_settings(cfg: dict[str, Any]) -> None:
    """One-line errors for flat settings that cannot work together (each value is checked
    by the typed option it belongs to); messages name the parameters."""
    dims = non_negative_int(cfg["context_dims"], "context_dims")
    check_embedding(cfg["embedding"], cfg["context_shape"], dims)
    ModelOptions.from_settings(cfg)
    TrainingOptions.from_settings(cfg)
    one_of(cfg["objective"], "objective", OBJECTIVES)
    one_of(cfg["coupling"], "coupling", COUPLINGS)
    objective_of(cfg)
    features = cfg["embedding_features"]
    if cfg["embedding"] == "linear" and features > dims:
        raise InputError(
            f"embedding_features {features} exceeds the {dims} condition columns "
            f"(context_dims {dims}) that embedding linear combines",
            parameters=("embedding_features", "context_dims", "embedding"),
        )
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InputError(
            f"seed must be an integer in [0, 2^31), got {seed!r}", parameters=("seed",)
        )
    if cfg["time_budget"] is not None:
        positive_number(cfg["time_budget"], "time_budget")
    warm = non_negative_int(cfg["warm_start"], "warm_start", "a non-negative integer (0: off)")
    if cfg["objective"] == "flow-matching" and cfg["blocks"] != 1:
        raise InputError(
            f"flow matching trains a single FFJORD block, but blocks is {cfg['blocks']}; "
            "use blocks 1",
            parameters=("blocks",),
        )
    if warm and cfg["blocks"] != 1:
        raise InputError(
            f"warm_start trains by flow matching, which trains a single FFJORD block, but "
            f"blocks is {cfg['blocks']}; use blocks 1",
            parameters=("warm_start", "blocks"),
        )


def check_embedding(embedding: Any, shape: Any, dims: int) -> None:
    """One-line errors for an embedding that the conditions (`dims` columns laid out as
    `shape`) cannot take; the shape's own checks are `DataSource.with_context_shape`'s."""
    one_of(embedding, "embedding", EMBEDDINGS)
    if embedding != "none" and not dims:
        raise InputError(
            f"embedding {embedding} summarises conditions; give context_dims K as well",
            parameters=("embedding", "context_dims"),
        )
    if embedding in SHAPED_EMBEDDINGS and shape is None:
        layout = "T time steps of C channels" if embedding == "conv1d" else "N trials of C values"
        raise InputError(
            f"embedding {embedding} reads each condition row as {layout}; give context_shape",
            parameters=("embedding", "context_shape"),
        )


def _context_features(given: dict[str, Any]) -> dict[str, Any]:
    """`given` with `context_features` R (an alias) as `embedding` linear (none for 0) with
    `embedding_features` R."""
    if "context_features" not in given:
        return given
    given = dict(given)
    features = given.pop("context_features")
    non_negative_int(features, "context_features", "a non-negative integer (0: off)")
    dims = given.get("context_dims")
    if features and not dims:
        raise InputError(
            "context_features applies to conditional data; give context_dims K as well",
            parameters=("context_features", "context_dims"),
        )
    if isinstance(dims, int) and features > dims:
        raise InputError(
            f"context_features {features} exceeds the {dims} condition columns "
            f"(context_dims {dims})",
            parameters=("context_features", "context_dims"),
        )
    meant = {"embedding": "linear" if features else "none", "embedding_features": features}
    for name, value in meant.items():
        if given.get(name, value) != value:
            raise InputError(
                f"context_features {features} means embedding {meant['embedding']} with "
                f"embedding_features {features}, not {name} {given[name]}; give one or the other",
                parameters=("context_features", *meant),
            )
    return {**given, **meant}


def data_defaults(
    n_train: int,
    dim: int,
    context_dims: int,
    in_unit_cube: bool = False,
    objective: str | None = None,
    context_shape: tuple[int, int] | None = None,
    embedding: str | None = None,
) -> dict[str, Any]:
    """The settings `ffjord train --data FILE` chooses for `n_train` rows of `dim` data
    columns and `context_dims` condition columns (measured: docs/DEFAULTS.md), for
    `objective` and `embedding` (by default chosen too).

    Likelihood training of two blocks of a 3-layer SiLU MLP, the exact trace (the field's
    closed form costs less than one Hutchinson probe at every dimension: docs/TRACE.md),
    batches of 256 (fewer for small files), AdamW with cosine decay over about 2,500
    steps, and early stopping: 10% of the rows choose the best epoch, patience half the
    planned epochs (at least 20; the warm start's: half of its own).
    Up to 16 data columns: 64 units, learning rate 5e-3, weight decay 0.1; beyond: 128
    units, learning rate 1e-2, weight decay 1.0 (measured on 64-D digits). Data whose
    values all lie in [0, 1] (`in_unit_cube`: pixels, proportions) are modelled in logit
    space (`UnitInterval` with alpha 0.01).

    Conditional data of 3 to 16 columns with few conditions: one block, warmed up by
    flow matching (about 25,000 steps of 64 rows at learning rate 3e-3, `--warm-start`),
    then about 1,250 steps of likelihood training at 2e-3: flow matching places the
    posterior's modes cheaply and likelihood training sharpens them. Their fields see
    each condition row beside 32 features an MLP learns from it (`mlp`, `keep_input`):
    a posterior whose width the conditions' spread sets (slcp's) is resolved far
    better, and a linear-Gaussian one loses nothing.

    Many conditions (more than 32 columns, and more than twice the data's): the fields
    see 32 learned linear combinations of them (`ProjectedContext`), trained by flow
    matching (flow matching's field, learning rate 3e-3, about 25,000 steps of 64 rows,
    the held-out NLL after the last epoch only): likelihood training overfits such
    conditions, and its solves cost 10-20x more per step.

    Conditions laid out as `context_shape` (T, C) are summarised by a 1-D convolutional
    network (`conv1d`, 32 features; `set` for i.i.d. trials is the user's choice: a shape
    does not say whether its order matters), trained with the flow by likelihood: on raw
    observations with exact posteriors, likelihood training came within 0.02 C2ST of
    the sufficient statistics where flow matching stayed 0.05-0.11 behind
    (docs/EMBEDDINGS.md).

    Example:
        >>> data_defaults(9000, 2, 2)["warm_start"]  # 2-D: two blocks, likelihood only
        0
        >>> warmed = data_defaults(9000, 5, 8)
        >>> warmed["blocks"], warmed["warm_start"], warmed["epochs"], warmed["embedding"]
        (1, 199, 41, 'mlp')
        >>> chosen = data_defaults(9000, 10, 100)
        >>> chosen["objective"], chosen["embedding"], chosen["embedding_features"]
        ('flow-matching', 'linear', 32)
    """
    validation = 0.1
    fitted = fit_size(n_train, validation)
    batch_size = 256 if fitted >= 4096 else max(16, 2 ** int(math.log2(max(fitted // 16, 1))))
    many = context_dims > MANY_CONDITIONS and context_dims > 2 * dim
    given_embedding = embedding
    embedding = embedding or ("conv1d" if context_shape else "linear" if many else "none")
    objective = objective or ("flow-matching" if many and embedding == "linear" else "likelihood")
    chosen = {
        "objective": objective,
        "blocks": 2,
        "hidden": 64 if dim <= WIDE_ABOVE else 128,
        "layers": 3,
        "activation": "silu",
        "trace": "exact",
        "batch_size": batch_size,
        "epochs": _epochs_for(DEFAULT_STEPS, fitted, batch_size),
        "learning_rate": 5e-3 if dim <= WIDE_ABOVE else 1e-2,
        "schedule": "cosine",
        "weight_decay": 0.1 if dim <= WIDE_ABOVE else 1.0,
        "validation": validation,
        "logit": LOGIT_ALPHA if in_unit_cube else 0.0,
        "embedding": embedding,
        "embedding_features": embedding_features_for(embedding, context_dims),
        "warm_start": 0,
    }
    if objective == "likelihood" and context_dims and not many and 2 < dim <= WIDE_ABOVE:
        chosen.update(
            blocks=1,
            warm_start=_epochs_for(FLOW_MATCHING_STEPS, fitted, FLOW_MATCHING["batch_size"]),
            epochs=_epochs_for(WARM_STARTED_STEPS, fitted, batch_size),
            learning_rate=2e-3,
        )
        if given_embedding is None and embedding == "none":
            chosen.update(embedding="mlp", embedding_features=CONTEXT_FEATURES)
    if objective == "flow-matching":
        chosen.update(FLOW_MATCHING, coupling=coupling_for(context_dims))
        if many:
            batch = FLOW_MATCHING["batch_size"]
            epochs = _epochs_for(FLOW_MATCHING_STEPS, fitted, batch)
            chosen.update(learning_rate=3e-3, epochs=epochs, test_every=epochs)
    chosen["patience"] = patience_for(chosen["epochs"])
    return chosen


def patience_for(epochs: int) -> int:
    """Early stopping's patience for a cosine schedule of `epochs`: half of it, at least
    `PATIENCE`. While the learning rate is high the validation loss is noisy, so a lucky
    early epoch can look unbeaten for 20 epochs (gaussian_mixture, simulation seed 2:
    stopped at epoch 31 of 81, C2ST 0.596 against 0.554 when run to the end).

    Example:
        >>> patience_for(81), patience_for(20)
        (41, 20)
    """
    return max(PATIENCE, math.ceil(epochs / 2))


def embedding_features_for(embedding: str, context_dims: int) -> int:
    """The features an embedding gives by default: 32 (at most the `context_dims` columns
    a linear one combines), 0 for none."""
    if embedding == "none":
        return 0
    if embedding == "linear":
        return min(CONTEXT_FEATURES, context_dims)
    return CONTEXT_FEATURES


def _epochs_for(steps: int, fitted: int, batch_size: int) -> int:
    """Epochs of about `steps` optimiser steps (20 to 400)."""
    steps_per_epoch = max(fitted // batch_size, 1)
    return min(max(math.ceil(steps / steps_per_epoch), 20), 400)


LOGIT_ALPHA = 0.01  # data in [0, 1]: modelled as logit(alpha + (1 - 2 alpha) x)
DEFAULT_STEPS = 2500  # optimiser steps `data_defaults` plans for (early stopping may end sooner)
PATIENCE = 20  # early stopping's least patience (epochs without a better validation loss)
WIDE_ABOVE = 16  # data columns beyond which the field is wider and more regularised
MANY_CONDITIONS = 32  # condition columns beyond which (and beyond 2 d) they are projected
CONTEXT_FEATURES = 32  # the learned features of many conditions (an embedding's default)
FLOW_MATCHING_STEPS = 25_000  # flow matching's steps on conditional data (200 epochs of 9k)
WARM_START_LR = 3e-3  # flow matching's learning rate before likelihood training
WARM_STARTED_STEPS = 1250  # likelihood training's steps after a warm start (40 epochs of 9k)
JVP_TRACE_UP_TO = 16  # a field without a closed-form trace (> 3 layers): exact up to this d


def make_warm_start(cfg: dict[str, Any]) -> WarmStart | None:
    """The flow-matching stage before likelihood training (`warm_start` epochs; None when
    0): flow matching's batches of 64 at learning rate `WARM_START_LR`, decaying like the
    run's, independent coupling for conditional data."""
    if not cfg["warm_start"]:
        return None
    patience = cfg["patience"]
    if patience and "patience" in cfg.get("chosen_for_data", ()):
        patience = patience_for(cfg["warm_start"])
    options = TrainingOptions.from_settings(cfg).replace(
        epochs=cfg["warm_start"],
        patience=patience,
        learning_rate=WARM_START_LR,
        batch_size=min(FLOW_MATCHING["batch_size"], cfg["batch_size"]),
        test_every=1,
    )
    return WarmStart(FlowMatching(coupling=coupling_for(cfg["context_dims"])), options)


def coupling_for(context_dims: int) -> Literal["independent", "ot"]:
    """Flow matching's coupling by default: OT pairing, but independent for conditional
    data (OT pairs base and data points regardless of their conditions)."""
    return "independent" if context_dims else cast(Literal["ot"], FLOW_MATCHING["coupling"])


def objective_of(cfg: dict[str, Any]) -> AbstractObjective:
    """The objective the settings name."""
    if cfg["objective"] == "flow-matching":
        return FlowMatching(coupling=cfg["coupling"])
    return MaximumLikelihood(kinetic=cfg["kinetic"], jacobian_frobenius=cfg["jacobian_frobenius"])


def new_settings(
    given: dict[str, Any],
) -> tuple[dict[str, Any], DataSource, np.ndarray, np.ndarray]:
    """(the settings of a new run, validated; its data source; its training and held-out
    rows), the data read once.

    The options `given` win; the rest are the tutorial's for the built-in 2-D sets, and
    for a file or a built-in simulator are chosen from the data's size and dimension
    (`data_defaults`). `objective="flow-matching"` takes flow matching's own defaults
    (independent coupling for conditional data: OT pairing ignores conditions). The
    keys chosen for the data are listed under `chosen_for_data`. An option of the other
    objective is refused rather than silently ignored.
    """
    given = _context_features(given)
    dims = given.get("context_dims")
    if isinstance(dims, int) and dims < 1:
        raise InputError(
            f"context_dims must be at least 1 (leave it out for no conditions), got {dims}",
            parameters=("context_dims",),
        )
    cfg = {**TUTORIAL, "data": "moons"}
    cfg.update({k: v for k, v in given.items() if k in ("data", "seed", "context_dims")})
    check_settings(cfg)
    source, train, test = DataSource.open(cfg["data"], cfg["seed"], cfg["context_dims"])
    cfg.update(data=source.name, context_dims=source.context_dims)
    if given.get("context_shape") is not None:
        source = source.with_context_shape(given["context_shape"])
    chosen: dict[str, Any] = {}
    if not is_toy(source):
        chosen = data_defaults(
            source.n_train,
            source.dim,
            source.context_dims,
            source.in_unit_cube,
            objective=given.get("objective"),
            context_shape=source.context_shape,
            embedding=given.get("embedding"),
        )
    objective = given.get("objective", chosen.get("objective", TUTORIAL["objective"]))
    for other, options in OBJECTIVE_OPTIONS.items():
        for name in options:
            if other != objective and name in given:
                raise InputError(
                    f"{name} applies to objective {other}, not {objective}",
                    parameters=(name, "objective"),
                )
    cfg.update(chosen)
    if objective == "flow-matching" and not chosen:  # the built-in 2-D sets
        cfg.update(FLOW_MATCHING)
    cfg.update(given)
    cfg.update(data=source.name, context_dims=source.context_dims)
    cfg["context_shape"] = source.context_shape
    if not cfg["validation"] and "patience" not in given:
        chosen.pop("patience", None)  # nothing held out to watch: no early stopping
        cfg["patience"] = None
    if "test_every" in chosen and "test_every" not in given:
        chosen["test_every"] = cfg["test_every"] = cfg["epochs"]  # the end of the run only
    if chosen.get("patience") and "patience" not in given:
        chosen["patience"] = cfg["patience"] = patience_for(cfg["epochs"])  # given epochs too
    if chosen and "trace" not in given and cfg["layers"] > 3 and source.dim > JVP_TRACE_UP_TO:
        chosen["trace"] = cfg["trace"] = "hutchinson"  # no closed form: exact costs d JVPs
    cfg["chosen_for_data"] = sorted(k for k, v in chosen.items() if cfg[k] == v and k not in given)
    check_settings(cfg)
    if cfg["support"] is not None:
        source = source.with_support(cfg["support"], source.split(train)[0])
        cfg["support"] = [[low, high] for low, high in zip(*_given_box(source), strict=True)]
    if cfg["logit"] and not source.in_unit_cube:
        span = source.value_range
        reach = f" (they span {span[0]:.4g}..{span[1]:.4g})" if span else ""
        raise InputError(
            f"logit {cfg['logit']:g} models data in [0, 1], but the training data are "
            f"not all within it{reach}; leave logit out",
            parameters=("logit",),
        )
    return cfg, source, train, test


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The flat settings (`TUTORIAL`'s keys) of a run made by `ffjord train`, read back
    from its `config.json` (what `--resume` compares the options it is given with)."""
    training = TrainingOptions.from_config(config["training"])
    objective, warm, data = config["objective"], config.get("warm_start"), config["data"]
    model = ModelOptions.from_description(config["model"])
    source = DataSource.from_config(data)
    return {
        **{name: getattr(model, name) for name in ModelOptions.__dataclass_fields__},
        "data": data["name"],
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "learning_rate": training.learning_rate,
        "schedule": training.schedule,
        "weight_decay": training.weight_decay,
        "validation": training.validation,
        "patience": training.patience,
        "test_every": training.test_every,
        "objective": objective["name"],
        "warm_start": 0 if warm is None else warm["training"]["epochs"],
        "coupling": objective.get("coupling", TUTORIAL["coupling"]),
        "kinetic": objective.get("kinetic", 0.0),
        "jacobian_frobenius": objective.get("jacobian_frobenius", 0.0),
        "seed": data["seed"],
        "context_dims": data.get("context_dims", 0),
        "chosen_for_data": config.get("chosen_for_data", []),
        "support": _given_support(source),
        "context_shape": source.context_shape,
        "time_budget": (config.get("time_budget") or {}).get("seconds"),
    }


def _given_box(source: DataSource) -> tuple[list, list]:
    assert source.support is not None
    return source.support["low"], source.support["high"]


def _given_support(source: DataSource) -> list[list[float | None]] | None:
    """The support given to a run (`[[low, high], ...]`), None if none was given."""
    if source.support is None or source.support.get("from") != "given":
        return None
    return [[low, high] for low, high in zip(*_given_box(source), strict=True)]


def resume_settings(
    run: RunDir, given: dict[str, Any]
) -> tuple[dict[str, Any], DataSource, np.ndarray, np.ndarray]:
    """(settings, source, training rows, held-out rows) of the run in `run` to resume: its
    own settings, which the options `given` must match (only `epochs` may change)."""
    config = run.require_made_by_train("resume")
    cfg = settings_of(config)
    for name, value in _context_features(given).items():
        if name == "epochs":
            continue
        saved = cfg[name]
        same = value == saved or (name == "data" and Path(value).resolve() == Path(saved))
        if not same:
            raise InputError(
                f"{name} {value} differs from the run's {saved}; resume=True continues with "
                "the run's own settings (only epochs may change)",
                parameters=(name, "resume=True", "epochs"),
            )
    if "epochs" in given:
        cfg["epochs"] = given["epochs"]
    RunPlan.from_settings(cfg)  # checked; written by the engine once the checkpoint loads
    source = DataSource.from_config(config["data"])
    return (cfg, source, *source.load())


def train(
    run_dir: str | os.PathLike[str],
    *,
    data: str | None = None,
    resume: bool = False,
    context_dims: int | None = None,
    context_features: int | None = None,
    embedding: str | None = None,
    embedding_features: int | None = None,
    context_shape: tuple[int, int] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    schedule: str | None = None,
    weight_decay: float | None = None,
    blocks: int | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    activation: str | None = None,
    trace: str | None = None,
    solver: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    objective: str | None = None,
    warm_start: int | None = None,
    coupling: str | None = None,
    kinetic: float | None = None,
    jacobian_frobenius: float | None = None,
    validation: float | None = None,
    patience: int | None = None,
    test_every: int | None = None,
    adjoint: str | None = None,
    logit: float | None = None,
    checkpoints: int | None = None,
    seed: int | None = None,
    support: Sequence[tuple[float | None, float | None]] | None = None,
    time_budget: float | None = None,
    devices: int | None = None,
    show_progress: bool = True,
) -> Training:
    """What `ffjord train` does, from Python: train on `data` and write the run directory
    `run_dir` (which `ffjord sample`, `ffjord.load` and `ffjord.figures.plot_run` read).

    `data` is a built-in set (`moons`, the default, `digits`, ...), the simulator `arcs`
    or a `.npy` / `.csv` file whose last `context_dims` columns are conditions. Every
    other keyword is the `ffjord train` option of the same name (`learning_rate` is
    `--lr`; docs/cli.md); an option left out (`None`) takes the tutorial's value for the
    built-in 2-D sets, and for a file or a simulator the value chosen from the data's
    size and dimension (docs/DEFAULTS.md; `config.json` lists them under
    `chosen_for_data`). `resume=True` continues the run in `run_dir` with its own
    settings (only `epochs` may change). `devices` splits every batch over the first
    `devices` of JAX's devices. `support` gives each data column's `(low, high)` (`None`:
    unbounded), the box `ffjord sample` keeps draws within; without it, a conditional
    run's draws are kept within the training data's range. `embedding` (`"mlp"`,
    `"conv1d"`, `"set"`, `"linear"`, `"none"`) summarises each condition row by
    `embedding_features` learned features, trained with the flow; `context_shape`
    `(T, C)` reads a row as T time steps (`conv1d`) or T i.i.d. trials (`set`) of C
    values. `context_features=R` is `embedding="linear", embedding_features=R`.
    `time_budget` (seconds) fits the run into that time, counted from this call: the
    epochs of the warm start and of training (those not given) are scaled from one
    measured epoch of each so that their schedules end in time, and training stops
    before an epoch that would not (`config.json`'s `time_budget` records the choice).

    Returns the `Training`: the kept model (`dist`), the per-epoch `history` and the
    held-out NLL of the kept model (`test_nll`).

    Example:
        >>> import os, tempfile, ffjord
        >>> run_dir = os.path.join(tempfile.mkdtemp(), "run")
        >>> result = ffjord.train(run_dir, data="circles", epochs=1, blocks=1, hidden=4,
        ...                       show_progress=False)
        >>> len(result.history), result.dist.dim, result.test_nll > 0
        (1, 2, True)
    """
    started = time.perf_counter()
    given = {name: value for name, value in _settings_given(locals()).items() if value is not None}
    if "support" in given:
        given["support"] = _as_pairs(given["support"])
    if "context_shape" in given:
        given["context_shape"] = _as_shape(given["context_shape"])
    run = RunDir(run_dir)
    if resume:
        cfg, source, train_rows, test_rows = resume_settings(run, given)
    else:
        cfg, source, train_rows, test_rows = new_settings(given)
    plan = RunPlan.from_settings(cfg, devices=devices)
    dist = plan.model.build(source, train_rows, plan.seed)
    train_rows, test_rows = train_rows.astype(training_dtype()), test_rows.astype(training_dtype())
    budget = None
    if cfg["time_budget"] is not None:
        if resume:
            budget = BudgetPlan(**run.require()["time_budget"])
        else:
            budget = plan_budget(cfg["time_budget"], started, dist, plan.objective, plan.training,
                                 plan.warm_start, Points(*source.split(train_rows)), plan.key,
                                 fixed=_given_stages(given))  # fmt: skip
            plan = plan.within(budget, given=tuple(given))
    if budget is not None:
        plan = plan.until(*budget.deadlines(started))
    return run_training(
        plan.key,
        dist,
        Points(*source.split(train_rows)),
        test=Points(*source.split(test_rows)),
        objective=plan.objective,
        options=plan.training,
        warm_start=plan.warm_start,
        run=RunTarget(
            run.path,
            resume,
            source,
            tuple(cfg["chosen_for_data"]),
            None if budget is None else budget.to_config(),
        ),  # fmt: skip
        show_progress=show_progress,
        after_warm_start=None if budget is None else _replanned(plan, budget, given),
    )


def _replanned(
    plan: RunPlan, budget: BudgetPlan, given: dict[str, Any]
) -> Callable[[float], tuple[TrainingOptions, dict[str, Any]]] | None:
    """What re-sizes a budgeted likelihood stage once the warm start has trained the
    flow (`BudgetPlan.after_warm_start`, from the growth of its solves; also when a run
    stopped during its warm start is resumed), or None for a plan without a warm start
    before likelihood training or whose training epochs were given."""
    deadline = plan.training.deadline
    warm_then_likelihood = plan.warm_start is not None and plan.objective.name == "likelihood"
    if not warm_then_likelihood or deadline is None or "epochs" in given:
        return None  # (given epochs: nothing to re-size, so nothing to measure)

    def replan(growth: float) -> tuple[TrainingOptions, dict[str, Any]]:
        left = process_zeros(deadline - time.perf_counter())  # every process: one plan
        resized = budget.after_warm_start(left, growth)
        return plan.within(resized, given=tuple(given)).training, resized.to_config()

    return replan


def _given_stages(given: dict[str, Any]) -> tuple[str, ...]:
    """The stages whose epochs the user gave (a time budget leaves them as given)."""
    return tuple(stage for stage, name in (("training", "epochs"), ("warm_start", "warm_start"))
                 if name in given)  # fmt: skip


def _as_pairs(support: Any) -> Any:
    """`support` as a list of `[low, high]` lists (as `config.json` records it), when it
    has that shape; otherwise as given, for `DataSource.with_support` to refuse."""
    try:
        return [[low, high] for low, high in support]
    except (TypeError, ValueError):
        return support


def _as_shape(shape: Any) -> Any:
    """`shape` as a tuple (as `DataSource` keeps it), when it is a sequence; otherwise as
    given, for `DataSource.with_context_shape` to refuse."""
    return tuple(shape) if isinstance(shape, (list, tuple)) else shape


def _settings_given(arguments: dict[str, Any]) -> dict[str, Any]:
    """`train`'s keyword arguments that are settings (`TUTORIAL`'s keys and the alias
    `context_features`)."""
    return {name: arguments[name] for name in SETTINGS}
