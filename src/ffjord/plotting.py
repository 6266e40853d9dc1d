"""Figures for continuous normalizing flows: the tutorial's panels, an animation, density maps.

Every function takes plain numpy arrays (nothing here depends on the model code), draws
with matplotlib's object-oriented API on an Agg canvas (no pyplot, no global state, so it
is headless and safe to call from several threads) and writes its file atomically: the
figure goes to a temporary file in the target directory, which then replaces the target
in one step, so a reader never sees a half-written figure and a failure leaves any
existing file untouched. Missing parent directories are created.

Bad input (wrong shapes, bad limits, an unsupported file type) raises
[`InputError`][ffjord._errors.InputError], a `ValueError` with a one-line message,
before anything is drawn. Non-finite points (a diverged flow) are not an error: they are
left out of scatter plots and density estimates.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from ffjord import plotting
    >>> rng = np.random.default_rng(0)
    >>> grid = plotting.make_grid(-3, 3, -3, 3, gridlines=4, pts=100)
    >>> base = rng.normal(size=(1000, 2)) * 0.8
    >>> path = os.path.join(tempfile.mkdtemp(), "figures", "before.png")
    >>> plotting.plot_flow_panels(
    ...     path, grid=grid, base_samples=base,
    ...     transformed_grid=grid, transformed_samples=base, data=base, resolution=50,
    ... )
    >>> os.path.exists(path)
    True
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from PIL import Image

from ffjord._errors import InputError
from ffjord._io import atomic_write

__all__ = [
    "Limits",
    "animate_flow",
    "density_grid",
    "kde_2d",
    "make_grid",
    "plot_conditional",
    "plot_curves",
    "plot_density",
    "plot_flow_panels",
    "plot_histogram_1d",
    "plot_images",
]

Limits = tuple[float, float, float, float]
"""Plot limits ``(xmin, xmax, ymin, ymax)``."""

PathLike = str | os.PathLike[str]

_DEFAULT_LIMITS: Limits = (-3.0, 3.0, -3.0, 3.0)
_DPI = 100
_CMAP = "viridis"
_SAMPLE_COLOR = "#1f77b4"
_GRID_COLORS = ("#d62728", "#ff7f0e")  # horizontal lines, vertical lines
_KDE_CHUNK = 16384


# --------------------------------------------------------------------------- grids


def make_grid(
    xmin: float,
    xmax: float,
    ymin: float,
    ymax: float,
    gridlines: int = 4,
    pts: int = 100,
) -> np.ndarray:
    """Points on a grid of lines, in the order of TFP's FFJORD tutorial.

    Returns an array of shape ``(2 * gridlines * pts, 2)``: first ``gridlines``
    horizontal lines (``y`` fixed at ``linspace(ymin, ymax, gridlines)``), each of ``pts``
    points with ``x`` running from ``xmin`` to ``xmax``, stored one line after another;
    then ``gridlines`` vertical lines, stored as TFP stores them, *interleaved*: the
    second half is ``meshgrid(linspace(xmin, xmax, gridlines), linspace(ymin, ymax, pts))``
    raveled, so vertical line ``j`` is every ``gridlines``-th point starting at ``j``.
    The figure functions take this order into account when they draw the lines.

    Example:
        >>> g = make_grid(-3, 3, -3, 3, gridlines=4, pts=100)
        >>> g.shape
        (800, 2)
        >>> g[0].tolist(), g[99].tolist()
        ([-3.0, -3.0], [3.0, -3.0])
    """
    gridlines = _positive_int(gridlines, "gridlines", minimum=1)
    pts = _positive_int(pts, "pts", minimum=2)
    xmin, xmax, ymin, ymax = _check_limits((xmin, xmax, ymin, ymax))
    xpts = np.linspace(xmin, xmax, pts)
    ypts = np.linspace(ymin, ymax, pts)
    xgrid = np.linspace(xmin, xmax, gridlines)
    ygrid = np.linspace(ymin, ymax, gridlines)
    xlines = np.stack([a.ravel() for a in np.meshgrid(xpts, ygrid)])
    ylines = np.stack([a.ravel() for a in np.meshgrid(xgrid, ypts)])
    return np.concatenate([xlines, ylines], axis=1).T


def density_grid(limits: Limits, resolution: int = 100) -> tuple[np.ndarray, tuple[int, int]]:
    """Evaluation points for [`plot_density`][] and the shape to reshape values to.

    The grid has ``resolution`` cells per axis over ``limits = (xmin, xmax, ymin, ymax)``
    and the points are the cell centres. Returns ``(points, shape)`` with ``points`` of
    shape ``(resolution**2, 2)`` and ``shape == (resolution, resolution)``; after
    ``values.reshape(shape)``, entry ``[i, j]`` belongs to the point
    ``(x_j, y_i)``: row ``i`` is the ``y`` index (increasing ``y``), column ``j`` the
    ``x`` index. [`kde_2d`][] uses the same convention.

    Example:
        >>> points, shape = density_grid((-1.0, 1.0, 0.0, 2.0), resolution=2)
        >>> points.tolist(), shape
        ([[-0.5, 0.5], [0.5, 0.5], [-0.5, 1.5], [0.5, 1.5]], (2, 2))
    """
    xmin, xmax, ymin, ymax = _check_limits(limits)
    resolution = _positive_int(resolution, "resolution", minimum=1)
    xs = _cell_centres(xmin, xmax, resolution)
    ys = _cell_centres(ymin, ymax, resolution)
    xx, yy = np.meshgrid(xs, ys)  # xx[i, j] = xs[j], yy[i, j] = ys[i]
    return np.stack([xx.ravel(), yy.ravel()], axis=1), (resolution, resolution)


# --------------------------------------------------------------------------- KDE


def kde_2d(
    samples: np.ndarray,
    limits: Limits,
    resolution: int = 100,
    bandwidth: float | None = None,
) -> np.ndarray:
    """Gaussian kernel density estimate of 2-D samples on a square grid.

    Returns an array of shape ``(resolution, resolution)``: the density (per unit area)
    at the cell centres of [`density_grid`][]``(limits, resolution)``, row ``i`` = ``y``
    index. The kernel is a Gaussian with a diagonal covariance: standard deviation
    ``bandwidth`` on both axes when given, else Scott's rule per axis,
    ``std(samples[:, k]) * n ** (-1 / 6)``, floored at half a grid cell so that the map
    stays smooth when the samples collapse. Because that kernel factorises over the
    axes, the estimate is computed exactly (no binning; float32 arithmetic) as one matrix
    product, ``Gy @ Gx.T / n`` with ``Gx[j, m]`` the kernel of ``x_j - x_m``: 8192
    samples on a 100 x 100 grid take about 20 ms. Non-finite samples are ignored; with
    none left the result is all zeros.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> dens = kde_2d(rng.normal(size=(8192, 2)) * 0.5, (-3, 3, -3, 3), resolution=60)
        >>> dens.shape, round(float(dens.sum() * (6 / 60) ** 2), 3)
        ((60, 60), 1.0)
    """
    xmin, xmax, ymin, ymax = _check_limits(limits)
    resolution = _positive_int(resolution, "resolution", minimum=1)
    points = _points(samples, "samples", dim=2)
    points = points[np.isfinite(points).all(axis=1)]
    out = np.zeros((resolution, resolution))
    n = points.shape[0]
    if n == 0:
        return out
    cell = np.array([(xmax - xmin) / resolution, (ymax - ymin) / resolution])
    if bandwidth is None:
        std = points.std(axis=0, ddof=1) if n > 1 else np.zeros(2)
        sigma = np.maximum(std * n ** (-1.0 / 6.0), 0.5 * cell)
    else:
        bw = float(bandwidth)
        if not (math.isfinite(bw) and bw > 0):
            raise InputError(f"bandwidth must be a positive number, got {bandwidth!r}")
        sigma = np.array([bw, bw])
    # Work in float32 on standardised offsets (a relative error ~1e-6 is invisible in a
    # plot, and halves the time); accumulate the chunks in float64.
    xs = (_cell_centres(xmin, xmax, resolution) / sigma[0]).astype(np.float32)
    ys = (_cell_centres(ymin, ymax, resolution) / sigma[1]).astype(np.float32)
    scaled = (points / sigma).astype(np.float32)
    for start in range(0, n, _KDE_CHUNK):
        chunk = scaled[start : start + _KDE_CHUNK]
        gx = _unit_gauss(xs[:, None] - chunk[None, :, 0])
        gy = _unit_gauss(ys[:, None] - chunk[None, :, 1])
        out += gy @ gx.T
    return out / (n * 2.0 * math.pi * float(sigma[0]) * float(sigma[1]))


def _unit_gauss(d: np.ndarray) -> np.ndarray:
    d *= d
    d *= np.float32(-0.5)
    return np.exp(d, out=d)


# --------------------------------------------------------------------------- figures


def plot_flow_panels(
    path: PathLike,
    *,
    grid: np.ndarray,
    base_samples: np.ndarray,
    transformed_grid: np.ndarray,
    transformed_samples: np.ndarray,
    data: np.ndarray,
    limits: Limits = _DEFAULT_LIMITS,
    title: str | None = None,
    pts: int = 100,
    resolution: int = 150,
) -> None:
    """The tutorial's row of four panels, written to ``path`` (PNG, PDF, SVG, ...).

    (a) the grid of lines and the base samples; (b) the transformed grid and the
    transformed samples; (c) a KDE of the transformed samples; (d) a KDE of the data.
    All panels share the fixed ``limits`` so that figures before and after training are
    comparable. ``grid`` and ``transformed_grid`` are in [`make_grid`][]'s order and made
    of lines of ``pts`` points each (the number of lines is inferred); ``resolution`` is
    the KDE grid size.

    Example:
        >>> import os, tempfile
        >>> rng = np.random.default_rng(0)
        >>> grid = make_grid(-3, 3, -3, 3)
        >>> z = rng.normal(size=(1000, 2)) * 0.8
        >>> path = os.path.join(tempfile.mkdtemp(), "after.png")
        >>> plot_flow_panels(path, grid=grid, base_samples=z,
        ...                  transformed_grid=grid * 1.2, transformed_samples=z * 1.2,
        ...                  data=z, resolution=50)
        >>> os.path.exists(path)
        True
    """
    lims = _check_limits(limits)
    fmt = _figure_format(path)
    pts = _positive_int(pts, "pts", minimum=2)
    grid_lines = _grid_polylines(_points(grid, "grid", dim=2), pts, "grid")
    moved_lines = _grid_polylines(
        _points(transformed_grid, "transformed_grid", dim=2), pts, "transformed_grid"
    )
    if moved_lines.shape != grid_lines.shape:
        raise InputError(
            f"transformed_grid must have the shape of grid {_shape(grid)}, "
            f"got {_shape(transformed_grid)}"
        )
    base = _points(base_samples, "base_samples", dim=2)
    moved = _points(transformed_samples, "transformed_samples", dim=2)
    target = _points(data, "data", dim=2)
    resolution = _positive_int(resolution, "resolution", minimum=2)
    model_kde = kde_2d(moved, lims, resolution)
    data_kde = kde_2d(target, lims, resolution)

    fig = _new_figure((16.0, 4.4))
    axes = fig.subplots(1, 4)
    titles = ("Base samples + grid", "Transformed samples + grid")
    for ax, lines, samples, panel_title in zip(
        axes[:2], (grid_lines, moved_lines), (base, moved), titles, strict=True
    ):
        _scatter(ax, samples, size=1.0, alpha=0.3)
        _draw_grid_lines(ax, lines)
        _style_axes(ax, lims, panel_title)
    for ax, dens, panel_title in zip(
        axes[2:], (model_kde, data_kde), ("Model samples (KDE)", "Data (KDE)"), strict=True
    ):
        _show_map(ax, dens, lims)
        _style_axes(ax, lims, panel_title)
    if title:
        fig.suptitle(title)
    _save_figure(fig, path, fmt)


def animate_flow(
    path: PathLike,
    frames: Sequence[np.ndarray],
    *,
    data: np.ndarray,
    limits: Limits = _DEFAULT_LIMITS,
    labels: Sequence[str] | None = None,
    fps: int = 5,
    resolution: int = 150,
) -> None:
    """A GIF with one frame per snapshot: the transformed samples beside the data's KDE.

    Each element of ``frames`` is an array of points of shape ``(n, 2)`` (``n`` may vary
    between frames). The left panel shows the frame's samples over a faint copy of the
    data's KDE, the right panel the data's KDE; each frame carries its label, by default
    ``"epoch {i}"`` (frame 0 being the snapshot before training). The static parts are
    drawn once and each frame only redraws its points and label (blitting), so 41 frames
    of 8192 points take a couple of seconds. ``path`` must end in ``.gif``.

    Example:
        >>> import os, tempfile
        >>> rng = np.random.default_rng(0)
        >>> snaps = [rng.normal(size=(500, 2)) * (1 + 0.1 * e) for e in range(3)]
        >>> path = os.path.join(tempfile.mkdtemp(), "flow.gif")
        >>> animate_flow(path, snaps, data=snaps[-1], resolution=50)
        >>> os.path.exists(path)
        True
    """
    lims = _check_limits(limits)
    if Path(path).suffix.lower() != ".gif":
        raise InputError(f"animation path must end in .gif, got {os.fspath(path)!r}")
    if len(frames) == 0:
        raise InputError("frames must hold at least one array of points, got none")
    clouds = [_points(f, f"frames[{i}]", dim=2) for i, f in enumerate(frames)]
    if labels is None:
        texts = [f"epoch {i}" for i in range(len(clouds))]
    else:
        texts = [str(label) for label in labels]
        if len(texts) != len(clouds):
            raise InputError(
                f"labels must have one entry per frame ({len(clouds)}), got {len(texts)}"
            )
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 100:
        raise InputError(f"fps must be a number in (0, 100], got {fps!r}")
    target = _points(data, "data", dim=2)
    resolution = _positive_int(resolution, "resolution", minimum=2)
    data_kde = kde_2d(target, lims, resolution)

    fig = _new_figure((8.0, 4.2), layout=None)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    ax_model, ax_data = fig.subplots(1, 2)
    # Few-level colour maps keep every frame within the GIF's 256-colour palette.
    _show_map(ax_model, data_kde, lims, cmap=colormaps["Greys"].resampled(32), alpha=0.35)
    _style_axes(ax_model, lims, "Model samples")
    _show_map(ax_data, data_kde, lims, cmap=colormaps[_CMAP].resampled(96))
    _style_axes(ax_data, lims, "Data (KDE)")
    scatter = ax_model.scatter(
        np.zeros(0),
        np.zeros(0),
        s=1.0,
        c=_SAMPLE_COLOR,
        alpha=0.35,
        linewidths=0,
        animated=True,
    )
    label = ax_model.text(
        0.03,
        0.97,
        "",
        transform=ax_model.transAxes,
        ha="left",
        va="top",
        fontsize=11,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
        animated=True,
    )
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)

    images: list[Image.Image] = []
    palette: Image.Image | None = None
    for cloud, text in zip(clouds, texts, strict=True):
        canvas.restore_region(background)
        scatter.set_offsets(cloud[np.isfinite(cloud).all(axis=1)])
        label.set_text(text)
        ax_model.draw_artist(scatter)
        ax_model.draw_artist(label)
        rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
        if palette is None:
            palette = rgb.quantize(colors=255, method=Image.Quantize.MEDIANCUT)
            images.append(palette)
        else:
            images.append(rgb.quantize(palette=palette, dither=Image.Dither.NONE))

    duration = max(int(round(1000.0 / fps)), 20)
    durations = [duration] * len(images)
    durations[-1] = max(duration, 1500)  # pause on the final frame before looping

    def write(f: IO[bytes]) -> None:
        images[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=0,
            optimize=False,
        )

    atomic_write(path, write)


def plot_density(
    path: PathLike,
    log_prob: np.ndarray,
    *,
    limits: Limits,
    title: str | None = None,
    data: np.ndarray | None = None,
) -> None:
    """Heat map of ``exp(log_prob)`` over ``limits``, with a colorbar labelled "density".

    ``log_prob`` has shape ``(res, res)`` (or ``(res * res,)``) in the convention of
    [`density_grid`][]: row ``i`` is the ``y`` index (increasing ``y``), column ``j`` the
    ``x`` index, values at the cell centres. ``-inf`` draws as zero density, NaN as a
    blank cell. ``data`` (``(n, 2)`` points), if given, is overlaid as tiny dots.

    Example:
        >>> import os, tempfile
        >>> points, shape = density_grid((-3, 3, -3, 3), 100)
        >>> log_p = -0.5 * (points**2).sum(axis=1) - np.log(2 * np.pi)
        >>> path = os.path.join(tempfile.mkdtemp(), "density.png")
        >>> plot_density(path, log_p.reshape(shape), limits=(-3, 3, -3, 3),
        ...              title="Standard normal")
        >>> os.path.exists(path)
        True
    """
    lims = _check_limits(limits)
    fmt = _figure_format(path)
    values = np.asarray(log_prob, dtype=np.float64)
    if values.ndim == 1 and values.size > 0:
        side = math.isqrt(values.size)
        if side * side != values.size:
            raise InputError(
                f"log_prob must have shape (res, res) or (res*res,), got {values.shape}"
            )
        values = values.reshape(side, side)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] < 2:
        raise InputError(f"log_prob must have shape (res, res) with res >= 2, got {values.shape}")
    overlay = None if data is None else _points(data, "data", dim=2)
    with np.errstate(over="ignore"):
        dens = np.exp(values)
    dens = np.ma.masked_invalid(dens)

    fig = _new_figure((6.0, 5.0))
    ax = fig.subplots()
    image = _show_map(ax, dens, lims)
    if overlay is not None:
        _scatter(ax, overlay, size=0.2, alpha=0.35, color="white")
    _style_axes(ax, lims, title)
    fig.colorbar(image, ax=ax, label="density", shrink=0.9)
    _save_figure(fig, path, fmt)


def plot_curves(
    path: PathLike,
    metrics: Sequence[Mapping[str, Any]],
    *,
    reference: float | None = None,
    title: str | None = None,
    train_loss_label: str | None = None,
    best_epoch: int | None = None,
) -> None:
    """Training loss, held-out NLL and validation NLL (nats) against epoch.

    ``metrics`` holds one mapping per epoch with keys ``"epoch"``, ``"train_loss"``,
    ``"test_nll"`` and optionally ``"validation_nll"`` (the records of ``metrics.jsonl``);
    a missing, ``None`` or non-finite value is skipped (e.g. epoch 0, before training,
    has no training loss). With ``reference``, a dashed horizontal line labelled "true
    entropy" marks the lowest reachable expected NLL. A training loss that is not a
    negative log-likelihood (e.g. flow matching's regression loss) goes on its own
    right-hand axis, labelled ``train_loss_label``. ``best_epoch`` marks the epoch whose
    parameters early stopping kept.

    Example:
        >>> import os, tempfile
        >>> rows = [{"epoch": 0, "test_nll": 2.6},
        ...         {"epoch": 1, "train_loss": 1.9, "test_nll": 1.5}]
        >>> path = os.path.join(tempfile.mkdtemp(), "loss.png")
        >>> plot_curves(path, rows, reference=0.478)
        >>> os.path.exists(path)
        True
    """
    fmt = _figure_format(path)
    if len(metrics) == 0:
        raise InputError("metrics must hold at least one record, got none")
    series: dict[str, tuple[list[float], list[float]]] = {
        "train_loss": ([], []),
        "test_nll": ([], []),
        "validation_nll": ([], []),
    }
    for i, row in enumerate(metrics):
        if not isinstance(row, Mapping):
            raise InputError(f"metrics[{i}] must be a mapping, got {type(row).__name__}")
        epoch = _finite_or_none(row.get("epoch"), f"metrics[{i}]['epoch']")
        if epoch is None:
            raise InputError(f"metrics[{i}] needs a numeric 'epoch', got {row.get('epoch')!r}")
        for key, (xs, ys) in series.items():
            value = _finite_or_none(row.get(key), f"metrics[{i}][{key!r}]")
            if value is not None:
                xs.append(epoch)
                ys.append(value)
    if not any(ys for _, ys in series.values()):
        raise InputError("metrics hold no finite 'train_loss' or 'test_nll' value to plot")
    ref = None if reference is None else _finite_or_none(reference, "reference")

    fig = _new_figure((7.0, 4.5))
    ax = fig.subplots()
    styles = {
        "train_loss": ("train loss", "o", "C0"),
        "test_nll": ("held-out NLL", "s", "C1"),
        "validation_nll": ("validation NLL", "^", "C2"),
    }
    lines = []
    for key, (xs, ys) in series.items():
        if not ys:
            continue
        name, marker, color = styles[key]
        target = ax
        if key == "train_loss" and train_loss_label is not None:
            target = ax.twinx()
            target.set_ylabel(train_loss_label, color=color)
            name = train_loss_label
        lines += target.plot(
            xs, ys, marker=marker, markersize=3, linewidth=1.5, color=color, label=name
        )
    if ref is not None:
        lines.append(
            ax.axhline(ref, linestyle="--", color="0.3", linewidth=1.2, label="true entropy")
        )
    if best_epoch is not None:
        lines.append(
            ax.axvline(best_epoch, linestyle=":", color="C2", linewidth=1.2, label="best epoch")
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood (nats)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=lines)
    if title:
        ax.set_title(title)
    _save_figure(fig, path, fmt)


def plot_histogram_1d(
    path: PathLike,
    data: np.ndarray,
    model_samples: np.ndarray,
    *,
    log_prob_grid: tuple[np.ndarray, np.ndarray] | None = None,
    title: str | None = None,
    bins: int = 60,
) -> None:
    """Histograms of 1-D data and model samples, optionally with the model's density.

    ``data`` and ``model_samples`` have shape ``(n,)`` or ``(n, 1)``; both histograms are
    normalised to densities over shared bins. ``log_prob_grid = (xs, log_p)`` (two arrays
    of the same length) adds the line ``exp(log_p)`` against ``xs``.

    Example:
        >>> import os, tempfile
        >>> rng = np.random.default_rng(0)
        >>> xs = np.linspace(-4, 4, 200)
        >>> path = os.path.join(tempfile.mkdtemp(), "hist.png")
        >>> plot_histogram_1d(path, rng.normal(size=1000), rng.normal(size=1000),
        ...                   log_prob_grid=(xs, -0.5 * xs**2 - 0.919))
        >>> os.path.exists(path)
        True
    """
    fmt = _figure_format(path)
    x_data = _values_1d(data, "data")
    x_model = _values_1d(model_samples, "model_samples")
    bins = _positive_int(bins, "bins", minimum=1)
    line: tuple[np.ndarray, np.ndarray] | None = None
    if log_prob_grid is not None:
        if not isinstance(log_prob_grid, tuple | list) or len(log_prob_grid) != 2:
            raise InputError("log_prob_grid must be a pair (xs, log_prob) of 1-D arrays")
        xs = np.asarray(log_prob_grid[0], dtype=np.float64)
        lp = np.asarray(log_prob_grid[1], dtype=np.float64)
        if xs.ndim != 1 or xs.shape != lp.shape:
            raise InputError(
                "log_prob_grid must be a pair (xs, log_prob) of 1-D arrays of the same "
                f"length, got shapes {xs.shape} and {lp.shape}"
            )
        order = np.argsort(xs)
        with np.errstate(over="ignore"):
            line = (xs[order], np.exp(lp[order]))
    both = np.concatenate([x_data, x_model])
    both = both[np.isfinite(both)]
    if both.size == 0:
        raise InputError("data and model_samples hold no finite value to plot")
    lo, hi = np.percentile(both, [0.1, 99.9]) if both.size > 20 else (both.min(), both.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    fig = _new_figure((7.0, 4.5))
    ax = fig.subplots()
    ax.hist(
        x_data[np.isfinite(x_data)], bins=edges, density=True, alpha=0.45, color="C0", label="data"
    )
    ax.hist(
        x_model[np.isfinite(x_model)],
        bins=edges,
        density=True,
        histtype="step",
        linewidth=1.5,
        color="C1",
        label="model samples",
    )
    if line is not None:
        ax.plot(line[0], line[1], color="k", linewidth=1.2, label="model density")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend()
    if title:
        ax.set_title(title)
    _save_figure(fig, path, fmt)


def plot_conditional(
    path: PathLike,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    limits: Limits,
    reference_label: str = "data",
    axis_names: tuple[str, str] = ("x1", "x2"),
    title: str | None = None,
) -> None:
    """Model samples beside reference points at a few conditions: one column per
    condition, the reference above and the model below, on the same fixed ``limits``.

    ``panels`` holds ``(condition label, reference points (n, 2), model samples (m, 2))``.

    Example:
        >>> import os, tempfile
        >>> rng = np.random.default_rng(0)
        >>> panels = [("x = 1", rng.normal(size=(500, 2)), rng.normal(size=(500, 2)))]
        >>> path = os.path.join(tempfile.mkdtemp(), "conditional.png")
        >>> plot_conditional(path, panels, limits=(-3, 3, -3, 3))
        >>> os.path.exists(path)
        True
    """
    lims = _check_limits(limits)
    fmt = _figure_format(path)
    if not panels:
        raise InputError("plot_conditional needs at least one condition")
    columns = [
        (str(label), _points(ref, "reference", dim=2), _points(model, "model samples", dim=2))
        for label, ref, model in panels
    ]
    fig = _new_figure((3.4 * len(columns), 7.2))
    axes = np.asarray(fig.subplots(2, len(columns))).reshape(2, len(columns))
    for (label, ref, model), top, bottom in zip(columns, axes[0], axes[1], strict=True):
        _scatter(top, ref, size=2.0, alpha=0.35, color="black")
        _style_axes(top, lims, f"{label}\n{reference_label}", axis_names)
        _scatter(bottom, model, size=2.0, alpha=0.35)
        _style_axes(bottom, lims, f"{label}\nmodel samples", axis_names)
    if title:
        fig.suptitle(title)
    _save_figure(fig, path, fmt)


def plot_images(
    path: PathLike,
    rows: Sequence[tuple[str, np.ndarray]],
    *,
    shape: tuple[int, int],
    value_range: tuple[float, float] = (0.0, 1.0),
    title: str | None = None,
) -> None:
    """Points drawn as small grey images: one block per row of ``rows``, each
    ``(label, points (n, h * w))`` with ``shape = (h, w)``, all on the same fixed
    ``value_range`` (values beyond it are clipped), so data and model samples compare at
    a glance.

    Example:
        >>> import os, tempfile
        >>> rng = np.random.default_rng(0)
        >>> rows = [("data", rng.random((16, 64))), ("model samples", rng.random((16, 64)))]
        >>> path = os.path.join(tempfile.mkdtemp(), "digits.png")
        >>> plot_images(path, rows, shape=(8, 8))
        >>> os.path.exists(path)
        True
    """
    fmt = _figure_format(path)
    h, w = shape
    if not rows:
        raise InputError("plot_images needs at least one row")
    low, high = float(value_range[0]), float(value_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"value_range must be two finite numbers, low < high, got {value_range}")
    blocks = []
    for label, points in rows:
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != h * w or arr.shape[0] == 0:
            raise InputError(
                f"plot_images: {label!r} must have shape (n, {h * w}) with n >= 1, got {arr.shape}"
            )
        blocks.append((str(label), np.nan_to_num(arr, nan=low).reshape(-1, h, w)))
    per_row = max(len(images) for _, images in blocks)
    columns = min(per_row, 16)
    lines = [math.ceil(len(images) / columns) for _, images in blocks]
    fig = _new_figure((0.6 * columns + 0.4, 0.6 * sum(lines) + 0.5 * len(blocks) + 0.4))
    grid = fig.add_gridspec(len(blocks), 1, height_ratios=lines)
    for i_block, ((label, images), n_lines) in enumerate(zip(blocks, lines, strict=True)):
        spec = grid[i_block, 0]
        axes = spec.subgridspec(n_lines, columns, wspace=0.05, hspace=0.05).subplots(squeeze=False)
        for i, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if i < len(images):
                ax.imshow(images[i], cmap="gray_r", vmin=low, vmax=high, interpolation="nearest")
        axes[0, 0].set_title(label, loc="left", fontsize=10)
    if title:
        fig.suptitle(title)
    _save_figure(fig, path, fmt)


# --------------------------------------------------------------------------- drawing helpers


def _new_figure(
    size: tuple[float, float], layout: Literal["constrained"] | None = "constrained"
) -> Figure:
    fig = Figure(figsize=size, dpi=_DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _style_axes(
    ax: Axes, limits: Limits, title: str | None, names: tuple[str, str] = ("x1", "x2")
) -> None:
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    if title:
        ax.set_title(title)


def _scatter(
    ax: Axes, points: np.ndarray, *, size: float, alpha: float, color: str = _SAMPLE_COLOR
) -> None:
    finite = points[np.isfinite(points).all(axis=1)]
    ax.scatter(
        finite[:, 0], finite[:, 1], s=size, c=color, alpha=alpha, linewidths=0, rasterized=True
    )


def _draw_grid_lines(ax: Axes, lines: np.ndarray) -> None:
    half = lines.shape[0] // 2
    colors = [_GRID_COLORS[0]] * half + [_GRID_COLORS[1]] * half
    # Above the spines (zorder 2.5), so that lines on the plot's edge stay visible.
    ax.add_collection(
        LineCollection(list(lines), colors=colors, linewidths=1.2, alpha=0.9, zorder=3)
    )


def _show_map(
    ax: Axes,
    values: np.ndarray,
    limits: Limits,
    *,
    cmap: str | Colormap = _CMAP,
    alpha: float = 1.0,
) -> Any:
    return ax.imshow(
        values,
        origin="lower",
        extent=limits,
        cmap=cmap,
        alpha=alpha,
        interpolation="bilinear",
        aspect="equal",
    )


def _grid_polylines(grid: np.ndarray, pts: int, name: str) -> np.ndarray:
    """Split a [`make_grid`][]-ordered array into ``(2 * gridlines, pts, 2)`` polylines."""
    n = grid.shape[0]
    if n == 0 or n % (2 * pts) != 0:
        raise InputError(
            f"{name} must hold 2 * gridlines * pts points (pts={pts}), got {n}; "
            "pass pts= to match make_grid"
        )
    gridlines = n // (2 * pts)
    horizontal = grid[: n // 2].reshape(gridlines, pts, 2)
    vertical = grid[n // 2 :].reshape(pts, gridlines, 2).transpose(1, 0, 2)
    return np.concatenate([horizontal, vertical], axis=0)


# --------------------------------------------------------------------------- files


def _figure_format(path: PathLike) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if suffix not in supported:
        raise InputError(
            f"cannot tell the figure format from {os.fspath(path)!r}: use one of "
            + ", ".join(f".{s}" for s in sorted(supported))
        )
    return suffix


def _save_figure(fig: Figure, path: PathLike, fmt: str) -> None:
    def write(f: IO[bytes]) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=_DPI)
        f.write(buffer.getbuffer())

    atomic_write(path, write)


# --------------------------------------------------------------------------- validation


def _shape(a: np.ndarray) -> tuple[int, ...]:
    return tuple(np.shape(a))


def _points(a: object, name: str, *, dim: int) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a numeric array of shape (n, {dim}): {err}") from None
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"{name} must have shape (n, {dim}), got {arr.shape}")
    return arr


def _values_1d(a: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a numeric array of shape (n,): {err}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must have shape (n,) or (n, 1) with n >= 1, got {arr.shape}")
    return arr


def _check_limits(limits: Sequence[float]) -> Limits:
    try:
        vals = tuple(float(v) for v in limits)
    except (TypeError, ValueError):
        raise InputError(
            f"limits must be four numbers (xmin, xmax, ymin, ymax), got {limits!r}"
        ) from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"limits must be four finite numbers (xmin, xmax, ymin, ymax), got {vals}")
    xmin, xmax, ymin, ymax = vals
    if not (xmin < xmax and ymin < ymax):
        raise InputError(f"limits must satisfy xmin < xmax and ymin < ymax, got {vals}")
    return (xmin, xmax, ymin, ymax)


def _positive_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite_or_none(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InputError(f"{name} must be a number or None, got {value!r}")
    v = float(value)
    return v if math.isfinite(v) else None


def _cell_centres(lo: float, hi: float, n: int) -> np.ndarray:
    return lo + (np.arange(n) + 0.5) * ((hi - lo) / n)
