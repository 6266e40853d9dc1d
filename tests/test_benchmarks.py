"""Every script in benchmarks/ runs its ``--smoke`` mode to the end, without any peer.

``python benchmarks/NAME.py --smoke`` uses tiny sizes, writes into a temporary directory
(never docs/) and, when a peer (torch, TensorFlow Probability, sbi, flowjax, ...) is not
installed, runs the ffjord side alone. Scripts that start ``ffjord train`` processes or
compile several models take tens of seconds on two cores and are marked slow; the
harness itself, the TFP peer's skip and the TFP report's renderer stay in the quick suite.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
MODULES = {
    "embedding_tasks",
    "harness",
    "log_panels",
    "render_sbi",
    "render_tfp",
    "sbi_tasks",
    "trace_counts",
}
QUICK = {"peer_tfp"}  # smoke runs of a few seconds
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in MODULES)


def load(name: str):
    """A module of benchmarks/ imported as the scripts import it (by plain name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def smoke(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "script", [s if s in QUICK else pytest.param(s, marks=pytest.mark.slow) for s in SCRIPTS]
)
def test_smoke(script):
    done = smoke(script)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_every_script_has_a_smoke_mode():
    for script in SCRIPTS:
        assert "add_smoke(" in (BENCHMARKS / f"{script}.py").read_text(), script


# Still on ffjord's private Trainer / _settings (to be moved onto public names); no other
# script may import a private module, and these three may not grow new ones unnoticed.
PRIVATE_LEFT = {"compare_flow_matching", "ffjord_side", "profile_phases"}


def test_no_script_imports_private_ffjord_modules_or_edits_sys_path():
    private = set()
    for path in BENCHMARKS.glob("*.py"):
        text = path.read_text()
        if "ffjord._" in text or "from ffjord import _" in text:
            private.add(path.stem)
        assert "sys.path.insert" not in text, path.name
    assert private == PRIVATE_LEFT


def test_harness_runs_a_timed_process_and_reads_its_last_json_line():
    harness = load("harness")
    code = "import json, sys; print('x'); print(json.dumps({'a': 1})); print('done')"
    done = harness.run([sys.executable, "-c", code])
    assert done.ok and done.seconds > 0
    assert done.summary() == {"a": 1}
    failed = harness.run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    assert failed.returncode == 3
    with pytest.raises(RuntimeError, match="status 3:\nboom"):
        failed.check("the child")


def test_harness_statistics_ignore_missing_values():
    harness = load("harness")
    assert harness.median([3.0, None, 1.0, 2.0]) == 2.0
    assert harness.median([None]) is None
    assert harness.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert harness.mean_sd([1.0]) == (1.0, None)
    assert harness.ratio(6.0, 3.0) == 2.0
    assert harness.ratio(1.0, 0.0) is None and harness.ratio(None, 1.0) is None
    assert harness.fmt(None) == "n/a" and harness.fmt(1.234, ".1f") == "1.2"
    assert harness.last_json_line('{"a": 1}\n{broken\nend') == {"a": 1}
    info = harness.machine()
    assert info["cpu_count"] >= 1 and info["python"] == harness.versions()["python"]


def test_the_tfp_report_renders_from_the_committed_results(tmp_path):
    render_tfp = load("render_tfp")
    raw, _, _ = render_tfp.paths("BENCHMARKS")
    meta = json.loads((raw / "meta.json").read_text())
    summary = render_tfp.render(raw, tmp_path / "fig.png", tmp_path / "REPORT.md")
    report = (tmp_path / "REPORT.md").read_text()
    assert (tmp_path / "fig.png").stat().st_size > 0
    assert f"seed {meta['seeds'][0]}" in summary
    # the split changed nothing: the committed report comes back, figure path aside
    committed = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert report == committed.replace("figures/nll_vs_time.png", "fig.png")


def test_the_embedding_tasks_likelihoods_are_the_gaussian_densities():
    """compare_embeddings.py's exact posteriors rest on these closed forms: the AR(1)
    likelihood is the stationary process's multivariate normal density (Toeplitz
    covariance), the trials' the product of normal densities, up to the same constant."""
    from scipy.stats import multivariate_normal, norm

    tasks = load("embedding_tasks")
    ar1 = tasks.TASKS["ar1"]
    steps = 30
    x = tasks._ar1(np.random.default_rng(0), np.array([[0.6, -0.3]]), steps)[0]
    lags = np.abs(np.arange(steps)[:, None] - np.arange(steps)[None, :])
    diffs = []
    for phi, log_sigma in [(0.6, -0.3), (-0.4, 0.2), (0.1, 0.0)]:
        cov = np.exp(2 * log_sigma) / (1 - phi**2) * phi**lags
        exact = multivariate_normal(np.zeros(steps), cov).logpdf(x)
        diffs.append(exact - ar1.log_likelihood(x, np.array(phi), np.array(log_sigma)))
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-9)  # the constant -T/2 log(2 pi)
    trials = tasks.TASKS["trials"]
    x = np.random.default_rng(1).normal(0.3, 0.5, 50)
    diffs = [
        norm(mu, np.exp(ls)).logpdf(x).sum() - trials.log_likelihood(x, np.array(mu), np.array(ls))
        for mu, ls in [(0.3, np.log(0.5)), (-1.0, 0.2), (1.5, -1.0)]
    ]
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-9)
    # The grid holds the posterior: its draws' mean lies within a standard error of the
    # conjugate answer (flat prior: mu | x, sigma ~ N(mean, sigma^2 / n)).
    draws = trials.posterior_draws(np.random.default_rng(2), x, 20_000)
    assert abs(draws[:, 0].mean() - x.mean()) < 4 * x.std() / np.sqrt(50) / np.sqrt(20_000) + 1e-3


