"""Several processes, one training: `jax.distributed` set up from the command line's options.

Every process runs the same `ffjord train` with its own `--process-id`; together they
form one mesh over all their devices. Each process feeds its own devices' share of
every batch, and process 0 alone writes the run directory. A process that stops
(killed, crashed) is noticed by the others within about `HEARTBEAT_SECONDS`: their
`Watchdog` makes them exit with a one-line error instead of waiting in a collective for
ever.
"""

import os
import re
import sys
import threading

import jax
import numpy as np

from ._errors import InputError

HEARTBEAT_SECONDS = 10  # the coordination service declares a silent process dead after this
START_TIMEOUT_SECONDS = 120  # waiting for every process to join
EXIT_CODE = 3


def check_options(coordinator: str | None, num_processes: int | None, process_id: int | None):
    """One-line errors for an incomplete or impossible set of process options."""
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given):
        return
    if coordinator is None:
        raise InputError("--num-processes and --process-id need --coordinator HOST:PORT")
    if not all(given):
        raise InputError(
            "--coordinator needs --num-processes P and --process-id I (0..P-1) as well"
        )
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^\s:]+):(\d{1,5})", coordinator)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise InputError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    assert num_processes is not None and process_id is not None
    if num_processes < 1:
        raise InputError(f"--num-processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise InputError(
            f"--process-id {process_id} is out of range for --num-processes {num_processes} "
            f"(0..{num_processes - 1})"
        )


def start(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join the processes of one training (no-op for a single process). Call before any
    JAX computation; on CPU the collectives go through gloo."""
    check_options(coordinator, num_processes, process_id)
    if coordinator is None or num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes,
            process_id,
            initialization_timeout=START_TIMEOUT_SECONDS,
            heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
        )
    except Exception as err:  # the client's message is many lines of gRPC detail
        raise InputError(
            f"could not join {num_processes} processes at {coordinator} within "
            f"{START_TIMEOUT_SECONDS} s: {_first_line(err, 200)}"
        ) from err


def process_zeros(value: float) -> float:
    """`value` as process 0 has it (the value itself with one process), so that every
    process decides alike from a measurement such as the time left."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return float(multihost_utils.broadcast_one_to_all(np.float64(value)))


def _first_line(err: BaseException, limit: int) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def _exit(message: str) -> None:
    """Print `ffjord: error: message` and end this process now: `os._exit` skips JAX's
    shutdown barrier, which aborts with pages of gRPC detail once a peer is gone."""
    print(f"ffjord: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_CODE)


def stop_all(err: BaseException) -> None:
    """End this process of a multi-process training at once, with one line naming what
    failed (a peer's closed connection, a collective's error). Never returns."""
    _exit(
        f"process {jax.process_index()} of {jax.process_count()} stops: "
        f"{_first_line(err, 240)} (another process has probably stopped; the run directory "
        "keeps the last finished epoch: restart every process with --resume)"
    )


class Watchdog:
    """Stops this process with a one-line error as soon as the coordination service
    reports another process of the training gone (its heartbeats stopped): the others
    would otherwise wait in their next collective for ever. Checks once a second, in a
    thread; a no-op for a single process.

    Example:
        >>> with Watchdog():
        ...     pass
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="ffjord-watchdog")

    def __enter__(self) -> "Watchdog":
        if jax.process_count() > 1:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _watch(self) -> None:
        from jax._src import distributed  # the client of `jax.distributed.initialize`

        client = distributed.global_state.client
        if client is None:
            return
        everyone = list(range(jax.process_count()))
        while not self._stop.wait(self.interval):
            try:
                live = client.get_live_nodes(everyone)
            except Exception:  # the service itself is gone (process 0 stopped)
                live = {}
            missing = sorted(set(everyone) - set(live))
            if missing and not self._stop.is_set():
                _exit(
                    f"process {', '.join(map(str, missing))} of the training stopped; process "
                    f"{jax.process_index()} stops too (the run directory keeps the last "
                    "finished epoch: restart every process with --resume)"
                )
