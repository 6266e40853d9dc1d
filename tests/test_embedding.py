"""Embedding networks: what each summary is invariant to, that they train with the flow,
and that a run with one is saved, rebuilt and resumed exactly."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffjord
from ffjord._plan import new_settings
from ffjord._spec import build, describe
from ffjord.cli import main


def trials_file(path, n=512, trials=6, channels=2, seed=0):
    """theta (2) ~ N(0, I); x: `trials` i.i.d. draws of N(theta, I) (channels 2), flat."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, channels))
    x = theta[:, None, :] + rng.standard_normal((n, trials, channels))
    np.save(path, np.concatenate([theta, x.reshape(n, -1)], axis=1))
    return path


def embedded_model(embedding, key, dim=2):
    field = ffjord.MLPField(dim, 8, 3, context_dim=embedding.features, key=key)
    k = embedding.context_dim
    bijector = ffjord.StandardizedContext(
        ffjord.EmbeddedContext(ffjord.FFJORD(field), embedding), jnp.zeros(k), jnp.ones(k)
    )
    base = ffjord.MultivariateNormalDiag(jnp.zeros(dim), jnp.ones(dim))
    return ffjord.TransformedDistribution(base, bijector)


def test_a_set_embedding_ignores_the_order_of_trials(getkey):
    embedding = ffjord.SetEmbedding((7, 3), 5, key=getkey())
    x = jax.random.normal(getkey(), (4, 21))
    order = np.array([3, 0, 6, 1, 5, 2, 4])
    permuted = x.reshape(4, 7, 3)[:, order].reshape(4, 21)
    np.testing.assert_allclose(embedding(permuted), embedding(x), rtol=1e-12, atol=1e-12)
    swapped_channels = x.reshape(4, 7, 3)[:, :, ::-1].reshape(4, 21)  # not a reordering of trials
    assert not np.allclose(embedding(swapped_channels), embedding(x))
    dist = embedded_model(embedding, getkey())
    theta = jax.random.normal(getkey(), (4, 2))
    np.testing.assert_allclose(
        dist.log_prob(theta, context=permuted), dist.log_prob(theta, context=x), atol=1e-9
    )


def test_a_convolution_sees_time_order(getkey):
    embedding = ffjord.Conv1dEmbedding((40, 2), 6, key=getkey())
    x = jax.random.normal(getkey(), (3, 80))
    reversed_in_time = x.reshape(3, 40, 2)[:, ::-1].reshape(3, 80)
    gap = np.abs(np.asarray(embedding(reversed_in_time) - embedding(x)))
    assert gap.max() > 1e-3
    assert embedding(x[0]).shape == (6,) and embedding(x.reshape(3, 1, 80)).shape == (3, 1, 6)
    # A row is time-major: step t's C values are row[t * C:(t + 1) * C]. Changing one
    # step changes the summary; the convolution's receptive field is local, so a change in
    # the first step leaves the first layer's output beyond its kernel untouched.
    bumped = x.at[:, 0].add(1.0)
    assert not np.allclose(embedding(bumped), embedding(x))


def test_an_mlp_embedding_and_the_errors_of_each(getkey):
    embedding = ffjord.MLPEmbedding(10, 3, key=getkey())
    assert embedding(jnp.ones((2, 5, 10))).shape == (2, 5, 3)
    kept = ffjord.MLPEmbedding(10, 3, keep_input=True, key=getkey())
    x = jax.random.normal(getkey(), (2, 5, 10))
    assert kept.features == 13 and kept.learned == 3
    np.testing.assert_array_equal(kept(x)[..., :10], x)  # the rows themselves, then 3 learned
    learned = ffjord.MLPEmbedding(10, 3, key=getkey())
    learned = eqx.tree_at(lambda e: e.mlp, learned, kept.mlp)
    np.testing.assert_array_equal(kept(x)[..., 10:], learned(x))
    with pytest.raises(ValueError, match=r"SetEmbedding: shape must be a pair \(T, C\), got 12"):
        ffjord.SetEmbedding(12, 3, key=getkey())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Conv1dEmbedding: features must be an integer >= 1"):
        ffjord.Conv1dEmbedding((10, 1), 0, key=getkey())
    field = ffjord.MLPField(2, 8, 3, context_dim=4, key=getkey())
    with pytest.raises(ValueError, match="the embedding gives 3 features but the bijector takes 4"):
        ffjord.EmbeddedContext(ffjord.FFJORD(field), embedding)
    wider = "the embedding gives 13 features but the bijector takes 4"  # the row kept, too
    with pytest.raises(ValueError, match=wider):
        ffjord.EmbeddedContext(ffjord.FFJORD(field), kept)
    with pytest.raises(TypeError, match="EmbeddedContext takes an AbstractEmbedding, got Affine"):
        ffjord.EmbeddedContext(ffjord.FFJORD(field), ffjord.Affine(jnp.zeros(2), jnp.ones(2)))


