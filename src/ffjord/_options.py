"""Typed, validated training options: how the engine trains, checked once, here."""

import dataclasses
from typing import Any, Literal

import optax

from ._checks import fraction, non_negative_number, one_of, positive_int, positive_number
from ._errors import InputError
from ._objectives import AbstractObjective

SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """How `ffjord.fit` and `ffjord train` train: epochs, batches, optimiser, early stopping.

    - `learning_rate`, `schedule` (`"constant"`, or `"cosine"`: decaying to 5% over the
      run's steps) and `weight_decay` (> 0: AdamW's decoupled decay) make the optimiser
      (Adam), unless `optimizer` gives one of your own.
    - `validation`: the fraction of the training rows held out to choose the best epoch;
      `patience`: stop after that many epochs without a better validation loss.
    - `test_every`: measure the held-out NLL every that many epochs (and after the last).
    - `devices`: data parallelism (an integer N or a list of devices); not part of what a
      run is (a resumed run may use another number).
    - `deadline`: when training must end, on `time.perf_counter`'s clock: it stops before
      an epoch that would not end in time (a time budget's; like `devices`, not part of
      what a run is).

    Every value is checked when the options are made; messages name the parameter.

    Example:
        >>> options = TrainingOptions(epochs=10, batch_size=64, schedule="cosine")
        >>> options.to_config()["schedule"], options.epochs
        ('cosine', 10)
        >>> TrainingOptions(epochs=0)
        Traceback (most recent call last):
        ...
        ffjord._errors.InputError: epochs must be a positive integer, got 0
    """

    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-2
    schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = 0.0
    optimizer: optax.GradientTransformation | None = None
    validation: float = 0.0
    patience: int | None = None
    test_every: int = 1
    devices: Any = None
    deadline: float | None = None

    def __post_init__(self):
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        set_("epochs", positive_int(self.epochs, "epochs"))
        set_("batch_size", positive_int(self.batch_size, "batch_size"))
        set_("test_every", positive_int(self.test_every, "test_every"))
        if self.optimizer is None:
            set_("learning_rate", positive_number(self.learning_rate, "learning_rate"))
        one_of(self.schedule, "schedule", SCHEDULES)
        set_("weight_decay", non_negative_number(self.weight_decay, "weight_decay"))
        set_("validation", fraction(self.validation, "validation"))
        if self.patience is not None:
            set_("patience", positive_int(self.patience, "patience"))
            if self.validation == 0:
                raise InputError(
                    "patience needs a held-out split to watch: give validation > 0 (e.g. 0.1)",
                    parameters=("patience", "validation"),
                )

    def replace(self, **changes: Any) -> "TrainingOptions":
        """These options with some changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def make_optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
        """`optimizer`, or Adam(W) at `learning_rate` under `schedule` for a run of
        `epochs` epochs of `steps_per_epoch` steps."""
        if self.optimizer is not None:
            return self.optimizer
        lr: Any = self.learning_rate
        if self.schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, self.epochs * steps_per_epoch, alpha=0.05)
        if self.weight_decay > 0:
            return optax.adamw(lr, weight_decay=self.weight_decay)
        return optax.adam(lr)

    def to_config(self) -> dict[str, Any]:
        """What `config.json` records (`devices` is not part of a run)."""
        if self.optimizer is not None:
            optimizer = "custom"
        else:
            optimizer = "adamw" if self.weight_decay > 0 else "adam"
        custom = self.optimizer is not None
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": optimizer,
            "learning_rate": None if custom else self.learning_rate,
            "schedule": None if custom else self.schedule,
            "weight_decay": None if custom else self.weight_decay,
            "validation": self.validation,
            "patience": self.patience,
            "test_every": self.test_every,
        }

    @classmethod
    def from_settings(cls, settings: dict[str, Any], devices: Any = None) -> "TrainingOptions":
        """The options among `ffjord.train`'s flat settings (`learning_rate`, `schedule`,
        ...; runs made before `schedule`, `weight_decay` or `test_every` have none: their
        defaults)."""
        return cls(
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            schedule=settings.get("schedule", "constant"),
            weight_decay=settings.get("weight_decay", 0.0),
            validation=settings["validation"],
            patience=settings["patience"],
            test_every=settings.get("test_every", 1),
            devices=devices,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TrainingOptions":
        """The options `to_config` recorded (a custom optimizer cannot be recorded: Adam)."""
        custom = config.get("optimizer") == "custom"
        return cls(
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            learning_rate=1e-2 if custom else config["learning_rate"],
            schedule="constant" if custom else config["schedule"],
            weight_decay=0.0 if custom else config["weight_decay"],
            validation=config["validation"],
            patience=config["patience"],
            test_every=config.get("test_every", 1),
        )


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """A first stage of training under another `objective` (flow matching) with its own
    `options`, from whose kept model the run's own objective starts. It trains on the
    run's training rows, split the same way; with a run directory it is written to
    `RUN/warm-start` (a run directory of its own, resumed like the run).

    Flow matching needs no ODE solve, so it finds the modes of a posterior in a fraction
    of likelihood training's time; likelihood training then sharpens the density
    (docs/DEFAULTS.md). From Python, two `ffjord.fit` calls do the same.

    Example:
        >>> import ffjord
        >>> stage = WarmStart(ffjord.FlowMatching(), TrainingOptions(epochs=5, batch_size=64))
        >>> stage.to_config()["training"]["epochs"]
        5
    """

    objective: AbstractObjective
    options: TrainingOptions

    def to_config(self) -> dict[str, Any]:
        return {"objective": self.objective.to_config(), "training": self.options.to_config()}


WARM_START_DIR = "warm-start"  # the warm start's run directory inside the run's
