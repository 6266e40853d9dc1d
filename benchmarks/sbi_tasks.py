"""sbibm tasks, sbi's NPE / FMPE and ffjord's command line on the same simulations: the
measuring parts that ``compare_sbi.py``, ``sbi_variants.py`` and ``data_defaults.py`` share.

How each method is run and scored is described in ``compare_sbi.py``'s docstring. Peers
(torch, sbi, sbibm) are imported inside the functions that need them; `ffjord_posterior`
needs none of them.
"""

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

import harness

# sbibm's slcp_distractors pickles its distractor mixture, which torch >= 2.6 refuses to
# load by default (weights_only); the file ships with sbibm itself.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

OBSERVATIONS = (1, 2, 3)  # quick screens; claims use ALL_OBSERVATIONS
ALL_OBSERVATIONS = tuple(range(1, 11))  # sbibm's ten observations per task
NUM_POSTERIOR_SAMPLES = 10_000
THREADS = 2
METHODS = ("npe", "fmpe", "ffjord")
PEERS = ("npe", "fmpe")
LABELS = {"npe": "sbi NPE", "fmpe": "sbi FMPE", "ffjord": "ffjord CLI"}
# The best published amortized (single-round) C2ST at 10,000 simulations, mean over
# observations 1-10, and where it comes from (GenSBI picked each task's best of 9-13
# configurations by this C2ST, with a random-forest classifier: optimistic).
ANCHORS = {
    "two_moons": (0.522, "GenSBI (transformer, score matching)"),
    "gaussian_linear": (0.509, "GenSBI"),
    "gaussian_linear_uniform": (0.553, "sbibm paper, NPE"),
    "gaussian_mixture": (0.511, "GenSBI"),
    "slcp": (0.657, "GenSBI flow matching (FMPE paper: about 0.68)"),
    "bernoulli_glm": (0.616, "GenSBI flow matching"),
    "bernoulli_glm_raw": (0.765, "sbibm paper, NPE"),
    "slcp_distractors": (0.970, "sbibm paper, NPE"),
}


# Tasks, data and the metric ----------------------------------------------------------------


def load_task(name: str):
    """The sbibm task, with a prior/simulator draw to make sure it really works here."""
    import sbibm
    import torch

    task = sbibm.get_task(name)
    with torch.random.fork_rng():
        task.get_simulator()(task.get_prior()(num_samples=2))
    task.get_reference_posterior_samples(num_observation=OBSERVATIONS[0])
    return task


def prior_box(task) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the task's uniform prior (sbibm's boxes: an interval per parameter)."""
    support = task.get_prior_dist().support
    low = np.asarray(support.base_constraint.lower_bound, np.float64)
    return low, np.asarray(support.base_constraint.upper_bound, np.float64)


def seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def simulate(task, n: int, seed: int):
    """``n`` pairs (theta, x) from the task's prior and simulator, float32 torch tensors."""
    import torch

    seed_all(seed)
    theta = task.get_prior()(num_samples=n).to(torch.float32)
    x = task.get_simulator()(theta).to(torch.float32)
    return theta, x


def observation(task, i: int):
    import torch

    return task.get_observation(num_observation=i).to(torch.float32).reshape(1, -1)


def c2st(task, i: int, samples, first: int | None = None) -> float:
    """sbibm's C2ST of ``samples`` against the reference posterior of observation ``i``
    (with ``first``: of the first that many of each, a quicker and noisier screen)."""
    import sbibm.metrics
    import torch

    reference = task.get_reference_posterior_samples(num_observation=i).to(torch.float32)
    samples = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    if first is not None:
        reference, samples = reference[:first], samples[:first]
    return float(sbibm.metrics.c2st(X=reference, Y=samples)[0])


def outside_prior(task, samples) -> np.ndarray:
    """Boolean mask of the samples outside the support of the task's prior."""
    import torch

    support = task.get_prior_dist().support
    inside = support.check(torch.as_tensor(np.asarray(samples), dtype=torch.float32))
    return ~inside.numpy().astype(bool)


def spread_ratio(task, i: int, samples) -> list[float]:
    """Per parameter, the standard deviation of ``samples`` over the reference posterior's
    of observation ``i``: above 1 where a posterior is smeared (a narrow one resolved too
    wide, mass left between modes), below 1 where it is too tight."""
    reference = task.get_reference_posterior_samples(num_observation=i).numpy()
    return [round(float(r), 3) for r in np.std(samples, axis=0) / np.std(reference, axis=0)]


