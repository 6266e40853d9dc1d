"""One figure of log-log panels side by side, shared by the benchmarks that plot a cost
against a size (trace_cost.py, adjoint_memory.py)."""

from pathlib import Path


def plot_log_panels(path: Path, xs: list, panels: list[dict], *, xlabel: str, title: str = ""):
    """`panels`: one dict per panel, ``{"series": {label: ys}, "ylabel": ..., "title": ...,
    "ylim": (low, high) or None, "ylog": True}``; x on a base-2 log axis with a tick at
    every x, y on a log axis unless ``ylog`` is False."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, panel in zip(fig.subplots(1, len(panels)), panels, strict=True):
        for (label, ys), marker in zip(panel["series"].items(), "osD^v", strict=False):
            ax.plot(xs, ys, marker=marker, label=label)
        ax.set_xscale("log", base=2)
        if panel.get("ylog", True):
            ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel["ylabel"])
        if panel.get("title"):
            ax.set_title(panel["title"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
