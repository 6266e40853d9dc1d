"""A time budget: the run is planned to use it, ends within it and records the choice."""

import dataclasses
import json
import time

import numpy as np
import pytest

import ffjord
from ffjord._budget import BudgetPlan


def pairs_file(path, n=3000):
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((n, 2))
    x = theta + 0.5 * rng.standard_normal((n, 2))
    np.save(path, np.concatenate([theta, x], axis=1))
    return str(path)


def test_a_run_given_a_budget_ends_within_it_and_records_the_choice(tmp_path):
    data = pairs_file(tmp_path / "pairs.npy")
    budget = 18.0
    begin = time.perf_counter()
    result = ffjord.train(tmp_path / "run", data=data, context_dims=2, objective="flow-matching",
                          hidden=16, layers=3, time_budget=budget, show_progress=False)  # fmt: skip
    took = time.perf_counter() - begin
    assert took < budget + 2.0  # the margin: writing the last checkpoint and the summary
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    chosen = config["time_budget"]
    assert chosen["seconds"] == budget and chosen["epochs"] == config["training"]["epochs"]
    assert chosen["scale"] > 1  # a small model on 2,700 rows: more epochs than the default 40
    assert chosen["probe"]["training_epoch_seconds"] > 0
    # The schedule ran to its end or the deadline stopped it, saying so: either way the
    # budget was used, not cut short by early stopping.
    last = result.history[-1]
    assert last["epoch"] == chosen["epochs"] or last["stopped"] == "time budget"
    assert config["training"]["patience"] is None and took > 0.5 * budget


def test_a_likelihood_run_from_scratch_plans_with_the_growth_of_a_learning_flow(tmp_path):
    """No warm start: the solves grow as the flow learns, so an epoch is planned as
    SCRATCH_GROWTH probed ones (not a trained flow's SOLVE_GROWTH, which left half of a
    2-D posterior's budget unused)."""
    from ffjord._budget import SCRATCH_GROWTH, SOLVE_GROWTH

    data = pairs_file(tmp_path / "pairs.npy", n=2000)
    ffjord.train(tmp_path / "run", data=data, context_dims=2, hidden=16, blocks=1,
                 time_budget=8.0, show_progress=False)  # fmt: skip
    chosen = json.loads((tmp_path / "run" / "config.json").read_text())["time_budget"]
    assert SCRATCH_GROWTH < SOLVE_GROWTH
    recorded = (chosen["growth"], chosen["measured"], chosen["warm_start"])
    assert recorded == (SCRATCH_GROWTH, False, 0)
    probe = chosen["probe"]
    per_epoch = probe["training_epoch_seconds"] + probe["training_validation_seconds"]
    planned = chosen["epochs"] * per_epoch * SCRATCH_GROWTH + probe["training_compile_seconds"]
    assert chosen["training_seconds"] == pytest.approx(planned)


