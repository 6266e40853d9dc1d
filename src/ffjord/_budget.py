"""Fitting a run into a time budget: how many epochs each stage gets, from a measurement.

`ffjord train --time-budget SECONDS` (Python: `train(..., time_budget=)`) says how long a
user will wait. Before training, `plan_budget` times a steady epoch (and a validation pass)
of each stage on the run's own data and model, compiled as the run will be, then scales
the epochs of the stages that were not given (the warm start's and the run's), so that
their learning-rate schedules end when the budget does; the sizes of the model stay as
chosen from the data. A trained flow's solves take more steps than the untrained one
probed: the plan assumes `SOLVE_GROWTH`, and once a warm start has trained the flow,
`after_warm_start` re-sizes the likelihood stage from the growth measured on it. During
training the engine stops before an epoch that would not end in time (`deadline`),
keeping the best epoch so far, and records why.

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
# (its solves need more steps): 4.3-4.6 on slcp's 5-D posterior after a warm start, with
# the embedding the plain command chooses there. It splits a budget between the stages;
# the likelihood stage is re-sized from the growth measured on the warm-started flow
# (`BudgetPlan.after_warm_start`).
SOLVE_GROWTH = 4.5
# A likelihood stage that starts from the untrained flow pays the growth only as the flow
# learns: its epochs cost this many of the first on average over the schedule (2.3-3.0
# on two_moons and gaussian_mixture, 2-D posteriors, over 76-251 epochs).
SCRATCH_GROWTH = 2.8


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """What a time budget of `seconds` chose: the default epochs scaled by `scale`, giving
    `epochs` of training after `warm_start` epochs of the warm start (0: none), expected to
    take `warm_start_seconds` and `training_seconds`; `probe`: what was measured;
    `growth`: how many times the probed likelihood epoch a trained flow's takes (assumed,
    or measured after the warm start: `measured`); `fixed`: the stages whose epochs the
    user gave."""

    seconds: float
    scale: float
    epochs: int
    warm_start: int
    warm_start_seconds: float
    training_seconds: float
    probe: dict[str, float]
    growth: float = SOLVE_GROWTH
    measured: bool = False
    fixed: tuple[str, ...] = ()

    def deadlines(self, started: float) -> tuple[float, float]:
        """(when the warm start must end, when the run must end), on the clock of
        `time.perf_counter`, for a run that started at `started`."""
        end = started + self.seconds * (1 - MARGIN)
        return end - self.training_seconds, end

    def after_warm_start(self, seconds_left: float, growth: float) -> "BudgetPlan":
        """This plan with the training stage re-sized to the `seconds_left` before its
        deadline, now that the warm-started flow's solves are measured to take `growth`
        times the untrained one's field evaluations (one epoch is kept spare, for the
        final held-out pass and the clock's noise, so that the schedule ends); as it was
        when the user gave the training's epochs.

        Example:
            >>> probe = {"training_epoch_seconds": 0.1, "training_validation_seconds": 0.0,
            ...          "training_compile_seconds": 2.0}
            >>> plan = BudgetPlan(seconds=60.0, scale=1.0, epochs=100, warm_start=10,
            ...                   warm_start_seconds=10.0, training_seconds=37.0, probe=probe)
            >>> plan.after_warm_start(42.0, growth=5.0).epochs  # (42 - 2) / (0.1 * 5) - 1
            79
        """
        if "training" in self.fixed:
            return self
        per_epoch = self._likelihood_epoch_seconds() * growth
        compiling = self.probe["training_compile_seconds"]
        fitting = math.floor(max(seconds_left - compiling, 0.0) / per_epoch) - 1
        epochs = max(1, min(MAX_EPOCHS, fitting))
        return dataclasses.replace(
            self,
            epochs=epochs,
            training_seconds=epochs * per_epoch + compiling,
            growth=growth,
            measured=True,
        )

    def _likelihood_epoch_seconds(self) -> float:
        """A steady epoch (and validation pass) of the untrained flow, as probed."""
        return self.probe["training_epoch_seconds"] + self.probe["training_validation_seconds"]

    def to_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _epoch_seconds(dist, objective, options: TrainingOptions, points: Points, key) -> dict:
    """(seconds of one epoch, of one validation pass, of what a stage pays once: compiling
    its epoch and validation, and its first epoch's extra) of `objective` training `dist`
    on `points` with `options`, measured."""
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
    once = time.perf_counter() - begin
    # the first epoch pays for first-call work (a flow-matching epoch: 7x a steady one);
    # the second is what every later epoch costs
    state, first = trainer.run_epoch(state, fitted.points, fitted.context)
    state, record = trainer.run_epoch(state, fitted.points, fitted.context)
    once += max(first["seconds"] - record["seconds"], 0.0)
    validation = 0.0
    if len(held) and options.validation > 0:
        begin = time.perf_counter()
        trainer.validation_loss(state, held.points, held.context)  # compiles
        compiling = time.perf_counter() - begin
        begin = time.perf_counter()
        trainer.validation_loss(state, held.points, held.context)
        validation = time.perf_counter() - begin
        once += max(compiling - validation, 0.0)
    return {"epoch": record["seconds"], "validation": validation, "compile": once}


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
    growth = SOLVE_GROWTH if warm_start is not None else SCRATCH_GROWTH
    for name, (stage_objective, stage_options) in stages.items():
        measured = _epoch_seconds(dist, stage_objective, stage_options, points, key)
        probe.update({f"{name}_{k}_seconds": v for k, v in measured.items()})
        per_epoch = measured["epoch"] + measured["validation"]
        if stage_objective.name == "likelihood":
            per_epoch *= growth
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
        growth=growth if objective.name == "likelihood" else 1.0,
        fixed=tuple(fixed),
    )
