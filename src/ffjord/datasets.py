"""Data: the 2-D toy sets with their exact densities, and loading a user's file.

Built-in sets ([`TOY_DATASETS`][]) are drawn with [`sample_toy`][]. Each is defined by
a generative process written here, so its true log-density is known:
[`toy_log_prob`][] evaluates it (to quadrature accuracy, about 1e-10 nats) and
[`toy_entropy`][] estimates the differential entropy, the lowest expected negative
log-likelihood any model can reach on held-out draws.

| name           | process                                                                  |
|----------------|--------------------------------------------------------------------------|
| `moons`        | `sklearn.datasets.make_moons(n, noise=0.06, random_state=seed)`, shuffled |
| `circles`      | radius 3 or 1.5 (prob. 1/2 each), uniform angle, Gaussian noise sd 0.24   |
| `8gaussians`   | 8 Gaussians, sd 0.5/sqrt(2), centres 4/sqrt(2) from the origin           |
| `pinwheel`     | 5 Gaussian blades, each swirled by an angle depending on the radius      |
| `2spirals`     | two interleaved 1.5-turn spirals of semicircles, Gaussian noise sd 0.1    |
| `checkerboard` | uniform over 8 squares of side 2 in [-4, 4]^2                            |
| `rings`        | radius 3, 2.25, 1.5 or 0.75 (prob. 1/4 each), Gaussian noise sd 0.08      |

`moons` is the tutorial's data (unscaled, roughly [-1.2, 2.2] x [-0.7, 1.2]); the
others follow the FFJORD paper's toy sets, scaled to about [-4, 4]^2. Where the
paper's sampler has no tractable density, the process here differs slightly but
looks the same: `2spirals` draws each spiral from semicircles joined with matching
tangents (radius growing by pi/3 per half turn, as the paper's Archimedean spiral),
uniform in arc length, with Gaussian noise only (no uniform jitter); `pinwheel`
swirls each point by an angle that depends on its radius rather than on its first
coordinate, which makes the swirl an area-preserving bijection. Curve-based sets
(`moons`, `circles`, `rings`, `2spirals`) are all unions of circular arcs, whose
noisy densities reduce to a 1-D integral done by Gauss-Legendre quadrature on a
window around each point's nearest arc point.

User data comes from [`load_array`][] (`.npy` or `.csv`), is checked with
[`validate_points`][] and split with [`split_holdout`][]. Every problem with a
user's input raises [`InputError`][ffjord._errors.InputError] with a one-line message.

Example:
    >>> x = sample_toy("moons", 1000, seed=0)
    >>> x.shape, x.dtype
    ((1000, 2), dtype('float32'))
    >>> lp = toy_log_prob("moons", x)
    >>> lp.shape
    (1000,)
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ffjord._errors import InputError

__all__ = [
    "REAL_DATASETS",
    "TOY_DATASETS",
    "load_array",
    "load_digits",
    "sample_toy",
    "split_holdout",
    "toy_entropy",
    "toy_log_prob",
    "validate_points",
]

TOY_DATASETS: tuple[str, ...] = (
    "moons",
    "circles",
    "8gaussians",
    "pinwheel",
    "2spirals",
    "checkerboard",
    "rings",
)

REAL_DATASETS: tuple[str, ...] = ("digits",)
"""Built-in real data sets, with a fixed train/test split (see [`load_digits`][])."""

FloatArray = npt.NDArray[np.floating[Any]]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# --------------------------------------------------------------------------------------
# Parameters of the generative processes (shared by samplers and densities).

_MOONS_NOISE = 0.06
_CIRCLES_RADII = (3.0, 1.5)
_CIRCLES_NOISE = 0.24
_RINGS_RADII = (3.0, 2.25, 1.5, 0.75)
_RINGS_NOISE = 0.08
_GAUSS8_RADIUS = 4.0 / math.sqrt(2.0)
_GAUSS8_STD = 0.5 / math.sqrt(2.0)
_PINWHEEL_CLASSES = 5
_PINWHEEL_RADIAL_STD = 0.3
_PINWHEEL_TANGENTIAL_STD = 0.1
_PINWHEEL_RATE = 0.25
_PINWHEEL_SCALE = 2.0
_SPIRAL_STEP = math.pi / 3.0  # radius gained per half turn
_SPIRAL_NOISE = 0.1
_CHECKER_CELL = 2.0

# Quadrature: nodes of the Gauss-Legendre rule used on each side of a peak, and how
# many nats below its peak an integrand may fall before it is ignored.
_GL_NODES = 24
_TAIL_NATS = 40.0
_CHUNK = 8192


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in TOY_DATASETS:
        raise InputError(f"unknown data set {name!r}; choose one of: {', '.join(TOY_DATASETS)}")
    return name


# --------------------------------------------------------------------------------------
# Samplers.


Arc = tuple[float, tuple[float, float], float, float, float]
"""(weight, centre, radius, first angle, last angle): uniform on a circular arc."""


def _circle_arcs(radii: tuple[float, ...]) -> list[Arc]:
    return [(1.0 / len(radii), (0.0, 0.0), r, 0.0, 2.0 * math.pi) for r in radii]


_MOONS_ARCS: list[Arc] = [
    (0.5, (0.0, 0.0), 1.0, 0.0, math.pi),  # (cos t, sin t)
    (0.5, (1.0, 0.5), 1.0, math.pi, 2.0 * math.pi),  # (1 - cos t, 1 - sin t - 0.5)
]


def _sample_arcs(rng: np.random.Generator, n: int, arcs: list[Arc], noise: float) -> F64:
    weights = np.array([a[0] for a in arcs])
    k = rng.choice(len(arcs), size=n, p=weights / weights.sum())
    center = np.array([a[1] for a in arcs])[k]
    radius = np.array([a[2] for a in arcs])[k]
    t0, t1 = np.array([a[3] for a in arcs])[k], np.array([a[4] for a in arcs])[k]
    t = t0 + (t1 - t0) * rng.uniform(size=n)
    x = center + radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
    return x + rng.normal(scale=noise, size=x.shape)


def make_moons(n: int, noise: float, seed: int) -> F64:
    """Exactly the points of `sklearn.datasets.make_moons(n, noise=noise, random_state=seed)`.

    The same steps on NumPy's legacy `RandomState`, whose streams are frozen, without
    importing scikit-learn (0.8 s at start-up). A test checks the two agree bit for bit.

    Example:
        >>> make_moons(4, 0.06, seed=0).shape
        (4, 2)
    """
    n_out = n // 2
    n_in = n - n_out
    rng = np.random.RandomState(seed)
    outer = np.linspace(0, np.pi, n_out)
    inner = np.linspace(0, np.pi, n_in)
    x = np.vstack(
        [
            np.append(np.cos(outer), 1 - np.cos(inner)),
            np.append(np.sin(outer), 1 - np.sin(inner) - 0.5),
        ]
    ).T
    order = np.arange(n)
    rng.shuffle(order)  # sklearn.utils.shuffle draws this permutation first
    x = x[order]
    return x + rng.normal(scale=noise, size=x.shape)


def _sample_moons(n: int, seed: int) -> F64:
    x = make_moons(n, _MOONS_NOISE, seed)
    perm = np.random.default_rng(seed).permutation(n)
    return np.asarray(x, dtype=np.float64)[perm]


def _sample_circles(n: int, seed: int) -> F64:
    rng = np.random.default_rng(seed)
    return _sample_arcs(rng, n, _circle_arcs(_CIRCLES_RADII), _CIRCLES_NOISE)


def _sample_rings(n: int, seed: int) -> F64:
    rng = np.random.default_rng(seed)
    return _sample_arcs(rng, n, _circle_arcs(_RINGS_RADII), _RINGS_NOISE)


def _gauss8_centers() -> F64:
    angles = np.arange(8) * (np.pi / 4.0)
    return _GAUSS8_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _sample_8gaussians(n: int, seed: int) -> F64:
    rng = np.random.default_rng(seed)
    k = rng.integers(8, size=n)
    return _gauss8_centers()[k] + rng.normal(scale=_GAUSS8_STD, size=(n, 2))


def _rotate(v: F64, angle: F64) -> F64:
    """Rotate each row of `v` counter-clockwise by `angle` (radians)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _pinwheel_angle(radius: F64) -> F64:
    return _PINWHEEL_RATE * np.exp(radius)


