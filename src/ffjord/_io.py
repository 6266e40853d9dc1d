"""Crash-safe file writing: a file is either the old one or the complete new one."""

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through `write` into a temporary sibling, fsync it, then rename it onto `path`.

    A crash at any moment leaves either the previous file or the complete new one,
    never a half-written file (the temporary is removed on any error).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.txt")
        >>> atomic_write(path, lambda f: f.write(b"hello"))
        >>> open(path, "rb").read()
        b'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    """`atomic_write` for text (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_mode(target: Path) -> int:
    """Mode for a new file: the old file's mode, else 0o666 less the process umask."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def output_file(path: PathLike, force: bool, suffix: str = ".npy") -> Path:
    """`path` checked as a new output file: the right `suffix`, not a directory, in an
    existing folder, and not already there unless `force`.

    Example:
        >>> import os, tempfile
        >>> output_file(os.path.join(tempfile.mkdtemp(), "x.npy"), force=False).name
        'x.npy'
    """
    from ._errors import InputError

    out = Path(path)
    if out.suffix.lower() != suffix:
        raise InputError(f"output {path} must end in {suffix}")
    if out.is_dir():
        raise InputError(f"output {path} is a directory")
    if out.exists() and not force:
        raise InputError(
            f"output {path} already exists; choose another name or pass force=True",
            parameters=("force=True",),
        )
    if not out.parent.exists():
        raise InputError(f"the folder of output {path} does not exist")
    return out


def save_npy(path: PathLike, array: Any) -> None:
    """`numpy.save` of `array` to `path`, atomically and without pickles."""
    import numpy as np

    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
