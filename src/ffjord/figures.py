"""Figures of a model and of a run directory: what `ffjord train` and `ffjord plot` draw,
from Python. `ffjord.plotting` draws plain arrays; this module chooses what to show.

"""

import os
from pathlib import Path
from typing import cast

import jax
import numpy as np

from . import datasets, simulators
from ._distributions import TransformedDistribution
from ._keys import as_typed_key
from ._run import SNAPSHOT_SAMPLES, base_grid, base_samples, open_run
from ._sampling import sample_within
from ._source import DataSource
from ._trainer import transform

__all__ = ["conditional_panels", "plot_run", "posterior_panels"]

IMAGES_SHOWN = 32  # digits: model samples beside as many training images
CONDITIONS_SHOWN = 4  # conditional runs: columns of the conditional figure
SAMPLES_SHOWN = 2000  # model samples per condition


Panel = tuple[str, np.ndarray, np.ndarray]  # (condition label, reference, model samples)


def conditional_panels(
    dist: TransformedDistribution,
    key,
    points: np.ndarray,
    context: np.ndarray,
    *,
    shown: int = CONDITIONS_SHOWN,
    samples: int = SAMPLES_SHOWN,
) -> tuple[list[Panel], str]:
    """(panels for `ffjord.plotting.plot_conditional`, what their reference is): model
    samples at `shown` conditions spread along the first condition column (its
    quantiles), each beside the training points whose standardised conditions are
    nearest (the 2% nearest, at least 200).

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, ffjord
        >>> field = ffjord.MLPField(2, 8, 3, context_dim=1, key=jax.random.key(0))
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> rng = np.random.default_rng(0)
        >>> points, context = rng.normal(size=(400, 2)), rng.normal(size=(400, 1))
        >>> panels, label = conditional_panels(dist, jax.random.key(1), points, context, samples=50)
        >>> condition, reference, samples = panels[0]
        >>> len(panels), samples.shape, label
        (4, (50, 2), '200 training points, nearest conditions')
    """
    scale = context.std(axis=0)
    unit = (context - context.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    order = np.argsort(unit[:, 0], kind="stable")
    picks = order[((np.arange(shown) + 0.5) / shown * len(order)).astype(int)]
    near = max(200, len(points) // 50)
    references = []
    for c in unit[picks]:
        distance = np.sum((unit - c) ** 2, axis=1)
        references.append(points[np.argsort(distance, kind="stable")[:near]])
    label = f"{near} training points, nearest conditions"
    return _panels(dist, key, context[picks], references, samples), label


def posterior_panels(
    dist: TransformedDistribution, key, conditions: np.ndarray, references: list[np.ndarray]
) -> list[Panel]:
    """Panels of model samples at `conditions`, each beside its reference sample (e.g. an
    exact posterior's), as many model samples as the reference has.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, ffjord
        >>> field = ffjord.MLPField(2, 8, 3, context_dim=2, key=jax.random.key(0))
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> exact = [np.zeros((100, 2)), np.ones((100, 2))]
        >>> panels = posterior_panels(dist, jax.random.key(0), np.eye(2), exact)
        >>> condition, reference, samples = panels[1]
        >>> condition, samples.shape
        ('condition (0, 1)', (100, 2))
    """
    return _panels(dist, key, conditions, references, len(references[0]))


def _panels(dist, key, conditions, references, samples: int) -> list[Panel]:
    dtype = np.asarray(dist.base.loc).dtype
    draws = sample_within(dist, key, samples, context=np.asarray(conditions, dtype))
    return [
        ("condition (" + ", ".join(f"{v:.3g}" for v in condition) + ")", ref, model)
        for condition, ref, model in zip(conditions, references, draws, strict=True)
    ]


def plot_run(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw every figure of a run directory made by `ffjord train` into `RUN/figures`:
    the learning curves; for 2-D data the flow before and after training, its animation
    and the density; a 1-D histogram; digits as images; for conditional 2-D data model
    samples at a few conditions. Returns the paths written.

    Example:
        >>> import os, tempfile
        >>> from ffjord import cli
        >>> run = os.path.join(tempfile.mkdtemp(), "run")
        >>> cli.main(["train", "--out", run, "--epochs", "1", "--blocks", "1", "--hidden", "4",
        ...           "--quiet", "--no-figures"])  # doctest: +ELLIPSIS
        {"run": ...}
        0
        >>> sorted(p.name for p in plot_run(run))
        ['after.png', 'animation.gif', 'before.png', 'curves.png', 'density.png']
    """
    from . import plotting  # matplotlib: paid only by those who draw

    run, cfg, trainer, state = open_run(run_dir)
    source = DataSource.from_config(cfg["data"])
    rows, _ = source.load()
    train, train_context = source.split(rows.astype(np.asarray(trainer.dist.base.loc).dtype))
    figures = run.figures
    figures.mkdir(exist_ok=True)
    written: list[Path] = []

    def wrote(name: str) -> Path:
        written.append(figures / name)
        return figures / name

    history = run.read_metrics(int(state.epoch))
    if history:
        flow_matching = cfg["objective"]["name"] == "flow-matching"
        plotting.plot_curves(
            wrote("curves.png"),
            history,
            reference=datasets.toy_entropy(source.name, method="quadrature")
            if source.name in datasets.TOY_DATASETS
            else None,
            train_loss_label="flow-matching loss (mean squared error)" if flow_matching else None,
            best_epoch=int(state.best_epoch) or None,
        )
    model, shown = trainer.kept_model(state), state.kept_epoch
    limits = None if source.limits is None else cast(plotting.Limits, tuple(source.limits))
    key = jax.random.fold_in(as_typed_key(state.key), 2)
    if train_context is not None:
        if source.dim == 2 and limits is not None:
            if source.name in simulators.CONDITIONAL_DATASETS:
                conditions = np.asarray(simulators.SHOWN_OBSERVATIONS)
                exact = [simulators.posterior_sample(c, SAMPLES_SHOWN, seed=0) for c in conditions]
                panels, label = posterior_panels(model, key, conditions, exact), "exact posterior"
            else:
                panels, label = conditional_panels(model, key, train, train_context)
            plotting.plot_conditional(
                wrote("conditional.png"),
                panels,
                limits=limits,
                reference_label=label,
                axis_names=("theta1", "theta2") if label == "exact posterior" else ("x1", "x2"),
                title=f"{Path(source.name).name}: samples given a condition, epoch {shown}",
            )
        return written
    if source.name in datasets.REAL_DATASETS:  # digits: 8x8 images
        samples = transform(model.bijector, base_samples(model, state, IMAGES_SHOWN))
        plotting.plot_images(
            wrote("samples.png"),
            [("training data", train[:IMAGES_SHOWN]), ("model samples", samples)],
            shape=(8, 8),
            title=f"digits: data and model samples, epoch {shown}",
        )
    if source.dim == 1:
        samples = transform(model.bijector, base_samples(model, state, 8192))
        lo, hi = np.percentile(train, [0.5, 99.5])
        xs = np.linspace(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), 400)[:, None]
        lp = trainer.log_prob(model, xs.astype(train.dtype))
        plotting.plot_histogram_1d(
            wrote("histogram.png"), train[:, 0], samples[:, 0], log_prob_grid=(xs[:, 0], lp)
        )
    if source.dim != 2 or limits is None:
        return written
    snaps = run.load_snapshots(int(state.epoch))
    before = snaps[0] if snaps and snaps[0][0] == 0 else None
    after = next((s for s in snaps if s[0] == shown), snaps[-1] if snaps else None)
    for name, snap in (("before", before), ("after", after)):
        if snap is not None:
            epoch, samples, grid = snap
            plotting.plot_flow_panels(
                wrote(f"{name}.png"),
                grid=base_grid(),
                base_samples=base_samples(trainer.dist, state, SNAPSHOT_SAMPLES),
                transformed_grid=grid,
                transformed_samples=samples,
                data=train,
                limits=limits,
                title=f"{name} — {'before training' if epoch == 0 else f'after epoch {epoch}'}",
            )
    if len(snaps) > 1:
        plotting.animate_flow(
            wrote("animation.gif"),
            [s for _, s, _ in snaps],
            data=train,
            limits=limits,
            labels=[f"epoch {e}" for e, _, _ in snaps],
        )
    points, shape = plotting.density_grid(limits, 150)
    lp = trainer.log_prob(model, points.astype(train.dtype))
    plotting.plot_density(
        wrote("density.png"),
        lp.reshape(shape),
        limits=limits,
        title=f"model density after epoch {shown}",
    )
    return written