def _sample_pinwheel(n: int, seed: int) -> F64:
    rng = np.random.default_rng(seed)
    k = rng.integers(_PINWHEEL_CLASSES, size=n)
    f = rng.normal(size=(n, 2)) * np.array([_PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD])
    f[:, 0] += 1.0
    blade = 2.0 * np.pi * k / _PINWHEEL_CLASSES
    angle = blade + _pinwheel_angle(np.hypot(f[:, 0], f[:, 1]))
    return _PINWHEEL_SCALE * _rotate(f, -angle)


def _spiral_arcs() -> list[Arc]:
    """The two spirals as semicircles: (weight, centre, radius, first angle, last angle).

    Spiral one turns 1.5 times out of the origin through semicircles of radius
    step/2, 3 step/2, 5 step/2 about (step/2, 0) (upper half) and (-step/2, 0) (lower
    half), joined with matching tangents; spiral two is its mirror image through the
    origin. The position is uniform in arc length over each spiral.
    """
    h = _SPIRAL_STEP / 2.0
    arcs = []
    for k, mult in enumerate((1.0, 3.0, 5.0)):
        radius = mult * h
        weight = mult / 18.0  # arc length share (1, 3, 5) / 9, times 1/2 per spiral
        upper = k % 2 == 0
        c = h if upper else -h
        t0 = 0.0 if upper else math.pi
        arcs.append((weight, (c, 0.0), radius, t0, t0 + math.pi))
        arcs.append((weight, (-c, 0.0), radius, t0 + math.pi, t0 + 2.0 * math.pi))
    return arcs


