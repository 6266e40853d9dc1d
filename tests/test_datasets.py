"""Tests for ffjord.datasets: toy samplers, their exact densities, and loading user files."""

import math
import pathlib
import re

import numpy as np
import pytest
import scipy.special
import scipy.stats
import sklearn.datasets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ffjord import datasets
from ffjord._errors import InputError
from ffjord.datasets import (
    TOY_DATASETS,
    load_array,
    sample_toy,
    split_holdout,
    toy_entropy,
    toy_log_prob,
    validate_points,
)

NAMES_MSG = "moons, circles, 8gaussians, pinwheel, 2spirals, checkerboard, rings"


def exact(msg: str) -> str:
    """A `match=` pattern that accepts exactly `msg`."""
    return f"^{re.escape(msg)}$"


# Grids for integrating each density: box (x0, x1, y0, y1), cell size, cells per
# histogram bin. The cell size is at most half the set's noise sd, where the midpoint
# rule on a Gaussian-smoothed density is accurate far beyond 1e-6.
GRIDS = {
    "moons": ((-1.9, 2.9, -1.5, 1.8), 0.03, 10),
    "circles": ((-5.0, 5.0, -5.0, 5.0), 0.1, 5),
    "8gaussians": ((-6.0, 6.0, -6.0, 6.0), 0.1, 10),
    "pinwheel": ((-6.5, 6.5, -6.5, 6.5), 0.05, 10),
    "2spirals": ((-4.5, 4.5, -4.5, 4.5), 0.05, 9),
    "checkerboard": ((-5.0, 5.0, -5.0, 5.0), 0.1, 5),
    "rings": ((-4.0, 4.0, -4.0, 4.0), 0.04, 10),
}


def grid(name: str) -> tuple[np.ndarray, float, int, tuple[float, float, float, float]]:
    (x0, x1, y0, y1), h, per_bin = GRIDS[name]
    nx, ny = round((x1 - x0) / h), round((y1 - y0) / h)
    gx = x0 + h * (np.arange(nx) + 0.5)
    gy = y0 + h * (np.arange(ny) + 0.5)
    return np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1), h, per_bin, (x0, x1, y0, y1)


# ------------------------------------------------------------------------------------
# Samplers.


def test_names():
    assert tuple(NAMES_MSG.split(", ")) == TOY_DATASETS


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_sample_shape_dtype_determinism(name):
    x = sample_toy(name, 500, seed=3)
    assert x.shape == (500, 2)
    assert x.dtype == np.float32
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, sample_toy(name, 500, seed=3))
    assert not np.array_equal(x, sample_toy(name, 500, seed=4))
    assert sample_toy(name, 1, seed=0).shape == (1, 2)
    # Scaled to about [-4, 4]^2 (moons is unscaled, smaller).
    big = sample_toy(name, 5000, seed=0)
    assert np.mean(np.any(np.abs(big) > 4.0, axis=1)) < 0.01
    assert np.abs(big).max() < 6.0
    assert np.abs(big).max() > (1.5 if name == "moons" else 2.5)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 8192])
@pytest.mark.parametrize("seed", [0, 3, 2**31 - 1])
def test_make_moons_is_sklearns_bit_for_bit(n, seed):
    ref, _ = sklearn.datasets.make_moons(n_samples=n, noise=0.06, random_state=seed)
    np.testing.assert_array_equal(datasets.make_moons(n, 0.06, seed), ref)


def test_moons_is_make_moons_shuffled():
    n, seed = 1001, 7
    x = sample_toy("moons", n, seed)
    ref, _ = sklearn.datasets.make_moons(n_samples=n, noise=0.06, random_state=seed)
    perm = np.random.default_rng(seed).permutation(n)
    np.testing.assert_array_equal(x, ref[perm].astype(np.float32))
    # the same multiset of points, independent of how it was shuffled
    key = np.lexsort(x.T)
    key_ref = np.lexsort(ref.astype(np.float32).T)
    np.testing.assert_array_equal(x[key], ref.astype(np.float32)[key_ref])


def test_checkerboard_samples_inside_support():
    x = sample_toy("checkerboard", 20000, seed=1)
    lp = toy_log_prob("checkerboard", x)
    np.testing.assert_array_equal(lp, np.full(len(x), -math.log(32.0)))
    assert np.all(np.abs(x) <= 4.0)


