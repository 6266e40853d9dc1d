"""Crash safety of `ffjord train`: SIGKILL at random moments, Ctrl-C, and `--resume`.

Real `ffjord train` processes (a tiny model: one block of MLP(4, 3), batches of 1024,
so each epoch is 8 steps) are killed and resumed. After every kill the run directory
must be consistent (metrics are epochs 1..m in order, each once, with m the
checkpoint's epoch or one more, which the next `--resume` trims); after the final
resume the checkpoint's epoch equals the last metrics epoch, no temporary file is left,
and the metrics equal those of an uninterrupted run number for number.

The processes share a compilation cache in a temporary folder (seeded with a copy of
the user's cache when there is one), so a kill during a cache write cannot damage the
user's own cache. Independent reference runs go in one background thread while the
tests run their processes in the foreground: two processes at a time, one per core.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import checkpoint_state

from ffjord._run import RunDir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

EPOCHS = 6
TINY = ["--blocks", "1", "--hidden", "4", "--batch-size", "1024", "--no-figures", "--quiet"]
# Everything a record holds except its timings.
COMPARED = ("epoch", "train_loss", "test_nll", "nfe", "solver_steps", "rejected_steps")
TIMEOUT = 180  # seconds for any one process: a hang fails the test instead of blocking it
# `python -c` entry that makes sure Ctrl-C raises KeyboardInterrupt even when the test
# runner was started with SIGINT ignored (as background jobs of some shells are).
CTRL_C_ENTRY = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from ffjord.cli import main; sys.exit(main())"
)


# Processes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("jax_cache") / "jax"
    user_cache = Path(
        os.environ.get("FFJORD_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ffjord" / "jax"
    )
    if user_cache.is_dir():
        shutil.copytree(user_cache, cache)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "FFJORD_NO_CACHE")}
    env["FFJORD_CACHE_DIR"] = str(cache)
    return env


def train_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ffjord.cli", "train", "--out", str(out), *TINY, *args]


def train(env: dict[str, str], out: Path, *args: str) -> subprocess.CompletedProcess:
    """One `ffjord train` to completion; it must succeed."""
    proc = subprocess.run(
        train_cmd(out, *args), env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def metric_lines(out: Path) -> list[str]:
    path = out / "metrics.jsonl"
    return path.read_text().splitlines(keepends=True) if path.exists() else []


def wait_for_epochs(out: Path, count: int, proc: subprocess.Popen, since_ns: int = 0) -> bool:
    """Poll until `proc` has written metrics.jsonl with `count` complete lines (written
    after `since_ns`, so not a stale line that a resume trims); False if it ended first."""
    path = out / "metrics.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            fresh = path.stat().st_mtime_ns >= since_ns
        except FileNotFoundError:
            fresh = False
        if fresh and sum(line.endswith("\n") for line in metric_lines(out)) >= count:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.003)
    raise AssertionError(f"no epoch {count} within {TIMEOUT} s")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in metric_lines(out)]


def compared(records: list[dict]) -> list[tuple]:
    return [tuple(r[k] for k in COMPARED) for r in records]


def checkpoint_epoch(out: Path) -> int:
    """The epoch stored in the run's checkpoint (0 without one); loading it must succeed."""
    run = RunDir(out)
    if not run.checkpoint.exists():
        return 0
    return int(checkpoint_state(out)[1].epoch)


def temp_files(out: Path) -> list[Path]:
    return sorted(out.rglob(".*.tmp"))


def assert_consistent(out: Path) -> tuple[int, int]:
    """After any interruption: metrics are epochs 1..m, each once, m = checkpoint or +1.

    A torn last line (a kill in the middle of appending it) is allowed; `--resume`
    drops it. Returns (checkpoint epoch, complete metrics lines).
    """
    lines = metric_lines(out)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    if (out / "config.json").exists():
        RunDir(out).require()  # parses and validates
    ckpt = checkpoint_epoch(out)
    assert len(epochs) in (ckpt, ckpt + 1), (ckpt, epochs)
    return ckpt, len(epochs)


# Reference runs in the background --------------------------------------------------------------


@pytest.fixture(scope="module")
def background(env, tmp_path_factory):
    """Uninterrupted runs, one process at a time in a background thread.

    `ref`: 6 epochs straight. `straight3`: 3 epochs straight. `resumed3`: 2 epochs,
    then `--resume --epochs 3`.
    """
    root = tmp_path_factory.mktemp("reference")
    pool = ThreadPoolExecutor(max_workers=1)

    def ref() -> Path:
        train(env, root / "ref", "--epochs", str(EPOCHS))
        return root / "ref"

    def straight3() -> Path:
        train(env, root / "straight3", "--epochs", "3")
        return root / "straight3"

    def resumed3() -> Path:
        train(env, root / "resumed3", "--epochs", "2")
        assert [r["epoch"] for r in metrics(root / "resumed3")] == [1, 2]
        train(env, root / "resumed3", "--resume", "--epochs", "3")
        return root / "resumed3"

    jobs: dict[str, Future] = {
        name: pool.submit(f)
        for name, f in [("ref", ref), ("straight3", straight3), ("resumed3", resumed3)]
    }
    yield {**jobs, "ref_dir": root / "ref"}
    pool.shutdown(wait=True, cancel_futures=True)


def wait_until_compiled(background) -> None:
    """Wait until the reference run has finished an epoch, i.e. filled the compilation
    cache: later processes then load what it compiled instead of compiling it again."""
    deadline = time.monotonic() + 4 * TIMEOUT
    while not (background["ref_dir"] / "checkpoint.eqx").exists():
        if background["ref"].done() or time.monotonic() > deadline:
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(background) -> list[dict]:
    out = background["ref"].result(timeout=4 * TIMEOUT)
    records = metrics(out)
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    return records


