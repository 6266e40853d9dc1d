"""What every benchmark shares: timed processes, their JSON output, statistics, the machine.

Scripts run as ``python benchmarks/NAME.py`` (Python puts ``benchmarks/`` on ``sys.path``),
so they take this module with a plain ``import harness``.

* `run` runs a command as its own process and returns a `Process`: wall seconds, exit
  code, stdout and stderr; `Process.check` raises with the output's tail on failure and
  `Process.summary` is the last JSON line of stdout (``ffjord train``'s summary line).
* `ffjord` is the command line of the ``ffjord`` executable beside this Python;
  `shown` writes a command as a reader would type it.
* `median`, `mean_sd`, `ratio`, `fmt`: statistics that ignore missing values.
* `c2st`: sbibm's classifier two-sample test (scikit-learn only, no torch).
* `machine` and `versions`: where and with what a benchmark ran.
* `smoke_parser` / `smoke_dir` / `peer_available`: the ``--smoke`` mode every script has
  (tiny sizes, seconds, outputs in a temporary directory, peers skipped when missing).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the repository
HERE = Path(__file__).resolve().parent  # benchmarks/
TAIL = 3000  # characters of a failed process's output kept in its error
TINY_MODEL = {"epochs": 1, "blocks": 1, "hidden": 8}  # the model of `ffjord.sbi` smoke runs


# Processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """A finished process: its command, exit code, wall seconds and output."""

    argv: list[str]
    returncode: int
    seconds: float
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, chars: int = TAIL) -> str:
        """The end of stdout and stderr, blank lines and progress-bar returns removed."""
        output = (self.stdout + self.stderr).replace("\r", "\n")
        return "\n".join(line for line in output.splitlines() if line.strip())[-chars:]

    def check(self, what: str | None = None) -> "Process":
        """This process, or a `RuntimeError` with its output's tail if it failed."""
        if not self.ok:
            what = what or shown(self.argv)
            raise RuntimeError(f"{what} exited with status {self.returncode}:\n{self.tail()}")
        return self

    def summary(self) -> dict | None:
        """The last JSON object printed on stdout (None if there is none)."""
        return last_json_line(self.stdout)


def run(
    argv: list[str],
    *,
    env: dict | None = None,
    cwd: str | os.PathLike | None = None,
    capture: bool = True,
) -> Process:
    """Run ``argv`` as a process and time it (wall seconds, `time.perf_counter`).
    ``capture=False`` lets its output through to this process's stdout/stderr."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=capture, text=True)
    seconds = time.perf_counter() - start
    return Process(list(argv), done.returncode, seconds, done.stdout or "", done.stderr or "")


def ffjord() -> list[str]:
    """The ``ffjord`` command: the executable beside this Python, else the one on PATH,
    else ``python -m ffjord.cli``."""
    beside = Path(sys.executable).parent / "ffjord"
    found = str(beside) if beside.exists() else shutil.which("ffjord")
    return [found] if found else [sys.executable, "-m", "ffjord.cli"]


def shown(argv: list[str]) -> str:
    """``argv`` as a reader would type it (``ffjord ...`` for the ffjord command)."""
    prefix = ffjord()
    if argv[: len(prefix)] == prefix:
        argv = ["ffjord", *argv[len(prefix) :]]
    return " ".join(argv)


def last_json_line(text: str) -> dict | None:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every line of a JSON-lines file (a run's ``metrics.jsonl``)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def command_line(script: str, argv: list[str] | None) -> str:
    """``python benchmarks/SCRIPT args``: how this invocation is written in a report
    (`script` a name or a path, e.g. ``__file__``)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *args])


# Statistics ---------------------------------------------------------------------------------


def median(xs) -> float | None:
    """Median of the values that are not None (None if there are none)."""
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); sd is None for fewer than two values."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    return None if a is None or b is None or b == 0 else a / b


def fmt(x, spec: str = ".2f", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


# Machine and versions -----------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def loadavg() -> float:
    """The 1-minute load average (the machine may be shared with other work)."""
    return os.getloadavg()[0]


def machine() -> dict:
    """CPU model and cores, memory, OS and Python of this machine."""
    ram = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
        "cpu_count": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)),
        "ram_gb": int(ram.split()[0]) / 1024**2 if ram else None,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def machine_line() -> str:
    """One line for a report: ``N-core CPU (arch, OS), no GPU``."""
    return f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), no GPU"


def version(distribution: str) -> str | None:
    """The installed version of a distribution (None if it is not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(*distributions: str, missing: bool = False) -> dict:
    """Python's version and those of ``distributions`` (the missing ones left out unless
    ``missing``, then as None)."""
    out: dict = {"python": platform.python_version()}
    for name in distributions:
        v = version(name)
        if v is not None or missing:
            out[name] = v
    return out


# Smoke mode ---------------------------------------------------------------------------------


def peer_available(*modules: str) -> bool:
    """Whether every module in ``modules`` can be imported here."""
    return all(importlib.util.find_spec(m) is not None for m in modules)


def skip_peer(name: str) -> None:
    """Say that a smoke run left out a peer that is not installed."""
    print(f"[smoke] {name} is not installed: peer skipped, ffjord side only", flush=True)


def smoke_dir(script: str) -> Path:
    """A fresh temporary directory for a smoke run's outputs (never docs/)."""
    return Path(tempfile.mkdtemp(prefix=f"ffjord_smoke_{Path(script).stem}_"))


def add_smoke(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds, outputs in a temporary directory; peers skipped if missing",
    )
    return parser


def c2st(x: np.ndarray, y: np.ndarray, seed: int = 1, folds: int = 5) -> float:
    """sbibm's C2ST: an MLP classifier's cross-validated accuracy, z-scored by `x`."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    mean, std = x.mean(axis=0), x.std(axis=0)
    data = np.concatenate([(x - mean) / std, (y - mean) / std])
    target = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    d = x.shape[1]
    classifier = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d),
                               max_iter=10000, solver="adam", random_state=seed)  # fmt: skip
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, data, target, cv=cv, scoring="accuracy")))