@pytest.mark.parametrize("bad", ["moon", "Moons", "", "swissroll"])
def test_unknown_name(bad):
    msg = f"unknown data set {bad!r}; choose one of: {NAMES_MSG}"
    with pytest.raises(InputError, match=exact(msg)):
        sample_toy(bad, 10, 0)
    with pytest.raises(InputError, match=exact(msg)):
        toy_log_prob(bad, np.zeros((1, 2)))
    with pytest.raises(InputError, match=exact(msg)):
        toy_entropy(bad, n=10)


@pytest.mark.parametrize("n", [0, -5])
def test_bad_n(n):
    with pytest.raises(
        InputError, match=exact(f"the number of points must be a positive integer, got {n}")
    ):
        sample_toy("moons", n, 0)


def test_bad_seed():
    with pytest.raises(InputError, match=exact("the seed must be a non-negative integer, got -1")):
        sample_toy("rings", 10, -1)


def test_log_prob_bad_shape():
    with pytest.raises(
        InputError, match=exact("points must have shape (..., 2) for 'moons', got shape (4, 3)")
    ):
        toy_log_prob("moons", np.zeros((4, 3)))


def test_log_prob_batch_shape():
    pts = sample_toy("rings", 12, 0).astype(np.float64)
    lp = toy_log_prob("rings", pts.reshape(3, 4, 2))
    assert lp.shape == (3, 4) and lp.dtype == np.float64
    np.testing.assert_allclose(lp.ravel(), toy_log_prob("rings", pts), rtol=0, atol=1e-12)
    assert toy_log_prob("rings", np.zeros((0, 2))).shape == (0,)


# ------------------------------------------------------------------------------------
# Densities.


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_density_normalised_and_matches_sampler(name):
    pts, h, per_bin, (x0, x1, y0, y1) = grid(name)
    p = np.exp(toy_log_prob(name, pts))
    mass = p.sum() * h * h
    assert abs(mass - 1.0) < 1e-4, mass
    # Histogram of draws against the density integrated over each bin.
    nx, ny = p.shape
    bins = p.reshape(nx // per_bin, per_bin, ny // per_bin, per_bin).sum(axis=(1, 3)) * h * h
    n = 50_000
    x = sample_toy(name, n, seed=11).astype(np.float64)
    ex = x0 + h * per_bin * np.arange(nx // per_bin + 1)
    ey = y0 + h * per_bin * np.arange(ny // per_bin + 1)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[ex, ey])
    expected = n * bins
    assert counts.sum() >= n * (1 - 1e-3)
    z = np.abs(counts - expected) / np.sqrt(expected * (1 - bins) + 1.0)
    assert z.max() < 5.0, (z.max(), np.unravel_index(z.argmax(), z.shape))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_true_density_beats_wrong_models(name):
    x = sample_toy(name, 4000, seed=5).astype(np.float64)
    own = toy_log_prob(name, x).mean()
    assert np.isfinite(own)
    gauss = scipy.stats.multivariate_normal(x.mean(0), np.cov(x.T)).logpdf(x).mean()
    assert own > gauss + 0.1
    for other in TOY_DATASETS:
        if other != name:
            assert own > toy_log_prob(other, x).mean() + 0.1, other


def _brute_moons(y: np.ndarray, panels: int = 1000) -> np.ndarray:
    # Composite 8-point Gauss-Legendre over the arc parameter, straight from the
    # definition of make_moons' curves.
    x, w = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(0.0, np.pi, panels + 1)
    half = (edges[1] - edges[0]) / 2
    t = ((edges[:-1] + edges[1:])[:, None] / 2 + half * x[None, :]).ravel()
    logw = np.log(np.tile(w * half, panels) / np.pi)
    outer = np.stack([np.cos(t), np.sin(t)], 1)
    inner = np.stack([1 - np.cos(t), 1 - np.sin(t) - 0.5], 1)
    s2 = 0.06**2
    parts = []
    for curve in (outer, inner):
        d2 = ((y[:, None, :] - curve[None]) ** 2).sum(-1)
        log_int = scipy.special.logsumexp(logw - d2 / (2 * s2), axis=1)
        parts.append(log_int - np.log(2 * np.pi * s2))
    return np.logaddexp(*parts) - np.log(2)


def test_moons_density_matches_brute_force_quadrature():
    rng = np.random.default_rng(0)
    y = np.concatenate(
        [
            sample_toy("moons", 150, 2).astype(np.float64),
            rng.uniform([-1.5, -1.0], [2.5, 1.5], size=(100, 2)),
            [[0.0, 0.0], [1.0, 0.5], [-1.0, 0.0], [2.0, 0.5], [0.5, 0.25]],
        ]
    )
    np.testing.assert_allclose(toy_log_prob("moons", y), _brute_moons(y), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "radii", "sd"),
    [("circles", (3.0, 1.5), 0.24), ("rings", (3.0, 2.25, 1.5, 0.75), 0.08)],
)
def test_circles_match_rice_closed_form(name, radii, sd):
    rng = np.random.default_rng(1)
    y = np.concatenate([sample_toy(name, 300, 0), rng.uniform(-5, 5, (300, 2)), [[0.0, 0.0]]])
    r = np.hypot(y[:, 0], y[:, 1])
    parts = [
        -((r - a) ** 2) / (2 * sd**2)
        + np.log(scipy.special.i0e(r * a / sd**2))
        - np.log(2 * np.pi * sd**2)
        for a in radii
    ]
    ref = scipy.special.logsumexp(parts, axis=0) - np.log(len(radii))
    np.testing.assert_allclose(toy_log_prob(name, y), ref, rtol=0, atol=1e-9)


def test_8gaussians_matches_scipy_mixture():
    rng = np.random.default_rng(2)
    y = np.concatenate([sample_toy("8gaussians", 200, 0), rng.uniform(-6, 6, (200, 2))])
    angles = np.arange(8) * np.pi / 4
    centers = 4 / np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], 1)
    cov = (0.5 / np.sqrt(2)) ** 2 * np.eye(2)
    parts = [scipy.stats.multivariate_normal(c, cov).logpdf(y) for c in centers]
    ref = scipy.special.logsumexp(parts, axis=0) - np.log(8)
    np.testing.assert_allclose(toy_log_prob("8gaussians", y), ref, rtol=0, atol=1e-10)