def _sample_2spirals(n: int, seed: int) -> F64:
    return _sample_arcs(np.random.default_rng(seed), n, _spiral_arcs(), _SPIRAL_NOISE)


def _sample_checkerboard(n: int, seed: int) -> F64:
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2.0, 2.0, size=n)
    x2 = rng.uniform(size=n) - 2.0 * rng.integers(2, size=n) + np.floor(x1) % 2
    return _CHECKER_CELL * np.stack([x1, x2], axis=1)


_SAMPLERS: dict[str, Callable[[int, int], F64]] = {
    "moons": _sample_moons,
    "circles": _sample_circles,
    "8gaussians": _sample_8gaussians,
    "pinwheel": _sample_pinwheel,
    "2spirals": _sample_2spirals,
    "checkerboard": _sample_checkerboard,
    "rings": _sample_rings,
}


def sample_toy(name: str, n: int, seed: int) -> F32:
    """Draw `n` points of a built-in 2-D data set.

    Args:
        name: one of [`TOY_DATASETS`][].
        n: number of points, positive.
        seed: non-negative integer; the same `(name, n, seed)` gives the same points.

    Returns:
        Array of shape `(n, 2)`, float32, in random order. `"moons"` is exactly the
        points of `sklearn.datasets.make_moons(n_samples=n, noise=0.06,
        random_state=seed)`, shuffled with `numpy.random.default_rng(seed)`.

    Raises:
        InputError: unknown name, `n <= 0` or a negative seed.

    Example:
        >>> x = sample_toy("8gaussians", 4, seed=1)
        >>> x.shape, x.dtype
        ((4, 2), dtype('float32'))
        >>> bool((sample_toy("8gaussians", 4, seed=1) == x).all())
        True
    """
    _check_name(name)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise InputError(f"the number of points must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed!r}")
    return _SAMPLERS[name](int(n), int(seed)).astype(np.float32)


# --------------------------------------------------------------------------------------
# Densities.


def _logsumexp(a: F64, axis: int = -1) -> F64:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)
    return out


@functools.cache
def _gauss_legendre() -> tuple[F64, F64]:
    x, w = np.polynomial.legendre.leggauss(_GL_NODES)
    return np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)