@pytest.mark.parametrize(
    "embedding",
    [
        lambda key: ffjord.MLPEmbedding(12, 3, key=key),
        lambda key: ffjord.MLPEmbedding(12, 3, keep_input=True, key=key),
        lambda key: ffjord.SetEmbedding((6, 2), 3, key=key),
        lambda key: ffjord.Conv1dEmbedding((6, 2), 3, key=key),
    ],
    ids=["mlp", "mlp-keeping-its-input", "set", "conv1d"],
)
def test_a_description_rebuilds_the_embedding(getkey, embedding):
    dist = embedded_model(embedding(getkey()), getkey())
    spec = describe(dist)
    assert spec is not None
    rebuilt = build(json.loads(json.dumps(spec)))
    rebuilt = eqx.combine(
        eqx.filter(dist, eqx.is_array), eqx.filter(rebuilt, eqx.is_array, inverse=True)
    )
    theta, x = jnp.ones((3, 2)), jax.random.normal(getkey(), (3, 12))
    np.testing.assert_array_equal(
        rebuilt.log_prob(theta, context=x), dist.log_prob(theta, context=x)
    )


def arrays(tree):
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))


@pytest.mark.parametrize("objective", ["likelihood", "flow-matching"])
def test_the_embedding_is_trained_with_the_flow(tmp_path, objective):
    data = trials_file(tmp_path / "trials.npy", n=512)
    options = {"objective": objective, "blocks": 1, "hidden": 8, "epochs": 2,
               "validation": 0.0, "embedding": "set", "embedding_features": 4}  # fmt: skip
    result = ffjord.train(tmp_path / "run", data=str(data), context_dims=12, context_shape=(6, 2),
                          show_progress=False, **options)  # fmt: skip
    embedded = result.dist.bijector.bijector
    assert isinstance(embedded, ffjord.EmbeddedContext)
    before = ffjord.SetEmbedding((6, 2), 4, key=jax.random.fold_in(jax.random.key(0), 2))
    moved = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(arrays(embedded.embedding), arrays(before), strict=True)
    ]
    assert min(moved) > 1e-4  # every array of the embedding was trained


