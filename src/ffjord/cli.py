"""The `ffjord` command line: train, evaluate, sample, density, plot.

Every failure the user can fix prints one line `ffjord: error: ...` on stderr and
exits non-zero (2 for bad input, 1 for a run that could not finish, 130 on Ctrl-C);
`--debug` shows the traceback instead.
"""

import argparse
import concurrent.futures
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from . import datasets
from ._chunks import map_chunks
from ._errors import InputError
from ._io import atomic_write
from ._run import (
    SCHEDULES,
    SOLVERS,
    TRACES,
    TUTORIAL,
    RunDir,
    as_training_array,
    describe_data,
    load_data,
    make_trainer,
    train_key,
    validate_options,
)
from ._train import Trainer, TrainingDiverged, TrainState, check_progress, for_inference

SNAPSHOT_POINTS = 8192  # the tutorial's number of base samples per snapshot
SNAPSHOT_SAMPLES = SNAPSHOT_POINTS - 2 * 4 * 100  # the rest are the grid's 8 lines
CHUNK = 4096  # points per compiled forward pass (fixed shape: no recompilation)
OPTION_NAMES = [k for k in TUTORIAL if k not in ("n_train", "n_test")]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise InputError(f"{message} (see {self.prog} --help)")  # "ffjord" or "ffjord train"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ffjord", description="Continuous normalizing flows (FFJORD) in JAX.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a flow (no options: the TFP tutorial)")
    t.add_argument("--out", required=True, help="run directory to create (or --resume)")
    t.add_argument(
        "--data",
        help="moons (default), circles, 8gaussians, pinwheel, 2spirals, "
        "checkerboard, rings, or FILE.npy / FILE.csv",
    )
    t.add_argument("--epochs", type=int, help="passes over the data (default 40)")
    t.add_argument("--batch-size", dest="batch_size", type=int, help="default 256")
    t.add_argument("--lr", type=float, help="Adam learning rate (default 1e-2)")
    t.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning rate: constant (default) or cosine decay to 5%% over the run",
    )
    t.add_argument("--blocks", type=int, help="stacked FFJORD blocks (default 4)")
    t.add_argument("--hidden", type=int, help="hidden units per layer (default 8)")
    t.add_argument("--layers", type=int, help="layers of each MLP (default 3)")
    t.add_argument("--trace", choices=TRACES, help="exact (default) or hutchinson")
    t.add_argument("--solver", choices=list(SOLVERS), help="diffrax solver (default dopri5)")
    t.add_argument("--rtol", type=float, help="relative tolerance (default 1e-3)")
    t.add_argument("--atol", type=float, help="absolute tolerance (default 1e-5)")
    t.add_argument("--max-steps", dest="max_steps", type=int, help="per solve (default 1000)")
    t.add_argument("--seed", type=int, help="seed of data, initialisation and shuffles (0)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-figures", dest="figures", action="store_false", help="skip figures")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="held-out NLL of a file under a trained run")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", required=True, help="points FILE.npy or FILE.csv")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run directory")
    s.add_argument("-n", type=int, required=True, help="number of samples")
    s.add_argument("-o", "--output", required=True, help="FILE.npy to create")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="overwrite an existing output file")

    d = sub.add_parser("density", help="exact log-density of points under a trained run")
    d.add_argument("run", help="run directory")
    d.add_argument("--points", required=True, help="points FILE.npy or FILE.csv")
    d.add_argument("-o", "--output", required=True, help="FILE.npy to create")
    d.add_argument("--force", action="store_true", help="overwrite an existing output file")

    pl = sub.add_parser("plot", help="(re)draw the figures of a run")
    pl.add_argument("run", help="run directory")
    return p


# Shared pieces -------------------------------------------------------------------------------


@eqx.filter_jit
def _forward(bijector, x):
    # The state alone (no log-determinant: half the work), never raising on a failed solve.
    return bijector._call(x, None, None, inverse=False, log_det=False, throw=False)[0]


def transform(bijector, points: np.ndarray) -> np.ndarray:
    """Push points through the flow in fixed-size chunks (one compilation, every core)."""
    if points.shape[0] == 0:
        return np.zeros((0, points.shape[1]), points.dtype)
    return map_chunks(_forward, points, CHUNK, for_inference(bijector))


def _open_run(path: str) -> tuple[RunDir, dict[str, Any], Trainer, TrainState]:
    run = RunDir(path)
    cfg = run.require()
    trainer = make_trainer(cfg)
    state = run.load_checkpoint(trainer.init(train_key(cfg)))
    return run, cfg, trainer, state