def _log_window_integral(lo: F64, hi: F64, kappa: F64) -> F64:
    """log of the integral of exp(-kappa (1 - cos u)) du over [lo, hi] within [-pi, pi].

    The integrand peaks at the point of [lo, hi] nearest 0 and falls off monotonically
    on either side. Each side is cut where the integrand is `_TAIL_NATS` below the peak
    and integrated by Gauss-Legendre (error about 1e-11), relative to the peak.
    """
    peak = np.clip(0.0, lo, hi)
    s_peak = np.sin(peak / 2.0) ** 2  # 1 - cos u = 2 sin^2(u / 2), without cancellation
    half = s_peak + _TAIL_NATS / (2.0 * np.maximum(kappa, 1e-300))
    w = 2.0 * np.arcsin(np.sqrt(np.minimum(half, 1.0)))
    nodes, weights = _gauss_legendre()
    total = np.zeros_like(peak)
    for a, b in ((np.maximum(lo, -w), peak), (peak, np.minimum(hi, w))):
        mid, rad = (a + b) / 2.0, (b - a) / 2.0
        u = mid[:, None] + rad[:, None] * nodes[None, :]
        expo = (np.sin(u / 2.0) ** 2 - s_peak[:, None]) * (-2.0 * kappa[:, None])
        total += rad * (np.exp(np.minimum(expo, 0.0)) @ weights)
    with np.errstate(divide="ignore"):
        return np.log(total) - 2.0 * kappa * s_peak


def _arc_log_density(
    y: F64, center: tuple[float, float], radius: float, t0: float, t1: float, noise: float
) -> F64:
    """log density of c + radius (cos t, sin t) + N(0, noise^2 I) with t ~ U[t0, t1].

    With y - c = rho (cos phi, sin phi), |y - c - radius u(t)|^2 equals
    (rho - radius)^2 + 2 rho radius (1 - cos(t - phi)), leaving a 1-D integral over t.
    """
    d = y - np.asarray(center)
    rho = np.hypot(d[:, 0], d[:, 1])
    phi = np.arctan2(d[:, 1], d[:, 0])
    kappa = rho * radius / noise**2
    length = t1 - t0
    if length >= 2.0 * np.pi:  # a full circle: the phase does not matter
        lo, hi = np.full_like(phi, -np.pi), np.full_like(phi, np.pi)
    else:
        lo = np.mod(t0 - phi + np.pi, 2.0 * np.pi) - np.pi
        hi = lo + length
    first = _log_window_integral(lo, np.minimum(hi, np.pi), kappa)
    wraps = hi > np.pi
    second = np.full_like(first, -np.inf)
    if np.any(wraps):
        second[wraps] = _log_window_integral(
            np.full(int(wraps.sum()), -np.pi), hi[wraps] - 2.0 * np.pi, kappa[wraps]
        )
    log_j = np.logaddexp(first, second)
    return (
        log_j
        - math.log(length)
        - math.log(2.0 * np.pi * noise**2)
        - (rho - radius) ** 2 / (2.0 * noise**2)
    )


def _mixture(parts: list[F64]) -> F64:
    return _logsumexp(np.stack(parts, axis=1), axis=1) - math.log(len(parts))


def _arcs_log_prob(y: F64, arcs: list[Arc], noise: float) -> F64:
    parts = [math.log(w) + _arc_log_density(y, c, r, t0, t1, noise) for w, c, r, t0, t1 in arcs]
    return _logsumexp(np.stack(parts, axis=1), axis=1)


def _log_normal_iso(y: F64, mean: F64, std: float) -> F64:
    d2 = np.sum((y - mean) ** 2, axis=-1)
    return -d2 / (2.0 * std**2) - math.log(2.0 * np.pi * std**2)


def _log_prob_8gaussians(y: F64) -> F64:
    return _mixture([_log_normal_iso(y, c, _GAUSS8_STD) for c in _gauss8_centers()])


def _log_prob_pinwheel(y: F64) -> F64:
    # y = 2 R(-theta(|f|)) f is a bijection with |det dy/df| = 4 (a swirl preserves area),
    # so each blade's density is the Gaussian density of f = R(theta(|y|/2)) y / 2 over 4.
    z = y / _PINWHEEL_SCALE
    swirl = _pinwheel_angle(np.hypot(z[:, 0], z[:, 1]))
    std = np.array([_PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD])
    log_norm = -math.log(2.0 * np.pi * std[0] * std[1] * _PINWHEEL_SCALE**2)
    parts = []
    for k in range(_PINWHEEL_CLASSES):
        f = _rotate(z, swirl + 2.0 * np.pi * k / _PINWHEEL_CLASSES)
        u = (f - np.array([1.0, 0.0])) / std
        parts.append(log_norm - 0.5 * np.sum(u**2, axis=1))
    return _mixture(parts)


