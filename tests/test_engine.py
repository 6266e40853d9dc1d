"""The one training engine: `fit(run_dir=...)`, resume, `ffjord.load`, early stopping,
and the command line's new options on top of it."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_settings

import ffjord
from ffjord.cli import main

TIMINGS = ("seconds", "eval_seconds", "wall_seconds")


def small_dist(key, blocks=1, hidden=8):
    keys = jax.random.split(key, blocks)
    flows = [ffjord.FFJORD(ffjord.MLPField(2, hidden, 3, key=k)) for k in keys]
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, ffjord.Chain(flows))


def data(key, n):
    x = jax.random.normal(key, (n, 2))
    return np.asarray(jnp.stack([x[:, 0], 0.5 * x[:, 1] + 0.3 * x[:, 0] ** 2], axis=1))


def without_timings(history):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in history]


def params_equal(a, b):
    la, lb = jax.tree.leaves(eqx_filter(a)), jax.tree.leaves(eqx_filter(b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def eqx_filter(tree):
    import equinox as eqx

    return eqx.filter(tree, eqx.is_inexact_array)


class Interrupt(Exception):
    pass


def test_fit_run_dir_interrupted_and_resumed_equals_a_straight_run(getkey, tmp_path):
    key, init = getkey(), getkey()
    train, test = data(getkey(), 1024), data(getkey(), 256)
    options = dict(test_data=test, epochs=4, batch_size=128, validation=0.1, show_progress=False)
    straight, history = ffjord.fit(key, small_dist(init), train, run_dir=tmp_path / "a", **options)

    def stop_after_two(record, dist):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        ffjord.fit(
            key, small_dist(init), train, run_dir=tmp_path / "b", callback=stop_after_two, **options
        )
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2
    resumed, history_b = ffjord.fit(
        key, small_dist(init), train, run_dir=tmp_path / "b", resume=True, **options
    )
    assert without_timings(history_b) == without_timings(history)
    assert params_equal(resumed, straight)
    assert params_equal(ffjord.load(tmp_path / "b"), straight)
    rows = [
        json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["steps"] == 7 and r["eval_nfe"] > 0  # 921 points: 7 full batches of 128


def test_fit_run_dir_refuses_to_overwrite_and_checks_resume(getkey, tmp_path):
    key = getkey()
    train = data(getkey(), 512)
    dist = small_dist(getkey())
    ffjord.fit(key, dist, train, epochs=1, batch_size=128, run_dir=tmp_path, show_progress=False)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ffjord.InputError, match="already holds files; use resume=True"):
        ffjord.fit(key, dist, train, epochs=1, run_dir=tmp_path, show_progress=False)
    with pytest.raises(ffjord.InputError, match="batch_size 64 differs from the run's 128"):
        ffjord.fit(key, dist, train, epochs=2, batch_size=64, run_dir=tmp_path, resume=True)
    with pytest.raises(ffjord.InputError, match="the training data differ from the run's"):
        ffjord.fit(key, dist, train[::-1], epochs=2, batch_size=128, run_dir=tmp_path, resume=True)
    with pytest.raises(ffjord.InputError, match="resume=True continues a run directory"):
        ffjord.fit(key, dist, train, resume=True)
    assert (tmp_path / "config.json").read_text() == before


def test_early_stopping_keeps_the_best_epoch(getkey, tmp_path):
    train = data(getkey(), 600)
    models = {}
    # A learning rate this high overfits 540 points quickly: the validation NLL turns up.
    dist, history = ffjord.fit(
        getkey(),
        small_dist(getkey(), hidden=32),
        train,
        epochs=60,
        batch_size=60,
        learning_rate=3e-2,
        validation=0.1,
        patience=3,
        run_dir=tmp_path,
        callback=lambda r, d: models.__setitem__(r["epoch"], d),
        show_progress=False,
    )
    val = [r["validation_nll"] for r in history]
    best = int(np.argmin(val)) + 1
    assert history[-1]["best_epoch"] == best
    assert len(history) == best + 3 < 60  # stopped 3 epochs after the best
    assert all(v >= val[best - 1] for v in val[best:])
    assert params_equal(dist, models[best])
    assert params_equal(ffjord.load(tmp_path), models[best])
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["sizes"] == {"train": 540, "validation": 60, "test": 0}


def test_early_stopping_options_are_checked(getkey):
    dist, train = small_dist(getkey()), data(getkey(), 256)
    with pytest.raises(ffjord.InputError, match="patience needs a held-out split"):
        ffjord.fit(getkey(), dist, train, patience=3)
    with pytest.raises(ffjord.InputError, match=r"validation must be a fraction in \[0, 1\)"):
        ffjord.fit(getkey(), dist, train, validation=1.5)
    with pytest.raises(ffjord.InputError, match="patience must be a positive integer, got 0"):
        ffjord.fit(getkey(), dist, train, validation=0.1, patience=0)


def test_cli_reads_a_fit_made_run(getkey, tmp_path, capsys):
    run = tmp_path / "run"
    dist, _ = ffjord.fit(
        getkey(), small_dist(getkey()), data(getkey(), 256), epochs=1, batch_size=128,
        run_dir=run, show_progress=False,
    )  # fmt: skip
    points = data(getkey(), 50).astype(np.float32)
    np.save(tmp_path / "p.npy", points)
    capsys.readouterr()
    assert main(["density", str(run), "--points", str(tmp_path / "p.npy"), "-o",
                 str(tmp_path / "lp.npy")]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"), dist.log_prob(points), atol=1e-3)
    for argv in (["plot", str(run)], ["train", "--out", str(run), "--resume", "--quiet"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "was made by ffjord.fit, which does not store its data" in err
        assert err.count("\n") == 1


def test_load_needs_like_for_a_custom_field(getkey, tmp_path):
    class Field(ffjord.MLPField):
        pass

    field = Field(2, 4, 2, key=getkey())
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
    trained, _ = ffjord.fit(
        getkey(), dist, data(getkey(), 256), epochs=1, batch_size=128, run_dir=tmp_path,
        show_progress=False,
    )  # fmt: skip
    with pytest.raises(ffjord.InputError, match="cannot rebuild"):
        ffjord.load(tmp_path)
    assert params_equal(ffjord.load(tmp_path, like=dist), trained)


# The command line on the engine ----------------------------------------------------------------

TINY = ["--blocks", "1", "--hidden", "4", "--batch-size", "1024", "--no-figures", "--quiet"]


def test_load_of_a_cli_run_gives_the_cli_evaluate_numbers(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "2", *TINY]) == 0
    points = data(jax.random.key(7), 300)
    np.save(tmp_path / "points.npy", points.astype(np.float32))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(tmp_path / "points.npy")]) == 0
    cli_nll = json.loads(capsys.readouterr().out)["nll"]
    dist = ffjord.load(out)
    nll = -float(jnp.mean(dist.log_prob(points.astype(np.float32))))
    assert math.isclose(nll, cli_nll, rel_tol=1e-4)


@pytest.mark.slow  # 20 s; OT pairing and RNODE are tested in Python in test_objectives.py
def test_cli_flow_matching_with_ot_and_rnode_runs(tmp_path, capsys):
    fm = tmp_path / "fm"
    argv = ["train", "--out", str(fm), "--objective", "flow-matching", "--hidden", "8",
            "--layers", "3", "--epochs", "2", "--no-figures", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    cfg = run_settings(fm)
    assert cfg["objective_config"] == {"name": "flow-matching", "coupling": "ot", "sigma": 0.0}
    assert cfg["blocks"] == 1 and cfg["schedule"] == "cosine"  # flow matching's defaults
    assert cfg["batch_size"] == 64 and cfg["activation"] == "silu"
    rows = [json.loads(line) for line in (fm / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["nfe"] == 1 and rows[-1]["eval_nfe"] > 1 and rows[-1]["steps"] == 128
    assert math.isfinite(rows[-1]["test_nll"])
    independent = tmp_path / "fm_independent"
    assert main([*argv[:2], str(independent), *argv[3:], "--coupling", "independent"]) == 0
    cfg = run_settings(independent)
    assert cfg["objective_config"]["coupling"] == "independent"
    rn = tmp_path / "rnode"
    argv = ["train", "--out", str(rn), "--epochs", "1", "--kinetic", "0.01",
            "--jacobian-frobenius", "0.01", *TINY]  # fmt: skip
    assert main(argv) == 0
    row = json.loads((rn / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train_kinetic"] > 0 and row["train_jacobian_frobenius"] > 0
    assert math.isclose(
        row["train_loss"],
        row["train_nll"] + 0.01 * (row["train_kinetic"] + row["train_jacobian_frobenius"]),
        rel_tol=1e-3,
    )


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ffjord {ffjord.__version__}"


CLI_ERRORS = [
    (["--objective", "score"], "argument --objective: invalid choice: 'score'"),
    (["--coupling", "ot"], "--coupling applies to --objective flow-matching, not likelihood"),
    (["--objective", "flow-matching", "--kinetic", "0.1"], "--kinetic applies to --objective"),
    (["--kinetic", "-0.01"], "--kinetic must be a non-negative number, got -0.01"),
    (["--jacobian-frobenius", "nan"], "--jacobian-frobenius must be a non-negative number"),
    (["--objective", "flow-matching", "--blocks", "4"], "flow matching trains a single FFJORD"),
    (["--validation", "1"], "--validation must be a fraction in [0, 1), got 1.0"),
    (["--patience", "5"], "--patience needs a held-out split to watch: give --validation"),
    (["--validation", "0.1", "--patience", "0"], "--patience must be a positive integer, got 0"),
    (["--adjoint", "magic"], "argument --adjoint: invalid choice: 'magic'"),
    (["--weight-decay", "-1"], "--weight-decay must be a non-negative number, got -1.0"),
    (["--weight-decay", "inf"], "--weight-decay must be a non-negative number, got inf"),
]


@pytest.mark.parametrize("args, phrase", CLI_ERRORS)
def test_cli_bad_objective_options(tmp_path, capsys, args, phrase):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), *args, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("ffjord: error: ") and phrase in err, err
    assert not out.exists()


def test_bad_python_inputs_are_one_line_errors(getkey):
    dist, train = small_dist(getkey()), data(getkey(), 256)
    cases = [
        (lambda: ffjord.fit(getkey(), dist, train, context=np.zeros((10, 1))),
         "context has 10 rows but its data has 256"),
        (lambda: ffjord.fit(getkey(), dist, train, test_data=train,
                            test_context=np.zeros((256, 1))),
         "give test_context exactly when the data have a context and test_data is given"),
        (lambda: ffjord.fit(getkey(), dist, train, epochs=0), "epochs must be a positive integer"),
        (lambda: ffjord.fit(getkey(), dist, train[:, :1]), "data has dimension 1 but the model"),
        (lambda: ffjord.fit_to_density(getkey(), dist, "p"), "log_density must be a function"),
        (lambda: ffjord.fit_to_density(getkey(), dist, jnp.sum, steps=0),
         "steps must be a positive integer, got 0"),
        (lambda: ffjord.fit_to_density(getkey(), dist, jnp.sum, num_samples=-1),
         "num_samples must be a positive integer, got -1"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ffjord.InputError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_weight_decay_is_decoupled_and_scaled_by_the_learning_rate():
    """AdamW: with a zero gradient every parameter shrinks by lr * weight_decay per step."""
    from ffjord._options import TrainingOptions

    params = {"w": jnp.full((3,), 2.0)}
    zero = {"w": jnp.zeros(3)}
    for decay, expected in ((0.0, 2.0), (0.5, 2.0 * (1 - 0.1 * 0.5))):
        opt = TrainingOptions(learning_rate=0.1, weight_decay=decay).make_optimizer(10)
        updates, _ = opt.update(zero, opt.init(params), params)
        assert np.allclose(params["w"] + updates["w"], expected, rtol=1e-6)
    opt = TrainingOptions(learning_rate=0.1).make_optimizer(10)
    updates, _ = opt.update(zero, opt.init(params), params)
    assert np.allclose(updates["w"], 0.0)


def test_cli_weight_decay_is_recorded_and_resumes(tmp_path):
    out = tmp_path / "wd"
    assert main(["train", "--out", str(out), "--epochs", "1", "--weight-decay", "0.01", *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["training"]["weight_decay"] == 0.01
    argv = ["train", "--out", str(out), "--resume", "--epochs", "2", "--weight-decay", "0.1"]
    assert main([*argv, "--quiet"]) == 2


def test_flow_matching_chooses_its_best_epoch_by_its_own_loss_with_fixed_draws(getkey, tmp_path):
    train = data(getkey(), 600)
    models = {}
    dist, history = ffjord.fit(
        getkey(),
        small_dist(getkey()),
        train,
        objective=ffjord.FlowMatching(),
        epochs=6,
        batch_size=60,
        validation=0.1,
        run_dir=tmp_path,
        callback=lambda r, d: models.__setitem__(r["epoch"], d),
        show_progress=False,
    )
    assert all("validation_nll" not in r for r in history)
    val = [r["validation_loss"] for r in history]
    best = int(np.argmin(val)) + 1
    assert history[-1]["best_epoch"] == best and params_equal(dist, models[best])
    assert json.loads((tmp_path / "config.json").read_text())["validation_metric"] == "loss"

    # The number is the objective's mean loss over the validation rows, cycled to 4096 in
    # batches of the training batch size, with draws that do not change between calls.
    trainer = ffjord._trainer.Trainer(models[best], objective=ffjord.FlowMatching(), batch_size=60)
    state = trainer.init(getkey())
    rows = train[:60]
    first, nfe = trainer.validation_loss(state, rows)
    assert nfe is None and first == trainer.validation_loss(state, rows)[0]
    keys = jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(state.key), 2**32 - 1), 69)
    by_hand = [
        ffjord.FlowMatching().loss(models[best], jnp.asarray(rows), None, k)[0] for k in keys
    ]  # 69 batches of 60 rows hold 4140 >= 4096 rows: 69 passes over the 60
    assert first == pytest.approx(float(np.mean(by_hand)), rel=1e-5)


def test_test_every_measures_the_held_out_nll_every_k_epochs_and_at_the_end(getkey):
    train, test = data(getkey(), 512), data(getkey(), 128)
    options = dict(epochs=7, batch_size=128, show_progress=False, test_data=test)
    key, init = getkey(), getkey()
    _, every = ffjord.fit(key, small_dist(init), train, **options)
    _, third = ffjord.fit(key, small_dist(init), train, test_every=3, **options)
    measured = [r["epoch"] for r in third if r["test_nll"] is not None]
    assert measured == [3, 6, 7]
    for a, b in zip(every, third, strict=True):
        assert a["train_loss"] == b["train_loss"]  # training itself is the same
        if b["test_nll"] is not None:
            assert b["test_nll"] == a["test_nll"]
    with pytest.raises(ffjord.InputError, match="test_every must be a positive integer, got 0"):
        ffjord.fit(key, small_dist(init), train, test_every=0, **options)


def test_the_kept_epochs_held_out_nll_is_measured_when_test_every_skipped_it(getkey):
    train, test = data(getkey(), 600), data(getkey(), 128)
    result = engine(
        getkey(), small_dist(getkey(), hidden=32), train, test_data=test, epochs=30,
        batch_size=60, learning_rate=3e-2, validation=0.1, patience=3, test_every=1000,
        show_progress=False,
    )  # fmt: skip
    best = result.state.kept_epoch
    assert best < len(result.history)  # stopped early: only the last epoch was measured
    assert result.history[best - 1]["test_nll"] is None
    expected = -np.mean(np.asarray(result.dist.log_prob(jnp.asarray(test))))
    assert result.test_nll == pytest.approx(float(expected), abs=1e-3)


def engine(key, dist, data, *, run_dir=None, resume=False, warm_start=None, test_data=None,
           show_progress=False, **options):  # fmt: skip
    """The engine (`ffjord._train.run_training`) called with `fit`'s keywords."""
    from pathlib import Path

    from ffjord._options import TrainingOptions
    from ffjord._train import Points, RunTarget, run_training

    return run_training(
        key,
        dist,
        Points(data),
        test=None if test_data is None else Points(test_data),
        options=TrainingOptions(**options),
        warm_start=warm_start,
        run=None if run_dir is None else RunTarget(Path(run_dir), resume),
        show_progress=show_progress,
    )


