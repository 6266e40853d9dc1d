"""Every calibration check from one set of posterior draws, and its report on disk
(`ffjord diagnose`): `diagnostics.json` and one figure per check, written whole or not
at all.

Example:
    >>> import jax, tempfile, pathlib
    >>> from types import SimpleNamespace
    >>> prior = SimpleNamespace(  # the prior as its own posterior
    ...     sample=lambda key, shape, *, x: jax.random.normal(key, (*shape, *x.shape)),
    ...     log_prob=lambda theta, *, x: jax.scipy.stats.norm.logpdf(theta).sum(-1))
    >>> theta = jax.random.normal(jax.random.key(0), (100, 2))
    >>> results = diagnose(jax.random.key(1), prior, theta, theta + 1.0, num_samples=100)
    >>> sorted(results), results["sbc"].ranks.shape
    (['coverage', 'sbc', 'tarp'], (100, 2))
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "checks"
    >>> sorted(p.name for p in save_diagnostics(results, out))
    ['coverage.png', 'diagnostics.json', 'sbc.png', 'tarp.png']
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax

from .._errors import InputError
from .._keys import as_typed_key
from ._diagnostics import ALPHA, coverage_of, draws_for, sbc_of, tarp_of


def diagnose(
    key, posterior, theta, x, *, num_samples: int = 1000, alpha: float = ALPHA
) -> dict[str, Any]:
    """`{"sbc": ..., "coverage": ..., "tarp": ...}` of `posterior` on test pairs `theta`
    (n, p), `x` (n, k), all from the same `num_samples` draws per pair (with their log
    densities: one solve each for a flow).

    Example:
        >>> from types import SimpleNamespace
        >>> prior = SimpleNamespace(  # the prior as its own posterior
        ...     sample=lambda key, shape, *, x: jax.random.normal(key, (*shape, *x.shape)),
        ...     log_prob=lambda theta, *, x: jax.scipy.stats.norm.logpdf(theta).sum(-1))
        >>> theta = jax.random.normal(jax.random.key(0), (50, 3))
        >>> r = diagnose(jax.random.key(1), prior, theta, theta, num_samples=20)
        >>> r["coverage"].coverage.shape, r["tarp"].ranks.shape
        ((99,), (50,))
    """
    draw_key, band_key, reference_key = jax.random.split(as_typed_key(key), 3)
    draws = draws_for(draw_key, posterior, theta, x, num_samples, with_log_prob=True)
    return {
        "sbc": sbc_of(draws, band_key, alpha),
        "coverage": coverage_of(draws),
        "tarp": tarp_of(draws, reference_key, alpha),
    }


def check_new_directory(out: "str | os.PathLike[str]") -> Path:
    """`out` as a path, refused when it exists and is not an empty directory."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"{out} exists and is not an empty directory; choose a new --out",
            parameters=("out",),
        )
    return out


def save_diagnostics(results: dict[str, Any], out, labels=None) -> list[Path]:
    """Write `diagnostics.json` (every result's `to_dict()`) and `NAME.png` per check into
    the new or empty directory `out`, all at once (built beside it, then renamed);
    returns the files written.

    Example:
        >>> import tempfile, pathlib
        >>> used = pathlib.Path(tempfile.mkdtemp())
        >>> (used / "old.txt").write_text("kept")
        4
        >>> save_diagnostics({}, used)
        Traceback (most recent call last):
        ...
        ffjord._errors.InputError: ... exists and is not an empty directory; choose a new --out
    """
    import matplotlib.pyplot as plt

    out = check_new_directory(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        summary = {name: r.to_dict() for name, r in results.items()}
        (building / "diagnostics.json").write_text(json.dumps(summary, indent=2) + "\n")
        for name, r in results.items():
            fig = r.plot(labels) if name == "sbc" else r.plot()
            fig.savefig(building / f"{name}.png", dpi=120)
            plt.close(fig)
        if out.exists():
            out.rmdir()  # empty, checked above
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return sorted(out.iterdir())