def test_checkerboard_closed_form():
    # Squares [2i, 2i + 2] x [2j, 2j + 2], i, j in -2..1, filled when i + j is even;
    # closed, so edges and corners count as inside.
    inside = [[-3, -3], [-1, -1], [1, 1], [3, 3], [-3, 1], [1, -3], [4, 4], [-4, 0], [2, 0]]
    outside = [[-1, 1], [1, -1], [3, -3], [-3, -1], [4.5, 0], [0, -5], [4.001, 4]]
    np.testing.assert_array_equal(toy_log_prob("checkerboard", inside), -np.log(32.0))
    np.testing.assert_array_equal(toy_log_prob("checkerboard", outside), -np.inf)


def _rot(y: np.ndarray, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return y @ np.array([[c, s], [-s, c]])


coords = st.floats(-5.0, 5.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(coords, coords), min_size=1, max_size=20))
def test_symmetries(pts):
    y = np.array(pts, dtype=np.float64)

    def same(name, a, b):
        np.testing.assert_allclose(
            toy_log_prob(name, a), toy_log_prob(name, b), rtol=1e-9, atol=1e-8
        )

    same("moons", y, np.array([1.0, 0.5]) - y)  # the inner moon is the outer one, turned
    same("2spirals", y, -y)
    same("circles", y, _rot(y, 0.7))
    same("rings", y, _rot(y, 2.1))
    same("8gaussians", y, _rot(y, np.pi / 4))
    same("pinwheel", y, _rot(y, 2 * np.pi / 5))
    same("checkerboard", y[np.all(np.abs(y) % 2 > 1e-6, 1)], -y[np.all(np.abs(y) % 2 > 1e-6, 1)])


