"""Conditional runs on the command line: condition columns, `sample --context`, errors."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_settings

from ffjord import simulators
from ffjord.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_errors import QUIET, check, cli, trained_run  # noqa: E402, F401
from test_conditional import conditional_pairs, pairs_through_one_statistic  # noqa: E402

SMALL = ["--epochs", "4", "--blocks", "1", "--hidden", "16", "--batch-size", "128"]
SMALL += ["--warm-start", "10"]  # 10 epochs of flow matching first


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    """Rows (y1, y2, c): y | c ~ N((u, -u), 0.3^2) with u = (c - 500) / 100."""
    y, c = conditional_pairs(3000, 0)
    path = tmp_path_factory.mktemp("pairs") / "pairs.npy"
    np.save(path, np.concatenate([y, c], axis=1).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def conditional_run(pairs_file) -> Path:
    out = pairs_file.parent / "run"
    argv = ["train", "--out", out, "--data", pairs_file, "--context-dims", "1", *SMALL, "--quiet"]
    assert main([str(a) for a in argv]) == 0
    return out


def test_round_trip_train_evaluate_density_sample(conditional_run, tmp_path, capsys):
    cfg = run_settings(conditional_run)
    assert cfg["dim"] == 2 and cfg["context_dims"] == 1
    assert cfg["model"]["bijector"]["type"] == "StandardizedContext"
    assert (conditional_run / "figures" / "conditional.png").exists()
    y, c = conditional_pairs(1000, 5)
    right, wrong = tmp_path / "right.npy", tmp_path / "wrong.npy"
    np.save(right, np.concatenate([y, c], axis=1).astype(np.float32))
    np.save(wrong, np.concatenate([y, 1000.0 - c], axis=1).astype(np.float32))

    code, out, _ = cli(capsys, "evaluate", conditional_run, "--data", right)
    assert code == 0
    nll = json.loads(out)["nll"]
    code, out, _ = cli(capsys, "density", conditional_run, "--points", right, "-o", tmp_path / "r")
    assert code == 2  # not .npy
    assert (
        cli(capsys, "density", conditional_run, "--points", right, "-o", tmp_path / "r.npy")[0] == 0
    )
    assert (
        cli(capsys, "density", conditional_run, "--points", wrong, "-o", tmp_path / "w.npy")[0] == 0
    )
    lp_right, lp_wrong = np.load(tmp_path / "r.npy"), np.load(tmp_path / "w.npy")
    assert lp_right.shape == (1000,)
    assert -lp_right.mean() == pytest.approx(nll, abs=1e-4)
    assert lp_right.mean() > lp_wrong.mean() + 3.0  # the condition matters, as trained

    code, out, _ = cli(capsys, "sample", conditional_run, "-n", "500", "--context", "700",
                       "-o", tmp_path / "one.npy")  # fmt: skip
    assert code == 0 and json.loads(out)["shape"] == [500, 2]
    one = np.load(tmp_path / "one.npy")
    assert one.shape == (500, 2)
    conditions = tmp_path / "conditions.csv"
    conditions.write_text("300\n500\n700\n")
    code, out, _ = cli(capsys, "sample", conditional_run, "-n", "500", "--context", conditions,
                       "-o", tmp_path / "many.npy")  # fmt: skip
    assert code == 0
    many = np.load(tmp_path / "many.npy")
    assert many.shape == (3, 500, 2)
    # Each condition's samples sit around its mean (u, -u), u = -2, 0, 2.
    np.testing.assert_allclose(many.mean(axis=1), [[-2, 2], [0, 0], [2, -2]], atol=0.4)


@pytest.mark.slow  # 15 s; known posteriors in the quick suite: test_sbi_posterior.py
def test_the_arcs_simulator_learns_its_known_posterior(tmp_path, capsys):
    out = tmp_path / "arcs"
    # A short run: tanh learns the arcs in 6 epochs (the default SiLU field needs more).
    argv = ["train", "--out", out, "--data", "arcs", "--epochs", "6", "--activation", "tanh",
            "--quiet", "--no-figures"]  # fmt: skip
    code, _, _ = cli(capsys, *argv)
    assert code == 0
    cfg = run_settings(out)
    assert cfg["context_dims"] == 2 and cfg["n_train"] == 10_000
    observation = np.array([1.5, 0.5])
    code, _, _ = cli(capsys, "sample", out, "-n", "2000", "--context", "1.5,0.5",
                     "-o", tmp_path / "post.npy")  # fmt: skip
    assert code == 0
    draws = np.load(tmp_path / "post.npy")
    # Under the exact posterior, the model's draws are where its mass is: their mean exact
    # log-density is near the posterior's own (negative entropy), far above the prior's.
    exact = simulators.posterior_log_prob(draws, observation).mean()
    own = simulators.posterior_log_prob(
        simulators.posterior_sample(observation, 2000, seed=3), observation
    ).mean()
    prior = simulators.posterior_log_prob(np.random.default_rng(0).normal(size=(2000, 2)),
                                          observation).mean()  # fmt: skip
    assert exact > own - 0.7
    assert prior < own - 5
    assert abs(np.linalg.norm(draws, axis=1).mean() - 1.5) < 0.1


def test_context_errors(conditional_run, trained_run, pairs_file, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "s.npy"
    nan_file = tmp_path / "nan.npy"
    np.save(nan_file, np.array([[300.0], [np.nan]], np.float32))
    wide_file = tmp_path / "wide.npy"
    np.save(wide_file, np.ones((2, 2), np.float32))
    words = tmp_path / "words.csv"
    words.write_text("300\nabc\n")
    sample = ["sample", conditional_run, "-n", "10", "-o", out]
    cases = [
        (
            [*sample, "--context", "1,2"],
            "--context has 2 values per condition but the run's have 1",
        ),
        ([*sample, "--context", wide_file], "--context has 2 values per condition but the run's"),
        ([*sample, "--context", "nan"], "--context nan has NaN or infinite values"),
        ([*sample, "--context", "abc"], "--context value 'abc' is not a number"),
        ([*sample, "--context", nan_file], "has NaN or infinite values in 1 of 2"),
        ([*sample, "--context", words], "abc"),
        ([*sample[:-2], "-o", out], "is a conditional run (1 condition columns): give --context"),
        (
            ["sample", trained_run, "-n", "10", "-o", out, "--context", "1"],
            "is not a conditional run: leave out --context",
        ),
        (
            ["evaluate", conditional_run, "--data", wide_file],
            "has 2 columns but the run's data have 3 (2 data + 1 condition columns)",
        ),
    ]
    for argv, phrase in cases:
        check(capsys, argv, phrase, keep=[conditional_run, out])
    train = ["train", "--out", tmp_path / "new", *QUIET]
    for argv, phrase in [
        (
            [*train, "--data", pairs_file, "--context-dims", "0"],
            "--context-dims must be at least 1 (",
        ),
        ([*train, "--data", pairs_file, "--context-dims", "-1"], "no conditions), got -1"),
        ([*train, "--data", pairs_file, "--context-dims", "3"], "--context-dims 3 leaves no data"),
        ([*train, "--data", "moons", "--context-dims", "1"], "the built-in set moons has no cond"),
        ([*train, "--data", "digits", "--context-dims", "1"], "the built-in set digits has no co"),
        ([*train, "--data", "arcs", "--context-dims", "1"], "has 2 condition columns, not --cont"),
        (
            [*train, "--data", pairs_file, "--context-features", "1"],
            "--context-features applies to conditional data; give --context-dims K as well",
        ),
        (
            [*train, "--data", "moons", "--context-features", "1"],
            "--context-features applies to conditional data",
        ),
        (
            [*train, "--data", pairs_file, "--context-dims", "1", "--context-features", "2"],
            "--context-features 2 exceeds the 1 condition columns (--context-dims 1)",
        ),
        (
            [*train, "--data", pairs_file, "--context-dims", "1", "--context-features", "-1"],
            "--context-features must be a non-negative integer (0: off), got -1",
        ),
    ]:
        check(capsys, argv, phrase, keep=[tmp_path / "new", pairs_file])


def test_runs_from_before_conditional_flows_still_open(trained_run, tmp_path, capsys):  # noqa: F811
    """A run directory written before `context_dims` existed reads as unconditional."""
    import shutil

    old = Path(shutil.copytree(trained_run, tmp_path / "old"))
    cfg = json.loads((old / "config.json").read_text())
    for key in ("context_dims", "data_range"):
        cfg["data"].pop(key, None)
    cfg.pop("chosen_for_data")
    (old / "config.json").write_text(json.dumps(cfg))
    code, out, err = cli(capsys, "sample", old, "-n", "5", "-o", tmp_path / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (5, 2)


def test_sample_keeps_draws_within_the_training_data_range(
    conditional_run, pairs_file, tmp_path, capsys
):
    import shutil

    from ffjord import datasets

    train, _ = datasets.split_holdout(np.load(pairs_file), 0.1, 0)
    cfg = run_settings(conditional_run)
    np.testing.assert_allclose(cfg["data_range"]["low"], train[:, :2].min(axis=0))
    np.testing.assert_allclose(cfg["data_range"]["high"], train[:, :2].max(axis=0))
    recorded = json.loads((conditional_run / "config.json").read_text())["data"]["support"]
    assert recorded == {**cfg["data_range"], "from": "training data"}
    assert cfg["support"] is None  # the settings hold only a support that was given
    run = tmp_path / "run"
    shutil.copytree(conditional_run, run)
    # A narrower recorded range: about a quarter of the draws at condition 700 (around
    # (2, -2), sd 0.3) fall inside it, so most must be redrawn.
    config = json.loads((run / "config.json").read_text())
    config["data"]["support"] = {"low": [2.0, -3.0], "high": [3.0, -2.0], "from": "training data"}
    (run / "config.json").write_text(json.dumps(config))
    conditions = tmp_path / "conditions.npy"
    np.save(conditions, np.array([[700.0], [690.0]], np.float32))
    for args, shape in ((["--context", "700"], (400, 2)), (["--context", conditions], (2, 400, 2))):
        code, out, _ = cli(capsys, "sample", run, "-n", "400", *args, "-o", tmp_path / "in.npy",
                           "--force")  # fmt: skip
        assert code == 0 and json.loads(out)["shape"] == list(shape)
        inside = np.load(tmp_path / "in.npy").reshape(-1, 2)
        assert np.all((inside >= [2.0, -3.0]) & (inside <= [3.0, -2.0]))
    assert cli(capsys, "sample", run, "-n", "400", "--context", "700", "--keep-outside",
               "-o", tmp_path / "all.npy")[0] == 0  # fmt: skip
    kept = np.load(tmp_path / "all.npy")
    assert 0.1 < np.mean(np.all((kept >= [2, -3]) & (kept <= [3, -2]), axis=1)) < 0.6

    config = json.loads((run / "config.json").read_text())
    config["data"]["support"] = {"low": [50, 50], "high": [51, 51], "from": "training data"}
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "sample", run, "-n", "100", "--context", conditions,
                       "-o", tmp_path / "none.npy")  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "only 0% of the model's draws for condition 1 lie within the training data's" in err
    assert not (tmp_path / "none.npy").exists()


def test_a_given_support_bounds_the_draws_and_is_recorded(pairs_file, tmp_path, capsys):
    """`--support LOW:HIGH,...` (an empty bound: unbounded) replaces the training data's
    range as the box draws are kept within; it is recorded, checked against the
    training rows, and must match on --resume."""
    from ffjord import datasets

    train, _ = datasets.split_holdout(np.load(pairs_file), 0.1, 0)
    top = float(train[:, 0].max())
    out = tmp_path / "run"
    support = f"-100:{top + 1:g},:"
    code, _, err = cli(capsys, "train", "--out", out, "--data", pairs_file, "--context-dims",
                       "1", "--support", support, *SMALL, "--quiet")  # fmt: skip
    assert code == 0, err
    recorded = json.loads((out / "config.json").read_text())["data"]["support"]
    assert recorded == {"low": [-100.0, None], "high": [float(f"{top + 1:g}"), None],
                        "from": "given"}  # fmt: skip
    code, _, _ = cli(capsys, "sample", out, "-n", "300", "--context", "700",
                     "-o", tmp_path / "s.npy")  # fmt: skip
    assert code == 0 and np.all(np.load(tmp_path / "s.npy")[:, 0] <= top + 1)
    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--support", "0:1,:", "--quiet")
    assert code == 2 and "--support [[0.0, 1.0], [None, None]] differs from the run's" in err
    low = float(np.sort(train[:, 0])[5])
    code, _, err = cli(capsys, "train", "--out", tmp_path / "new", "--data", pairs_file,
                       "--context-dims", "1", "--support", f"{low}:,:", "--quiet")  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert f"5 training rows lie outside the --support of column 0 ({low:g}:)" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow  # 25-50 s; test_embedding.py round-trips every embedding, linear included
def test_a_projected_condition_round_trips(tmp_path, capsys):
    """`--context-features 2` on 40 condition columns: the projection is part of the run
    (described in config.json, restored by `ffjord.load`) and learns the condition."""
    import ffjord

    y, c = pairs_through_one_statistic(3000, 0)
    data = tmp_path / "pairs.npy"
    np.save(data, np.concatenate([y, c], axis=1).astype(np.float32))
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--out", out, "--data", data, "--context-dims", "40",
                       "--context-features", "2", "--objective", "likelihood", *SMALL,
                       "--warm-start", "0", "--epochs", "12", "--quiet")  # fmt: skip
    assert code == 0, err
    cfg = run_settings(out)
    assert (cfg["embedding"], cfg["embedding_features"]) == ("linear", 2)
    inner = cfg["model"]["bijector"]["bijector"]
    assert (inner["type"], inner["context_dim"], inner["features"]) == ("ProjectedContext", 40, 2)
    y_test, c_test = pairs_through_one_statistic(500, 1)
    right, wrong = tmp_path / "right.npy", tmp_path / "wrong.npy"
    np.save(right, np.concatenate([y_test, c_test], axis=1).astype(np.float32))
    np.save(wrong, np.concatenate([y_test, -c_test], axis=1).astype(np.float32))
    code, text, _ = cli(capsys, "evaluate", out, "--data", right)
    nll_right = json.loads(text)["nll"]
    code, text, _ = cli(capsys, "evaluate", out, "--data", wrong)
    assert nll_right < 1.0 and json.loads(text)["nll"] > nll_right + 3.0
    dist = ffjord.load(out)
    assert isinstance(dist.bijector.bijector, ffjord.ProjectedContext)
    lp = dist.log_prob(y_test.astype(np.float32), context=c_test.astype(np.float32))
    assert -float(np.mean(lp)) == pytest.approx(nll_right, abs=1e-3)
    conditions = tmp_path / "conditions.npy"
    np.save(conditions, np.array([[-1.5] * 40, [1.5] * 40], np.float32))
    code, _, _ = cli(capsys, "sample", out, "-n", "400", "--context", conditions,
                     "-o", tmp_path / "s.npy")  # fmt: skip
    assert code == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (2, 400, 2)
    np.testing.assert_allclose(samples.mean(axis=1), [[-1.5, 1.5], [1.5, -1.5]], atol=0.3)


def test_many_conditions_choose_a_projection_and_flow_matching(tmp_path):
    """More than 32 condition columns (and more than twice the data's): 32 learned
    features and flow matching; fewer keep likelihood training of the raw conditions."""
    from ffjord._plan import new_settings

    y, c = pairs_through_one_statistic(2000, 0, k=40)
    many = tmp_path / "many.npy"
    np.save(many, np.concatenate([y, c], axis=1).astype(np.float32))
    cfg = new_settings({"data": str(many), "context_dims": 40})[0]
    assert (cfg["objective"], cfg["embedding"], cfg["embedding_features"], cfg["coupling"]) == (
        "flow-matching",
        "linear",
        32,
        "independent",
    )
    assert cfg["test_every"] == cfg["epochs"] and cfg["learning_rate"] == 3e-3
    assert {"objective", "embedding", "embedding_features", "test_every"} <= set(
        cfg["chosen_for_data"]
    )
    asked = new_settings({"data": str(many), "context_dims": 40, "objective": "likelihood"})[0]
    assert (asked["objective"], asked["blocks"]) == ("likelihood", 2)
    assert asked["embedding_features"] == 32
    longer = new_settings({"data": str(many), "context_dims": 40, "epochs": 500})[0]
    assert longer["test_every"] == 500  # still the end of the run only
    raw = new_settings({"data": str(many), "context_dims": 40, "context_features": 0})[0]
    assert (raw["embedding"], raw["embedding_features"]) == ("none", 0)
    assert not {"embedding", "embedding_features"} & set(raw["chosen_for_data"])
    few = new_settings({"data": str(many), "context_dims": 32})[0]  # 32 columns: not many
    # warm-started: each condition row beside 32 features an MLP learns from it
    assert (few["objective"], few["embedding"], few["embedding_features"]) == (
        "likelihood",
        "mlp",
        32,
    )
    assert {"embedding", "embedding_features"} <= set(few["chosen_for_data"])
    # 10 data columns (8 of the conditions now count as data), 32 conditions: one block,
    # warmed by 25,000 flow-matching steps (400 epochs at most) on 1,620 fitted rows
    assert (few["blocks"], few["warm_start"]) == (1, 400)
    assert {"blocks", "warm_start", "epochs", "learning_rate"} <= set(few["chosen_for_data"])
    assert asked["warm_start"] == 0  # many conditions: no warm start by default
    cold = new_settings({"data": str(many), "context_dims": 32, "warm_start": 0})[0]
    assert (cold["blocks"], cold["warm_start"]) == (1, 0)
    assert "warm_start" not in cold["chosen_for_data"]
    flat = tmp_path / "flat.npy"  # 2 data columns, 8 conditions: two blocks, no warm start
    np.save(flat, np.concatenate([y, c[:, :8]], axis=1).astype(np.float32))
    two_d = new_settings({"data": str(flat), "context_dims": 8})[0]
    assert (two_d["objective"], two_d["blocks"], two_d["warm_start"]) == ("likelihood", 2, 0)
    assert two_d["embedding"] == "none"  # 2-D posteriors: the raw conditions alone