# Tests -----------------------------------------------------------------------------------------


@pytest.mark.slow  # a minute of killed processes; Ctrl-C and resume stay in the quick suite
def test_sigkill_at_random_moments_then_resume(env, background, tmp_path):
    rng = random.Random(20251125)
    out = tmp_path / "run"
    # One kill at a random moment of start-up (imports, tracing, compiling, creating the
    # run), then kills at a random moment of the epoch after one this process finished
    # (training steps, evaluation, snapshot, metrics append, checkpoint write).
    plan = [("startup", rng.uniform(1.0, 6.0))]
    plan += [("epoch", rng.uniform(0.0, 0.15)) for _ in range(2)]
    kills, finished, attempts = [], None, 0
    for phase, delay in [*plan, ("finish", None)]:
        attempts += 1
        if attempts == 2:
            wait_until_compiled(background)
        started_fresh = not (out / "config.json").exists()
        if out.is_dir():  # debris of a killed writer, as SIGKILL can leave it
            (out / f".checkpoint.eqx.planted{attempts}.tmp").write_bytes(b"half a checkpoint")
        args = ["--epochs", str(EPOCHS)] if started_fresh else ["--resume"]
        first_new_epoch = checkpoint_epoch(out) + 1
        since_ns, t0 = time.time_ns(), time.monotonic()
        proc = subprocess.Popen(
            train_cmd(out, *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            if phase == "startup":
                time.sleep(delay)
            elif phase == "epoch" and wait_for_epochs(out, first_new_epoch, proc, since_ns):
                time.sleep(delay)  # else it ended first: nothing left to kill
            if phase != "finish" and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills.append(f"{phase} kill after {time.monotonic() - t0:.2f} s")
            _, stderr = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == -signal.SIGKILL:
            ckpt, lines = assert_consistent(out)
            kills[-1] += f": checkpoint {ckpt}, {lines} metrics lines"
            continue
        assert proc.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr
        finished = attempts
        break
    assert finished is not None, "the run never completed"
    assert len(kills) >= 3, kills

    records = metrics(out)
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    assert checkpoint_epoch(out) == records[-1]["epoch"] == EPOCHS
    assert temp_files(out) == [], "temporary files were left behind"
    ref = background["ref"].result(timeout=4 * TIMEOUT)
    assert compared(records) == compared(metrics(ref)), f"kills: {kills}"
    print("\n".join(kills))


def ctrl_c_after(env: dict[str, str], ready: Path, out: Path, *args: str) -> list[str]:
    """Start `ffjord train --out out ARGS`, press Ctrl-C once `ready` exists, and return
    its stderr's lines: exactly one, exit status 130, no traceback."""
    cmd = [sys.executable, "-c", CTRL_C_ENTRY, *train_cmd(out, *args)[3:]]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not ready.exists():
            assert proc.poll() is None, f"the run ended before {ready} was written"
            time.sleep(0.003)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines


def test_ctrl_c_saves_and_resumes(env, reference, tmp_path):
    out = tmp_path / "run"
    # The first epoch has finished once its checkpoint is saved (metrics come first).
    lines = ctrl_c_after(env, out / "checkpoint.eqx", out, "--epochs", "40")
    assert lines[0].startswith("ffjord: interrupted"), lines[0]
    assert f"ffjord train --out {out} --resume" in lines[0]
    ckpt, _ = assert_consistent(out)
    assert 1 <= ckpt < EPOCHS, "Ctrl-C came too late to test resuming"
    assert f"the checkpoint of epoch {ckpt} is saved" in lines[0]
    assert temp_files(out) == []

    train(env, out, "--resume", "--epochs", str(EPOCHS))
    records = metrics(out)
    assert checkpoint_epoch(out) == records[-1]["epoch"] == EPOCHS
    assert compared(records) == compared(reference)


def test_resume_with_more_epochs_equals_straight_run(background, reference):
    resumed = background["resumed3"].result(timeout=4 * TIMEOUT)
    straight = background["straight3"].result(timeout=4 * TIMEOUT)
    assert [r["epoch"] for r in metrics(resumed)] == [1, 2, 3]
    assert checkpoint_epoch(resumed) == checkpoint_epoch(straight) == 3
    assert json.loads((resumed / "config.json").read_text())["training"]["epochs"] == 3
    assert compared(metrics(resumed)) == compared(metrics(straight))
    assert compared(metrics(straight)) == compared(reference[:3])


@pytest.mark.slow  # two stages of processes; the format-2 fixture resumes a killed warm start
def test_ctrl_c_during_the_warm_start_saves_it_and_resumes(env, tmp_path):
    out = tmp_path / "run"
    warm = out / "warm-start"
    lines = ctrl_c_after(env, warm / "checkpoint.eqx", out, "--warm-start", "60", "--epochs", "1")
    assert "the warm start's checkpoint of epoch" in lines[0] and str(warm) in lines[0]
    assert f"ffjord train --out {out} --resume" in lines[0]
    assert not (out / "checkpoint.eqx").exists()
    ckpt = warm_start_epoch(warm)
    assert 1 <= ckpt < 60, "Ctrl-C came too late to test resuming the warm start"
    assert [r["epoch"] for r in metrics(warm)] == list(range(1, len(metrics(warm)) + 1))

    train(env, out, "--resume")
    assert warm_start_epoch(warm) == len(metrics(warm)) == 60
    assert checkpoint_epoch(out) == len(metrics(out)) == 1
    assert temp_files(out) == [] and temp_files(warm) == []


def warm_start_epoch(warm: Path) -> int:
    """The epoch of a warm start's checkpoint (its run directory has the engine's config)."""
    from ffjord._run import open_run

    return int(open_run(warm)[3].epoch)