def warm_start_options(key):
    """A run of 3 likelihood epochs after a warm start of 4 flow-matching epochs."""
    import optax

    from ffjord._options import TrainingOptions, WarmStart

    stage = TrainingOptions(epochs=4, batch_size=64, optimizer=optax.adam(3e-3), validation=0.1)
    warm = WarmStart(ffjord.FlowMatching(), stage)
    return dict(epochs=3, batch_size=128, validation=0.1, show_progress=False, warm_start=warm)


def test_warm_start_is_the_starting_point_of_the_run(getkey, tmp_path):
    """The run's first epoch starts from the warm start's kept model (written to
    RUN/warm-start, loadable on its own): with a zero learning rate the run ends there."""
    import optax

    key, init, train = getkey(), getkey(), data(getkey(), 1024)
    options = warm_start_options(key)
    frozen = engine(
        key, small_dist(init), train, run_dir=tmp_path / "a", optimizer=optax.sgd(0.0), **options
    )
    warmed = ffjord.load(tmp_path / "a" / "warm-start")
    assert params_equal(frozen.dist, warmed)
    assert not params_equal(warmed, small_dist(init))  # the warm start trained
    warm_rows = (tmp_path / "a" / "warm-start" / "metrics.jsonl").read_text().splitlines()
    assert len(warm_rows) == 4 and "validation_loss" in json.loads(warm_rows[0])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["warm_start"]["objective"] == ffjord.FlowMatching().to_config()
    assert config["warm_start"]["training"]["epochs"] == 4
    assert config["warm_start"]["training"]["batch_size"] == 64
    moving = engine(key, small_dist(init), train, **options)  # no run directory
    assert not params_equal(moving.dist, warmed)
    first_nll = moving.history[0]["validation_nll"]
    fresh = engine(key, small_dist(init), train, **{**options, "warm_start": None})
    assert first_nll < fresh.history[0]["validation_nll"]  # flow matching helped