def _read_points(path: str, dim: int, what: str) -> np.ndarray:
    points = datasets.validate_points(datasets.load_array(path), dim=dim, what=what)
    return as_training_array(points)


def _check_output(path: str, force: bool) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".npy":
        raise InputError(f"output {path} must end in .npy")
    if out.is_dir():
        raise InputError(f"output {path} is a directory")
    if out.exists() and not force:
        raise InputError(f"output {path} already exists; choose another name or pass --force")
    if not out.parent.exists():
        raise InputError(f"the folder of output {path} does not exist")
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


# Commands ------------------------------------------------------------------------------------


def _new_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(TUTORIAL)
    for name in OPTION_NAMES:
        value = getattr(args, name, None)
        if value is not None:
            cfg[name] = value
    validate_options(cfg)
    cfg = describe_data(cfg)
    return {"format_version": 1, **cfg}


def _resume_config(run: RunDir, args: argparse.Namespace) -> dict[str, Any]:
    cfg = run.require()
    for name in OPTION_NAMES:
        value = getattr(args, name, None)
        if value is None or name == "epochs":
            continue
        same = value == cfg[name] or (name == "data" and Path(value).resolve() == Path(cfg[name]))
        if not same:
            raise InputError(
                f"--{name.replace('_', '-')} {value} differs from the run's {cfg[name]}; "
                "--resume continues with the run's own settings (only --epochs may change)"
            )
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
        validate_options(cfg)  # written by cmd_train once the checkpoint has loaded
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    run = RunDir(args.out)
    if args.resume:
        cfg = _resume_config(run, args)
    else:
        if run.path.exists() and not run.path.is_dir():
            raise InputError(f"--out {run.path} is an existing file; give a new directory")
        leftovers = set(run.stale_temps())  # a killed first attempt's temporaries only
        if run.path.is_dir() and any(p not in leftovers for p in run.path.iterdir()):
            raise InputError(
                f"--out {run.path} already holds files; use --resume to continue that run "
                "or choose a new directory"
            )
        cfg = _new_config(args)
    started = time.perf_counter()
    train, test = (as_training_array(a) for a in load_data(cfg))
    if train.shape[0] < cfg["batch_size"]:
        raise InputError(
            f"the training set has {train.shape[0]} points, fewer than one batch of "
            f"{cfg['batch_size']}; lower --batch-size"
        )
    trainer = make_trainer(cfg)
    state = trainer.init(train_key(cfg))
    if run.checkpoint.exists():
        state = run.load_checkpoint(state)
    if args.resume and args.epochs is not None and args.epochs < int(state.epoch):
        raise InputError(
            f"--epochs {args.epochs} is fewer than the {int(state.epoch)} epochs this run has "
            "already trained; give a larger number"
        )
    # Every input is checked: only now create the run or record a new --epochs, so a
    # refused command leaves no half-made directory and changes nothing in a run.
    if not args.resume or args.epochs is not None:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg)
    run.remove_stale_temps()
    history = run.read_metrics(int(state.epoch))
    run.write_metrics(history)
    if int(state.epoch) >= cfg["epochs"]:
        print(f"{run.path} has already trained {int(state.epoch)} epochs; nothing to do")
        return 0

    snapshot = _Snapshotter(run, cfg, trainer) if cfg["dim"] == 2 else None
    start_state = state

    def meanwhile() -> None:  # compiles evaluation and snapshots on the other core
        trainer.nll(start_state, test)
        if snapshot is not None:
            if int(start_state.epoch) == 0:
                snapshot(0, start_state)
            else:
                snapshot.warm_up(start_state)

    warm_up = trainer.compile_epoch(state, train, meanwhile=meanwhile)
    first_state = state
    steps_per_epoch = train.shape[0] // cfg["batch_size"]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg["epochs"],
        initial=int(state.epoch),
        desc="ffjord train",
        unit="epoch",
        disable=args.quiet or None,
        file=sys.stderr,
    )
    try:
        while int(state.epoch) < cfg["epochs"]:
            new_state, record = trainer.run_epoch(state, train)
            if warm_up is not None:  # evaluation and snapshots compiled meanwhile
                warm_up.join()
                warm_up = None
                if snapshot is not None and not run.snapshot_path(0).exists():
                    snapshot(0, first_state)  # the warm-up failed: retry where errors show
            check_progress(record, steps_per_epoch)
            state = new_state
            eval_start = time.perf_counter()
            record["test_nll"] = trainer.nll(state, test)
            record["eval_seconds"] = time.perf_counter() - eval_start
            record["wall_seconds"] = time.perf_counter() - started
            if snapshot is not None:  # drawn on the other core while the next epoch trains
                snapshot.submit(int(state.epoch), state)
            run.append_metrics(record)  # metrics first, then the checkpoint: see _run.py
            run.save_checkpoint(state)
            history.append(record)
            bar.set_postfix(
                loss=f"{record['train_loss']:.3f}",
                test_nll=f"{record['test_nll']:.3f}",
                nfe=f"{record['nfe']:.0f}",
            )
            bar.update()
    except KeyboardInterrupt:
        bar.close()
        if snapshot is not None:
            with contextlib.suppress(Exception):
                snapshot.wait()
        saved = _saved_epoch(run, state)  # what is on disk, wherever Ctrl-C landed
        done = (
            f"the checkpoint of epoch {saved} is saved in {run.path}"
            if saved
            else "no epoch had finished"
        )
        print(
            f"ffjord: interrupted; {done}; continue with: ffjord train --out {run.path} --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
        if snapshot is not None:
            snapshot.wait()  # a failed snapshot (e.g. a full disk) is reported here
    if args.figures:
        draw_figures(run, cfg, trainer, state, train)
    summary = {
        "run": str(run.path),
        "epochs": int(state.epoch),
        "test_nll": history[-1]["test_nll"] if history else None,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(summary))
    return 0


def _saved_epoch(run: RunDir, template: TrainState) -> int:
    """The epoch of the checkpoint on disk (0 if there is none)."""
    if not run.checkpoint.exists():
        return 0
    try:
        return int(run.load_checkpoint(template).epoch)
    except InputError:
        return 0


class _Snapshotter:
    """Saves the image of fixed base samples and of the tutorial's grid after each epoch."""

    def __init__(self, run: RunDir, cfg: dict[str, Any], trainer: Trainer):
        self.run = run
        self.cfg = cfg
        self.trainer = trainer
        self._points: np.ndarray | None = None  # base samples + grid, drawn on first use
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "ffjord-snapshot")
        self._pending: concurrent.futures.Future | None = None

    def _moved(self, state: TrainState) -> tuple[np.ndarray, np.ndarray]:
        n = SNAPSHOT_SAMPLES
        if self._points is None:
            samples = _base_samples(self.trainer.dist, self.cfg, n)
            self._points = np.concatenate([samples, _base_grid().astype(np.float32)])
        moved = transform(self.trainer.model(state).bijector, self._points)
        return moved[:n], moved[n:]

    def __call__(self, epoch: int, state: TrainState) -> None:
        self.run.save_snapshot(epoch, *self._moved(state))

    def submit(self, epoch: int, state: TrainState) -> None:
        """Save the snapshot in a background thread (one at a time)."""
        self.wait()
        self._pending = self._executor.submit(self, epoch, state)

    def wait(self) -> None:
        """Wait for the snapshot in flight; its errors surface here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def warm_up(self, state: TrainState) -> None:
        """Compile the snapshot's forward pass without saving anything."""
        self._moved(state)


