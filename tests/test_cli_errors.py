"""Bad input to the `ffjord` command line: one `ffjord: error:` line, non-zero exit, no harm.

Every case checks the whole promise: the exit code, exactly one line on stderr that
starts with `ffjord: error:` and names the problem (a specific phrase of it), no
traceback, and every file the user already had is byte-for-byte unchanged (nor is
anything new left behind, such as a half-made run directory or output file).

Most cases call `ffjord.cli.main` in-process (fast); a few run `python -m ffjord.cli`
in a real subprocess to check exit codes and stderr end to end.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import checkpoint_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffjord.cli import main

TINY = ["--epochs", "1", "--blocks", "1", "--hidden", "4", "--batch-size", "1024"]
QUIET = ["--no-figures", "--quiet"]


# Helpers -------------------------------------------------------------------------------------


def tree_state(*paths: Path) -> dict[str, object]:
    """Everything under `paths`: each file's bytes and mtime, each folder, each absence."""
    state: dict[str, object] = {}
    for root in paths:
        if not root.exists():
            state[str(root)] = "absent"
            continue
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            if p.is_dir():
                state[str(p)] = "dir"
            else:
                st_ = p.stat()
                state[str(p)] = (p.read_bytes(), st_.st_mtime_ns, st_.st_mode)
    return state


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, phrase: str, *, exit_code: int | None = 2) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("ffjord: error: "), lines[0]
    assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    assert code != 0
    if exit_code is not None:
        assert code == exit_code, (code, lines[0])


def check(capsys, argv, phrase, *, keep=(), exit_code=2) -> str:
    """Run `argv`; assert one error line containing `phrase` and that `keep` is untouched."""
    keep = [Path(k) for k in keep]
    before = tree_state(*keep)
    code, out, err = cli(capsys, *argv)
    assert_one_error(code, err, phrase, exit_code=exit_code)
    assert out == "", out
    assert tree_state(*keep) == before, "a file the user had was changed"
    return err


# Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny trained run (moons, 1 epoch) shared by the module; never modify it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    code = main(["train", "--out", str(out), *TINY, *QUIET])
    assert code == 0
    assert (out / "checkpoint.eqx").exists()
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, for the tests that damage it."""
    return Path(shutil.copytree(trained_run, tmp_path / "run_copy"))


@pytest.fixture
def files(tmp_path) -> Path:
    """A folder of good and bad input files."""
    d = tmp_path / "files"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "good.npy", rng.normal(size=(64, 2)).astype(np.float32))
    np.save(d / "good3.npy", rng.normal(size=(64, 3)).astype(np.float32))
    np.save(d / "small.npy", rng.normal(size=(100, 2)).astype(np.float32))
    np.save(d / "one_row.npy", np.ones((1, 2), np.float32))
    nan = rng.normal(size=(64, 2)).astype(np.float32)
    nan[[3, 10, 11], 1] = np.nan
    np.save(d / "nan.npy", nan)
    inf = rng.normal(size=(64, 2)).astype(np.float32)
    inf[5, 0] = np.inf
    inf[6, 1] = -np.inf
    np.save(d / "inf.npy", inf)
    np.save(d / "cube.npy", np.zeros((4, 3, 2), np.float32))
    np.save(d / "cube_points.npy", np.zeros((4, 3, 2), np.float32))
    np.save(d / "pickled.npy", np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)
    np.save(d / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.savez(d / "archive.npz", x=np.zeros((4, 2)))
    (d / "archive.npy").write_bytes((d / "archive.npz").read_bytes())
    (d / "garbage.npy").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    full = (d / "good.npy").read_bytes()
    (d / "truncated.npy").write_bytes(full[: len(full) // 2])
    (d / "pickle_plain.npy").write_bytes(pickle.dumps({"a": [1, 2, 3]}))
    (d / "text.csv").write_text("x,y\n1.0,2.0\n3.0,abc\n")
    (d / "ragged.csv").write_text("1,2\n3,4\n5,6,7\n")
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("x,y\n")
    (d / "inf.csv").write_text("1,2\n3,inf\nnan,4\n" * 10)
    (d / "huge.csv").write_text("1,2\n3,1e300\n" * 10)
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    (d / "points.txt").write_text("1,2\n3,4\n")
    (d / "a_folder.npy").mkdir()
    return d


# Data files for `train --data` -----------------------------------------------------------------

DATA_CASES = {
    "missing": ("missing.npy", "data file '{d}/missing.npy' does not exist"),
    "directory": ("a_folder.npy", "is a directory; give a .npy or .csv file"),
    "garbage_npy": ("garbage.npy", "garbage.npy' is not a .npy file"),
    "truncated_npy": ("truncated.npy", "is truncated: its header promises shape (64, 2)"),
    "pickled_object_npy": ("pickled.npy", "holds Python objects (pickled data)"),
    "plain_pickle_as_npy": ("pickle_plain.npy", "pickle_plain.npy' is not a .npy file"),
    "npz_named_npy": ("archive.npy", "(it looks like a .npz archive)"),
    "string_npy": ("strings.npy", "not numbers; save a numeric array"),
    "non_numeric_csv_cell": ("text.csv", "row 2 (line 3), column 2 is 'abc', not a number"),
    "ragged_csv": ("ragged.csv", "line 3 has 3 values but the lines above have 2"),
    "empty_csv": ("empty.csv", "empty.csv' has no data rows; write one point per line"),
    "header_only_csv": ("header_only.csv", "has a header but no data rows"),
    "binary_csv": ("binary.csv", "is not a UTF-8 text file"),
    "nan_npy": ("nan.npy", "has NaN or infinite values in 3 of 64 rows"),
    "inf_csv": ("inf.csv", "has NaN or infinite values in 20 of 30 rows"),
    "beyond_float32_csv": ("huge.csv", "holds 1e+300, beyond the float32 range (+-3.4e38)"),
    "three_d_array": ("cube.npy", "holds an array of shape (4, 3, 2); save a 2-D array"),
    "wrong_extension": ("points.txt", "has extension '.txt'; use a .npy or .csv file"),
    "too_few_rows": ("one_row.npy", "need at least 2 rows to hold out a test set, got 1"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_train_bad_data_file(capsys, files, tmp_path, case):
    name, phrase = DATA_CASES[case]
    out = tmp_path / "new_run"
    check(
        capsys,
        ["train", "--out", out, "--data", files / name, *QUIET],
        phrase.format(d=files),
        keep=[files, out],  # the input files are untouched and no run directory appears
    )


def test_train_refuses_a_constant_data_column(capsys, tmp_path):
    rows = np.random.default_rng(0).normal(size=(300, 4))
    rows[:, 1] = 0.5  # a parameter column that never varies (a condition column may)
    rows[:, 3] = 2.0
    np.save(tmp_path / "flat.npy", rows)
    out = tmp_path / "new_run"
    check(
        capsys,
        ["train", "--out", out, "--data", tmp_path / "flat.npy", "--context-dims", "1", *QUIET],
        "data column 1 (counting from 0) has no spread: every row holds 0.5, and a density "
        "cannot be fitted to a constant; drop the column",
        keep=[tmp_path / "flat.npy", out],
    )


def test_train_unreadable_file(capsys, files, tmp_path):
    path = files / "good.npy"
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read a mode-000 file (root)")
        check(
            capsys,
            ["train", "--out", tmp_path / "new", "--data", path],
            "check its permissions",
            keep=[tmp_path / "new"],
        )
    finally:
        path.chmod(0o644)


def test_train_unknown_dataset_name(capsys, tmp_path):
    check(
        capsys,
        ["train", "--out", tmp_path / "new", "--data", "spirals"],
        "unknown data set 'spirals': choose one of moons, circles",
        keep=[tmp_path / "new"],
    )


def test_train_batch_larger_than_data(capsys, files, tmp_path):
    # 100 rows: 90 train after the fixed 10% hold-out, 81 fitted after a file's default
    # 10% validation split.
    out = tmp_path / "new_run"
    check(
        capsys,
        ["train", "--out", out, "--data", files / "small.npy", "--batch-size", "256", *QUIET],
        "the training set has 81 points, fewer than one batch of 256; lower --batch-size",
        keep=[out, files],
    )


def test_train_batch_larger_than_data_keeps_empty_out_dir(capsys, files, tmp_path):
    out = tmp_path / "empty_dir"
    out.mkdir()
    check(
        capsys,
        ["train", "--out", out, "--data", files / "small.npy", "--batch-size", "91", *QUIET],
        "fewer than one batch of 91",
        keep=[out],
    )


# Options ---------------------------------------------------------------------------------------

OPTION_CASES = {
    "epochs_zero": (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    "epochs_negative": (["--epochs=-3"], "--epochs must be a positive integer, got -3"),
    "epochs_not_int": (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    "epochs_float": (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    "batch_size_zero": (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    "lr_zero": (["--lr", "0"], "--lr must be a positive number, got 0.0"),
    "lr_negative": (["--lr=-0.01"], "--lr must be a positive number, got -0.01"),
    "lr_nan": (["--lr", "nan"], "--lr must be a positive number, got nan"),
    "lr_inf": (["--lr", "inf"], "--lr must be a positive number, got inf"),
    "lr_text": (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    "rtol_zero": (["--rtol", "0"], "--rtol must be a positive number, got 0.0"),
    "atol_negative": (["--atol=-1e-5"], "--atol must be a positive number, got -1e-05"),
    "blocks_zero": (["--blocks", "0"], "--blocks must be a positive integer, got 0"),
    "hidden_zero": (["--hidden", "0"], "--hidden must be a positive integer, got 0"),
    "layers_negative": (["--layers=-1"], "--layers must be a positive integer, got -1"),
    "max_steps_zero": (["--max-steps", "0"], "--max-steps must be a positive integer, got 0"),
    "test_every_zero": (["--test-every", "0"], "--test-every must be a positive integer, got 0"),
    "seed_negative": (["--seed=-1"], "--seed must be an integer in [0, 2^31), got -1"),
    "unknown_solver": (["--solver", "euler"], "argument --solver: invalid choice: 'euler'"),
    "unknown_trace": (["--trace", "stochastic"], "argument --trace: invalid choice"),
    "unknown_schedule": (["--schedule", "linear"], "argument --schedule: invalid choice"),
    "unknown_option": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    "warm_start_negative": (
        ["--warm-start=-2", "--blocks", "1"],
        "--warm-start must be a non-negative integer (0: off), got -2",
    ),
    "warm_start_several_blocks": (
        ["--warm-start", "5"],  # the tutorial's 4 blocks
        "--warm-start trains by flow matching, which trains a single FFJORD block, but "
        "--blocks is 4; use --blocks 1",
    ),
    "warm_start_under_flow_matching": (
        ["--warm-start", "5", "--objective", "flow-matching"],
        "--warm-start applies to --objective likelihood, not flow-matching",
    ),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_train_bad_option(capsys, tmp_path, case):
    args, phrase = OPTION_CASES[case]
    out = tmp_path / "new_run"
    check(capsys, ["train", "--out", out, *args, *QUIET], phrase, keep=[out])


# The run directory -----------------------------------------------------------------------------


def test_out_is_an_existing_file(capsys, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my precious notes\n")
    check(
        capsys,
        ["train", "--out", target, *TINY, *QUIET],
        "is an existing file; give a new directory",
        keep=[target],
    )


def test_out_nonempty_directory_without_resume(capsys, tmp_path):
    out = tmp_path / "busy"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("\\documentclass{article}\n")
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    check(
        capsys,
        ["train", "--out", out, *TINY, *QUIET],
        "already holds files; use --resume to continue that run or choose a new directory",
        keep=[out],
    )


def test_out_existing_run_without_resume(capsys, trained_run):
    check(
        capsys,
        ["train", "--out", trained_run, *TINY, *QUIET],
        "already holds files",
        keep=[trained_run],
    )


def test_resume_missing_directory(capsys, tmp_path):
    out = tmp_path / "never_made"
    check(
        capsys,
        ["train", "--out", out, "--resume", *QUIET],
        "no run directory at",
        keep=[out],
    )


def test_resume_directory_that_is_not_a_run(capsys, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    check(
        capsys,
        ["train", "--out", out, "--resume", *QUIET],
        "is not a run directory (no config.json)",
        keep=[out],
    )


@pytest.mark.parametrize(
    "args, phrase",
    [
        (
            ["--lr", "0.5"],
            "--lr 0.5 differs from the run's 0.01; --resume continues with the run's own "
            "settings (only --epochs may change)",
        ),
        (["--hidden", "16"], "--hidden 16 differs from the run's 4"),
        (["--data", "circles"], "--data circles differs from the run's moons"),
        (["--warm-start", "3"], "--warm-start 3 differs from the run's 0"),
    ],
    ids=["lr", "hidden", "data", "warm_start"],
)
def test_resume_with_a_different_option(capsys, trained_run, args, phrase):
    check(
        capsys,
        ["train", "--out", trained_run, "--resume", *args, *QUIET],
        phrase,
        keep=[trained_run],
    )


def test_resume_with_bad_epochs_keeps_config(capsys, trained_run):
    check(
        capsys,
        ["train", "--out", trained_run, "--resume", "--epochs", "0", *QUIET],
        "--epochs must be a positive integer, got 0",
        keep=[trained_run],
    )


def test_missing_checkpoint(capsys, run_copy, files):
    (run_copy / "checkpoint.eqx").unlink()
    check(
        capsys,
        ["evaluate", run_copy, "--data", files / "good.npy"],
        "has no checkpoint yet; train it first",
        keep=[run_copy],
    )


def test_truncated_checkpoint(capsys, run_copy, files):
    ckpt = run_copy / "checkpoint.eqx"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    check(
        capsys,
        ["evaluate", run_copy, "--data", files / "good.npy"],
        "checkpoint.eqx is corrupt or from an incompatible run",
        keep=[run_copy, files],
    )


def test_random_bytes_checkpoint(capsys, run_copy, tmp_path):
    ckpt = run_copy / "checkpoint.eqx"
    ckpt.write_bytes(np.random.default_rng(1).bytes(ckpt.stat().st_size))
    out = tmp_path / "samples.npy"
    check(
        capsys,
        ["sample", run_copy, "-n", "10", "-o", out],
        "checkpoint.eqx is corrupt or from an incompatible run",
        keep=[run_copy, out],
    )


def test_checkpoint_with_trailing_bytes(capsys, run_copy, tmp_path):
    ckpt = run_copy / "checkpoint.eqx"
    ckpt.write_bytes(ckpt.read_bytes() + b"extra")
    check(
        capsys,
        ["train", "--out", run_copy, "--resume", "--epochs", "2", *QUIET],
        "corrupt or from an incompatible run (trailing bytes)",
        keep=[run_copy],
    )


def test_corrupt_config(capsys, run_copy, files):
    cfg = run_copy / "config.json"
    cfg.write_text(cfg.read_text()[:40])
    check(
        capsys,
        ["evaluate", run_copy, "--data", files / "good.npy"],
        "config.json is corrupt",
        keep=[run_copy],
    )


def test_corrupt_config_on_resume(capsys, run_copy):
    (run_copy / "config.json").write_bytes(b"\x00\xff\x00 not json")
    check(
        capsys,
        ["train", "--out", run_copy, "--resume", *QUIET],
        "config.json is corrupt",
        keep=[run_copy],
    )


def test_config_wrong_format_version(capsys, run_copy, tmp_path):
    path = run_copy / "config.json"
    cfg = json.loads(path.read_text())
    cfg["format_version"] = 99
    path.write_text(json.dumps(cfg))
    check(
        capsys,
        ["sample", run_copy, "-n", "5", "-o", tmp_path / "s.npy"],
        "has format version 99; this ffjord reads versions 2 and 3",
        keep=[run_copy, tmp_path / "s.npy"],
    )


def test_config_incomplete(capsys, run_copy):
    path = run_copy / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["dim"]
    path.write_text(json.dumps(cfg))
    check(capsys, ["plot", run_copy], "config.json is incomplete or corrupt", keep=[run_copy])


def test_config_with_bad_value(capsys, run_copy, files):
    path = run_copy / "config.json"
    cfg = json.loads(path.read_text())
    node = cfg["model"]["bijector"]
    while node["type"] != "FFJORD":  # the first block
        node = node["bijectors"][0] if "bijectors" in node else node["bijector"]
    node["field"]["hidden"] = "four"
    path.write_text(json.dumps(cfg))
    check(
        capsys,
        ["evaluate", run_copy, "--data", files / "good.npy"],
        "--hidden must be a positive integer, got 'four'",
        keep=[run_copy],
    )


def test_run_data_file_gone(capsys, run_copy):
    # A run trained on a user's file whose file has since been deleted.
    path = run_copy / "config.json"
    cfg = json.loads(path.read_text())
    cfg["data"]["name"] = str(run_copy / "deleted.npy")
    path.write_text(json.dumps(cfg))
    check(capsys, ["plot", run_copy], "deleted.npy no longer exists", keep=[run_copy])


def test_run_is_a_file(capsys, tmp_path, files):
    f = tmp_path / "run.json"
    f.write_text("{}")
    check(
        capsys,
        ["evaluate", f, "--data", files / "good.npy"],
        "is a file, not a run directory",
        keep=[f],
    )


def test_evaluate_missing_run(capsys, tmp_path, files):
    check(
        capsys,
        ["evaluate", tmp_path / "nope", "--data", files / "good.npy"],
        "no run directory at",
        keep=[tmp_path / "nope"],
    )


def test_float32_checkpoint_is_not_called_corrupt(capsys, run_copy, files):
    """No false alarm: a run saved in JAX's 32-bit mode (the CLI's default) opens when
    float64 is enabled, as in this test session (JAX_ENABLE_X64 users)."""
    assert jax.config.read("jax_enable_x64")
    run, state = checkpoint_state(run_copy)
    narrow = lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
    run.save_checkpoint(jax.tree.map(narrow, state))
    code, out, err = cli(capsys, "evaluate", run_copy, "--data", files / "good.npy")
    assert code == 0, err
    assert json.loads(out)["n"] == 64


# Points for evaluate / density ----------------------------------------------------------------


def test_evaluate_nan_points(capsys, trained_run, files):
    check(
        capsys,
        ["evaluate", trained_run, "--data", files / "nan.npy"],
        "has NaN or infinite values in 3 of 64 rows",
        keep=[trained_run],
    )


def test_density_inf_points(capsys, trained_run, files, tmp_path):
    out = tmp_path / "lp.npy"
    check(
        capsys,
        ["density", trained_run, "--points", files / "inf.npy", "-o", out],
        "has NaN or infinite values in 2 of 64 rows",
        keep=[trained_run, out],
    )


def test_evaluate_wrong_dimension(capsys, trained_run, files):
    check(
        capsys,
        ["evaluate", trained_run, "--data", files / "good3.npy"],
        "data good3.npy has 3 columns but the run's data have 2",
        keep=[trained_run],
    )


def test_density_wrong_dimension(capsys, trained_run, files, tmp_path):
    out = tmp_path / "lp.npy"
    check(
        capsys,
        ["density", trained_run, "--points", files / "good3.npy", "-o", out],
        "points good3.npy has 3 columns but the run's data have 2",
        keep=[out],
    )


def test_density_three_d_points(capsys, trained_run, files, tmp_path):
    out = tmp_path / "lp.npy"
    check(
        capsys,
        ["density", trained_run, "--points", files / "cube_points.npy", "-o", out],
        "holds an array of shape (4, 3, 2)",
        keep=[out],
    )


def test_evaluate_missing_points(capsys, trained_run, files):
    check(
        capsys,
        ["evaluate", trained_run, "--data", files / "nowhere.csv"],
        "nowhere.csv' does not exist; check the path",
    )


def test_density_garbage_points(capsys, trained_run, files, tmp_path):
    out = tmp_path / "lp.npy"
    check(
        capsys,
        ["density", trained_run, "--points", files / "garbage.npy", "-o", out],
        "is not a .npy file",
        keep=[out],
    )


# Outputs of sample / density ------------------------------------------------------------------


@pytest.mark.parametrize("n", ["0", "-5"])
def test_sample_non_positive_n(capsys, trained_run, tmp_path, n):
    out = tmp_path / "s.npy"
    check(
        capsys,
        ["sample", trained_run, "-n", n, "-o", out],
        f"-n must be a positive integer, got {n}",
        keep=[out],
    )


def test_sample_refuses_existing_output(capsys, trained_run, tmp_path):
    out = tmp_path / "s.npy"
    np.save(out, np.arange(6.0))
    check(
        capsys,
        ["sample", trained_run, "-n", "5", "-o", out],
        "already exists; choose another name or pass --force",
        keep=[out],
    )


def test_density_refuses_existing_output(capsys, trained_run, files, tmp_path):
    out = tmp_path / "lp.npy"
    out.write_bytes(b"results of last week")
    check(
        capsys,
        ["density", trained_run, "--points", files / "good.npy", "-o", out],
        "already exists; choose another name or pass --force",
        keep=[out],
    )


def test_sample_wrong_extension(capsys, trained_run, tmp_path):
    out = tmp_path / "s.csv"
    check(capsys, ["sample", trained_run, "-n", "5", "-o", out], "must end in .npy", keep=[out])


def test_sample_output_folder_missing(capsys, trained_run, tmp_path):
    out = tmp_path / "no" / "such" / "s.npy"
    check(
        capsys,
        ["sample", trained_run, "-n", "5", "-o", out],
        "the folder of output",
        keep=[tmp_path / "no"],
    )


def test_density_output_is_directory(capsys, trained_run, files, tmp_path):
    out = tmp_path / "lp.npy"
    out.mkdir()
    check(
        capsys,
        ["density", trained_run, "--points", files / "good.npy", "-o", out],
        "is a directory",
        keep=[out],
    )


def test_sample_force_overwrites(capsys, trained_run, tmp_path):
    """The counterpart of the refusals: with --force the file is replaced (sanity)."""
    out = tmp_path / "s.npy"
    out.write_bytes(b"old")
    code, stdout, err = cli(capsys, "sample", trained_run, "-n", "7", "-o", out, "--force")
    assert code == 0, err
    assert np.load(out).shape == (7, 2)
    assert not list(tmp_path.glob(".*.tmp"))


# The parser ------------------------------------------------------------------------------------

PARSER_CASES = {
    "unknown_subcommand": (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    "no_arguments": ([], "the following arguments are required: command"),
    "train_without_out": (
        ["train", "--epochs", "2"],
        "the following arguments are required: --out",
    ),
    "sample_without_n_or_o": (["sample", "somewhere"], "required: -n, -o/--output"),
    "sample_n_not_int": (["sample", "r", "-n", "many", "-o", "x.npy"], "invalid int value: 'many'"),
    "evaluate_without_data": (["evaluate", "somewhere"], "required: --data"),
    "density_without_run": (["density"], "the following arguments are required: run"),
}


@pytest.mark.parametrize("case", PARSER_CASES)
def test_parser_errors(capsys, case):
    args, phrase = PARSER_CASES[case]
    err = check(capsys, args, phrase)
    assert "ffjord ffjord" not in err  # the hint names the real command
    assert "--help" in err


# Property: random bytes as a data file --------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    suffix=st.sampled_from([".npy", ".csv"]),
    payload=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=120).map(lambda b: NPY_MAGIC + b),  # past the magic number
        st.binary(max_size=60).map(lambda b: NPY_MAGIC + b"\x01\x00" + b),
        st.text(alphabet="0123456789.,-e\n naif#", max_size=120).map(str.encode),
    ),
)
def test_random_bytes_as_data(tmp_path_factory, suffix, payload):
    """Any small file (< 256 rows: never enough for one batch) is refused with one line."""
    d = tmp_path_factory.mktemp("fuzz")
    data = d / f"data{suffix}"
    data.write_bytes(payload)
    out = d / "run"
    err, stdout = StringIO(), StringIO()
    with redirect_stderr(err), redirect_stdout(stdout):
        code = main(["train", "--out", str(out), "--data", str(data), "--quiet", "--no-figures"])
    assert code == 2, err.getvalue()
    assert_one_error(code, err.getvalue(), "", exit_code=2)
    assert data.read_bytes() == payload
    assert not out.exists(), "a refused run left a directory behind"


# End to end, in a real process ----------------------------------------------------------------


def run_process(*argv, module: str = "ffjord.cli") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def assert_process_error(proc: subprocess.CompletedProcess, phrase: str, code: int = 2) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert_one_error(proc.returncode, proc.stderr, phrase, exit_code=code)


def test_process_bad_option(tmp_path):
    proc = run_process("train", "--out", tmp_path / "r", "--epochs", "0")
    assert_process_error(proc, "--epochs must be a positive integer, got 0")
    assert not (tmp_path / "r").exists()


def test_process_unknown_subcommand():
    assert_process_error(run_process("fit"), "invalid choice: 'fit'")


def test_python_dash_m_ffjord_is_the_same_command(tmp_path):
    proc = run_process("train", "--out", tmp_path / "r", "--epochs", "0", module="ffjord")
    assert_process_error(proc, "--epochs must be a positive integer, got 0")


def test_process_corrupt_checkpoint(run_copy, files):
    ckpt = run_copy / "checkpoint.eqx"
    ckpt.write_bytes(b"\x00" * 17)
    before = tree_state(run_copy)
    proc = run_process("evaluate", run_copy, "--data", files / "good.npy")
    assert_process_error(proc, "corrupt or from an incompatible run")
    assert tree_state(run_copy) == before


def test_process_existing_output(trained_run, tmp_path):
    out = tmp_path / "s.npy"
    out.write_bytes(b"keep me")
    before = tree_state(tmp_path)
    proc = run_process("sample", trained_run, "-n", "3", "-o", out)
    assert_process_error(proc, "already exists; choose another name or pass --force")
    assert tree_state(tmp_path) == before
