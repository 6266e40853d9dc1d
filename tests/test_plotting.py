"""Tests for ffjord.plotting: grids, the KDE, and the figure files."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ffjord import plotting

LIMITS = (-3.0, 3.0, -3.0, 3.0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _only(directory: Path, *names: str) -> None:
    """The directory holds exactly these files: no temporary file left behind."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


def _brute_kde(samples: np.ndarray, limits, res: int, sx: float, sy: float) -> np.ndarray:
    points, shape = plotting.density_grid(limits, res)
    d = points[:, None, :] - samples[None, :, :]
    k = np.exp(-0.5 * ((d[..., 0] / sx) ** 2 + (d[..., 1] / sy) ** 2)) / (2 * math.pi * sx * sy)
    return k.mean(axis=1).reshape(shape)


# --------------------------------------------------------------------------- grids


def test_make_grid_shape_and_order() -> None:
    gridlines, pts = 4, 100
    g = plotting.make_grid(-3, 3, -2, 2, gridlines=gridlines, pts=pts)
    assert g.shape == (2 * gridlines * pts, 2)
    # Horizontal lines first, one after another: y fixed, x running xmin..xmax.
    first = g[:pts]
    np.testing.assert_allclose(first[:, 1], -2.0)
    np.testing.assert_allclose(first[:, 0], np.linspace(-3, 3, pts))
    for k, y in enumerate(np.linspace(-2, 2, gridlines)):
        np.testing.assert_allclose(g[k * pts : (k + 1) * pts, 1], y)
    # Then vertical lines in TFP's interleaved order: meshgrid(xgrid, ypts) raveled.
    second = g[gridlines * pts :]
    np.testing.assert_allclose(second[:gridlines, 0], np.linspace(-3, 3, gridlines))
    np.testing.assert_allclose(second[:gridlines, 1], -2.0)
    np.testing.assert_allclose(second[0::gridlines, 1], np.linspace(-2, 2, pts))
    np.testing.assert_allclose(second[0::gridlines, 0], -3.0)


def test_make_grid_matches_tfp_tutorial() -> None:
    def tfp_make_grid(xmin, xmax, ymin, ymax, gridlines, pts):
        xpts = np.linspace(xmin, xmax, pts)
        gridx = np.linspace(xmin, xmax, gridlines)
        ypts = np.linspace(ymin, ymax, pts)
        gridy = np.linspace(ymin, ymax, gridlines)
        xlines = np.stack([a.ravel() for a in np.meshgrid(xpts, gridy)])
        ylines = np.stack([a.ravel() for a in np.meshgrid(gridx, ypts)])
        return np.concatenate([xlines, ylines], 1).T

    np.testing.assert_array_equal(
        plotting.make_grid(-3, 3, -3, 3, 4, 100), tfp_make_grid(-3, 3, -3, 3, 4, 100)
    )


def test_grid_polylines_recover_straight_lines() -> None:
    lines = plotting._grid_polylines(plotting.make_grid(-1, 1, -1, 1, 3, 5), 5, "grid")
    assert lines.shape == (6, 5, 2)
    assert np.all(np.ptp(lines[:3, :, 1], axis=1) == 0)  # horizontal: constant y
    assert np.all(np.ptp(lines[3:, :, 0], axis=1) == 0)  # vertical: constant x
    assert np.all(np.diff(lines[3:, :, 1], axis=1) > 0)


def test_density_grid_order() -> None:
    points, shape = plotting.density_grid((0.0, 4.0, 10.0, 12.0), 4)
    assert shape == (4, 4) and points.shape == (16, 2)
    grid = points.reshape(*shape, 2)
    np.testing.assert_allclose(grid[0, :, 0], [0.5, 1.5, 2.5, 3.5])  # row 0: x varies
    np.testing.assert_allclose(grid[:, 0, 1], [10.25, 10.75, 11.25, 11.75])  # rows: y
    np.testing.assert_allclose(grid[2, 3], [3.5, 11.25])


# --------------------------------------------------------------------------- KDE


def test_kde_integrates_to_one(rng: np.random.Generator) -> None:
    samples = rng.normal(size=(8192, 2)) * 0.5 + [0.3, -0.2]
    dens = plotting.kde_2d(samples, LIMITS, resolution=100)
    assert dens.shape == (100, 100)
    assert np.all(dens >= 0)
    assert dens.sum() * (6 / 100) ** 2 == pytest.approx(1.0, abs=5e-3)


def test_kde_matches_brute_force_scott(rng: np.random.Generator) -> None:
    samples = rng.normal(size=(50, 2)) * [0.7, 0.4]
    limits = (-2.0, 2.5, -1.5, 1.0)
    res = 23
    sigma = samples.std(axis=0, ddof=1) * 50 ** (-1 / 6)
    expected = _brute_kde(samples, limits, res, *sigma)
    got = plotting.kde_2d(samples, limits, resolution=res)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_kde_matches_brute_force_bandwidth_and_peak(rng: np.random.Generator) -> None:
    samples = rng.uniform(-1, 1, size=(30, 2))
    got = plotting.kde_2d(samples, LIMITS, resolution=31, bandwidth=0.4)
    np.testing.assert_allclose(got, _brute_kde(samples, LIMITS, 31, 0.4, 0.4), rtol=1e-4)
    one = plotting.kde_2d(np.zeros((1, 2)), (-1, 1, -1, 1), resolution=3, bandwidth=0.5)
    assert one[1, 1] == pytest.approx(1 / (2 * math.pi * 0.25), rel=1e-5)


