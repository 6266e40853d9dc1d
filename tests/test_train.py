"""The training loop: learning, no recompilation, rejected steps, determinism."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffjord
from ffjord._trainer import Trainer, check_progress, trainable


def small_dist(key, dim=2, blocks=2, trace=None):
    keys = jax.random.split(key, blocks)
    flows = [
        ffjord.FFJORD(ffjord.MLPField(dim, 8, 3, key=k), trace=trace, rtol=1e-3, atol=1e-5)
        for k in keys
    ]
    base = ffjord.MultivariateNormalDiag(jnp.zeros(dim), jnp.ones(dim))
    return ffjord.TransformedDistribution(base, ffjord.Chain(flows))


def gaussian_data(key, n, scale=(0.5, 2.0), shift=(1.0, -1.0)):
    return np.asarray(jnp.asarray(shift) + jnp.asarray(scale) * jax.random.normal(key, (n, 2)))


def test_fit_learns_a_gaussian_and_reports_metrics(getkey):
    data = gaussian_data(getkey(), 2048)
    test = gaussian_data(getkey(), 1024)
    records = []
    dist, history = ffjord.fit(
        getkey(),
        small_dist(getkey()),
        data,
        test_data=test,
        epochs=6,
        batch_size=256,
        learning_rate=3e-2,
        callback=lambda r, d: records.append(r),
        show_progress=False,
    )
    assert records == history and [r["epoch"] for r in history] == list(range(1, 7))
    for r in history:
        assert set(r) >= {"epoch", "train_loss", "test_nll", "seconds", "nfe"}
        assert r["nfe"] > 0 and r["rejected_steps"] == 0
    true_entropy = float(
        ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.array([0.5, 2.0])).entropy()
    )
    assert history[0]["test_nll"] > history[-1]["test_nll"]
    assert history[-1]["test_nll"] < true_entropy + 0.15


def test_epochs_after_the_first_do_not_recompile(getkey, max_traces):
    epoch = max_traces(Trainer, "_epoch", 1)
    evaluation = max_traces(Trainer, "_log_prob_chunk", 1)
    dist = small_dist(getkey(), blocks=1)
    trainer = Trainer(dist, batch_size=128)
    state = trainer.init(getkey())
    data = gaussian_data(getkey(), 512).astype(np.float64)
    test = gaussian_data(getkey(), 300).astype(np.float64)
    for _ in range(3):
        state, _ = trainer.run_epoch(state, data)
        trainer.nll(state, test)
    trainer.log_prob(state, np.concatenate([test] * 9))  # 2700 points: 3 chunks, same program
    assert eqx.debug.get_num_traces(epoch) == eqx.debug.get_num_traces(evaluation) == 1
    assert int(state.epoch) == 3


def test_no_snapshot_is_drawn_while_an_epoch_trains(getkey, tmp_path, monkeypatch):
    # An epoch's `seconds` must be its own: the snapshot of 2-D runs (both cores, ~4x an
    # epoch of the tutorial's flow matching) overlaps the evaluation, never the next epoch.
    from ffjord import _run

    drawing = []
    draw, run_epoch = _run.Snapshotter.__call__, Trainer.run_epoch

    def traced_draw(self, epoch, state):
        drawing.append(epoch)
        try:
            draw(self, epoch, state)
        finally:
            drawing.remove(epoch)

    def checked_run_epoch(self, state, data, context=None):
        if int(state.epoch) > 0:  # the first epoch overlaps the warm-up (snapshot 0)
            assert drawing == []
        return run_epoch(self, state, data, context)

    monkeypatch.setattr(_run.Snapshotter, "__call__", traced_draw)
    monkeypatch.setattr(Trainer, "run_epoch", checked_run_epoch)
    data = gaussian_data(getkey(), 512)
    objective = ffjord.FlowMatching()
    ffjord.fit(
        getkey(), small_dist(getkey(), blocks=1), data, objective=objective, epochs=4,
        batch_size=128, run_dir=tmp_path / "run", show_progress=False,
    )  # fmt: skip
    assert len(list((tmp_path / "run").glob("snapshots/epoch_*.npz"))) == 5


def test_epoch_order_is_the_stable_argsort_of_the_raw_stream():
    from ffjord._trainer import _epoch_order, _stable_argsort

    raw_key = np.asarray(jax.random.key_data(jax.random.key(3)))
    for n in (1, 7, 5000):
        seed = np.random.SeedSequence([*raw_key.ravel().tolist(), 2])
        expected = np.argsort(np.random.PCG64(seed).random_raw(n), kind="stable")
        np.testing.assert_array_equal(_epoch_order(raw_key, 2, n), expected)
    ties = np.array([5, 3, 5, 1, 3, 5, 0], np.uint64)  # equal values keep their order
    np.testing.assert_array_equal(_stable_argsort(ties), np.argsort(ties, kind="stable"))


def test_only_objectives_with_epoch_work_prepare():
    assert ffjord.FlowMatching(coupling="ot").prepares
    assert not ffjord.FlowMatching(coupling="independent").prepares
    assert not ffjord.MaximumLikelihood().prepares


def test_non_finite_steps_are_rejected_and_state_kept(getkey):
    dist = small_dist(getkey(), blocks=1)
    trainer = Trainer(dist, batch_size=64)
    state = trainer.init(getkey())
    data = gaussian_data(getkey(), 256)
    poisoned = data.copy()
    poisoned[:] = np.nan  # every batch gives a NaN loss
    new_state, record = trainer.run_epoch(state, poisoned)
    assert record["rejected_steps"] == 4
    for old, new in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(new_state.params), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ffjord.TrainingDiverged, match="lower the learning rate"):
        check_progress(record, 4)
    # One poisoned point costs only its own batch; the others still learn.
    one = data.copy()
    one[7] = np.nan
    state2, record2 = trainer.run_epoch(state, one)
    assert record2["rejected_steps"] == 1
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(state2.params))


def test_exhausted_solver_rejects_the_step(getkey):
    keys = jax.random.split(getkey(), 1)
    flow = ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=keys[0]), max_steps=2, rtol=1e-8, atol=1e-10)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, flow)
    trainer = Trainer(dist, batch_size=64)
    state = trainer.init(getkey())
    new_state, record = trainer.run_epoch(state, gaussian_data(getkey(), 128))
    assert record["rejected_steps"] == 2
    with pytest.raises(ffjord.TrainingDiverged, match="raise max_steps"):
        ffjord.fit(
            getkey(),
            dist,
            gaussian_data(getkey(), 128),
            epochs=1,
            batch_size=64,
            show_progress=False,
        )


def test_training_is_deterministic(getkey):
    dist = small_dist(getkey(), blocks=1)
    data = gaussian_data(getkey(), 512)
    key = getkey()
    runs = [
        ffjord.fit(key, dist, data, test_data=data, epochs=2, batch_size=128, show_progress=False)[
            1
        ]
        for _ in range(2)
    ]
    for a, b in zip(*runs, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["test_nll"] == b["test_nll"]


def test_hutchinson_training_and_typed_or_raw_keys(getkey):
    dist = small_dist(getkey(), blocks=1, trace=ffjord.HutchinsonTrace())
    data = gaussian_data(getkey(), 512)
    for key in (jax.random.key(0), jax.random.PRNGKey(0)):
        _, history = ffjord.fit(
            key, dist, data, test_data=data, epochs=1, batch_size=128, show_progress=False
        )
        assert np.isfinite(history[0]["train_loss"]) and np.isfinite(history[0]["test_nll"])


def test_only_flow_parameters_train(getkey):
    flows = small_dist(getkey(), blocks=1).bijector
    affine = ffjord.Affine(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain([flows, affine]))
    spec = trainable(dist)
    assert spec.base is not True and not any(jax.tree.leaves(spec.base))
    trained, _ = ffjord.fit(
        getkey(), dist, gaussian_data(getkey(), 256), epochs=1, batch_size=128, show_progress=False
    )
    np.testing.assert_array_equal(trained.bijector.bijectors[1].scale, affine.scale)
    np.testing.assert_array_equal(trained.base.scale_diag, base.scale_diag)
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(trained.bijector.bijectors[0]), jax.tree.leaves(flows), strict=True
        )
    ]
    assert any(moved)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(epochs=0), "epochs must be a positive integer, got 0"),
        (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
        (dict(learning_rate=-1.0), "learning_rate must be a positive number, got -1.0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a positive number"),
        (dict(batch_size=10_000), "fewer than one batch"),
    ],
)
def test_fit_rejects_bad_options(getkey, kwargs, message):
    with pytest.raises(ffjord.InputError, match=message):
        ffjord.fit(
            getkey(),
            small_dist(getkey(), blocks=1),
            gaussian_data(getkey(), 300),
            show_progress=False,
            **kwargs,
        )


@pytest.mark.parametrize(
    "data,message",
    [
        (np.zeros((0, 2)), "non-empty array of shape"),
        (np.zeros((10, 3)), "data has dimension 3 but the model is 2-dimensional"),
        (np.array([[0.0, np.nan]] * 300), "300 rows with NaN"),
        (np.zeros(5), "non-empty array of shape"),
        (np.c_[np.arange(300.0), np.full(300, -3.0)], "data column 1 .* every row holds -3"),
    ],
)
def test_fit_rejects_bad_data(getkey, data, message):
    with pytest.raises(ffjord.InputError, match=message):
        ffjord.fit(getkey(), small_dist(getkey(), blocks=1), data, show_progress=False)