@pytest.mark.parametrize(
    ("embedding", "resume"),
    [
        ("mlp", False),
        ("set", True),
        pytest.param("conv1d", True, marks=pytest.mark.slow),  # 30 s: three runs
        pytest.param(
            "linear", False, marks=pytest.mark.slow
        ),  # ProjectedContext: test_conditional.py, test_format2.py
    ],
)
def test_a_run_with_an_embedding_loads_and_resumes_exactly(tmp_path, embedding, resume):
    data = str(trials_file(tmp_path / "trials.npy"))
    options = {"data": data, "context_dims": 12, "context_shape": (6, 2), "embedding": embedding,
               "embedding_features": 3, "blocks": 1, "hidden": 8, "batch_size": 128,
               "schedule": "constant", "validation": 0.0, "warm_start": 0,
               "show_progress": False}  # fmt: skip
    straight = ffjord.train(tmp_path / "straight", epochs=2, **options)
    if resume:  # the embeddings that read a shape; the others' arrays are saved alike
        ffjord.train(tmp_path / "resumed", epochs=1, **options)
        resumed = ffjord.train(tmp_path / "resumed", epochs=2, resume=True, **options)
        for a, b in zip(arrays(resumed.dist), arrays(straight.dist), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded = ffjord.load(tmp_path / "straight")
    rows = np.load(data)[:16]
    theta, x = jnp.asarray(rows[:, :2], jnp.float32), jnp.asarray(rows[:, 2:], jnp.float32)
    np.testing.assert_array_equal(
        loaded.log_prob(theta, context=x), straight.dist.log_prob(theta, context=x)
    )
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["data"]["context_shape"] == [6, 2]


def test_the_plain_command_chooses_an_embedding_from_the_data(tmp_path):
    data = str(trials_file(tmp_path / "trials.npy"))
    shaped = new_settings({"data": data, "context_dims": 12, "context_shape": (6, 2)})[0]
    assert (shaped["embedding"], shaped["embedding_features"]) == ("conv1d", 32)
    assert shaped["objective"] == "likelihood"  # 12 columns laid out: not projected
    assert {"embedding", "embedding_features"} <= set(shaped["chosen_for_data"])
    chosen_set = new_settings({"data": data, "context_dims": 12, "context_shape": (6, 2),
                               "embedding": "set"})[0]  # fmt: skip
    assert (chosen_set["embedding"], chosen_set["embedding_features"]) == ("set", 32)
    flat = new_settings({"data": data, "context_dims": 12})[0]
    assert (flat["embedding"], flat["embedding_features"]) == ("none", 0)
    alias = new_settings({"data": data, "context_dims": 12, "context_features": 5})[0]
    assert (alias["embedding"], alias["embedding_features"]) == ("linear", 5)
    linear = new_settings({"data": data, "context_dims": 12, "embedding": "linear"})[0]
    assert linear["embedding_features"] == 12  # at most the columns it combines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context-dims", "12", "--context-shape", "5,2"],
         "--context-shape 5,2 holds 10 values, but a condition row has 12 columns "
         "(--context-dims 12)"),
        (["--context-dims", "12", "--embedding", "conv1d"],
         "--embedding conv1d reads each condition row as T time steps of C channels; give "
         "--context-shape"),
        (["--context-dims", "12", "--embedding", "set"],
         "--embedding set reads each condition row as N trials of C values; give --context-shape"),
        (["--embedding", "mlp"],
         "--embedding mlp summarises conditions; give --context-dims K as well"),
        (["--context-shape", "6,2"],
         "--context-shape lays out condition rows; give --context-dims K as well"),
        (["--context-dims", "12", "--context-shape", "6x2"],
         "argument --context-shape: '6x2' is not T,C (two integers: 100,2)"),
        (["--context-dims", "12", "--context-shape", "0,12"],
         "--context-shape must be two positive integers T, C, got (0, 12)"),
        (["--context-dims", "12", "--embedding", "linear", "--embedding-features", "20"],
         "--embedding-features 20 exceeds the 12 condition columns (--context-dims 12) that "
         "--embedding linear combines"),
        (["--context-dims", "12", "--embedding", "none", "--embedding-features", "4"],
         "--embedding-features 4 sizes a learned summary of the conditions, but --embedding is "
         "none; choose one of mlp, conv1d, set, linear"),
        (["--context-dims", "12", "--context-features", "4", "--embedding", "mlp"],
         "--context-features 4 means --embedding linear with --embedding-features 4, not "
         "--embedding mlp; give one or the other"),
    ],
)  # fmt: skip
def test_bad_embedding_options_fail_in_one_line_and_write_nothing(tmp_path, capsys, args, message):
    data = str(trials_file(tmp_path / "trials.npy", n=64))
    out = tmp_path / "run"
    code = main(["train", "--data", data, "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_run_whose_mlp_embedding_kept_no_rows_is_not_resumed(tmp_path, capsys):
    """Runs saved before `--embedding mlp` kept each condition row: resuming one would
    build another model than its checkpoint, so it stops in one line and changes nothing."""
    data = str(trials_file(tmp_path / "trials.npy", n=64))
    out = tmp_path / "run"
    common = ["--data", data, "--context-dims", "12", "--embedding", "mlp",
              "--embedding-features", "3", "--blocks", "1", "--hidden", "8", "--validation", "0",
              "--warm-start", "0", "--out", str(out), "--quiet", "--no-figures"]  # fmt: skip
    assert main(["train", *common, "--epochs", "1"]) == 0
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    text = json.dumps(config)
    assert text.count('"keep_input": true') == 1
    config_path.write_text(text.replace('"keep_input": true', '"keep_input": false'))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", *common, "--epochs", "2", "--resume"]) != 0
    err = capsys.readouterr().err
    assert "this run's mlp embedding gives the fields its learned features alone" in err, err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
