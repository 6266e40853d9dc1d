"""`ffjord.sbi.Posterior` on a flow that is exactly a known posterior: draws, densities,
the prior's support, leakage correction, bounded effort, and the diagnostics on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import ffjord
from ffjord import InputError, OutsideBox, sbi
from ffjord.cli import main

NOISE = 0.5  # theta ~ N(0, I), x = theta + NOISE * eps: theta | x ~ N(A x, S^2)
A = 1 / (1 + NOISE**2)
S = NOISE * np.sqrt(A)


def exact_flow(p: int) -> ffjord.TransformedDistribution:
    """N(0, I) pushed to N(A x, S^2 I) along z(t) = (1 + t (S - 1)) z0 + t A x."""

    def velocity(t, z, x):
        z0 = (z - t * A * x) / (1 + t * (S - 1))
        return (S - 1) * z0 + A * x

    field = ffjord.CallableField(velocity, dim=p, context_dim=p)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(p), jnp.ones(p))
    return ffjord.TransformedDistribution(base, ffjord.FFJORD(field, rtol=1e-6, atol=1e-8))


def test_draws_and_densities_are_the_known_posterior():
    posterior = sbi.Posterior(exact_flow(2))
    x = np.array([[1.0, -2.0], [0.0, 0.5], [3.0, 3.0]])
    theta, log_q = posterior.sample_and_log_prob(jax.random.key(0), (4000,), x=x)
    assert theta.shape == (4000, 3, 2) and log_q.shape == (4000, 3)
    np.testing.assert_allclose(theta.mean(axis=0), A * x, atol=0.03)
    np.testing.assert_allclose(theta.std(axis=0), S, rtol=0.05)
    exact = stats.norm.logpdf(theta, A * x, S).sum(-1)
    np.testing.assert_allclose(log_q, exact, atol=1e-4)
    np.testing.assert_allclose(posterior.log_prob(theta[:50], x=x), exact[:50], atol=1e-4)
    ranked_theta, ranked = posterior.sample_and_log_prob(jax.random.key(0), (4000,), x=x,
                                                         for_ranking=True)  # fmt: skip
    error = np.abs(ranked - stats.norm.logpdf(ranked_theta, A * x, S).sum(-1))
    assert 1e-5 < error.max() < 1e-3  # the log-density's own error is not controlled
    one = posterior.sample(jax.random.key(1), (2, 5), x=x[0])
    assert one.shape == (2, 5, 2)
    assert posterior.log_prob(one, x=x[0]).shape == (2, 5)


def test_the_priors_support_keeps_draws_in_and_leakage_is_corrected():
    prior = sbi.BoxUniform([-0.5], [1.0])  # cuts the posterior N(0.8, 0.45^2) at 1.0
    posterior = sbi.Posterior(exact_flow(1), prior=prior)
    x = np.array([1.0])
    theta = posterior.sample(jax.random.key(0), (3000,), x=x)
    assert theta.min() >= -0.5 and theta.max() <= 1.0
    grid = np.linspace(-0.5, 1.0, 301)[:, None]
    raw = np.exp(posterior.log_prob(grid, x=x))
    corrected = np.exp(posterior.log_prob(grid, x=x, leakage_key=jax.random.key(1)))
    inside = stats.norm.cdf(1.0, A, S) - stats.norm.cdf(-0.5, A, S)
    assert np.trapezoid(raw, grid[:, 0]) == pytest.approx(inside, abs=1e-3)
    assert np.trapezoid(corrected, grid[:, 0]) == pytest.approx(1.0, abs=0.02)
    assert posterior.log_prob(np.array([[1.5]]), x=x)[0] == -np.inf
    mass = posterior.mass_inside(jax.random.key(2), np.array([[1.0], [0.0]]), 5000)
    assert mass[0] == pytest.approx(inside, abs=0.02) and mass[1] > mass[0]
    with pytest.raises(InputError, match=r"^none of 5000 draws of the flow lies within the "):
        posterior.mass_inside(jax.random.key(3), np.array([[1.0], [10.0]]), 5000)


def test_a_support_the_posterior_misses_ends_with_an_error_naming_the_share():
    posterior = sbi.Posterior(exact_flow(1), prior=sbi.BoxUniform([4.0], [5.0]), max_draws=5)
    with pytest.raises(OutsideBox, match=r"lie within the prior's support after \d+ draws$"):
        posterior.sample(jax.random.key(0), (200,), x=np.array([0.0]))


def test_the_checks_pass_on_the_exact_flow():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(150, 2))
    x = theta + NOISE * rng.normal(size=(150, 2))
    posterior = sbi.Posterior(exact_flow(2))
    c = sbi.coverage(jax.random.key(0), posterior, theta, x, num_samples=200)
    s = sbi.sbc(jax.random.key(1), posterior, theta, x, num_samples=200)
    assert c.ok and s.ok
    np.testing.assert_allclose(c.contraction, 1 - S**2, atol=0.15)


def test_bad_inputs_are_named():
    posterior = sbi.Posterior(exact_flow(2))
    with pytest.raises(InputError, match=r"^x must have shape \(2,\) or \(m, 2\), got \(3,\)$"):
        posterior.sample(jax.random.key(0), (5,), x=np.zeros(3))
    with pytest.raises(InputError, match=r"^theta has 4 rows on the observations' axis but"):
        posterior.log_prob(np.zeros((4, 2)), x=np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"^the prior has 3 parameters but the flow 2$"):
        sbi.Posterior(exact_flow(2), prior=sbi.BoxUniform([0, 0, 0], [1, 1, 1]))
    unconditional = ffjord.TransformedDistribution(
        ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1)),
        ffjord.Affine(jnp.zeros(1), jnp.ones(1)),
    )
    with pytest.raises(InputError, match=r"^Posterior needs a conditional flow"):
        sbi.Posterior(unconditional)
    with pytest.raises(InputError, match=r"^BoxUniform needs low < high in every column"):
        sbi.BoxUniform([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(InputError, match=r"^Independent takes priors"):
        sbi.Independent([object()])


@pytest.fixture(scope="module")
def arcs_run(tmp_path_factory):
    """A tiny run of `ffjord train --data arcs` (2 parameters given 2 observations)."""
    out = tmp_path_factory.mktemp("arcs") / "run"
    tiny = ["--epochs", "2", "--blocks", "1", "--hidden", "8", "--warm-start", "0"]
    assert main(["train", "--data", "arcs", "--out", str(out), *tiny, "--quiet",
                 "--no-figures"]) == 0  # fmt: skip
    return out


def test_a_given_prior_wins_over_the_support_a_run_recorded(arcs_run):
    recorded = sbi.Posterior(arcs_run)
    assert np.all(np.isfinite(recorded.low)) and recorded.region == "the recorded support"
    wide = sbi.Independent([sbi.BoxUniform([-50.0], [50.0]),
                            ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))])  # fmt: skip
    given = sbi.Posterior(arcs_run, prior=wide)
    assert given.low.tolist() == [-50.0, -np.inf] and given.high.tolist() == [50.0, np.inf]
    assert given.region == "the prior's support"


def test_diagnose_writes_its_report_whole_and_refuses_a_used_directory(arcs_run, tmp_path,
                                                                         capsys):  # fmt: skip
    import json

    from ffjord import simulators

    theta, x = simulators.simulate(60, seed=7)
    pairs = tmp_path / "test.npy"
    np.save(pairs, np.concatenate([theta, x], axis=1))
    out = tmp_path / "checks"
    out.mkdir()  # an empty directory is fine
    argv = ["diagnose", str(arcs_run), "--data", str(pairs), "--out", str(out)]
    assert main([*argv, "--samples", "50"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "diagnostics.json").read_text())
    assert {k: printed[k] for k in saved} == saved and set(saved) == {"sbc", "coverage", "tarp"}
    assert saved["sbc"]["test_pairs"] == 60 and len(saved["sbc"]["pvalues"]) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "coverage.png", "diagnostics.json", "sbc.png", "tarp.png"]  # fmt: skip
    before = (out / "diagnostics.json").read_text()
    assert main([*argv, "--samples", "50"]) == 2  # not empty now: refused, nothing touched
    err = capsys.readouterr().err
    assert err == f"ffjord: error: {out} exists and is not an empty directory; choose a new --out\n"
    assert (out / "diagnostics.json").read_text() == before
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 3)))
    assert main(["diagnose", str(arcs_run), "--data", str(bad), "--out", str(tmp_path / "n")]) == 2
    assert "has 3 columns but the run's data have 4" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()


def test_sample_draws_one_pairplot_per_condition(arcs_run, tmp_path, capsys):
    import json

    conditions = tmp_path / "obs.npy"
    np.save(conditions, np.array([[0.5, 0.2], [-0.3, 0.1]]))
    argv = ["sample", str(arcs_run), "-n", "300", "--context", str(conditions),
            "-o", str(tmp_path / "s.npy"), "--pairplot", str(tmp_path / "fig.png")]  # fmt: skip
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pairplots"] == [str(tmp_path / "fig-1.png"), str(tmp_path / "fig-2.png")]
    assert all((tmp_path / f"fig-{i}.png").stat().st_size > 10_000 for i in (1, 2))
    assert main(argv) == 2  # the outputs exist now: refused before any draw
    assert "already exists" in capsys.readouterr().err
    one = ["sample", str(arcs_run), "-n", "200", "--context", "0.5,0.2", "-o",
           str(tmp_path / "one.npy"), "--pairplot", str(tmp_path / "one.png")]  # fmt: skip
    assert main(one) == 0 and (tmp_path / "one.png").exists()


def test_pairplot_overlays_truth_and_reference_and_names_bad_input():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3000, 3))
    fig = sbi.pairplot(samples, truth=[0.0, 1.0, 2.0], reference=samples[:500] + 0.1,
                       labels=["a", "b", "c"])  # fmt: skip
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_title() for ax in axes.diagonal()] == ["a", "b", "c"]
    assert [axes[2][j].get_xlabel() for j in range(3)] == ["a", "b", "c"]
    assert not axes[0][2].axison and axes[2][0].get_ylabel() == "c"
    low, high = axes[2][2].get_xlim()
    assert low < 2.0 < high and high - low < 12  # the truth inside, fixed readable limits
    plt.close(fig)
    with pytest.raises(InputError, match=r"^truth must have 3 values, got 2$"):
        sbi.pairplot(samples, truth=[0.0, 1.0])
    with pytest.raises(InputError, match=r"^a pairplot shows 2 to 10 parameters at a time"):
        sbi.pairplot(rng.normal(size=(100, 11)))


def test_simulate_drops_non_finite_pairs_and_says_how_many():
    prior = sbi.BoxUniform([0.0, 0.0], [1.0, 1.0])
    seen = []

    def simulator(key, theta):
        seen.append(len(theta))
        x = theta.sum(axis=1, keepdims=True) + 0.01 * jax.random.normal(key, (len(theta), 1))
        return jnp.where(theta[:, :1] > 0.9, jnp.nan, x)  # about 10% fail

    with pytest.warns(UserWarning, match=r"^simulate dropped \d+ of 500 simulations with NaN"):
        theta, x = sbi.simulate(jax.random.key(0), prior, simulator, 500, batch_size=200)
    assert seen == [200, 200, 100] and 400 < len(theta) < 500 and x.shape == (len(theta), 1)
    assert theta[:, 0].max() <= 0.9 and np.all(np.isfinite(x))
    with pytest.raises(InputError, match=r"^all 10 simulations gave NaN or infinite values$"):
        sbi.simulate(jax.random.key(0), prior, lambda key, t: jnp.full((len(t), 1), jnp.inf), 10)
    with pytest.raises(InputError, match=r"must give shape \(10, k\), got \(3, 1\)$"):
        sbi.simulate(jax.random.key(0), prior, lambda key, t: jnp.zeros((3, 1)), 10)


@pytest.mark.slow  # 20 s; fit_posterior's example trains and samples in the quick suite
def test_fit_posterior_trains_as_the_plain_command_within_the_priors_support(tmp_path):
    import json

    from conftest import run_settings

    from ffjord._plan import new_settings

    prior = sbi.Independent([sbi.BoxUniform([-1.0], [1.0]),
                             ffjord.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))])  # fmt: skip
    noisy = lambda key, t: t + 0.2 * jax.random.normal(key, t.shape)  # noqa: E731
    theta, x = sbi.simulate(jax.random.key(0), prior, noisy, 1500)
    run = tmp_path / "post"
    posterior = sbi.fit_posterior(jax.random.key(1), theta, x, prior=prior, run_dir=run,
                                  epochs=2)  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["support"]["from"] == "given"
    assert config["data"]["support"]["low"] == [-1.0, None]
    assert (tmp_path / "post.simulations.npy").exists()
    plain = new_settings({"data": str(tmp_path / "post.simulations.npy"), "context_dims": 2})[0]
    ran = run_settings(run)  # what the plain command chooses for the same pairs, but epochs
    keys = ("blocks", "hidden", "layers", "learning_rate", "batch_size", "weight_decay",
            "objective", "embedding", "trace")  # fmt: skip
    assert {k: ran[k] for k in keys} == {k: plain[k] for k in keys}
    draws = posterior.sample(jax.random.key(2), (400,), x=np.array([[0.9, 0.0], [-0.5, 2.0]]))
    assert draws.shape == (400, 2, 2) and np.abs(draws[..., 0]).max() <= 1.0
    with pytest.raises(InputError, match=r"^fit_posterior sets context_dims itself"):
        sbi.fit_posterior(jax.random.key(1), theta, x, context_dims=1)
    with pytest.raises(InputError, match=r"simulations.npy exists already; choose another"):
        sbi.fit_posterior(jax.random.key(1), theta, x, run_dir=run, epochs=1)


def test_map_finds_the_known_mode_inside_the_support():
    x = np.array([[1.0, -2.0], [0.5, 0.5]])
    mode = sbi.Posterior(exact_flow(2)).map(x, key=jax.random.key(0), num_draws=200, steps=100)
    np.testing.assert_allclose(mode, A * x, atol=2e-3)  # the best draw alone is ~0.05 off
    boxed = sbi.Posterior(exact_flow(2), prior=sbi.BoxUniform([-1.0, -1.0], [0.5, 0.5]))
    edge = boxed.map(x[0], key=jax.random.key(1), num_draws=200, steps=100)
    np.testing.assert_allclose(edge, [0.5, -1.0], atol=2e-3)  # the mode is outside: the edge


def test_a_round_proposes_inside_the_region_that_holds_all_but_1e_4_of_the_posterior():
    from ffjord.sbi._sequential import Truncated

    posterior = sbi.Posterior(exact_flow(2))
    x_o = np.array([1.0, -2.0])
    for half, how in ((10.0, "rejection from the prior"), (100.0, "rejection from the prior"),
                      (1e4, "sampling-importance-resampling")):  # fmt: skip
        prior = sbi.BoxUniform([-half] * 2, [half] * 2)
        region = Truncated.region(prior, posterior, jax.random.key(0), x_o)
        c = 2 * (-np.log(2 * np.pi * S**2) - region.threshold)  # |theta - A x_o|^2 / S^2 < c
        assert 1e-5 < stats.chi2(2).sf(c) < 5e-4  # the posterior's mass outside: about 1e-4
        low, high = region.bounds
        assert np.all(low < A * x_o - np.sqrt(c) * S) and np.all(high > A * x_o + np.sqrt(c) * S)
        mass = region.prior_mass(jax.random.key(1))  # 100 and 1e4: by importance sampling
        assert mass == pytest.approx(np.pi * c * S**2 / (2 * half) ** 2, rel=0.1)
        theta, method = region.draw(jax.random.key(2), 2000)
        r2 = np.sum((theta - A * x_o) ** 2, axis=1) / S**2
        assert method == how and theta.shape == (2000, 2) and r2.max() < c
        assert abs(np.mean(r2 / c) - 0.5) < 0.05  # uniform over the disc: r^2 uniform
        if how.startswith("rejection"):
            assert len(np.unique(theta, axis=0)) == 2000  # no parameter drawn twice


@pytest.mark.slow  # 27 s; the module's example runs two rounds in the quick suite
def test_sequential_rounds_draw_near_the_observation_and_resume(tmp_path):
    import time

    prior = sbi.BoxUniform([-10.0], [10.0])  # a wide prior; the posterior is ~N(x_o, 0.1^2)
    simulator = lambda key, t: t + 0.1 * jax.random.normal(key, t.shape)  # noqa: E731
    x_o = np.array([1.0])
    settings = dict(rounds=2, simulations=1200, epochs=3, blocks=1)
    posterior = sbi.sequential(jax.random.key(0), prior, simulator, x_o, run_dir=tmp_path,
                               **settings)  # fmt: skip
    first, second = posterior.rounds
    assert first["drawn_by"] == "the prior" and first["simulations"] == 600
    assert second["region_prior_mass"] < 0.1  # the region is a small part of the prior
    pairs = np.load(tmp_path / "round-2.simulations.npy")
    late = pairs[600:, 0]  # round 2's parameters: from the truncated prior, near x_o
    assert np.abs(late - 1.0).max() < 1.5 and np.abs(pairs[:600, 0] - 1.0).max() > 5
    draws = posterior.sample(jax.random.key(1), (500,), x=x_o)
    assert abs(float(draws.mean()) - 1.0) < 0.2
    started = time.perf_counter()
    again = sbi.sequential(jax.random.key(0), prior, simulator, x_o, run_dir=tmp_path,
                           **settings)  # fmt: skip
    assert again.rounds == posterior.rounds and time.perf_counter() - started < 15
    assert again.proposal.threshold == pytest.approx(posterior.proposal.threshold, abs=1e-6)
    local = posterior.proposal.sample(jax.random.key(3), (50,))  # test pairs for diagnostics
    assert local.shape == (50, 1) and np.all(np.abs(local - 1.0) < 2.0)
    assert np.all(np.isfinite(posterior.proposal.log_prob(local)))
    with pytest.raises(InputError, match=r"holds rounds made with other settings"):
        sbi.sequential(jax.random.key(0), prior, simulator, x_o, run_dir=tmp_path, rounds=3)


def test_the_arcs_prior_and_simulator_are_the_built_in_simulators_model():
    from ffjord import simulators

    theta, x = sbi.simulate(jax.random.key(0), simulators.prior(), simulators.simulator, 20000)
    old_theta, old_x = simulators.simulate(20000, seed=0)  # the numpy version, unchanged
    for t, obs in ((theta, x), (old_theta, old_x)):
        assert np.std(obs[:, 0] - np.linalg.norm(t, axis=1)) == pytest.approx(0.1, rel=0.03)
        assert np.std(obs[:, 1] - t[:, 0]) == pytest.approx(0.5, rel=0.03)
        np.testing.assert_allclose(t.std(axis=0), 1.0, rtol=0.03)