def _log_prob_checkerboard(y: F64) -> F64:
    # Closed squares [2i, 2i+2] x [2j, 2j+2], i, j in {-2, ..., 1}, filled when i + j is
    # even; density 1/32 on them and 0 (log -inf) elsewhere.
    inside = np.zeros(len(y), dtype=bool)
    cx, cy = y[:, 0] / _CHECKER_CELL, y[:, 1] / _CHECKER_CELL
    for ix in (np.floor(cx), np.ceil(cx) - 1.0):
        for iy in (np.floor(cy), np.ceil(cy) - 1.0):
            ok = (np.abs(ix + 0.5) < 2.0) & (np.abs(iy + 0.5) < 2.0) & ((ix + iy) % 2 == 0)
            inside |= ok
    area = 8 * _CHECKER_CELL**2
    return np.where(inside, -math.log(area), -np.inf)


_LOG_PROBS: dict[str, Callable[[F64], F64]] = {
    "moons": lambda y: _arcs_log_prob(y, _MOONS_ARCS, _MOONS_NOISE),
    "circles": lambda y: _arcs_log_prob(y, _circle_arcs(_CIRCLES_RADII), _CIRCLES_NOISE),
    "8gaussians": _log_prob_8gaussians,
    "pinwheel": _log_prob_pinwheel,
    "2spirals": lambda y: _arcs_log_prob(y, _spiral_arcs(), _SPIRAL_NOISE),
    "checkerboard": _log_prob_checkerboard,
    "rings": lambda y: _arcs_log_prob(y, _circle_arcs(_RINGS_RADII), _RINGS_NOISE),
}


def toy_log_prob(name: str, points: npt.ArrayLike) -> F64:
    """The true log-density (nats) of a built-in data set at the given points.

    Curve-based sets (`moons`, `circles`, `rings`, `2spirals`) integrate the noise
    density over the curve parameter numerically (error about 1e-10 nats); the others
    are closed form. `checkerboard` is uniform on its squares and exactly 0 off them,
    so points outside get `-inf`. `moons` uses the continuous version of make_moons
    (the arc parameter uniform rather than on an evenly spaced grid).

    Args:
        name: one of [`TOY_DATASETS`][].
        points: array of shape `(..., 2)`.

    Returns:
        float64 array of shape `(...)`.

    Raises:
        InputError: unknown name, or points not of shape `(..., 2)`.

    Example:
        >>> lp = toy_log_prob("8gaussians", [[2.8284271, 0.0], [0.0, 0.0]])
        >>> lp.round(3).tolist()
        [-1.838, -31.758]
    """
    _check_name(name)
    y = np.asarray(points, dtype=np.float64)
    if y.ndim == 0 or y.shape[-1] != 2:
        raise InputError(f"points must have shape (..., 2) for {name!r}, got shape {y.shape}")
    flat = y.reshape(-1, 2)
    out = np.empty(len(flat))
    fn = _LOG_PROBS[name]
    for i in range(0, len(flat), _CHUNK):
        out[i : i + _CHUNK] = fn(flat[i : i + _CHUNK])
    return out.reshape(y.shape[:-1])


# Boxes (x0, x1, y0, y1) holding all but ~1e-12 of each set's mass, and grid spacings
# of about a third of its finest length scale, for the quadrature entropy.
_ENTROPY_GRIDS: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "moons": ((-1.6, 2.6, -1.1, 1.6), 0.02),
    "circles": ((-5.0, 5.0, -5.0, 5.0), 0.06),
    "8gaussians": ((-6.0, 6.0, -6.0, 6.0), 0.1),
    "pinwheel": ((-6.5, 6.5, -6.5, 6.5), 0.05),
    "2spirals": ((-4.0, 4.0, -4.0, 4.0), 0.033),
    "checkerboard": ((-4.0, 4.0, -4.0, 4.0), 0.25),
    "rings": ((-4.0, 4.0, -4.0, 4.0), 0.027),
}


