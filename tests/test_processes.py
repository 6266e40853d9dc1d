"""Several processes on localhost train as one (jax.distributed, gloo collectives on CPU)."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from ffjord.cli import main

TINY = ["--blocks", "1", "--hidden", "8", "--batch-size", "512", "--quiet", "--no-figures"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffjord(*args) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from ffjord.cli import main; sys.exit(main())",
        *args,
    ]


def start_processes(out, epochs: int, *extra: str) -> list[subprocess.Popen]:
    port = free_port()
    return [
        subprocess.Popen(
            ffjord(
                "train",
                "--out",
                str(out),
                *TINY,
                "--epochs",
                str(epochs),
                *extra,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # processes on localhost take 40 s; -m slow runs every process test
def test_two_processes_give_one_processs_losses(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert (
        subprocess.run(ffjord("train", "--out", str(one), *TINY, "--epochs", "3")).returncode == 0
    )
    procs = start_processes(two, 3)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert json.loads(outs[0][0].strip().splitlines()[-1])["epochs"] == 3  # process 0 reports
    assert "{" not in outs[1][0]  # the others report nothing (gloo may say it connected)
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert b["devices"] == 2
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)
        assert a["test_nll"] == pytest.approx(b["test_nll"], abs=1e-3)


@pytest.mark.slow  # a minute of three processes; the two-process run stays in the quick suite
def test_a_killed_process_stops_the_others_and_all_resume(tmp_path):
    run = tmp_path / "run"
    procs = start_processes(run, 400)
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").exists() or len(metrics(run)) < 3:
        assert time.monotonic() < deadline, procs[0].stderr.read() if procs[0].poll() else ""
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = procs[0].communicate(timeout=120)  # bounded: never hangs
    assert time.monotonic() - killed_at < 60
    assert procs[0].returncode not in (0, None)
    assert "ffjord: error: process 0 of 2 stops" in err or "Terminating process" in err
    done = len(metrics(run))
    assert done >= 3 and (run / "checkpoint.eqx").exists()
    procs = start_processes(run, done + 2, "--resume")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert [r["epoch"] for r in metrics(run)] == list(range(1, done + 3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--num-processes", "2", "--process-id", "0"],
            "--num-processes and --process-id need --coordinator HOST:PORT",
        ),
        (
            ["--coordinator", "127.0.0.1:1234"],
            "--coordinator needs --num-processes P and --process-id I (0..P-1) as well",
        ),
        (
            ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
            "--coordinator must be HOST:PORT, got 'localhost'",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
            "--num-processes must be at least 1, got 0",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2 is out of range for --num-processes 2 (0..1)",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "-1"],
            "--process-id -1 is out of range for --num-processes 2 (0..1)",
        ),
    ],
)
def test_bad_process_options(tmp_path, capsys, options, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *options, "--quiet"]) == 2
    assert capsys.readouterr().err == f"ffjord: error: {message}\n"
    assert not out.exists()
