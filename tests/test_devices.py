"""Data parallelism: a batch split over forced host devices gives one device's numbers."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ffjord.cli import main

TWO_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def run_python(code: str, env=TWO_DEVICES) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # a subprocess with two host devices; the command-line test stays quick
def test_two_devices_give_one_devices_losses():
    out = run_python(
        """
        import json, jax, numpy as np, ffjord
        from ffjord.datasets import sample_toy
        assert len(jax.devices()) == 2
        def model():
            keys = jax.random.split(jax.random.key(0), 2)
            flows = [ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=k)) for k in keys]
            base = ffjord.MultivariateNormalDiag(np.zeros(2, np.float32), np.ones(2, np.float32))
            return ffjord.TransformedDistribution(base, ffjord.Chain(flows))
        x, t = sample_toy("moons", 1024, 0), sample_toy("moons", 256, 1)
        rows = {}
        for devices in (None, 2):
            dist, history = ffjord.fit(
                jax.random.key(1), model(), x, test_data=t, epochs=2, batch_size=128,
                validation=0.1, devices=devices, show_progress=False,
            )
            rows[str(devices)] = {
                "losses": [[r["train_loss"], r["test_nll"], r["validation_nll"]] for r in history],
                "devices": [r["devices"] for r in history],
            }
        print(json.dumps(rows))
        """
    )
    rows = json.loads(out.strip().splitlines()[-1])
    one, two = rows["None"], rows["2"]
    assert one["devices"] == [1, 1] and two["devices"] == [2, 2]
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)  # nats: rounding of the sums only
    assert one["losses"][0] != pytest.approx(one["losses"][1], abs=1e-3)  # it did train


@pytest.mark.slow  # 30 s: three CLI runs; the in-process test above checks the same numbers
def test_command_line_devices_resume_and_match(tmp_path):
    """`ffjord train --devices 2` reproduces one device's metrics, and a run started on one
    device resumes on two."""
    one, two = tmp_path / "one", tmp_path / "two"
    tiny = "--blocks 1 --hidden 8 --batch-size 512 --quiet --no-figures --epochs"
    code = f"""
        import json, sys
        from ffjord.cli import main
        tiny = {tiny!r}.split()
        assert main(["train", "--out", {str(one)!r}, *tiny, "3"]) == 0
        assert main(["train", "--out", {str(two)!r}, *tiny, "2", "--devices", "2"]) == 0
        assert main(["train", "--out", {str(two)!r}, "--resume", "--epochs", "3", "--quiet",
                     "--no-figures"]) == 0
    """
    run_python(code)
    rows = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (one, two)
    ]
    assert [r["devices"] for r in rows[1]] == [2, 2, 1]
    for a, b in zip(*rows, strict=True):
        assert a["test_nll"] == pytest.approx(b["test_nll"], abs=1e-4)


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ("0", "ffjord: error: --devices must be at least 1, got 0\n"),
        ("-2", "ffjord: error: --devices must be at least 1, got -2\n"),
        ("5", "ffjord: error: --devices 5: JAX sees only 1 cpu device(s); start with "),
    ],
)
def test_bad_device_counts(tmp_path, capsys, devices, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--devices", devices, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not out.exists()


def test_batch_must_split_evenly_over_the_devices(tmp_path):
    code = f"""
        from ffjord.cli import main
        raise SystemExit(main(["train", "--out", {str(tmp_path / "run")!r}, "--devices", "2",
                               "--batch-size", "255", "--quiet"]))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=TWO_DEVICES,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "ffjord: error: a batch of 255 does not split evenly over 2 devices; give a batch "
        "size that is a multiple of 2\n"
    )
    assert not (tmp_path / "run").exists()