def toy_entropy(
    name: str, n: int = 200_000, seed: int = 12345, *, method: str = "monte-carlo"
) -> float:
    """A built-in set's differential entropy, in nats.

    The entropy is the lowest expected negative log-likelihood per point that any
    model can reach on fresh draws.

    Args:
        name: one of [`TOY_DATASETS`][].
        n: Monte-Carlo sample size.
        seed: Monte-Carlo seed.
        method: `"monte-carlo"` gives `-mean(toy_log_prob(name, sample_toy(name, n,
            seed)))`, with standard error `std(log p) / sqrt(n)` (about 0.0016 for
            moons at the default `n`: 0.4738 at the default seed). `"quadrature"`
            integrates `-p log p` on a fine grid instead (`n` and `seed` unused),
            accurate to about 1e-9 (moons: 0.47705).

    Raises:
        InputError: unknown name or method, or a bad `n` or `seed`.

    Example:
        >>> round(toy_entropy("checkerboard", n=1000), 4)  # log(32)
        3.4657
        >>> round(toy_entropy("moons", method="quadrature"), 5)
        0.47705
    """
    _check_name(name)
    if method == "monte-carlo":
        return float(-np.mean(toy_log_prob(name, sample_toy(name, n, seed))))
    if method != "quadrature":
        raise InputError(
            f"unknown entropy method {method!r}; choose one of: monte-carlo, quadrature"
        )
    (x0, x1, y0, y1), h = _ENTROPY_GRIDS[name]
    gx = np.arange(x0 + h / 2.0, x1, h)
    gy = np.arange(y0 + h / 2.0, y1, h)
    lp = toy_log_prob(name, np.stack(np.meshgrid(gx, gy), axis=-1))
    p = np.exp(lp)
    return float(-np.sum(p * np.where(p > 0.0, lp, 0.0)) * h * h)


# --------------------------------------------------------------------------------------
# A user's data.


def _as_float(x: npt.NDArray[Any]) -> FloatArray:
    """float64 stays float64; anything else numeric becomes float32."""
    if x.dtype.kind == "f" and x.dtype.itemsize == 8:
        return x.astype(np.float64, copy=False)
    with np.errstate(over="ignore"):  # too-large values become inf, reported by callers
        return x.astype(np.float32)


def _bad_rows(x: FloatArray) -> int:
    return int(np.count_nonzero(~np.all(np.isfinite(x), axis=1)))


def _finite_float(arr: npt.NDArray[Any], label: str) -> FloatArray:
    """`arr` as floats, refusing rows with NaN/inf (or values that overflow float32)."""
    out = _as_float(arr)
    bad = _bad_rows(out)
    if bad:
        if np.all(np.isfinite(arr)):
            raise InputError(
                f"{label} has values too large for float32 in {bad} of {arr.shape[0]} rows; "
                "rescale them"
            )
        raise InputError(
            f"{label} has NaN or infinite values in {bad} of {arr.shape[0]} rows; "
            "remove or fill them"
        )
    return out


def validate_points(x: npt.ArrayLike, *, dim: int | None = None, what: str = "data") -> FloatArray:
    """Check an array of points: rank 2, non-empty, finite, optionally of dimension `dim`.

    Args:
        x: the points, shape `(n, d)`, numbers.
        dim: the dimension a model was trained on, if any.
        what: how the array is named in error messages.

    Returns:
        The points as a float array (float64 stays float64, other types become float32).

    Raises:
        InputError: with a one-line message saying what is wrong.

    Example:
        >>> validate_points([[0.0, 1.0]], dim=2).shape
        (1, 2)
        >>> validate_points([[0.0, 1.0, 2.0]], dim=2)
        Traceback (most recent call last):
        ...
        ffjord._errors.InputError: data has dimension 3 but the model was trained on dimension 2
    """
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise InputError(f"{what} is not an array of numbers ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} must hold numbers, got values of type {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{what} has no rows")
    if arr.shape[1] == 0:
        raise InputError(f"{what} has 0 columns")
    out = _finite_float(arr, what)
    if dim is not None and arr.shape[1] != dim:
        raise InputError(
            f"{what} has dimension {arr.shape[1]} but the model was trained on dimension {dim}"
        )
    return out


_NPY_MAGIC = b"\x93NUMPY"