@pytest.mark.parametrize("stop_at", [3, 6])  # during the warm start / during the run
def test_warm_start_interrupted_and_resumed_equals_a_straight_run(
    getkey, tmp_path, monkeypatch, stop_at
):
    from ffjord._trainer import Trainer

    key, init, train = getkey(), getkey(), data(getkey(), 1024)
    options = warm_start_options(key)
    straight = engine(key, small_dist(init), train, run_dir=tmp_path / "a", **options)
    calls = {"n": 0}
    run_epoch = Trainer.run_epoch

    def stopping(self, *args):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise Interrupt
        return run_epoch(self, *args)

    monkeypatch.setattr(Trainer, "run_epoch", stopping)
    with pytest.raises(Interrupt):
        engine(key, small_dist(init), train, run_dir=tmp_path / "b", **options)
    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    assert (tmp_path / "b" / "checkpoint.eqx").exists() == (stop_at > 4)
    resumed = engine(key, small_dist(init), train, run_dir=tmp_path / "b", resume=True, **options)
    assert without_timings(resumed.history) == without_timings(straight.history)
    assert params_equal(resumed.dist, straight.dist)
    for name in ("warm-start/metrics.jsonl", "metrics.jsonl"):
        rows = [json.loads(r) for r in (tmp_path / "b" / name).read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
