"""Run directories made by ffjord 0.2.0 (format 2) load, evaluate, sample and resume
with the numbers 0.2.0 gave (tests/fixtures/format2/README.md)."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import ffjord
from ffjord import cli

FIXTURES = Path(__file__).parent / "fixtures" / "format2"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
DATA = {"tutorial": None, "logit": "unit.npy", "projected": "cond40.npy", "warm": "warm.npy"}
TIMING = ("seconds", "eval_seconds", "wall_seconds")


@pytest.fixture(autouse=True)
def in_32_bits():
    """As the runs were made: JAX's default precision (the suite enables float64)."""
    with jax.enable_x64(False):
        yield


def copy_run(name: str, tmp_path: Path) -> Path:
    """The fixture `name` in `tmp_path`, its `data` pointing at a copy of its file."""
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    if DATA[name]:
        shutil.copy(FIXTURES / DATA[name], tmp_path / DATA[name])
        config = json.loads((run / "config.json").read_text())
        config["data"] = str(tmp_path / DATA[name])
        (run / "config.json").write_text(json.dumps(config, indent=2))
    return run


def rows_of(name: str) -> np.ndarray:
    if DATA[name] is None:
        return np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    return np.load(FIXTURES / DATA[name])[:64]


@pytest.mark.parametrize("name", ["tutorial", "logit", "projected"])
def test_density_and_sample_as_made(name, tmp_path, capsys):
    run = copy_run(name, tmp_path)
    rows = rows_of(name)
    np.save(tmp_path / "rows.npy", rows)
    assert cli.main(["density", str(run), "--points", str(tmp_path / "rows.npy"),
                     "-o", str(tmp_path / "lp.npy")]) == 0  # fmt: skip
    expected = EXPECTED[name]
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"), expected["log_prob"], rtol=1e-5)
    context = []
    if name == "projected":
        np.save(tmp_path / "ctx.npy", rows[:2, 2:])
        context = ["--context", str(tmp_path / "ctx.npy")]
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "-n", "5", "-o", str(out), *context]) == 0
    np.testing.assert_allclose(np.load(out), expected["sample"], rtol=1e-4, atol=1e-5)
    model = ffjord.load(run)
    dim = 2
    lp = model.log_prob(rows[:8, :dim], context=rows[:8, dim:] if name == "projected" else None)
    np.testing.assert_allclose(lp, expected["log_prob"][:8], rtol=1e-4, atol=1e-4)


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _assert_same_records(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert sorted(g) == sorted(e)
        for key, value in e.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
            else:
                assert g[key] == value, key


SLOW = pytest.mark.slow  # compiling the tutorial's 4-block likelihood step alone takes ~10 s


@pytest.mark.parametrize(
    "name",
    [pytest.param("tutorial", marks=SLOW), pytest.param("logit", marks=SLOW), "projected", "warm"],
)
def test_resume_continues_as_made(name, tmp_path, capsys):
    run = copy_run(name, tmp_path)
    epochs = "2" if name == "warm" else "3"
    args = ["train", "--out", str(run), "--resume", "--epochs", epochs, "--quiet", "--no-figures"]
    assert cli.main(args) == 0, capsys.readouterr().err
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    _assert_same_records(_without_timing(metrics), EXPECTED[name]["metrics"])
    if name == "warm":
        lines = (run / "warm-start" / "metrics.jsonl").read_text().splitlines()
        warm = _without_timing([json.loads(line) for line in lines])
        _assert_same_records(warm, EXPECTED[name]["warm_start_metrics"])
        assert ffjord.load(run / "warm-start").dim == 3
    assert ffjord.load(run).dim == (3 if name == "warm" else 2)