@pytest.mark.slow  # a minute
def test_a_warm_started_run_given_a_minute_completes_its_schedule_within_it(tmp_path):
    """Three parameter columns: the plain command warm-starts likelihood training; the
    likelihood stage is re-sized from the warm-started flow's measured growth, so that its
    schedule ends within the budget instead of being cut by the deadline."""
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((3000, 3))
    x = theta[:, :2] ** 2 + 0.3 * rng.standard_normal((3000, 2))  # two modes
    np.save(tmp_path / "pairs.npy", np.concatenate([theta, x], axis=1))
    budget = 60.0
    begin = time.perf_counter()
    result = ffjord.train(tmp_path / "run", data=str(tmp_path / "pairs.npy"), context_dims=2,
                          time_budget=budget, show_progress=False)  # fmt: skip
    took = time.perf_counter() - begin
    assert 0.6 * budget < took < budget + 2.0
    chosen = json.loads((tmp_path / "run" / "config.json").read_text())["time_budget"]
    assert chosen["measured"] and chosen["growth"] > 1 and chosen["fixed"] == []
    last, planned = result.history[-1], chosen["epochs"]
    assert last["epoch"] == planned or last["epoch"] >= planned - max(1, planned // 10)


def test_the_deadline_stops_training_before_an_epoch_that_would_not_end_in_time():
    import jax
    import jax.numpy as jnp

    from ffjord._options import TrainingOptions
    from ffjord._train import Points, run_training

    rows = np.random.default_rng(0).standard_normal((2000, 4))
    field = ffjord.MLPField(2, 8, 3, context_dim=2, key=jax.random.key(0))
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    model = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
    deadline = time.perf_counter() + 8.0  # compiling takes 1-3 s of it
    done = run_training(jax.random.key(1), model, Points(rows[:, :2], rows[:, 2:]),
                        test=Points(rows[:200, :2], rows[:200, 2:]),
                        objective=ffjord.FlowMatching(),
                        options=TrainingOptions(epochs=10_000, batch_size=64, test_every=10_000,
                                                deadline=deadline),
                        show_progress=False)  # fmt: skip
    assert time.perf_counter() < deadline + 3.0
    assert 1 <= len(done.history) < 10_000
    assert done.history[-1]["stopped"] == "time budget"
    assert all("stopped" not in r for r in done.history[:-1])
    assert done.test_nll is not None  # the kept model's held-out NLL, within the budget


def test_a_budget_plan_leaves_the_training_its_share():
    plan = BudgetPlan(seconds=100.0, scale=2.0, epochs=80, warm_start=400, warm_start_seconds=40.0,
                      training_seconds=50.0, probe={})  # fmt: skip
    warm_end, end = plan.deadlines(started=0.0)
    assert end == pytest.approx(95.0) and warm_end == pytest.approx(45.0)


def test_the_likelihood_stage_is_resized_from_the_growth_measured_after_the_warm_start():
    probe = {"training_epoch_seconds": 0.2, "training_validation_seconds": 0.05,
             "training_compile_seconds": 3.0}  # fmt: skip
    plan = BudgetPlan(seconds=100.0, scale=2.0, epochs=40, warm_start=400, warm_start_seconds=40.0,
                      training_seconds=50.0, probe=probe)  # fmt: skip
    resized = plan.after_warm_start(53.0, growth=4.0)  # an epoch: 1 s; 50 s after compiling
    assert (resized.epochs, resized.growth, resized.measured) == (49, 4.0, True)  # one spare
    assert resized.training_seconds == pytest.approx(52.0)
    assert plan.after_warm_start(1.0, growth=4.0).epochs == 1  # never none
    given = dataclasses.replace(plan, fixed=("training",))
    assert given.after_warm_start(53.0, growth=4.0) == given  # the user's epochs stay
    # a run's record (JSON: lists) rebuilds the plan, as --resume does
    assert BudgetPlan(**json.loads(json.dumps(resized.to_config()))).epochs == 49


def test_the_engine_resizes_training_after_the_warm_start_from_the_flows_growth(tmp_path):
    """The hook a time budget gives the engine: called once the warm start has trained the
    flow, with the growth of its solves; the epochs and schedule it returns are the run's,
    and config.json says so (a --resume continues with them)."""
    import jax
    import jax.numpy as jnp

    from ffjord._options import TrainingOptions, WarmStart
    from ffjord._train import Points, RunTarget, run_training

    rng = np.random.default_rng(0)
    theta = rng.standard_normal((1024, 2))
    x = theta**2 + 0.3 * rng.standard_normal((1024, 2))  # two modes: not one solve step
    field = ffjord.MLPField(2, 16, 3, context_dim=2, key=jax.random.key(0))
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    model = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
    options = TrainingOptions(epochs=2, batch_size=128, schedule="cosine", validation=0.1)
    warm = WarmStart(ffjord.FlowMatching(), TrainingOptions(epochs=30, batch_size=128))
    growths = []

    def resize(growth):
        growths.append(growth)
        return options.replace(epochs=3), {"seconds": 1.0, "growth": growth}

    done = run_training(jax.random.key(1), model, Points(theta, x), options=options,
                        warm_start=warm, run=RunTarget(tmp_path / "run"), show_progress=False,
                        after_warm_start=resize)  # fmt: skip
    assert len(growths) == 1 and growths[0] > 1.5  # 30 epochs of flow matching: more steps
    assert [r["epoch"] for r in done.history] == [1, 2, 3] and done.options.epochs == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["epochs"] == 3
    assert config["time_budget"] == {"seconds": 1.0, "growth": growths[0]}


def test_a_bad_budget_is_refused_in_one_line(tmp_path, capsys):
    from ffjord.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), "--time-budget", "0", "--quiet"])
    err = capsys.readouterr().err
    assert (
        code != 0
        and err.strip() == "ffjord: error: --time-budget must be a positive number, got 0.0"
    )
    assert not (tmp_path / "run").exists()


def test_fit_stops_within_its_time_budget():
    import jax
    import jax.numpy as jnp

    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
    dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
    data = np.random.default_rng(0).standard_normal((512, 2))
    begin = time.perf_counter()
    _, history = ffjord.fit(jax.random.key(1), dist, data, epochs=100_000, batch_size=128,
                            objective=ffjord.FlowMatching(), time_budget=6.0,
                            show_progress=False)  # fmt: skip
    assert time.perf_counter() - begin < 8.0
    assert history[-1]["stopped"] == "time budget" and len(history) < 100_000
    with pytest.raises(ffjord.InputError, match="time_budget must be a positive number"):
        ffjord.fit(jax.random.key(1), dist, data, time_budget=-1.0)