def score(task, i: int, samples, result: dict, first: int | None = None) -> None:
    """Append observation ``i``'s C2ST (and, if some samples lie outside the prior, their
    fraction and the C2ST of those inside) and its `spread_ratio` to ``result``."""
    samples = np.asarray(samples, dtype=np.float32)
    finite = np.isfinite(samples).all(axis=1)
    result["non_finite"].append(int((~finite).sum()))
    samples = samples[finite]
    result.setdefault("spread_ratio", []).append(spread_ratio(task, i, samples))
    outside = outside_prior(task, samples)
    result["outside_prior_fraction"].append(float(outside.mean()))
    result["c2st"].append(c2st(task, i, samples, first))
    if outside.any():
        inside = c2st(task, i, samples[~outside], first)
        result.setdefault("c2st_inside_prior", {})[str(i)] = inside


def new_result(method: str) -> dict:
    return {
        "method": method,
        "ok": False,
        "c2st": [],
        "sampling_seconds_per_observation": [],
        "outside_prior_fraction": [],
        "non_finite": [],
    }


def finish(result: dict) -> dict:
    result["c2st_mean"] = float(np.mean(result["c2st"]))
    result["ok"] = True
    return result


def over_seeds(results: list[dict]) -> dict:
    """One method's results on several simulation seeds (the same observations) as one:
    per-observation C2ST and times averaged over the seeds, each seed's mean C2ST in
    ``seed_means``, the seeds' own results in ``per_seed``."""
    if len(results) == 1 or not all(r.get("ok") for r in results):
        failed = [r for r in results if not r.get("ok")]
        return failed[0] if failed else results[0]
    first = results[0]
    merged = {k: v for k, v in first.items() if k in ("method", "class", "observations")}
    merged.update(
        ok=True,
        seeds=[r["seed"] for r in results],
        c2st=np.mean([r["c2st"] for r in results], axis=0).tolist(),
        seed_means=[r["c2st_mean"] for r in results],
        outside_prior_fraction=np.max(
            [r["outside_prior_fraction"] for r in results], axis=0
        ).tolist(),
        per_seed=results,
    )
    for key in ("training_seconds", "sampling_seconds", "total_seconds"):
        if all(key in r for r in results):
            merged[key] = float(np.mean([r[key] for r in results]))
    epochs = [r.get("epochs") for r in results]
    merged["epochs"] = epochs[0] if len(set(epochs)) == 1 else epochs
    return finish(merged)


def warning_lines(caught) -> list[str]:
    lines = []
    for w in caught:
        line = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:200]}"
        if line not in lines:
            lines.append(line)
    return lines


# The peers: sbi's NPE and FMPE -------------------------------------------------------------


def sbi_tracker(log_dir: Path):
    """sbi's default TensorBoard logging, written under ``log_dir`` instead of the current
    directory's ``sbi-logs/`` (same cost, nothing left in the repository)."""
    from sbi.utils.tracking import TensorBoardTracker
    from torch.utils.tensorboard.writer import SummaryWriter

    return TensorBoardTracker(SummaryWriter(str(log_dir)))


def train_sbi(method: str, task, theta, x, seed: int, log_dir: Path):
    """(inference, estimator, training seconds, epochs or None): sbi's NPE or FMPE trained
    with its defaults on tensors `theta`, `x`."""
    from sbi.inference import FMPE, NPE

    cls = {"npe": NPE, "fmpe": FMPE}[method]
    seed_all(seed)
    inference = cls(
        prior=task.get_prior_dist(), show_progress_bars=False, tracker=sbi_tracker(log_dir)
    )
    start = time.perf_counter()
    estimator = inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - start
    print(flush=True)  # sbi's "converged after N epochs." ends without a newline
    summary = getattr(inference, "summary", None) or getattr(inference, "_summary", {})
    epochs = summary.get("epochs_trained") if isinstance(summary, dict) else None
    return inference, estimator, seconds, int(epochs[-1]) if epochs else None


