"""The `ffjord` command line: train, evaluate, sample, density, plot.

Every failure the user can fix prints one line `ffjord: error: ...` on stderr and
exits non-zero (2 for bad input, 1 for a run that could not finish, 130 on Ctrl-C);
`--debug` shows the traceback instead.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from . import datasets
from ._distributed import start as start_processes
from ._distributed import stop_all
from ._embedding import EMBEDDINGS
from ._errors import InputError
from ._io import output_file, save_npy
from ._model_options import TRACES
from ._options import SCHEDULES, WARM_START_DIR
from ._plan import COUPLINGS, OBJECTIVES, SETTINGS, RunPlan, settings_of, train
from ._run import RunDir, open_run, training_dtype
from ._sampling import OutsideBox, sample_within
from ._source import DataSource
from ._spec import ADJOINTS, SOLVERS
from ._trainer import Trainer, TrainingDiverged, TrainState
from ._vector_field import ACTIVATIONS
from ._version import __version__
from .figures import plot_run

FLAGS = {  # the library's parameter names as the command line spells them, for messages
    "learning_rate": "--lr",
    "run_dir": "--out",
    "resume=True": "--resume",
    "data": "--data",
    "force=True": "--force",
}


def flag(name: str) -> str:
    """How the command line spells the library's parameter `name` (`batch_size`: `--batch-size`)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _support(text: str) -> list[list[float | None]]:
    """`--support 0:1,:5` -> [[0.0, 1.0], [None, 5.0]] (an empty bound: unbounded)."""
    pairs = []
    for item in text.split(","):
        bounds = item.split(":")
        try:
            if len(bounds) != 2:
                raise ValueError
            pairs.append([float(b) if b.strip() else None for b in bounds])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not LOW:HIGH (give one per data column, e.g. 0:1,:5)"
            ) from None
    return pairs


def _shape(text: str) -> tuple[int, int]:
    """`--context-shape 100,2` -> (100, 2)."""
    try:
        steps, channels = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not T,C (two integers: 100,2)") from None
    return steps, channels


