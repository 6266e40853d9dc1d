"""The command line end to end on small configurations."""

import inspect
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_settings
from PIL import Image

import ffjord
from ffjord import datasets
from ffjord._plan import RunPlan, new_settings
from ffjord.cli import main

TINY = ["--blocks", "1", "--hidden", "8", "--batch-size", "512", "--quiet"]


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    assert main(["train", "--out", str(out), "--epochs", "2", *TINY]) == 0
    return out


def test_train_writes_the_run_directory(moons_run, capsys):
    for name in ["config.json", "checkpoint.eqx", "metrics.jsonl"]:
        assert (moons_run / name).is_file()
    cfg = run_settings(moons_run)
    assert cfg["format_version"] == 3 and cfg["data"] == "moons" and cfg["epochs"] == 2
    records = [json.loads(line) for line in (moons_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for key in ["train_loss", "test_nll", "seconds", "nfe"]:
            assert isinstance(r[key], float) and math.isfinite(r[key])
    figures = moons_run / "figures"
    for name in ["before.png", "after.png", "density.png", "curves.png"]:
        assert Image.open(figures / name).size[0] > 300
    gif = Image.open(figures / "animation.gif")
    assert gif.n_frames == 3  # before training + 2 epochs
    assert not list(moons_run.rglob(".*.tmp"))


def test_evaluate_agrees_with_density_and_metrics(moons_run, tmp_path, capsys):
    points = datasets.sample_toy("moons", 500, seed=7)
    np.save(tmp_path / "pts.npy", points)
    assert main(["evaluate", str(moons_run), "--data", str(tmp_path / "pts.npy")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"nll", "bits_per_dim", "n"} and result["n"] == 500
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (2 * math.log(2)))
    out = tmp_path / "lp.npy"
    assert (
        main(["density", str(moons_run), "--points", str(tmp_path / "pts.npy"), "-o", str(out)])
        == 0
    )
    lp = np.load(out)
    assert lp.shape == (500,)
    assert -lp.mean() == pytest.approx(result["nll"], rel=1e-5)
    # Held-out NLL of the run's own test set equals evaluate on that set.
    from ffjord._source import DataSource

    _, test = DataSource.from_config(
        json.loads((moons_run / "config.json").read_text())["data"]
    ).load()
    np.save(tmp_path / "test.npy", test)
    capsys.readouterr()
    assert main(["evaluate", str(moons_run), "--data", str(tmp_path / "test.npy")]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    last = json.loads((moons_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert nll == pytest.approx(last["test_nll"], rel=1e-5)


def test_sample_and_plot(moons_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(moons_run), "-n", "1000", "-o", str(out), "--seed", "3"]) == 0
    samples = np.load(out)
    assert samples.shape == (1000, 2) and np.all(np.isfinite(samples))
    # Samples from a roughly trained model land near the moons, not all over the plane.
    assert np.mean(np.abs(samples) < 3) > 0.95
    (moons_run / "figures" / "density.png").unlink()
    assert main(["plot", str(moons_run)]) == 0
    assert (moons_run / "figures" / "density.png").is_file()


def test_user_csv_is_standardised_and_nll_in_data_units(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3000, 2)) * np.array([10.0, 0.1]) + np.array([50.0, -3.0])
    csv = tmp_path / "data.csv"
    np.savetxt(csv, data, delimiter=",", header="a,b", comments="")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(csv), "--epochs", "3", *TINY]) == 0
    cfg = run_settings(out)
    assert cfg["n_train"] == 2700 and cfg["n_test"] == 300 and cfg["standardize"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(csv)]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    # The data's true entropy, in its own units: log(2 pi e) + log(10 * 0.1) = 2.84 nats.
    assert nll == pytest.approx(math.log(2 * math.pi * math.e), abs=0.15)


def test_standardisation_log_det_is_included(tmp_path):
    cfg, source, train, _ = new_settings({"blocks": 1, "data": str(_gauss_file(tmp_path))})
    dist = RunPlan.from_settings(cfg).model.build(source, train, cfg["seed"])
    cfg["standardize"] = {
        "shift": dist.bijector.bijectors[1].shift,
        "scale": dist.bijector.bijectors[1].scale,
    }
    inner = ffjord.TransformedDistribution(dist.base, dist.bijector.bijectors[0])
    shift = jnp.asarray(cfg["standardize"]["shift"])
    scale = jnp.asarray(cfg["standardize"]["scale"])
    y = jax.random.normal(jax.random.key(0), (5, 2)) * scale + shift
    expected = inner.log_prob((y - shift) / scale) - jnp.sum(jnp.log(scale))
    np.testing.assert_allclose(dist.log_prob(y), expected, rtol=1e-5)


def _gauss_file(tmp_path):
    path = tmp_path / "g.npy"
    np.save(path, np.random.default_rng(1).normal(size=(400, 2)) * 5.0)
    return path


def test_early_stopping_waits_half_the_planned_schedule(tmp_path):
    from ffjord._plan import make_warm_start, new_settings

    data = str(_gauss_file(tmp_path))
    assert new_settings({"data": data, "epochs": 30})[0]["patience"] == 20  # at least 20
    cfg = new_settings({"data": data, "epochs": 300})[0]
    assert cfg["patience"] == 150 and "patience" in cfg["chosen_for_data"]
    cfg = new_settings({"data": data, "epochs": 300, "patience": 7})[0]
    assert cfg["patience"] == 7 and "patience" not in cfg["chosen_for_data"]
    rows = np.random.default_rng(3).normal(size=(2000, 5)).astype(np.float32)
    np.save(tmp_path / "pairs.npy", rows)
    cfg = new_settings({"data": str(tmp_path / "pairs.npy"), "context_dims": 2})[0]
    warm = make_warm_start(cfg)
    assert warm is not None and cfg["warm_start"] == 400 and cfg["epochs"] == 50
    assert (cfg["patience"], warm.options.patience) == (25, 200)  # each stage's own half
    cfg = new_settings({"data": str(tmp_path / "pairs.npy"), "context_dims": 2, "patience": 9})
    assert make_warm_start(cfg[0]).options.patience == 9  # a given patience holds for both


def test_one_dimensional_data(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(2).normal(size=1200).astype(np.float32))
    out = tmp_path / "run1d"
    assert main(["train", "--out", str(out), "--data", str(path), "--epochs", "1", *TINY]) == 0
    assert (out / "figures" / "histogram.png").is_file()
    assert main(["sample", str(out), "-n", "10", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (10, 1)


def test_digits_train_with_the_documented_split_and_image_figure(tmp_path, capsys):
    out = tmp_path / "digits"
    argv = ["train", "--out", str(out), "--data", "digits", "--epochs", "1", *TINY]
    assert main([*argv, "--batch-size", "500", "--trace", "hutchinson"]) == 0
    cfg = run_settings(out)
    assert (cfg["dim"], cfg["n_train"], cfg["n_test"]) == (64, 1500, 297)
    assert cfg["chosen_for_data"]  # 64-D data: the settings chosen for data files
    with Image.open(out / "figures" / "samples.png") as image:
        assert image.size[0] > 600
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "7", "-o", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (7, 64) and np.all(np.isfinite(samples))
    assert cfg.get("data_range") is None  # unconditional: draws are not kept to a 64-D box


def test_settings_chosen_for_64_dimensional_data():
    from ffjord._plan import new_settings

    cfg = new_settings({"data": "digits", "seed": 0})[0]
    chosen = {k: cfg[k] for k in ("hidden", "learning_rate", "weight_decay", "trace", "layers")}
    assert chosen == {
        "hidden": 128,
        "learning_rate": 1e-2,
        "weight_decay": 1.0,
        "trace": "exact",
        "layers": 3,
    }
    assert {"hidden", "learning_rate", "weight_decay", "trace"} <= set(cfg["chosen_for_data"])
    deep = new_settings({"data": "digits", "seed": 0, "layers": 5})[0]  # no closed-form trace
    assert deep["trace"] == "hutchinson" and "trace" in deep["chosen_for_data"]
    asked = new_settings({"data": "digits", "seed": 0, "layers": 5, "trace": "exact"})[0]
    assert asked["trace"] == "exact" and "trace" not in asked["chosen_for_data"]
    arcs = new_settings({"data": "arcs", "seed": 0})[0]  # 2 data columns
    chosen = {k: arcs[k] for k in ("hidden", "learning_rate", "weight_decay", "trace")}
    assert chosen == {"hidden": 64, "learning_rate": 5e-3, "weight_decay": 0.1, "trace": "exact"}


def test_no_validation_on_a_file_means_no_early_stopping(tmp_path):
    from ffjord._plan import new_settings

    data = str(_gauss_file(tmp_path))
    chosen = new_settings({"data": data})[0]  # chosen with validation 0.1
    assert chosen["epochs"] == 125 and chosen["patience"] == 63  # half the schedule
    cfg = new_settings({"data": data, "validation": 0})[0]
    assert cfg["patience"] is None and "patience" not in cfg["chosen_for_data"]


# `ffjord.train`: the command from Python -----------------------------------------------------


def _rows(run_dir) -> list[dict]:
    """metrics.jsonl without its timing fields."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if "seconds" not in k and k != "wall"} for r in rows]


def test_python_train_takes_every_option_of_the_command():
    from ffjord._plan import SETTINGS, TUTORIAL
    from ffjord.cli import TRAIN_OPTIONS

    keywords = set(inspect.signature(ffjord.train).parameters)
    assert keywords - {"run_dir", "resume", "devices", "show_progress"} == set(SETTINGS)
    assert set(SETTINGS) == {*TUTORIAL, "context_features"}  # and an alias
    cli_only = {"coordinator", "num_processes", "process_id", "devices"}
    assert set(TRAIN_OPTIONS) - cli_only == set(SETTINGS)


def test_python_train_writes_what_the_command_writes(tmp_path, capsys):
    data = tmp_path / "pairs.npy"
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(600, 2))
    np.save(data, np.concatenate([theta, theta + 0.3 * rng.normal(size=(600, 2))], axis=1))
    options = {"epochs": 2, "blocks": 1, "hidden": 8, "batch_size": 128, "learning_rate": 3e-3}
    result = ffjord.train(tmp_path / "py", data=str(data), context_dims=2, show_progress=False,
                          **options)  # fmt: skip
    argv = ["--epochs", "2", "--blocks", "1", "--hidden", "8", "--batch-size", "128", "--lr",
            "3e-3", "--context-dims", "2", "--quiet", "--no-figures"]  # fmt: skip
    assert main(["train", "--out", str(tmp_path / "cli"), "--data", str(data), *argv]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert _rows(tmp_path / "py") == _rows(tmp_path / "cli")
    py_config, cli_config = (json.loads((tmp_path / d / "config.json").read_text())
                             for d in ("py", "cli"))  # fmt: skip
    assert py_config["model"] == cli_config["model"]
    assert py_config["chosen_for_data"] == cli_config["chosen_for_data"]
    assert "learning_rate" not in py_config["chosen_for_data"]  # given, not chosen
    assert result.test_nll == pytest.approx(summary["test_nll"], rel=1e-6)
    assert [r["epoch"] for r in result.history] == [1, 2] and result.dist.dim == 2
    assert bool(eqx.tree_equal(ffjord.load(tmp_path / "py"), result.dist))


def test_python_train_resumes_and_names_the_parameter_that_differs(moons_run, tmp_path):
    import shutil

    run = tmp_path / "moons"
    shutil.copytree(moons_run, run)
    with pytest.raises(ffjord.InputError) as caught:
        ffjord.train(run, resume=True, learning_rate=0.5, show_progress=False)
    assert str(caught.value) == (
        "learning_rate 0.5 differs from the run's 0.01; resume=True continues with the run's "
        "own settings (only epochs may change)"
    )
    result = ffjord.train(run, resume=True, epochs=3, show_progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert _rows(run)[:2] == _rows(moons_run)


def test_python_train_checks_the_support_against_the_data(tmp_path):
    with pytest.raises(ffjord.InputError) as caught:
        ffjord.train(tmp_path / "run", data="circles", support=[(0, 1)], show_progress=False)
    assert str(caught.value) == "support gives 1 (low, high) pairs but the data have 2 columns"
    with pytest.raises(ffjord.InputError, match="support must give .low, high. for each"):
        ffjord.train(tmp_path / "run", data="circles", support=[1, 2], show_progress=False)
    assert not (tmp_path / "run").exists()
