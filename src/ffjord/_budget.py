"""Fitting a run into a time budget: how many epochs each stage gets, from a measurement.

`ffjord train --time-budget SECONDS` (Python: `train(..., time_budget=)`) says how long a
user will wait. Before training, `plan_budget` times a steady epoch (and a validation pass)
of each stage on the run's own data and model, compiled as the run will be, then scales
the epochs of the stages that were not given (the warm start's and the run's), so that
their learning-rate schedules end when the budget does; the sizes of the model stay as
chosen from the data. During training the engine stops before an epoch that would not
end in time (`deadline`), keeping the best epoch so far, and records why.

Example:
    >>> plan = BudgetPlan(seconds=60.0, scale=0.5, epochs=20, warm_start=100,
    ...                   warm_start_seconds=20.0, training_seconds=25.0, probe={})
    >>> plan.deadlines(started=1000.0)
    (1032.0, 1057.0)
"""

import dataclasses
import math
import time
from typing import Any

import numpy as np

from ._options import TrainingOptions, WarmStart
from ._train import Points, fit_size, with_context_map
from ._trainer import Trainer

MARGIN = 0.05  # of the budget, kept free for what a measurement cannot see
MAX_EPOCHS = 10_000  # however long the budget
# A trained flow's likelihood epoch takes about this many of the untrained one measured
# (its solves need more steps): 3.2-3.8 on slcp's 5-D posterior after a warm start, here.
SOLVE_GROWTH = 3.5


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """What a time budget of `seconds` chose: the default epochs scaled by `scale`, giving
    `epochs` of training after `warm_start` epochs of the warm start (0: none), expected to
    take `warm_start_seconds` and `training_seconds`; `probe`: what was measured."""

    seconds: float
    scale: float
    epochs: int
    warm_start: int
    warm_start_seconds: float
    training_seconds: float
    probe: dict[str, float]

    def deadlines(self, started: float) -> tuple[float, float]:
        """(when the warm start must end, when the run must end), on the clock of
        `time.perf_counter`, for a run that started at `started`."""
        end = started + self.seconds * (1 - MARGIN)
        return end - self.training_seconds, end

    def to_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _epoch_seconds(dist, objective, options: TrainingOptions, points: Points, key) -> dict:
    """(seconds of one epoch, of one validation pass, to compile the epoch) of `objective`
    training `dist` on `points` with `options`, measured."""
    n_fit = fit_size(len(points), options.validation)
    fitted, held = points.take(np.arange(n_fit)), points.take(np.arange(n_fit, len(points)))
    if fitted.context is not None:
        dist = with_context_map(dist, fitted.context)
    trainer = Trainer(
        dist,
        objective=objective,
        batch_size=options.batch_size,
        optimizer=options.make_optimizer(max(n_fit // options.batch_size, 1)),
    )
    state = trainer.init(key)
    begin = time.perf_counter()
    trainer.compile_epoch(state, fitted.points, fitted.context)
    compile_seconds = time.perf_counter() - begin
    # the first epoch pays for first-call work (a flow-matching epoch: 7x a steady one);
    # the second is what every later epoch costs
    state, _ = trainer.run_epoch(state, fitted.points, fitted.context)
    state, record = trainer.run_epoch(state, fitted.points, fitted.context)
    validation = 0.0
    if len(held) and options.validation > 0:
        trainer.validation_loss(state, held.points, held.context)  # compiles
        begin = time.perf_counter()
        trainer.validation_loss(state, held.points, held.context)
        validation = time.perf_counter() - begin
    return {"epoch": record["seconds"], "validation": validation, "compile": compile_seconds}


def plan_budget(
    seconds: float,
    started: float,
    dist,
    objective,
    options: TrainingOptions,
    warm_start: WarmStart | None,
    points: Points,
    key,
    *,
    fixed: tuple[str, ...] = (),
) -> BudgetPlan:
    """The epochs that fill `seconds` (counted from `started`) for training `dist` by
    `objective` with `options` after `warm_start`, measured on `points`; the stages named
    in `fixed` (`"training"`, `"warm_start"`: epochs the user gave) keep their epochs."""
    stages = {"training": (objective, options)}
    if warm_start is not None:
        stages = {"warm_start": (warm_start.objective, warm_start.options), **stages}
    probe: dict[str, float] = {}
    cost: dict[str, float] = {}
    for name, (stage_objective, stage_options) in stages.items():
        measured = _epoch_seconds(dist, stage_objective, stage_options, points, key)
        probe.update({f"{name}_{k}_seconds": v for k, v in measured.items()})
        per_epoch = measured["epoch"] + measured["validation"]
        if stage_objective.name == "likelihood":
            per_epoch *= SOLVE_GROWTH
        cost[name] = per_epoch
    compiling = sum(probe[f"{name}_compile_seconds"] for name in stages)
    available = seconds * (1 - MARGIN) - (time.perf_counter() - started) - compiling
    default = {name: stage_options.epochs for name, (_, stage_options) in stages.items()}
    fixed_cost = sum(default[n] * cost[n] for n in stages if n in fixed)
    free_cost = sum(default[n] * cost[n] for n in stages if n not in fixed)
    scale = max(available - fixed_cost, 0.0) / free_cost if free_cost else 1.0
    epochs = {
        n: default[n] if n in fixed else max(1, min(MAX_EPOCHS, math.floor(default[n] * scale)))
        for n in stages
    }
    warm = epochs.get("warm_start", 0)
    return BudgetPlan(
        seconds=float(seconds),
        scale=scale,
        epochs=epochs["training"],
        warm_start=warm,
        warm_start_seconds=warm * cost.get("warm_start", 0.0),
        training_seconds=epochs["training"] * cost["training"] + probe["training_compile_seconds"],
        probe=probe,
    )