def test_moons_entropy():
    h = toy_entropy("moons")
    assert 0.47 <= h <= 0.485
    assert abs(toy_entropy("moons", method="quadrature") - 0.47705) < 5e-5


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_entropy_monte_carlo_agrees_with_quadrature(name):
    # If the sampler and the density disagreed (say on a noise level), the Monte-Carlo
    # cross-entropy would differ from the density's own entropy.
    n = 40_000
    lp = toy_log_prob(name, sample_toy(name, n, seed=21))
    mc = toy_entropy(name, n=n, seed=21)
    assert mc == pytest.approx(-lp.mean(), abs=1e-12)
    quad = toy_entropy(name, method="quadrature")
    se = lp.std() / math.sqrt(n)
    assert abs(mc - quad) < 4 * se + 1e-6, (mc, quad, se)


def test_checkerboard_entropy_exact():
    assert toy_entropy("checkerboard", n=100) == pytest.approx(math.log(32.0), abs=1e-12)
    assert toy_entropy("checkerboard", method="quadrature") == pytest.approx(
        math.log(32.0), abs=1e-12
    )


def test_entropy_bad_method():
    with pytest.raises(
        InputError,
        match=exact("unknown entropy method 'mc'; choose one of: monte-carlo, quadrature"),
    ):
        toy_entropy("moons", method="mc")


# ------------------------------------------------------------------------------------
# load_array: good files.


def test_csv_with_header_and_whitespace(tmp_path):
    f = tmp_path / "pts.csv"
    f.write_text("x , y\n 1.5, -2\n\n3,\t4e-1  \r\n# a comment\n-0.25 ,1\n")
    a = load_array(f)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, np.array([[1.5, -2], [3, 0.4], [-0.25, 1]], np.float32))


def test_csv_without_header(tmp_path):
    f = tmp_path / "pts.csv"
    np.savetxt(f, np.arange(12.0).reshape(4, 3), delimiter=",")
    a = load_array(str(f))
    assert a.shape == (4, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, np.arange(12.0).reshape(4, 3))


def test_csv_single_column_and_bom(tmp_path):
    f = tmp_path / "col.CSV"
    f.write_bytes("\ufeffvalue\n1\n2\n3".encode())
    a = load_array(f)
    assert a.shape == (3, 1)
    np.testing.assert_array_equal(a[:, 0], [1, 2, 3])


def test_npy_1d_becomes_column(tmp_path):
    f = tmp_path / "v.npy"
    np.save(f, np.arange(5, dtype=np.float32))
    a = load_array(f)
    assert a.shape == (5, 1) and a.dtype == np.float32


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float64, np.float64),
        (">f8", np.float64),
        (np.float32, np.float32),
        (np.float16, np.float32),
        (np.int64, np.float32),
        (np.uint8, np.float32),
        (np.bool_, np.float32),
    ],
)
def test_npy_dtypes(tmp_path, dtype, expected):
    data = (np.arange(12).reshape(6, 2) % 3).astype(dtype)
    f = tmp_path / "d.npy"
    np.save(f, data)
    a = load_array(f)
    assert a.dtype == expected and a.shape == (6, 2)
    np.testing.assert_array_equal(a, data.astype(np.float64))
    a[0, 0] = 42  # a writable array of its own


def test_npy_fortran_order(tmp_path):
    data = np.asfortranarray(np.arange(6.0).reshape(3, 2))
    np.save(tmp_path / "f.npy", data)
    np.testing.assert_array_equal(load_array(tmp_path / "f.npy"), data)


def test_float64_values_kept_exactly(tmp_path):
    data = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "x.npy", data)
    out = load_array(tmp_path / "x.npy")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, data)


# ------------------------------------------------------------------------------------
# load_array: every problem is an InputError with a one-line message.


def where(path) -> str:
    return f"data file '{path}'"


def test_missing_file(tmp_path):
    f = tmp_path / "nope.npy"
    with pytest.raises(InputError, match=exact(f"{where(f)} does not exist; check the path")):
        load_array(f)


def test_directory(tmp_path):
    d = tmp_path / "dir.npy"
    d.mkdir()
    with pytest.raises(
        InputError, match=exact(f"{where(d)} is a directory; give a .npy or .csv file")
    ):
        load_array(d)


def test_unreadable(tmp_path, monkeypatch):
    f = tmp_path / "locked.csv"
    f.write_text("1,2\n")

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", deny)
    msg = f"cannot read {where(f)}: Permission denied; check its permissions"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