def run_sbi(
    method: str, task, theta, x, seed: int, log_dir: Path, observations=OBSERVATIONS
) -> dict:
    """Train sbi's NPE or FMPE with its defaults, sample and score the `observations`."""
    import torch

    result = new_result(method)
    result["class"] = f"sbi.inference.{method.upper()}"
    result["observations"] = list(observations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inference, estimator, seconds, epochs = train_sbi(method, task, theta, x, seed, log_dir)
        start = time.perf_counter()
        posterior = inference.build_posterior(estimator)
        result["training_seconds"] = seconds + time.perf_counter() - start
        if epochs:
            result["epochs"] = epochs
        result["parameters"] = int(sum(p.numel() for p in estimator.parameters()))
        for i in observations:
            obs = observation(task, i)
            seed_all(seed + i)
            start = time.perf_counter()
            with torch.no_grad():
                samples = posterior.sample(
                    (NUM_POSTERIOR_SAMPLES,), x=obs, show_progress_bars=False
                )
            result["sampling_seconds_per_observation"].append(time.perf_counter() - start)
            score(task, i, samples.numpy(), result)
    result["sampling_seconds"] = float(sum(result["sampling_seconds_per_observation"]))
    result["warnings"] = warning_lines(caught)
    return finish(result)


# ffjord: the plain command line ------------------------------------------------------------


def ffjord_posterior(
    theta: np.ndarray, x: np.ndarray, observations: np.ndarray, work: Path, options=None
) -> tuple[dict, np.ndarray]:
    """``ffjord train --data PAIRS.npy --context-dims d_x --out RUN [options]``, then
    ``ffjord sample RUN -n 10000 --context OBS.npy -o SAMPLES.npy``; both timed as processes.
    Returns (the timings, commands, summary, chosen config and last epoch; the samples of
    shape (observations, 10000, d_theta))."""
    result: dict = {}
    d_theta, d_x = theta.shape[1], x.shape[1]
    work.mkdir(parents=True, exist_ok=True)
    pairs, run_dir = work / "pairs.npy", work / "run"
    obs_file, samples_file = work / "obs.npy", work / "samples.npy"
    np.save(pairs, np.concatenate([theta, x], axis=1).astype(np.float32))
    train = [*harness.ffjord(), "train", "--data", str(pairs), "--context-dims", str(d_x)]
    train += ["--out", str(run_dir), *(options or [])]
    result["train_command"] = harness.shown(train)
    done = harness.run(train).check("ffjord train")
    result["training_seconds"] = done.seconds
    summary = done.summary()
    if summary:
        result["summary"] = summary
    config = run_dir / "config.json"
    if config.exists():
        result["config"] = json.loads(config.read_text())  # the defaults the command chose
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        last = harness.last_json_line(metrics.read_text())
        if last:
            result["epochs"] = last.get("epoch")
            result["metrics_wall_seconds"] = last.get("wall_seconds")
            result["last_epoch"] = {
                k: last[k] for k in ("train_loss", "test_nll", "nfe", "eval_nfe") if k in last
            }
    np.save(obs_file, np.asarray(observations, np.float32))
    sample = [*harness.ffjord(), "sample", str(run_dir), "-n", str(NUM_POSTERIOR_SAMPLES)]
    sample += ["--context", str(obs_file), "-o", str(samples_file)]
    result["sample_command"] = harness.shown(sample)
    result["sampling_seconds"] = harness.run(sample).check("ffjord sample").seconds
    samples = np.load(samples_file)
    expected = (len(observations), NUM_POSTERIOR_SAMPLES, d_theta)
    if samples.shape != expected:
        raise RuntimeError(f"ffjord sample wrote shape {samples.shape}, expected {expected}")
    return result, samples


def run_ffjord(
    task,
    theta,
    x,
    work: Path,
    options: list[str] | None = None,
    first: int | None = None,
    observations=OBSERVATIONS,
) -> dict:
    """`ffjord_posterior` on a task's simulations (torch tensors) and `observations`
    (their numbers), scored. ``first``: C2ST of the first that many samples only."""
    result = new_result("ffjord")
    del result["sampling_seconds_per_observation"]  # one process samples them all
    rows = np.concatenate([observation(task, i).numpy() for i in observations])
    timings, samples = ffjord_posterior(theta.numpy(), x.numpy(), rows, work, options)
    result.update(timings)
    result["observations"] = list(observations)
    for k, i in enumerate(observations):
        score(task, i, samples[k], result, first)
    return finish(result)


def smoke_ffjord_only(work: Path, options: list[str]) -> dict:
    """Without sbibm: `ffjord_posterior` on ffjord's own simulator (``arcs``), unscored."""
    from ffjord import simulators

    theta, x = simulators.simulate(1000, seed=0)
    result, samples = ffjord_posterior(theta, x, x[:3], work, options)
    result["sample_mean"] = samples.mean(axis=1).round(3).tolist()
    return result