def test_kde_row_is_y(rng: np.random.Generator) -> None:
    dens = plotting.kde_2d(np.array([[2.0, -2.0]]), LIMITS, resolution=12, bandwidth=0.3)
    i, j = np.unravel_index(np.argmax(dens), dens.shape)
    points, shape = plotting.density_grid(LIMITS, 12)
    x, y = points.reshape(*shape, 2)[i, j]
    assert x > 1.5 and y < -1.5


def test_kde_ignores_non_finite(rng: np.random.Generator) -> None:
    samples = rng.normal(size=(200, 2)) * 0.5
    bad = np.concatenate([samples, [[np.nan, 0.0], [np.inf, 1.0]]])
    np.testing.assert_allclose(
        plotting.kde_2d(bad, LIMITS, 20, bandwidth=0.3),
        plotting.kde_2d(samples, LIMITS, 20, bandwidth=0.3),
    )
    assert not plotting.kde_2d(np.full((5, 2), np.nan), LIMITS, 10).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": np.zeros((5, 3))}, "samples must have shape"),
        ({"limits": (1.0, -1.0, 0.0, 1.0)}, "xmin < xmax"),
        ({"limits": (0.0, 1.0)}, "four finite numbers"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"resolution": 0}, "resolution"),
    ],
)
def test_kde_rejects_bad_input(kwargs: dict, match: str) -> None:
    args = {"samples": np.zeros((5, 2)), "limits": LIMITS, **kwargs}
    with pytest.raises(ValueError, match=match):
        plotting.kde_2d(**args)


# --------------------------------------------------------------------------- figures


def _panel_args(rng: np.random.Generator, n: int = 2000) -> dict:
    grid = plotting.make_grid(-3, 3, -3, 3, gridlines=4, pts=100)
    base = rng.normal(size=(n, 2)) * 0.8
    return {
        "grid": grid,
        "base_samples": base,
        "transformed_grid": grid * 1.1 + 0.1,
        "transformed_samples": np.tanh(base) * 2,
        "data": rng.normal(size=(n, 2)),
    }


