"""`UnitInterval`: data confined to [0, 1] modelled in logit space."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_settings

import ffjord
from ffjord._spec import build, describe
from ffjord.cli import main


def test_round_trip_and_log_det_against_the_jacobian(getkey):
    m = ffjord.UnitInterval(3, alpha=0.05)
    x = jax.random.uniform(getkey(), (5, 3), minval=0.0, maxval=1.0)
    y, ildj = m.inverse_and_log_det(x)
    back, fldj = m.forward_and_log_det(y)
    np.testing.assert_allclose(back, x, atol=1e-12)
    np.testing.assert_allclose(fldj, -ildj, rtol=1e-12)
    for xi, li in zip(x, ildj, strict=True):  # the brute-force Jacobian of the inverse map
        jac = jax.jacfwd(m.inverse)(xi)
        np.testing.assert_allclose(li, jnp.linalg.slogdet(jac)[1], rtol=1e-10)
    expected = jnp.log(0.05 + 0.9 * x) - jnp.log1p(-(0.05 + 0.9 * x))  # logit(a + (1-2a) x)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_density_is_zero_outside_the_cube_and_integrates_to_one():
    base = ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))
    dist = ffjord.TransformedDistribution(base, ffjord.UnitInterval(1, alpha=0.1))
    low, high = -0.1 / 0.8, 0.9 / 0.8  # the forward map's range: (-a, 1 - a) / (1 - 2a)
    grid = jnp.linspace(low, high, 200_001)[1:-1, None]
    mass = jnp.sum(jnp.exp(dist.log_prob(grid))) * (grid[1, 0] - grid[0, 0])
    assert mass == pytest.approx(1.0, abs=1e-4)
    outside = dist.log_prob(jnp.array([[low - 0.01], [high + 0.01]]))
    assert np.all(np.isneginf(outside))


def test_described_and_rebuilt():
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.UnitInterval(2, alpha=0.02))
    spec = json.loads(json.dumps(describe(dist)))
    assert spec["bijector"] == {"type": "UnitInterval", "dim": 2, "alpha": 0.02}
    x = jnp.array([[0.2, 0.9]])
    np.testing.assert_allclose(build(spec).log_prob(x), dist.log_prob(x), rtol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 0.5\), got 0.5"):
        ffjord.UnitInterval(2, alpha=0.5)
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        ffjord.UnitInterval(0)


def test_files_in_the_unit_cube_are_modelled_in_logit_space(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = rng.beta(0.5, 0.5, size=(1200, 2))  # piles up at both walls of the box
    path = tmp_path / "box.npy"
    np.save(path, data)
    out = tmp_path / "run"
    small = ["--epochs", "3", "--hidden", "16", "--quiet", "--no-figures"]
    assert main(["train", "--data", str(path), "--out", str(out), *small]) == 0
    cfg = run_settings(out)
    assert cfg["logit"] == 0.01 and "logit" in cfg["chosen_for_data"]
    logits = np.log(0.01 + 0.98 * data) - np.log1p(-(0.01 + 0.98 * data))
    np.testing.assert_allclose(cfg["standardize"]["shift"], logits.mean(axis=0), atol=0.2)
    np.testing.assert_allclose(cfg["standardize"]["scale"], logits.std(axis=0), rtol=0.1)
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "500", "-o", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.min() > -0.01 / 0.98 and samples.max() < 0.99 / 0.98  # inside the map's range
    from ffjord._plan import new_settings  # a given --logit 0 wins over the data's choice

    cfg = new_settings({"data": str(path), "logit": 0.0, "hidden": 16})[0]
    assert cfg["logit"] == 0 and "logit" not in cfg["chosen_for_data"]