# `ffjord train`'s options: (type or choices, help[, metavar]); defaults are the tutorial's,
# or chosen from the data for a file (`ffjord._plan`), so none is set here.
TRAIN_OPTIONS: dict[str, tuple] = {
    "data": (str, "moons (default), circles, 8gaussians, pinwheel, 2spirals, checkerboard, "
             "rings, digits (8x8 images, 64-D), arcs (a simulator: parameters given "
             "observations), or FILE.npy / FILE.csv (with no other option, the settings are "
             "chosen from the file's size and dimension)"),
    "context_dims": (int, "the last K columns of the data file are conditions: learn "
                     "p(data | condition)", "K"),
    "embedding": (EMBEDDINGS, "a learned summary of the conditions, trained with the flow: "
                  "mlp (the row beside R learned features), conv1d (a time series), set (i.i.d. "
                  "trials), linear or none (chosen: conv1d with --context-shape, linear for many "
                  "conditions, mlp for 3 to 16 data columns; see docs/DEFAULTS.md)"),
    "embedding_features": (int, "the numbers the embedding summarises a condition row by "
                           "(chosen: 32)", "R"),
    "context_shape": (_shape, "a condition row as T time steps (conv1d) or T i.i.d. trials "
                      "(set) of C values, row-major: T * C = K", "T,C"),
    "context_features": (int, "an alias of --embedding linear --embedding-features R (0: "
                         "--embedding none)", "R"),
    "epochs": (int, "passes over the data (default 40)"),
    "batch_size": (int, "default 256"),
    "learning_rate": (float, "Adam learning rate (default 1e-2)"),
    "schedule": (SCHEDULES, "learning rate: constant (default) or cosine decay to 5%% over "
                 "the run"),
    "weight_decay": (float, "decoupled weight decay (AdamW), relative to the learning rate "
                     "(default 0)"),
    "blocks": (int, "stacked FFJORD blocks (default 4)"),
    "hidden": (int, "hidden units per layer (default 8)"),
    "layers": (int, "layers of each MLP (default 3)"),
    "activation": (tuple(ACTIVATIONS), "of the MLP: tanh (default), silu, softplus"),
    "trace": (TRACES, "exact (default) or hutchinson"),
    "solver": (tuple(SOLVERS), "diffrax solver (default dopri5)"),
    "rtol": (float, "relative tolerance (default 1e-3)"),
    "atol": (float, "absolute tolerance (default 1e-5)"),
    "max_steps": (int, "per solve (default 1000)"),
    "objective": (OBJECTIVES, "likelihood (default) or flow-matching (its own defaults: one "
                  "wide block; see README)"),
    "warm_start": (int, "likelihood: N epochs of flow matching first, then likelihood "
                   "training from there (0: none; needs --blocks 1; chosen for conditional "
                   "data, see docs/DEFAULTS.md)", "N"),
    "coupling": (COUPLINGS, "flow matching: ot (default) or independent"),
    "kinetic": (float, "likelihood: RNODE kinetic weight (0)"),
    "jacobian_frobenius": (float, "likelihood: RNODE Jacobian-Frobenius weight (0)"),
    "validation": (float, "fraction of the training data held out to keep the best epoch "
                   "(0: none)"),
    "patience": (int, "stop after N epochs without a better validation loss (the NLL; flow "
                 "matching: its own loss)", "N"),
    "test_every": (int, "measure the held-out NLL every K epochs and after the last "
                   "(default 1)", "K"),
    "adjoint": (tuple(ADJOINTS), "gradients: backprop (default) or backsolve"),
    "logit": (float, "model data in [0, 1] in logit space, logit(ALPHA + (1 - 2 ALPHA) x) "
              "(chosen: 0.01 for a file whose values all lie in [0, 1]; 0: off)", "ALPHA"),
    "checkpoints": (int, "backprop: keep N states of each solve and recompute the rest "
                    "(memory O(N) instead of O(max-steps))", "N"),
    "devices": (int, "split every batch over the first N of JAX's devices (data parallel; "
                "default 1; a resumed run may use another number)", "N"),
    "coordinator": (str, "train with several processes (one per host): process 0's "
                    "address, the same for every process", "HOST:PORT"),
    "num_processes": (int, "how many processes train", "P"),
    "process_id": (int, "this process' number, 0..P-1", "I"),
    "seed": (int, "seed of data, initialisation and shuffles (0)"),
    "time_budget": (float, "fit the run into this many seconds: the epochs (of the warm start "
                    "and of training, those not given) are scaled from one measured epoch "
                    "of each, and training stops before an epoch that would not end in "
                    "time (config.json's time_budget records the choice)", "SECONDS"),
    "support": (_support, "the parameters' support, LOW:HIGH per data column (an empty "
                "bound is unbounded: 0:1,:5,0:), which ffjord sample keeps draws within "
                "(default: a conditional run's training data range)", "LOW:HIGH,..."),
}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise InputError(f"{message} (see {self.prog} --help)")  # "ffjord" or "ffjord train"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ffjord", description="Continuous normalizing flows (FFJORD) in JAX.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action="version", version=f"ffjord {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a flow (no options: the TFP tutorial)")
    t.add_argument("--out", required=True, help="run directory to create (or --resume)")
    for name, (kind, text, *metavar) in TRAIN_OPTIONS.items():
        choices, kind = (kind, str) if isinstance(kind, tuple) else (None, kind)
        t.add_argument(flag(name), dest=name, type=kind, choices=choices, help=text,
                       metavar=metavar[0] if metavar else None)  # fmt: skip
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-figures", dest="figures", action="store_false", help="skip figures")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="held-out NLL of a file under a trained run")
    e.add_argument("run", help="run directory")
    e.add_argument(
        "--data",
        required=True,
        help="points FILE.npy or FILE.csv (a conditional run: with its condition columns last)",
    )

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run directory")
    s.add_argument("-n", type=int, required=True, help="number of samples")
    s.add_argument("-o", "--output", required=True, help="FILE.npy to create")
    s.add_argument(
        "--context",
        help="a conditional run's condition: v1,v2,... (gives N samples) or a FILE.npy / "
        "FILE.csv of M conditions (gives M x N samples)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--keep-outside",
        action="store_true",
        help="keep draws outside the training data's range (a conditional run redraws them "
        "by default, as sbi rejects posterior draws outside the prior)",
    )
    s.add_argument("--force", action="store_true", help="overwrite an existing output file")
    s.add_argument("--pairplot", metavar="FIG.png", help="also draw the samples' pairplot (M "
                   "conditions: FIG-1.png ... FIG-M.png)")  # fmt: skip

    d = sub.add_parser("density", help="exact log-density of points under a trained run")
    d.add_argument("run", help="run directory")
    d.add_argument(
        "--points",
        required=True,
        help="points FILE.npy or FILE.csv (a conditional run: with its condition columns last)",
    )
    d.add_argument("-o", "--output", required=True, help="FILE.npy to create")
    d.add_argument("--force", action="store_true", help="overwrite an existing output file")

    pl = sub.add_parser("plot", help="(re)draw the figures of a run")
    pl.add_argument("run", help="run directory")

    dg = sub.add_parser("diagnose", help="calibration checks of a conditional run (SBC, "
                        "coverage, TARP) on test pairs")  # fmt: skip
    dg.add_argument("run", help="run directory of a conditional run")
    dg.add_argument("--data", required=True, help="test pairs FILE.npy or FILE.csv laid out "
                    "like the run's data (parameters, then condition columns)")  # fmt: skip
    dg.add_argument("--out", required=True, help="new or empty directory for the report")
    dg.add_argument("--samples", type=int, default=1000, help="posterior draws per test pair")
    dg.add_argument("--seed", type=int, default=0)
    return p