def _plotting():
    """matplotlib takes a third of a second to import: only commands that draw pay it."""
    from . import plotting

    return plotting


def _base_grid() -> np.ndarray:
    """The tutorial's grid: 4 horizontal and 4 vertical lines of 100 points over [-3, 3]^2
    in base space, where the base N(0, 0.8^2 I) lives."""
    return _plotting().make_grid(-3.0, 3.0, -3.0, 3.0, gridlines=4, pts=100)


def draw_figures(
    run: RunDir, cfg: dict[str, Any], trainer: Trainer, state: TrainState, train: np.ndarray
) -> list[Path]:
    """All figures of a run; returns their paths."""
    plotting = _plotting()
    history = run.read_metrics(int(state.epoch))
    figures = run.figures
    figures.mkdir(exist_ok=True)
    written = []
    reference = None
    if cfg["data"] in datasets.TOY_DATASETS:
        reference = datasets.toy_entropy(cfg["data"], method="quadrature")
    if history:
        plotting.plot_curves(figures / "curves.png", history, reference=reference)
        written.append(figures / "curves.png")
    model = trainer.model(state)
    if cfg["dim"] == 1:
        samples = transform(model.bijector, _base_samples(model, cfg, 8192))
        lo, hi = np.percentile(train, [0.5, 99.5])
        xs = np.linspace(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), 400)[:, None]
        lp = trainer.log_prob(state, xs.astype(train.dtype))
        plotting.plot_histogram_1d(
            figures / "histogram.png", train[:, 0], samples[:, 0], log_prob_grid=(xs[:, 0], lp)
        )
        written.append(figures / "histogram.png")
    if cfg["dim"] != 2:
        return written
    limits = tuple(cfg["limits"])
    snaps = run.load_snapshots(int(state.epoch))
    base_grid = _base_grid()
    snapshotter_base = _base_samples(trainer.dist, cfg, SNAPSHOT_SAMPLES)
    for name, snap in (
        ("before", snaps[0] if snaps and snaps[0][0] == 0 else None),
        ("after", snaps[-1] if snaps else None),
    ):
        if snap is None:
            continue
        epoch, samples, grid = snap
        plotting.plot_flow_panels(
            figures / f"{name}.png",
            grid=base_grid,
            base_samples=snapshotter_base,
            transformed_grid=grid,
            transformed_samples=samples,
            data=train,
            limits=limits,
            title=f"{cfg['data']} — {'before training' if epoch == 0 else f'after epoch {epoch}'}",
        )
        written.append(figures / f"{name}.png")
    if len(snaps) > 1:
        plotting.animate_flow(
            figures / "animation.gif",
            [s for _, s, _ in snaps],
            data=train,
            limits=limits,
            labels=[f"epoch {e}" for e, _, _ in snaps],
        )
        written.append(figures / "animation.gif")
    points, shape = plotting.density_grid(limits, 150)
    lp = trainer.log_prob(state, points.astype(train.dtype))
    plotting.plot_density(
        figures / "density.png",
        lp.reshape(shape),
        limits=limits,
        title=f"model density after epoch {int(state.epoch)}",
    )
    written.append(figures / "density.png")
    return written