def _parse_npy(raw: bytes, where: str) -> npt.NDArray[Any]:
    if not raw:
        raise InputError(f"{where} is empty; save an array of shape (n, d) with numpy.save")
    if not raw.startswith(_NPY_MAGIC):
        hint = " (it looks like a .npz archive)" if raw.startswith(b"PK") else ""
        raise InputError(
            f"{where} is not a .npy file{hint}; save an array of shape (n, d) with numpy.save"
        )
    buf = io.BytesIO(raw)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported version {version}")
    except Exception:  # any failure to parse an untrusted header
        raise InputError(
            f"{where} has a corrupt .npy header; save the array again with numpy.save"
        ) from None
    if dtype.hasobject:
        raise InputError(
            f"{where} holds Python objects (pickled data), which are never loaded; "
            "save a numeric array with numpy.save"
        )
    if dtype.kind not in "biuf":
        raise InputError(f"{where} holds values of type {dtype}, not numbers; save a numeric array")
    corrupt = f"{where} has a corrupt .npy header; save the array again with numpy.save"
    if any(dim < 0 for dim in shape):
        raise InputError(corrupt)
    count = math.prod(shape)
    offset = buf.tell()
    if len(raw) - offset < count * dtype.itemsize:
        raise InputError(
            f"{where} is truncated: its header promises shape {shape} but the data is "
            "shorter; save the array again with numpy.save"
        )
    try:
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        return arr.reshape(shape, order="F" if fortran else "C")
    except ValueError:
        raise InputError(corrupt) from None


def _parse_csv(raw: bytes, where: str) -> npt.NDArray[Any]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            f"{where} is not a UTF-8 text file; write numbers separated by commas"
        ) from None
    rows: list[list[float]] = []
    width: int | None = None
    header: int | None = None  # number of names in the header, if any
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cells = [c.strip() for c in stripped.split(",")]
        values = [_to_float(c) for c in cells]
        if not rows and header is None and any(cells) and all(v is None for v in values):
            header = len(cells)
            continue
        for col, (cell, value) in enumerate(zip(cells, values, strict=True), start=1):
            if value is None:
                raise InputError(_cell_message(where, len(rows) + 1, lineno, col, cell))
        if width is None:
            width = len(cells)
            if header is not None and header != width:
                raise InputError(
                    f"{where}: the header has {header} names but line {lineno} has {width} "
                    "values; make every line the same length"
                )
        elif len(cells) != width:
            raise InputError(
                f"{where}: line {lineno} has {len(cells)} values but the lines above have "
                f"{width}; make every line the same length"
            )
        rows.append([v for v in values if v is not None])
    if not rows:
        what = "a header but no data rows" if header is not None else "no data rows"
        raise InputError(f"{where} has {what}; write one point per line")
    values = np.array(rows, dtype=np.float64)
    too_big = np.isfinite(values) & (np.abs(values) > np.finfo(np.float32).max)
    if too_big.any():
        raise InputError(
            f"{where} holds {values[too_big][0]:g}, beyond the float32 range (+-3.4e38) "
            "used for training; rescale the data"
        )
    return values.astype(np.float32)


def _to_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _cell_message(where: str, row: int, lineno: int, col: int, cell: str) -> str:
    if not cell:
        problem = "is empty"
    else:
        shown = cell if len(cell) <= 20 else cell[:17] + "..."
        problem = f"is {shown!r}, not a number"
        if len(cell.split()) > 1 and all(_to_float(p) is not None for p in cell.split()):
            problem += " (separate values with commas)"
    return f"{where}: row {row} (line {lineno}), column {col} {problem}; fix or remove it"