def test_plot_flow_panels_writes_png(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "panels.png"
    plotting.plot_flow_panels(path, **_panel_args(rng), title="Before training")
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (1600, 440)
    _only(tmp_path, "panels.png")


def test_plot_flow_panels_other_pts_and_nan(tmp_path: Path, rng: np.random.Generator) -> None:
    args = _panel_args(rng, n=300)
    args["grid"] = plotting.make_grid(-3, 3, -3, 3, gridlines=3, pts=20)
    args["transformed_grid"] = args["grid"] * 0.5
    args["transformed_samples"][:10] = np.nan  # a diverged flow still plots
    plotting.plot_flow_panels(tmp_path / "sub" / "p.pdf", pts=20, **args)
    assert (tmp_path / "sub" / "p.pdf").read_bytes().startswith(b"%PDF")
    _only(tmp_path / "sub", "p.pdf")


def test_animate_flow_writes_gif(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = [rng.normal(size=(500 + 10 * i, 2)) * (0.5 + 0.1 * i) for i in range(7)]
    path = tmp_path / "flow.gif"
    plotting.animate_flow(path, frames, data=rng.normal(size=(500, 2)), fps=10)
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert getattr(im, "n_frames", 1) == len(frames)
        assert im.size == (800, 420)
        assert im.info.get("loop") == 0
    _only(tmp_path, "flow.gif")


def test_animate_flow_labels(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = [rng.normal(size=(100, 2)) for _ in range(3)]
    data = rng.normal(size=(100, 2))
    plotting.animate_flow(tmp_path / "a.gif", frames, data=data, labels=["a", "b", "c"])
    with Image.open(tmp_path / "a.gif") as im:
        assert getattr(im, "n_frames", 1) == 3
    with pytest.raises(ValueError, match="one entry per frame"):
        plotting.animate_flow(tmp_path / "b.gif", frames, data=data, labels=["a"])
    with pytest.raises(ValueError, match=r"\.gif"):
        plotting.animate_flow(tmp_path / "b.png", frames, data=data)
    with pytest.raises(ValueError, match="at least one"):
        plotting.animate_flow(tmp_path / "b.gif", [], data=data)
    _only(tmp_path, "a.gif")


def test_plot_density_writes_png(tmp_path: Path, rng: np.random.Generator) -> None:
    points, shape = plotting.density_grid(LIMITS, 50)
    log_p = -0.5 * (points**2).sum(axis=1) - math.log(2 * math.pi)
    log_p[0] = -np.inf
    plotting.plot_density(
        tmp_path / "d.png", log_p.reshape(shape), limits=LIMITS, title="N(0, I)", data=points
    )
    plotting.plot_density(tmp_path / "flat.png", log_p, limits=LIMITS)  # (res*res,) also works
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (600, 500)
    with pytest.raises(ValueError, match=r"shape \(res, res\)"):
        plotting.plot_density(tmp_path / "x.png", np.zeros((4, 5)), limits=LIMITS)
    with pytest.raises(ValueError, match=r"res\*res"):
        plotting.plot_density(tmp_path / "x.png", np.zeros(10), limits=LIMITS)
    _only(tmp_path, "d.png", "flat.png")


def test_plot_curves_writes_png(tmp_path: Path) -> None:
    metrics = [{"epoch": 0, "train_loss": None, "test_nll": 2.5}] + [
        {"epoch": e, "train_loss": 2.0 / e, "test_nll": 2.1 / e, "seconds": 0.3}
        for e in range(1, 6)
    ]
    plotting.plot_curves(tmp_path / "c.png", metrics, reference=0.478)
    plotting.plot_curves(tmp_path / "c2.png", metrics[1:])
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (700, 450)
    with pytest.raises(ValueError, match="at least one"):
        plotting.plot_curves(tmp_path / "x.png", [])
    with pytest.raises(ValueError, match="epoch"):
        plotting.plot_curves(tmp_path / "x.png", [{"train_loss": 1.0}])
    with pytest.raises(ValueError, match="no finite"):
        plotting.plot_curves(tmp_path / "x.png", [{"epoch": 0}])
    _only(tmp_path, "c.png", "c2.png")


def test_plot_histogram_1d_writes_png(tmp_path: Path, rng: np.random.Generator) -> None:
    xs = np.linspace(-4, 4, 100)
    plotting.plot_histogram_1d(
        tmp_path / "h.png",
        rng.normal(size=1000),
        rng.normal(size=(800, 1)),
        log_prob_grid=(xs, -0.5 * xs**2 - 0.5 * math.log(2 * math.pi)),
        title="1-D",
    )
    with Image.open(tmp_path / "h.png") as im:
        assert im.size == (700, 450)
    with pytest.raises(ValueError, match="model_samples"):
        plotting.plot_histogram_1d(tmp_path / "x.png", np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="same length"):
        plotting.plot_histogram_1d(
            tmp_path / "x.png", np.zeros(5), np.zeros(5), log_prob_grid=(xs, xs[:-1])
        )
    _only(tmp_path, "h.png")


# --------------------------------------------------------------------------- atomic writes


def test_bad_shape_leaves_existing_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "panels.png"
    path.write_bytes(b"old figure")
    args = _panel_args(rng, n=100)
    args["transformed_samples"] = np.zeros((100, 3))
    with pytest.raises(ValueError, match=r"transformed_samples must have shape \(n, 2\)"):
        plotting.plot_flow_panels(path, **args)
    args = _panel_args(rng, n=100)
    args["transformed_grid"] = args["grid"][:400]
    with pytest.raises(ValueError, match="transformed_grid"):
        plotting.plot_flow_panels(path, **args)
    with pytest.raises(ValueError, match="frames\\[1\\] must have shape"):
        plotting.animate_flow(
            tmp_path / "panels.gif", [np.zeros((5, 2)), np.zeros(5)], data=np.zeros((5, 2))
        )
    assert path.read_bytes() == b"old figure"
    _only(tmp_path, "panels.png")


def test_failure_while_saving_cleans_up(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.png"
    path.write_bytes(b"old figure")

    def broken_savefig(self: Figure, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk on fire"):
        plotting.plot_curves(path, [{"epoch": 1, "train_loss": 1.0, "test_nll": 1.0}])
    assert path.read_bytes() == b"old figure"
    _only(tmp_path, "c.png")


def test_overwrite_replaces_file_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    rows = [{"epoch": 1, "train_loss": 1.0, "test_nll": 1.0}]
    plotting.plot_curves(path, rows)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    plotting.plot_curves(path, rows)
    assert path.stat().st_mode & 0o777 == 0o640
    with Image.open(path) as im:
        assert im.format == "PNG"
    _only(tmp_path, "c.png")


def test_unknown_suffix_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="figure format"):
        plotting.plot_curves(tmp_path / "c.figure", [{"epoch": 1, "test_nll": 1.0}])
    _only(tmp_path)


def test_figures_from_threads(tmp_path: Path, rng: np.random.Generator) -> None:
    points, shape = plotting.density_grid(LIMITS, 40)
    log_p = -0.5 * (points**2).sum(axis=1)

    def draw(i: int) -> None:
        plotting.plot_density(tmp_path / f"d{i}.png", log_p.reshape(shape), limits=LIMITS)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(draw, range(8)))
    for i in range(8):
        with Image.open(tmp_path / f"d{i}.png") as im:
            assert im.size == (600, 500)
    _only(tmp_path, *(f"d{i}.png" for i in range(8)))