def _base_samples(dist, cfg: dict[str, Any], n: int) -> np.ndarray:
    """`n` fixed draws from the base (the same in every epoch's snapshot and figure)."""
    key = jax.random.fold_in(jax.random.key(cfg["seed"]), 2)
    return np.asarray(dist.base.sample(key, (n,)), np.float32)


def cmd_evaluate(args: argparse.Namespace) -> int:
    _, cfg, trainer, state = _open_run(args.run)
    points = _read_points(args.data, cfg["dim"], "data")
    lp = trainer.log_prob(state, points)
    if not np.all(np.isfinite(lp)):
        raise InputError(f"the model's density is not finite at some points of {args.data}")
    nll = float(-np.mean(lp))
    result = {"nll": nll, "bits_per_dim": nll / (cfg["dim"] * math.log(2)), "n": len(points)}
    print(json.dumps(result))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n is None or args.n <= 0:
        raise InputError(f"-n must be a positive integer, got {args.n}")
    out = _check_output(args.output, args.force)
    _, cfg, trainer, state = _open_run(args.run)
    model = trainer.model(state)
    key = jax.random.key(args.seed)
    base = np.asarray(model.base.sample(key, (args.n,)), np.float32)
    samples = transform(model.bijector, as_training_array(base))
    _save_npy(out, samples)
    print(json.dumps({"samples": str(out), "n": args.n, "dim": cfg["dim"]}))
    return 0


def cmd_density(args: argparse.Namespace) -> int:
    out = _check_output(args.output, args.force)
    _, cfg, trainer, state = _open_run(args.run)
    points = _read_points(args.points, cfg["dim"], "points")
    lp = trainer.log_prob(state, points)
    _save_npy(out, lp)
    print(json.dumps({"log_prob": str(out), "n": len(lp), "mean": float(np.mean(lp))}))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    run, cfg, trainer, state = _open_run(args.run)
    train, _ = load_data(cfg)
    written = draw_figures(run, cfg, trainer, state, as_training_array(train))
    print(json.dumps({"figures": [str(p) for p in written]}))
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "density": cmd_density,
    "plot": cmd_plot,
}


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """`--atol -1e-5` -> `--atol=-1e-5`, so argparse reports the value, not a missing one."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and arg.startswith("-"):
            try:
                float(arg)
            except ValueError:
                pass
            else:
                out[-1] = f"{out[-1]}={arg}"
                continue
        out.append(arg)
    return out


def _enable_compilation_cache() -> None:
    """Reuse compiled programs across runs (JAX's persistent cache); never fatal."""
    import os

    directory = os.environ.get("FFJORD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ffjord", "jax"
    )
    if os.environ.get("FFJORD_NO_CACHE"):
        return
    try:
        os.makedirs(directory, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    except Exception:  # a read-only home, an old JAX: run without the cache
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ffjord` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    _enable_compilation_cache()
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(_join_negative_numbers(argv))
        return COMMANDS[args.command](args)
    except (InputError, TrainingDiverged, OSError, Exception) as err:
        if debug:
            raise
        code = 2 if isinstance(err, InputError) else 1
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not isinstance(err, InputError | TrainingDiverged):
            message = f"{type(err).__name__}: {message} (rerun with --debug for details)"
        print(f"ffjord: error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("ffjord: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
