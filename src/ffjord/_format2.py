"""Reading run directories of format 2 (ffjord 0.2): their `config.json` in today's schema.

Format 2 kept the command line's flat settings (`lr`, `hidden`, `objective`, ...) beside
the engine's (`learning_rate`, `model`, `loss`, ...). Everything format 3 records is in
it; its checkpoints hold the same `TrainState`, so they load unchanged.
"""

from typing import Any

from ._options import TrainingOptions

WARM_START_LR = 3e-3  # 0.2's warm start: flow matching at this learning rate (not recorded)


def _training(cfg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`training` of a run made by `ffjord train` (its optimiser came from its settings)."""
    settings = {**cfg, "learning_rate": cfg["lr"]}  # the flat setting, not the engine's copy
    return TrainingOptions.from_settings(settings).replace(**changes).to_config()


def upgrade(cfg: dict[str, Any]) -> dict[str, Any]:
    """A format-2 `config.json` in format 3's schema.

    Example:
        >>> old = {"format_version": 2, "epochs": 3, "batch_size": 32, "optimizer": "adam",
        ...        "learning_rate": 0.01, "validation": 0.0, "patience": None, "dim": 2,
        ...        "context_dim": 0, "model": None, "loss": {"name": "likelihood"}}
        >>> new = upgrade(old)
        >>> new["format_version"], new["training"]["learning_rate"], new["objective"]["name"]
        (3, 0.01, 'likelihood')
    """
    made_by_cli = cfg.get("made_by") == "ffjord train"
    if made_by_cli:
        training = _training(cfg)
    else:  # `fit` (or a warm start's stage): Adam at a learning rate, or a custom optimizer
        custom = cfg.get("optimizer") == "custom"
        training = {
            "epochs": cfg["epochs"],
            "batch_size": cfg["batch_size"],
            "optimizer": "custom" if custom else "adam",
            "learning_rate": None if custom else cfg["learning_rate"],
            "schedule": None if custom else "constant",
            "weight_decay": None if custom else 0.0,
            "validation": cfg["validation"],
            "patience": cfg["patience"],
        }  # `test_every` was not recorded: not compared on resume
    warm = cfg.get("warm_start_stage")
    warm_start = None
    if warm is not None:
        stage = _training(
            cfg, epochs=warm["epochs"], batch_size=warm["batch_size"], learning_rate=WARM_START_LR
        )
        warm_start = {"objective": warm["loss"], "training": {**stage, "test_every": 1}}
    new: dict[str, Any] = {
        "format_version": 3,
        "ffjord_version": cfg.get("ffjord_version"),
        "made_by": "ffjord train" if made_by_cli else "ffjord.fit",
        "data": _data(cfg) if made_by_cli else None,
        "model": cfg["model"],
        "objective": cfg["loss"],
        "training": training,
        "warm_start": warm_start,
        "dim": cfg["dim"],
        "context_dim": cfg.get("context_dim", 0),
        "sizes": cfg.get("sizes"),
        "train_sha256": cfg.get("train_sha256"),
    }
    if made_by_cli:
        new["chosen_for_data"] = cfg.get("chosen_for_data", [])
    if "validation_metric" in cfg:
        new["validation_metric"] = cfg["validation_metric"]
    return new


def _data(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": cfg["data"],
        "seed": cfg["seed"],
        "dim": cfg["dim"],
        "n_train": cfg["n_train"],
        "n_test": cfg["n_test"],
        "context_dims": cfg.get("context_dims", 0),
        "sha256": cfg.get("data_sha256"),
        "limits": cfg.get("limits"),
        "value_range": cfg.get("value_range"),
        "data_range": cfg.get("data_range"),
    }