# Shared pieces -------------------------------------------------------------------------------


def _source(config: dict[str, Any]) -> DataSource | None:
    """The data source of a run made by `ffjord train` (None: made by `ffjord.fit`)."""
    return None if config.get("data") is None else DataSource.from_config(config["data"])


def _open_run(path: str) -> tuple[RunDir, dict[str, Any], Trainer, TrainState]:
    run = RunDir(path)
    cfg = run.require()
    if cfg.get("made_by") == "ffjord train":  # its settings checked before its model is built
        try:
            RunPlan.from_settings(settings_of(cfg))
            DataSource.from_config(cfg["data"])
        except (KeyError, TypeError, IndexError) as err:
            raise InputError(f"{run.config} is incomplete or corrupt ({err})") from None
    return open_run(path)


def _open_model(path: str):
    """(run, config, trainer, the trained model) of a run directory (see `ffjord.load`)."""
    run, cfg, trainer, state = _open_run(path)
    return run, cfg, trainer, trainer.kept_model(state)


# Commands ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    start_processes(args.coordinator, args.num_processes, args.process_id)
    started = time.perf_counter()
    given = {name: getattr(args, name) for name in SETTINGS}
    try:
        result = train(args.out, resume=args.resume, devices=args.devices,
                       show_progress=not args.quiet, **given)  # fmt: skip
    except KeyboardInterrupt:
        run = RunDir(args.out)
        done = run.saved_progress(WARM_START_DIR)  # wherever Ctrl-C landed
        print(
            f"ffjord: interrupted; {done}; continue with: ffjord train --out {run.path} --resume",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        if jax.process_count() > 1:
            stop_all(err)  # a lost peer: one line, and no hang in JAX's shutdown
        raise
    state = result.state
    if jax.process_index() > 0:  # process 0 writes the figures and reports
        return 0
    if args.figures:
        plot_run(args.out)
    summary = {
        "run": str(RunDir(args.out).path),
        "epochs": int(state.epoch),
        "test_nll": result.test_nll,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if result.options.validation > 0:
        summary["best_epoch"] = state.kept_epoch
    if result.history and result.history[-1].get("stopped"):
        summary["stopped"] = result.history[-1]["stopped"]
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _, cfg, trainer, model = _open_model(args.run)
    points, context = RunDir(args.run).read_rows(args.data, "data")
    lp = trainer.log_prob(model, points, context)
    if not np.all(np.isfinite(lp)):
        raise InputError(f"the model's density is not finite at some points of {args.data}")
    nll = float(-np.mean(lp))
    result = {"nll": nll, "bits_per_dim": nll / (cfg["dim"] * math.log(2)), "n": len(points)}
    print(json.dumps(result))
    return 0


def _read_conditions(value: str | None, run: RunDir, cfg: dict[str, Any]) -> np.ndarray | None:
    """`--context`: `None`, one condition `(k,)` from `v1,v2,...`, or `(m, k)` from a file."""
    k = cfg.get("context_dim", 0)
    if value is None:
        if k:
            raise InputError(
                f"{run.path} is a conditional run ({k} condition columns): give --context "
                f"{','.join(['v'] * k)} or --context FILE of conditions"
            )
        return None
    if not k:
        raise InputError(f"{run.path} is not a conditional run: leave out --context")
    try:
        is_file = Path(value).suffix.lower() in (".npy", ".csv") or Path(value).exists()
    except OSError:  # e.g. a name too long for a file: the values themselves
        is_file = False
    if is_file:
        conditions = datasets.validate_points(
            datasets.load_array(value, "--context file"), what="--context file"
        )
        width = conditions.shape[1]
    else:
        values = []
        for cell in (c.strip() for c in value.split(",")):
            try:
                values.append(float(cell))
            except ValueError:
                msg = f"--context value {cell!r} is not a number (give v1,v2,... or FILE)"
                raise InputError(msg) from None
        conditions = np.asarray(values, np.float64)
        if not np.all(np.isfinite(conditions)):
            raise InputError(f"--context {value} has NaN or infinite values")
        width = len(values)
    if width != k:
        raise InputError(f"--context has {width} values per condition but the run's have {k}")
    return conditions.astype(np.float32).astype(training_dtype())


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n is None or args.n <= 0:
        raise InputError(f"-n must be a positive integer, got {args.n}")
    out = output_file(args.output, args.force)
    run, cfg, _, model = _open_model(args.run)
    conditions = _read_conditions(args.context, run, cfg)
    figures = _pairplot_files(args.pairplot, conditions, args.force)
    if figures and cfg["dim"] > 10:
        raise InputError(f"--pairplot shows 2 to 10 parameters; this run has {cfg['dim']}")
    source = _source(cfg)
    box = None if source is None or args.keep_outside else source.sampling_box()
    low, high = (None, None) if box is None else box
    given = source is not None and source.support is not None and source.support["from"] == "given"
    region = "the support given to ffjord train" if given else "the training data's range"
    try:
        samples = sample_within(model, jax.random.key(args.seed), args.n, low=low, high=high,
                                context=conditions, region=region)  # fmt: skip
    except OutsideBox as err:
        raise InputError(f"{err}; pass --keep-outside to keep draws outside it") from None
    save_npy(out, samples)
    shown = {"samples": str(out), "shape": list(samples.shape), "dim": cfg["dim"]}
    if figures:
        _draw_pairplots(samples.reshape(len(figures), args.n, -1), conditions, figures)
        shown["pairplots"] = [str(f) for f in figures]
    print(json.dumps(shown))
    return 0


def _pairplot_files(path: str | None, conditions, force: bool) -> list[Path]:
    """The figure files of `--pairplot FIG.png`: FIG.png for one condition (or none),
    FIG-1.png ... FIG-M.png for M; each checked as a new output file."""
    if path is None:
        return []
    first = output_file(path, force, suffix=".png")
    if conditions is None or conditions.ndim == 1:
        return [first]
    stem = first.with_suffix("")
    return [output_file(f"{stem}-{i + 1}.png", force, ".png") for i in range(len(conditions))]


def _draw_pairplots(samples: np.ndarray, conditions, figures: list[Path]) -> None:
    import matplotlib.pyplot as plt

    from .sbi import pairplot

    for i, (rows, path) in enumerate(zip(samples, figures, strict=True)):
        title = None
        if conditions is not None:
            shown = np.atleast_2d(conditions)[i]
            values = ", ".join(f"{v:.3g}" for v in shown[:6]) + (", ..." if len(shown) > 6 else "")
            title = f"{len(rows)} draws given the condition ({values})"
        fig = pairplot(rows, title=title)
        fig.savefig(path, dpi=110)
        plt.close(fig)


def cmd_density(args: argparse.Namespace) -> int:
    out = output_file(args.output, args.force)
    _, cfg, trainer, model = _open_model(args.run)
    points, context = RunDir(args.run).read_rows(args.points, "points")
    lp = trainer.log_prob(model, points, context)
    save_npy(out, lp)
    print(json.dumps({"log_prob": str(out), "n": len(lp), "mean": float(np.mean(lp))}))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    run, cfg, _, _ = _open_run(args.run)
    run.require_made_by_train("plot")
    print(json.dumps({"figures": [str(p) for p in plot_run(run.path)]}))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from . import sbi
    from .sbi._diagnose import check_new_directory

    out = check_new_directory(args.out)
    if args.samples is None or args.samples <= 0:
        raise InputError(f"--samples must be a positive integer, got {args.samples}")
    run = RunDir(Path(args.run))
    theta, x = run.read_rows(args.data, "--data")
    if x is None:
        raise InputError(f"{args.run} is not conditional: diagnose needs a posterior p(theta | x)")
    posterior = sbi.Posterior(args.run)
    results = sbi.diagnose(jax.random.key(args.seed), posterior, theta, x,
                           num_samples=args.samples)  # fmt: skip
    sbi.save_diagnostics(results, out)
    summary = {name: r.to_dict() for name, r in results.items()}
    print(json.dumps({**summary, "out": str(out)}))
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "density": cmd_density,
    "plot": cmd_plot,
    "diagnose": cmd_diagnose,
}


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """`--atol -1e-5` -> `--atol=-1e-5`, so argparse reports the value, not a missing one."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--support" and arg.startswith("-"):  # e.g. --support -1:1
            out[-1] = f"{out[-1]}={arg}"
            continue
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
        text = err.spelled(flag) if isinstance(err, InputError) else str(err)
        message = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        if not isinstance(err, InputError | TrainingDiverged):
            message = f"{type(err).__name__}: {message} (rerun with --debug for details)"
        print(f"ffjord: error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("ffjord: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