def test_sbi_results_over_seeds_and_cached_peers_keep_each_observation():
    """Seeds average per observation (each seed's mean kept); a cached peer serves a
    subset of its observations, reordered, and nothing it did not score."""
    tasks, compare = load("sbi_tasks"), load("compare_sbi")

    def result(seed, c2st):
        r = tasks.new_result("npe")
        r.update(seed=seed, observations=[1, 2, 3], c2st=c2st, training_seconds=10.0 * seed)
        r.update(outside_prior_fraction=[0.0, 0.1, 0.0], non_finite=[0, 0, 1])
        r.update(sampling_seconds_per_observation=[1.0, 2.0, 3.0], sampling_seconds=6.0)
        return tasks.finish(r)

    merged = tasks.over_seeds([result(1, [0.6, 0.7, 0.8]), result(3, [0.8, 0.7, 0.6])])
    np.testing.assert_allclose(merged["c2st"], [0.7, 0.7, 0.7])
    np.testing.assert_allclose(merged["seed_means"], [0.7, 0.7])
    assert merged["seeds"] == [1, 3] and merged["training_seconds"] == 20.0
    cache = {"t|npe|100|1": result(1, [0.6, 0.7, 0.8])}
    picked = compare.cached_peer(cache, "t|npe|100|1", [3, 1])
    assert picked["c2st"] == [0.8, 0.6] and picked["non_finite"] == [1, 0]
    assert picked["sampling_seconds"] == 4.0 and picked["c2st_mean"] == pytest.approx(0.7)
    assert compare.cached_peer(cache, "t|npe|100|1", [1, 4]) is None
    assert compare.cached_peer(cache, "t|npe|100|2", [1]) is None


def test_the_banana_posterior_draws_match_its_likelihood_on_a_grid():
    """sbi_rounds.py scores rounds against `exact_draws`: their mean and covariance are
    the grid posterior's, computed from the simulator's likelihood alone."""
    rounds = load("sbi_rounds")
    x_o = np.array([1.0, 2.0])
    a, b = np.meshgrid(np.linspace(0.75, 1.25, 401), np.linspace(0.3, 1.7, 401), indexing="ij")
    grid = np.stack([a.ravel(), b.ravel()], axis=1)
    log_w = rounds.log_unnormalised(grid, x_o)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = w @ grid
    cov = (grid - mean).T @ ((grid - mean) * w[:, None])
    draws = rounds.exact_draws(x_o, 20_000, seed=0)
    se = np.sqrt(np.diag(cov) / len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4 * se)
    np.testing.assert_allclose(
        np.cov(draws.T), cov, rtol=0.05, atol=0.05 * np.sqrt(cov[0, 0] * cov[1, 1])
    )
