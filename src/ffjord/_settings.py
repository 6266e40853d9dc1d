"""The command line's settings: flat (`--hidden`, `--lr`, ...), merged from the flags
given, the tutorial's defaults and those chosen for the data (`ffjord._plan`), and read
back from a run's `config.json` (`flag_values`) so that `--resume` can compare them.
`flag` spells a library parameter as its flag, for messages.
"""

from typing import Any

import numpy as np

from ._errors import InputError
from ._options import TrainingOptions
from ._plan import (
    FLOW_MATCHING,
    JVP_TRACE_UP_TO,
    TUTORIAL,
    ModelOptions,
    _is_toy,
    check_settings,
    data_defaults,
)
from ._source import DataSource

FLAGS = {  # the library's parameter names as the command line spells them, for messages
    "learning_rate": "--lr",
    "lr": "--lr",
    "run_dir": "--out",
    "resume=True": "--resume",
    "data": "--data",
}

OBJECTIVE_OPTIONS = {
    "likelihood": ("kinetic", "jacobian_frobenius", "warm_start"),
    "flow-matching": ("coupling",),
}


def flag(name: str) -> str:
    """How the command line spells the library's parameter `name` (`batch_size`: `--batch-size`)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


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
    chosen: dict[str, Any] = {}
    if not _is_toy(source):
        chosen = data_defaults(
            source.n_train,
            source.dim,
            source.context_dims,
            source.in_unit_cube,
            objective=given.get("objective"),
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
    if "test_every" in chosen and "test_every" not in given:
        chosen["test_every"] = cfg["test_every"] = cfg["epochs"]  # the end of the run only
    if chosen and "trace" not in given and cfg["layers"] > 3 and source.dim > JVP_TRACE_UP_TO:
        chosen["trace"] = cfg["trace"] = "hutchinson"  # no closed form: exact costs d JVPs
    cfg["chosen_for_data"] = sorted(k for k, v in chosen.items() if cfg[k] == v and k not in given)
    check_settings(cfg)
    if cfg["logit"] and not source.in_unit_cube:
        span = source.value_range
        reach = f" (they span {span[0]:.4g}..{span[1]:.4g})" if span else ""
        raise InputError(
            f"logit {cfg['logit']:g} models data in [0, 1], but the training data are "
            f"not all within it{reach}; leave logit out",
            parameters=("logit",),
        )
    return cfg, source, train, test


def flag_values(config: dict[str, Any]) -> dict[str, Any]:
    """The settings (`TUTORIAL`'s keys) of a run made by `ffjord train`, read back from
    its `config.json`: what `--resume` compares the options it is given with."""
    training = TrainingOptions.from_config(config["training"])
    objective, warm, data = config["objective"], config.get("warm_start"), config["data"]
    model = ModelOptions.from_description(config["model"])
    return {
        **{name: getattr(model, name) for name in ModelOptions.__dataclass_fields__},
        "data": data["name"],
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "lr": training.learning_rate,
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
    }