@pytest.mark.parametrize(
    ("fname", "shown"), [("d.txt", "extension '.txt'"), ("data", "no extension")]
)
def test_unknown_extension(tmp_path, fname, shown):
    f = tmp_path / fname
    f.write_text("1,2\n")
    with pytest.raises(InputError, match=exact(f"{where(f)} has {shown}; use a .npy or .csv file")):
        load_array(f)


def test_npy_garbage(tmp_path):
    f = tmp_path / "g.npy"
    f.write_bytes(b"this is not numpy")
    msg = f"{where(f)} is not a .npy file; save an array of shape (n, d) with numpy.save"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_npz_named_npy(tmp_path):
    np.savez(tmp_path / "z.npz", a=np.zeros(3))
    f = tmp_path / "z.npy"
    f.write_bytes((tmp_path / "z.npz").read_bytes())
    msg = (
        f"{where(f)} is not a .npy file (it looks like a .npz archive); "
        "save an array of shape (n, d) with numpy.save"
    )
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_npy_empty_file(tmp_path):
    f = tmp_path / "e.npy"
    f.write_bytes(b"")
    msg = f"{where(f)} is empty; save an array of shape (n, d) with numpy.save"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_npy_corrupt_header(tmp_path):
    f = tmp_path / "c.npy"
    np.save(f, np.zeros((3, 2)))
    raw = bytearray(f.read_bytes())
    raw[12:20] = b"@@@@@@@@"
    f.write_bytes(bytes(raw))
    msg = f"{where(f)} has a corrupt .npy header; save the array again with numpy.save"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_npy_truncated(tmp_path):
    f = tmp_path / "t.npy"
    np.save(f, np.zeros((10, 2)))
    f.write_bytes(f.read_bytes()[:-8])
    msg = (
        f"{where(f)} is truncated: its header promises shape (10, 2) but the data is shorter; "
        "save the array again with numpy.save"
    )
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_npy_pickled_objects_never_loaded(tmp_path, monkeypatch):
    f = tmp_path / "o.npy"
    np.save(f, np.array([[1, "a"], [None, 2.0]], dtype=object), allow_pickle=True)

    def boom(*args, **kwargs):
        raise AssertionError("pickle must never be used")

    monkeypatch.setattr("pickle.load", boom)
    monkeypatch.setattr("pickle.loads", boom)
    msg = (
        f"{where(f)} holds Python objects (pickled data), which are never loaded; "
        "save a numeric array with numpy.save"
    )
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_npy_strings(tmp_path):
    f = tmp_path / "s.npy"
    np.save(f, np.array([["a", "b"]]))
    msg = f"{where(f)} holds values of type <U1, not numbers; save a numeric array"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((), "holds a single number; save an array of shape (n, d)"),
        ((2, 3, 4), "holds an array of shape (2, 3, 4); save a 2-D array of shape (n, d)"),
        ((0, 2), "has no rows; save an array of shape (n, d) with n >= 1"),
        ((0,), "has no rows; save an array of shape (n, d) with n >= 1"),
        ((5, 0), "has 0 columns; save an array of shape (n, d) with d >= 1"),
    ],
)
def test_npy_bad_shapes(tmp_path, shape, problem):
    f = tmp_path / "s.npy"
    np.save(f, np.zeros(shape))
    with pytest.raises(InputError, match=exact(f"{where(f)} {problem}")):
        load_array(f)


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_non_finite_rows_counted(tmp_path, suffix):
    data = np.zeros((5, 2))
    data[1, 0] = np.nan
    data[3, 1] = np.inf
    data[3, 0] = -np.inf
    f = tmp_path / f"n{suffix}"
    if suffix == ".npy":
        np.save(f, data)
    else:
        np.savetxt(f, data, delimiter=",")
    msg = f"{where(f)} has NaN or infinite values in 2 of 5 rows; remove or fill them"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


