"""A posterior at a glance: `pairplot(samples)`, 1-D marginals on the diagonal and 2-D
highest-density regions (50% and 90%) below it, with the true parameter or a reference
sample overlaid; readable from 2 to 10 parameters.

Example:
    >>> import numpy as np
    >>> samples = np.random.default_rng(0).normal(size=(2000, 3))
    >>> fig = pairplot(samples, truth=[0.0, 0.5, -0.5], labels=["a", "b", "c"])
    >>> len(fig.axes), fig.axes[0].get_title()
    (9, 'a')
"""

import numpy as np

from .._errors import InputError

MASSES = (0.9, 0.5)  # the 2-D regions drawn: outermost first
BINS = 40


def _limits(columns: list[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([c[np.isfinite(c)] for c in columns])
    low, high = np.quantile(values, [0.002, 0.998])
    pad = 0.08 * (high - low) if high > low else 0.5
    return float(low - pad), float(high + pad)


def _density_levels(hist: np.ndarray, masses) -> list[float]:
    """Histogram heights that enclose each of `masses` of the total (highest first)."""
    heights = np.sort(hist.ravel())[::-1]
    cumulative = np.cumsum(heights) / heights.sum()
    return [float(heights[min(np.searchsorted(cumulative, m), len(heights) - 1)]) for m in masses]


def _regions(ax, x, y, limits_x, limits_y, color: str, filled: bool) -> None:
    hist, ex, ey = np.histogram2d(x, y, bins=BINS, range=[limits_x, limits_y])
    hist = hist.T
    if hist.sum() == 0:
        return
    # a light smoothing by neighbours, so that the region boundaries are readable
    padded = np.pad(hist, 1)
    rows, cols = hist.shape
    hist = np.zeros_like(hist)
    for i in range(3):
        for j in range(3):
            hist += padded[i : i + rows, j : j + cols]
    levels = sorted(set(_density_levels(hist, MASSES)))
    if len(levels) < 2 or levels[0] <= 0:
        ax.plot(x[:500], y[:500], ".", color=color, ms=1.5, alpha=0.5)
        return
    centres = (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2
    if filled:
        ax.contourf(*centres, hist, levels=[*levels, hist.max() + 1], cmap=_shades(color))
    else:
        ax.contour(*centres, hist, levels=levels, colors=[color], linewidths=1.0)


def _shades(color: str):
    from matplotlib.colors import ListedColormap, to_rgba

    r, g, b, _ = to_rgba(color)
    return ListedColormap([(r, g, b, 0.35), (r, g, b, 0.75)])


def pairplot(samples, truth=None, reference=None, labels=None, *, title: str | None = None):
    """A matplotlib Figure of `samples` (n, p): histograms of each parameter on the
    diagonal, 50% and 90% highest-density regions of each pair below it; `truth` (p,)
    as lines and markers, `reference` (r, p) (e.g. exact posterior draws) in outline.

    Example:
        >>> draws = np.random.default_rng(1).normal(size=(500, 2))
        >>> fig = pairplot(draws, reference=draws[:200] + 0.1, title="two parameters")
        >>> fig.axes[2].get_xlabel(), fig._suptitle.get_text()
        ('theta[0]', 'two parameters')
    """
    import matplotlib.pyplot as plt

    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise InputError(f"samples must have shape (n, p), got {samples.shape}")
    n, p = samples.shape
    if p > 10:
        raise InputError(f"a pairplot shows 2 to 10 parameters at a time, got {p}; pass a "
                         "selection of columns")  # fmt: skip
    truth = None if truth is None else np.asarray(truth, dtype=float).reshape(-1)
    if truth is not None and truth.shape != (p,):
        raise InputError(f"truth must have {p} values, got {truth.shape[0]}")
    reference = None if reference is None else np.asarray(reference, dtype=float)
    if reference is not None and (reference.ndim != 2 or reference.shape[1] != p):
        raise InputError(f"reference must have shape (r, {p}), got {reference.shape}")
    labels = [f"theta[{j}]" for j in range(p)] if labels is None else list(labels)
    if len(labels) != p:
        raise InputError(f"labels must name {p} parameters, got {len(labels)}")
    limits = []
    for j in range(p):
        columns = [samples[:, j]]
        columns += [] if reference is None else [reference[:, j]]
        columns += [] if truth is None else [truth[j : j + 1]]
        limits.append(_limits(columns))
    size = max(2.0, min(2.6, 14.0 / p))
    fig, axes = plt.subplots(p, p, figsize=(size * p, size * p), squeeze=False)
    for i in range(p):
        for j in range(p):
            ax = axes[i][j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                bins = np.linspace(limits[j][0], limits[j][1], BINS + 1)
                ax.hist(samples[:, j], bins=bins, density=True, color="C0", alpha=0.6)
                if reference is not None:
                    ax.hist(reference[:, j], bins=bins, density=True, histtype="step",
                            color="k", linewidth=1.0)  # fmt: skip
                if truth is not None:
                    ax.axvline(truth[j], color="C3", linewidth=1.2)
                ax.set_yticks([])
                ax.set_title(labels[j], fontsize=9)
            else:
                _regions(ax, samples[:, j], samples[:, i], limits[j], limits[i], "C0", True)
                if reference is not None:
                    _regions(ax, reference[:, j], reference[:, i], limits[j], limits[i], "k",
                             False)  # fmt: skip
                if truth is not None:
                    ax.plot(truth[j], truth[i], "+", color="C3", ms=9, mew=1.6)
                ax.set_ylim(limits[i])
            ax.set_xlim(limits[j])
            ax.tick_params(labelsize=7)
            if i == p - 1:
                ax.set_xlabel(labels[j], fontsize=9)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=9)
            elif j > 0 or i == 0:
                ax.set_yticklabels([])
    legend = [f"posterior ({n} draws; 50% / 90% regions)"]
    legend += [] if reference is None else ["reference (outline)"]
    legend += [] if truth is None else ["true parameter (red)"]
    fig.suptitle(title or ", ".join(legend), fontsize=10)
    fig.tight_layout()
    return fig