def load_array(path: str | os.PathLike[str], what: str = "data file") -> FloatArray:
    """Load a user's data file, `.npy` or `.csv`, as points of shape `(n, d)`.

    A `.npy` file is read without pickle. A `.csv` file holds numbers separated by
    commas, one point per line, with an optional first line of column names;
    whitespace around values, blank lines and lines starting with `#` are ignored.
    A 1-D array or a single column gives shape `(n, 1)`. float64 data stays
    float64; everything else (CSV text, integers, float16/32) becomes float32. Messages
    call it `what` (e.g. "data file").

    Raises:
        InputError: with one line naming the file, the problem and what to do: missing
            file, a directory, unreadable, unknown extension, not a valid `.npy` file,
            pickled objects, a non-numeric or empty cell (row and column named), rows
            of different lengths, no rows, no columns, rank other than 1 or 2, NaN or
            infinite values.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "pts.csv").write_text("x,y\\n1, 2\\n3, 4\\n")
        >>> load_array(d / "pts.csv")
        array([[1., 2.],
               [3., 4.]], dtype=float32)
    """
    p = Path(os.fspath(path))
    where = f"{what} '{p}'"
    try:
        exists, is_dir, is_file = p.exists(), p.is_dir(), p.is_file()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot read {where}: {reason}; check its permissions") from None
    if not exists:
        raise InputError(f"{where} does not exist; check the path")
    if is_dir:
        raise InputError(f"{where} is a directory; give a .npy or .csv file")
    if not is_file:
        raise InputError(f"{where} is not a regular file; give a .npy or .csv file")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".csv"):
        shown = f"extension '{p.suffix}'" if p.suffix else "no extension"
        raise InputError(f"{where} has {shown}; use a .npy or .csv file")
    try:
        raw = p.read_bytes()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot read {where}: {reason}; check its permissions") from None
    arr = _parse_npy(raw, where) if suffix == ".npy" else _parse_csv(raw, where)
    if arr.ndim == 0:
        raise InputError(f"{where} holds a single number; save an array of shape (n, d)")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim > 2:
        raise InputError(
            f"{where} holds an array of shape {arr.shape}; save a 2-D array of shape (n, d)"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{where} has no rows; save an array of shape (n, d) with n >= 1")
    if arr.shape[1] == 0:
        raise InputError(f"{where} has 0 columns; save an array of shape (n, d) with d >= 1")
    out = _finite_float(arr, where)
    return out if out.flags.writeable else out.copy()  # not a view of the file's bytes


def split_holdout(
    data: npt.NDArray[Any], fraction: float = 0.1, seed: int = 0
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """A fixed train/test split: shuffle rows with `seed`, the last `ceil(fraction n)` test.

    At least one row goes to each side.

    Args:
        data: array of shape `(n, ...)`, `n >= 2`.
        fraction: share of rows held out, in (0, 1).
        seed: seed of the shuffle.

    Returns:
        `(train, test)`.

    Raises:
        InputError: fewer than 2 rows, or `fraction` outside (0, 1).

    Example:
        >>> train, test = split_holdout(np.arange(20.0).reshape(10, 2), 0.25, seed=0)
        >>> train.shape, test.shape
        ((7, 2), (3, 2))
    """
    arr = np.asarray(data)
    if not (isinstance(fraction, float | int) and 0.0 < fraction < 1.0):
        raise InputError(f"the held-out fraction must be between 0 and 1, got {fraction!r}")
    n = arr.shape[0] if arr.ndim >= 1 else 0
    if n < 2:
        raise InputError(f"need at least 2 rows to hold out a test set, got {n}")
    n_test = min(max(math.ceil(fraction * n - 1e-9), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return arr[perm[: n - n_test]], arr[perm[n - n_test :]]


# --------------------------------------------------------------------------------------
# Real data.

DIGITS_TRAIN = 1500  # of scikit-learn's 1,797 digits; the other 297 are held out


def load_digits(seed: int = 0) -> tuple[F32, F32]:
    """scikit-learn's 8x8 handwritten digits as 64-D points, uniformly dequantised.

    Each image's 64 pixel counts ``x`` (integers 0..16) become ``(x + u) / 17`` with
    ``u ~ Uniform[0, 1)`` drawn once per pixel, so the points have a density on
    ``[0, 1)^64``; a model's density there is a lower bound on the discrete data's
    probability (``log P(x) >= log p((x + u)/17) - 64 log 17`` in expectation). The
    rows are shuffled and split into 1,500 training and 297 held-out points. Shuffle
    and noise come from ``numpy.random.default_rng(seed)``: the same seed gives the
    same arrays. Needs scikit-learn (its copy of the data ships with it).

    Returns:
        ``(train, test)``, float32 arrays of shapes ``(1500, 64)`` and ``(297, 64)``.

    Example:
        >>> train, test = load_digits(seed=0)
        >>> train.shape, test.shape, train.dtype
        ((1500, 64), (297, 64), dtype('float32'))
        >>> bool(train.min() >= 0.0 and train.max() < 1.0)
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise InputError(
            "the digits data set needs scikit-learn: pip install scikit-learn"
        ) from err
    images, _ = sklearn_digits(return_X_y=True)
    counts = np.asarray(images, dtype=np.float64)  # (1797, 64), integers 0..16
    rng = np.random.default_rng(seed)
    order = rng.permutation(counts.shape[0])
    points = (counts[order] + rng.random(counts.shape)) / 17.0
    points = points.astype(np.float32)
    return points[:DIGITS_TRAIN], points[DIGITS_TRAIN:]