@pytest.mark.skipif(
    np.finfo(np.longdouble).max <= np.finfo(np.float64).max, reason="no long double"
)
def test_too_large_for_float32(tmp_path):
    f = tmp_path / "big.npy"
    np.save(f, np.array([[1.0, 2.0], [np.longdouble(1e300), 0.0]], dtype=np.longdouble))
    msg = f"{where(f)} has values too large for float32 in 1 of 2 rows; rescale them"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x,y\n1,2\n3,abc\n", "row 2 (line 3), column 2 is 'abc', not a number"),
        ("1,2\n\n3,4\n5,,\n", "row 3 (line 4), column 2 is empty"),
        (
            "1,2\n3 4\n",
            "row 2 (line 2), column 1 is '3 4', not a number (separate values with commas)",
        ),
        ("x,y\n1;2\n", "row 1 (line 2), column 1 is '1;2', not a number"),
        ("1,2\nx,y\n", "row 2 (line 2), column 1 is 'x', not a number"),
        ("a,1\n", "row 1 (line 1), column 1 is 'a', not a number"),
    ],
)
def test_csv_non_numeric_cell(tmp_path, text, problem):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(InputError, match=exact(f"{where(f)}: {problem}; fix or remove it")):
        load_array(f)


def test_csv_ragged(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("1,2\n3,4\n5,6,7\n")
    msg = (
        f"{where(f)}: line 3 has 3 values but the lines above have 2; "
        "make every line the same length"
    )
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_csv_header_width_mismatch(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("x,y,z\n1,2\n")
    msg = (
        f"{where(f)}: the header has 3 names but line 2 has 2 values; "
        "make every line the same length"
    )
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


@pytest.mark.parametrize(
    ("text", "what"),
    [("", "no data rows"), ("\n  \n", "no data rows"), ("x,y\n", "a header but no data rows")],
)
def test_csv_no_rows(tmp_path, text, what):
    f = tmp_path / "empty.csv"
    f.write_text(text)
    with pytest.raises(InputError, match=exact(f"{where(f)} has {what}; write one point per line")):
        load_array(f)


def test_csv_not_utf8(tmp_path):
    f = tmp_path / "bin.csv"
    f.write_bytes(b"1,2\n\xff\xfe\x00\x01")
    msg = f"{where(f)} is not a UTF-8 text file; write numbers separated by commas"
    with pytest.raises(InputError, match=exact(msg)):
        load_array(f)


def test_messages_are_one_line(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("1,2\n3,\n")
    with pytest.raises(InputError) as info:
        load_array(f)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------
# Fuzzing: garbage never escapes as anything but InputError.


def _load_or_input_error(path):
    try:
        out = load_array(path)
    except InputError as err:
        assert "\n" not in str(err)
        return None
    assert out.ndim == 2 and out.shape[0] >= 1 and out.shape[1] >= 1
    assert out.dtype in (np.float32, np.float64)
    assert np.all(np.isfinite(out))
    return out


_HEADER = np.lib.format.magic(1, 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: _HEADER + b),
        st.binary(max_size=200).map(lambda b: b"\x93NUMPY\x02\x00" + b),
        st.text(alphabet="{}():,'<>fiu248 descrfortran_ordershapeTrueFalse\n", max_size=120).map(
            lambda t: _HEADER + len(t).to_bytes(2, "little") + t.encode() + b"\x00" * 40
        ),
    )
)
def test_fuzz_npy(tmp_path_factory, raw):
    f = tmp_path_factory.mktemp("fuzz") / "x.npy"
    f.write_bytes(raw)
    _load_or_input_error(f)


@settings(max_examples=150, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.text(alphabet="0123456789.,-+eE \t\n\rnaifxy#;", max_size=200).map(str.encode),
    )
)
def test_fuzz_csv(tmp_path_factory, raw):
    f = tmp_path_factory.mktemp("fuzz") / "x.csv"
    f.write_bytes(raw)
    _load_or_input_error(f)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32, np.uint16]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6),
        elements={"allow_nan": False, "allow_infinity": False},
    )
)
def test_npy_round_trip(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("rt") / "a.npy"
    np.save(f, data)
    out = load_array(f)
    assert out.dtype == (np.float64 if data.dtype == np.float64 else np.float32)
    np.testing.assert_array_equal(out, data.reshape(len(data), -1).astype(out.dtype))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    st.booleans(),
)
def test_csv_round_trip(tmp_path_factory, data, header):
    f = tmp_path_factory.mktemp("rt") / "a.csv"
    names = ",".join(f"c{i}" for i in range(data.shape[1])) if header else ""
    np.savetxt(f, data, delimiter=" , ", fmt="%.9g", header=names, comments="")
    np.testing.assert_array_equal(load_array(f), data)


# ------------------------------------------------------------------------------------
# validate_points and split_holdout.


def test_validate_points_ok():
    x = validate_points(np.ones((4, 3), dtype=np.int64), dim=3)
    assert x.dtype == np.float32 and x.shape == (4, 3)
    assert validate_points(np.ones((2, 2))).dtype == np.float64


@pytest.mark.parametrize(
    ("x", "kwargs", "msg"),
    [
        (
            np.ones((5, 3)),
            {"dim": 2},
            "data has dimension 3 but the model was trained on dimension 2",
        ),
        (np.ones(3), {}, "data must be a 2-D array of shape (n, d), got shape (3,)"),
        (
            np.ones((2, 2, 2)),
            {"what": "points"},
            "points must be a 2-D array of shape (n, d), got shape (2, 2, 2)",
        ),
        (np.ones((0, 2)), {}, "data has no rows"),
        (np.ones((3, 0)), {}, "data has 0 columns"),
        (
            np.array([[1.0, np.nan], [0.0, 1.0]]),
            {},
            "data has NaN or infinite values in 1 of 2 rows; remove or fill them",
        ),
        (np.array([["a", "b"]]), {}, "data must hold numbers, got values of type <U1"),
    ],
)
def test_validate_points_errors(x, kwargs, msg):
    with pytest.raises(InputError, match=exact(msg)):
        validate_points(x, **kwargs)


def test_split_holdout():
    data = np.arange(60.0).reshape(30, 2)
    train, test = split_holdout(data, 0.1, seed=0)
    assert test.shape == (3, 2) and train.shape == (27, 2)  # ceil(0.1 * 30) = 3, not 4
    both = np.concatenate([train, test])
    np.testing.assert_array_equal(np.sort(both[:, 0]), data[:, 0])
    again = split_holdout(data, 0.1, seed=0)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(split_holdout(data, 0.1, seed=1)[1], test)
    assert split_holdout(data, 0.11)[1].shape == (4, 2)
    assert split_holdout(np.zeros((25, 1)), 0.28)[1].shape == (7, 1)  # 0.28 * 25 > 7 in floats
    tr, te = split_holdout(np.zeros((2, 1)), 0.01)
    assert len(tr) == 1 and len(te) == 1


@pytest.mark.parametrize("n", [0, 1])
def test_split_holdout_too_small(n):
    with pytest.raises(
        InputError, match=exact(f"need at least 2 rows to hold out a test set, got {n}")
    ):
        split_holdout(np.zeros((n, 2)))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, float("nan")])
def test_split_holdout_bad_fraction(fraction):
    with pytest.raises(
        InputError, match=exact(f"the held-out fraction must be between 0 and 1, got {fraction!r}")
    ):
        split_holdout(np.zeros((10, 2)), fraction)


# --------------------------------------------------------------------------------------
# Real data: digits.


def test_digits_are_sklearns_digits_uniformly_dequantised():
    train, test = datasets.load_digits(seed=3)
    assert train.shape == (1500, 64) and test.shape == (297, 64)
    assert train.dtype == np.float32 and test.dtype == np.float32
    points = np.concatenate([train, test]).astype(np.float64)
    assert points.min() >= 0.0 and points.max() < 1.0
    counts = np.floor(points * 17.0)  # (x + u) / 17 with u in [0, 1): floor gives x back
    original = sklearn.datasets.load_digits().data
    as_rows = lambda a: sorted(map(tuple, a.astype(int).tolist()))  # noqa: E731
    assert as_rows(counts) == as_rows(original)  # every image once, none changed
    noise = points * 17.0 - counts
    assert abs(noise.mean() - 0.5) < 0.01 and abs(noise.var() - 1 / 12) < 0.005  # uniform


def test_digits_are_fixed_by_the_seed():
    a_train, a_test = datasets.load_digits(seed=0)
    b_train, _ = datasets.load_digits(seed=0)
    c_train, _ = datasets.load_digits(seed=1)
    assert np.array_equal(a_train, b_train)
    assert not np.array_equal(a_train, c_train)
    with pytest.raises(InputError, match="the seed must be a non-negative integer, got -1"):
        datasets.load_digits(seed=-1)
