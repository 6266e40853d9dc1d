"""Training objectives: what the engine minimises on one batch.

An objective is a small frozen module with a `loss(dist, batch, context, key)`; the
training engine (`ffjord.fit`, `ffjord train`) differentiates it with respect to the
trainable arrays. Whatever the objective, the engine's held-out (test) numbers are
the model's exact likelihood; the best epoch on a validation split is chosen by the
exact likelihood too, except under flow matching, which uses its own loss there (one
field evaluation a row instead of an ODE solve).
"""

import abc
import concurrent.futures
import os
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ._bijector import AbstractBijector, Chain, ContextMap, SolveStats
from ._checks import non_negative_number
from ._distributions import TransformedDistribution
from ._errors import InputError
from ._ffjord import FFJORD

Metrics = dict[str, Array]


def _check_weight(owner: str, name: str, value: Any) -> float:
    del owner  # the parameter's name says it
    return non_negative_number(value, name)


class AbstractObjective(eqx.Module):
    """A training loss on one batch of data (and its conditions).

    `ffjord.fit` takes any of them as `objective=`.

    Example:
        >>> import ffjord
        >>> isinstance(ffjord.FlowMatching(coupling="ot"), ffjord.AbstractObjective)
        True
    """

    name: ClassVar[str]
    # What chooses the best epoch on a validation split: "nll", the exact held-out NLL,
    # or "loss", this objective's own loss on the validation rows with fixed draws.
    validation_metric: ClassVar[str] = "nll"

    def check(self, dist: TransformedDistribution) -> None:
        """Raise `InputError` when `dist` cannot be trained with this objective."""

    def prepare(
        self,
        dist: TransformedDistribution,
        batches: Array,
        contexts: Array | None,
        keys: PRNGKeyArray,
    ) -> Any:
        """Work for a whole epoch that does not depend on the trainable arrays, done once on
        the host before its compiled steps (`batches` and `keys` stacked over the steps).
        Its leading axis is sliced per step and given to `loss` as `prepared`; `None` (the
        default): nothing."""
        return None

    @property
    def prepares(self) -> bool:
        """Whether `prepare` has work to do; the trainer skips it (and building its
        arguments) when not."""
        return type(self).prepare is not AbstractObjective.prepare

    @abc.abstractmethod
    def loss(
        self,
        dist: TransformedDistribution,
        batch: Array,
        context: Array | None,
        key: PRNGKeyArray,
        prepared: Any = None,
    ) -> tuple[Array, tuple[SolveStats, Metrics]]:
        """The scalar loss, the solver statistics of its solves and named scalar metrics."""

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A JSON description (the run directory's `config.json`)."""


class MaximumLikelihood(AbstractObjective):
    r"""Maximum likelihood through the ODE solve, optionally regularised as in RNODE.

    The loss is the mean negative log-likelihood plus `kinetic` times the kinetic energy
    $\int \lVert f \rVert^2 dt$ and `jacobian_frobenius` times
    $\int \lVert \partial f/\partial z \rVert_F^2 dt$ (Finlay et al., 2020), both
    accumulated in the same augmented solve as the log-determinant. The Frobenius term
    is exact with `ExactTrace` and Hutchinson's estimate from the solve's own probes with
    `HutchinsonTrace`. Regularised flows are straighter, so the solver needs fewer steps.

    Example:
        >>> import ffjord
        >>> objective = ffjord.MaximumLikelihood(kinetic=0.01, jacobian_frobenius=0.01)
        >>> objective.to_config()["kinetic"]
        0.01
    """

    kinetic: float = eqx.field(static=True, default=0.0)
    jacobian_frobenius: float = eqx.field(static=True, default=0.0)

    name: ClassVar[str] = "likelihood"

    def __check_init__(self):
        _check_weight("MaximumLikelihood", "kinetic", self.kinetic)
        _check_weight("MaximumLikelihood", "jacobian_frobenius", self.jacobian_frobenius)

    def loss(self, dist, batch, context, key, prepared=None):
        if self.kinetic == 0 and self.jacobian_frobenius == 0:
            lp, stats = dist.log_prob_with_stats(batch, context=context, key=key)
            nll = -jnp.mean(lp)
            return nll, (stats, {"nll": nll})
        lp, kinetic, frobenius, stats = dist.log_prob_with_regularizers(
            batch, context=context, key=key, frobenius=self.jacobian_frobenius > 0
        )
        nll = -jnp.mean(lp)
        kinetic, frobenius = jnp.mean(kinetic), jnp.mean(frobenius)
        loss = nll + self.kinetic * kinetic + self.jacobian_frobenius * frobenius
        metrics = {"nll": nll, "kinetic": kinetic, "jacobian_frobenius": frobenius}
        return loss, (stats, metrics)

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kinetic": self.kinetic,
            "jacobian_frobenius": self.jacobian_frobenius,
        }


COUPLINGS = ("independent", "ot")


class FlowMatching(AbstractObjective):
    r"""Conditional flow matching of the model's single FFJORD block (Lipman et al., 2023).

    Each step pairs base draws $x_0$ (at the block's `t0`) with data $x_1$ (at `t1`),
    picks times uniformly and regresses the field onto the straight path's velocity:
    $\lVert f(t, x_t) - (x_1 - x_0)/(t_1 - t_0) \rVert^2$ with
    $x_t = (1 - s) x_0 + s x_1 + \sigma \epsilon$, $s = (t - t_0)/(t_1 - t_0)$. No ODE
    is solved: one field evaluation per point and step.

    `coupling="ot"` pairs each batch by exact optimal transport (minibatch OT-CFM,
    Tong et al., 2024): SciPy's `linear_sum_assignment` on the squared distances, so
    the learned paths cross less and the solver needs fewer steps.

    The model's bijector must hold exactly one `FFJORD` block; fixed maps around it
    (bijectors that declare `frozen`, e.g. `Affine` for a standardisation, or
    `UnitInterval`) are fine and are applied to base and data.
    The result is an ordinary FFJORD model with exact `log_prob` and `sample`.

    Example:
        >>> import ffjord
        >>> objective = ffjord.FlowMatching(coupling="ot")
        >>> objective.to_config()["coupling"]
        'ot'
    """

    coupling: Literal["independent", "ot"] = eqx.field(static=True, default="independent")
    sigma: float = eqx.field(static=True, default=0.0)

    name: ClassVar[str] = "flow-matching"
    validation_metric: ClassVar[str] = "loss"  # one field evaluation a row, no ODE solve

    def __check_init__(self):
        if self.coupling not in COUPLINGS:
            raise InputError(
                f"FlowMatching: unknown coupling {self.coupling!r}; choose one of: "
                + ", ".join(COUPLINGS)
            )
        _check_weight("FlowMatching", "sigma", self.sigma)

    def check(self, dist):
        _split_single_block(dist.bijector)
        if self.coupling == "ot" and dist.bijector.context_dim:
            raise InputError(
                "OT coupling pairs base and data points regardless of their conditions, "
                "which biases a conditional flow; choose coupling 'independent'",
                parameters=("coupling",),
            )

    def _ends(self, dist, batch, context, key) -> tuple[Array, Array]:
        """Base draws `x0` and data `x1` of one step, both in the block's coordinates."""
        before, _, after = _split_single_block(dist.bijector)
        base_key = jax.random.split(key, 3)[0]
        x1 = _through(after[::-1], batch, context, inverse=True)
        x0 = dist.base.sample(base_key, (batch.shape[0],)).astype(batch.dtype)
        return _through(before, x0, context), x1

    def prepare(self, dist, batches, contexts, keys):
        """With OT coupling, every step's pairing at once: the base draws and the data do
        not depend on the trainable arrays, so the epoch's assignments are solved together,
        a thread per core, before its first step."""
        if self.coupling != "ot":
            return None
        x0, x1 = _epoch_ends(self, dist, batches, contexts, keys)
        return jnp.asarray(_assignments(np.asarray(x0), np.asarray(x1)))

    @property
    def prepares(self) -> bool:
        return self.coupling == "ot"

    def loss(self, dist, batch, context, key, prepared=None):
        _, block, _ = _split_single_block(dist.bijector)
        n = batch.shape[0]
        _, time_key, noise_key = jax.random.split(key, 3)
        x0, x1 = self._ends(dist, batch, context, key)
        if self.coupling == "ot":
            order = ot_pairing(x0, x1) if prepared is None else prepared
            x1 = x1[order]
            context = None if context is None else context[order]
        _, context = _unwrap_context(dist.bijector, context)
        s = jax.random.uniform(time_key, (n, 1), batch.dtype)
        xt = (1 - s) * x0 + s * x1
        if self.sigma > 0:
            xt = xt + self.sigma * jax.random.normal(noise_key, xt.shape, batch.dtype)
        span = block.t1 - block.t0
        t = block.t0 + span * s[:, 0]
        target = (x1 - x0) / span
        in_axes = (0, 0, None if context is None else 0)
        velocity = jax.vmap(block.field, in_axes=in_axes)(t, xt, context)
        loss = jnp.mean((velocity.astype(batch.dtype) - target) ** 2)
        one = jnp.ones((), jnp.int32)
        stats = eqx.tree_at(lambda st: st.num_fn_evals, SolveStats.zero(), one)
        return loss, (stats, {})

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "coupling": self.coupling, "sigma": self.sigma}


class ReverseKL(AbstractObjective):
    r"""Reverse Kullback-Leibler divergence to an unnormalised density (`fit_to_density`).

    $\mathrm{KL}(q \Vert p) + \log Z = E_{y \sim q}[\log q(y) - \log \tilde p(y)]$, from
    `num_samples` draws of the model and their log-densities (one forward solve).
    `log_density` maps points `(n, d)` (and the context, if any) to `(n,)`.
    """

    log_density: Callable = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=256)

    name: ClassVar[str] = "reverse-kl"

    def loss(self, dist, batch, context, key, prepared=None):
        del batch, prepared  # draws its own samples
        y, log_q, stats = dist.sample_and_log_prob_with_stats(
            key, (self.num_samples,), context=context
        )
        log_p = self.log_density(y) if context is None else self.log_density(y, context)
        log_p = jnp.asarray(log_p)
        if log_p.shape != log_q.shape:
            raise InputError(
                f"log_density must map points of shape {tuple(y.shape)} to shape "
                f"{tuple(log_q.shape)}, got {tuple(log_p.shape)}"
            )
        return jnp.mean(log_q - log_p.astype(log_q.dtype)), (stats, {})

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "num_samples": self.num_samples}


@eqx.filter_jit
def _epoch_ends(objective: FlowMatching, dist, batches, contexts, keys) -> tuple[Array, Array]:
    """`FlowMatching._ends` of every step of an epoch, stacked."""
    in_axes = (0, None if contexts is None else 0, 0)
    ends = jax.vmap(lambda b, c, k: objective._ends(dist, b, c, k), in_axes=in_axes)
    return ends(batches, contexts, keys)


def _flatten(bijector: AbstractBijector) -> list[AbstractBijector]:
    if isinstance(bijector, Chain):
        return [b for inner in bijector.bijectors for b in _flatten(inner)]
    return [bijector]


def _unwrap_context(bijector: AbstractBijector, context: Array | None):
    """(the bijector inside the top-level `ContextMap`s, the context it sees)."""
    while isinstance(bijector, ContextMap):
        context = None if context is None else bijector.map_context(context)
        bijector = bijector.bijector
    return bijector, context


def _split_single_block(
    bijector: AbstractBijector,
) -> tuple[list[AbstractBijector], FFJORD, list[AbstractBijector]]:
    """(maps before, the FFJORD block, maps after), in forward order (a top-level
    `ContextMap` (standardising or projecting the conditions) is looked through)."""
    parts = _flatten(_unwrap_context(bijector, None)[0])
    blocks = [i for i, b in enumerate(parts) if isinstance(b, FFJORD)]
    if len(blocks) != 1:
        raise InputError(
            f"flow matching trains a single FFJORD block, but this model has {len(blocks)}; "
            "build it with one block",
        )
    others = [type(b).__name__ for i, b in enumerate(parts) if i not in blocks and not b.frozen]
    if others:
        raise InputError(
            "flow matching needs the maps around its FFJORD block to be fixed maps "
            "(frozen bijectors such as Affine, UnitInterval), "
            f"got {', '.join(others)}"
        )
    i = blocks[0]
    block = parts[i]
    assert isinstance(block, FFJORD)
    return parts[:i], block, parts[i + 1 :]


def _through(maps: list[AbstractBijector], x: Array, context, *, inverse: bool = False) -> Array:
    for bijector in maps:
        x = bijector.transform(x, context=context, inverse=inverse, log_det=False)[0]
    return x


def _assignments(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Exact assignments of stacked point sets `(s, n, d)`, one per core at a time."""
    from scipy.optimize import linear_sum_assignment

    def one(i: int) -> np.ndarray:
        a, b = np.asarray(x0[i], np.float64), np.asarray(x1[i], np.float64)
        cost = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        return linear_sum_assignment(cost)[1].astype(np.int32)

    workers = min(len(x0), os.cpu_count() or 1)
    if workers <= 1:
        return np.stack([one(i) for i in range(len(x0))])
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(one, range(len(x0)))))


def ot_pairings(x0: Array, x1: Array) -> Array:
    """For stacked point sets `(s, n, d)`: the order of each `x1[i]` that pairs it with
    `x0[i]` at the least total squared distance, shape `(s, n)`.

    Exact assignment by SciPy's `linear_sum_assignment` on the host (through
    `jax.pure_callback`, so it runs inside jitted code), the sets in parallel threads.

    Example:
        >>> import jax.numpy as jnp
        >>> x0 = jnp.array([[0.0, 0.0], [1.0, 1.0]])
        >>> x1 = jnp.array([[1.1, 0.9], [0.1, 0.0]])
        >>> order = ot_pairings(x0[None], x1[None])[0]  # x1[order[i]] is the partner of x0[i]
        >>> order.tolist()
        [1, 0]
    """
    shape = jax.ShapeDtypeStruct(x0.shape[:2], jnp.int32)
    return jax.pure_callback(_assignments, shape, x0, x1, vmap_method="sequential")


def ot_pairing(x0: Array, x1: Array) -> Array:
    """`ot_pairings` of one pair of point sets `(n, d)`: an order of `x1`, shape `(n,)`."""
    return ot_pairings(x0[None], x1[None])[0]


OBJECTIVES: dict[str, type[AbstractObjective]] = {
    MaximumLikelihood.name: MaximumLikelihood,
    FlowMatching.name: FlowMatching,
}


def objective_from_config(cfg: dict[str, Any]) -> AbstractObjective:
    """The objective a `to_config()` dictionary describes."""
    options = dict(cfg)
    name = options.pop("name", None)
    if name not in OBJECTIVES:
        raise InputError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    try:
        return OBJECTIVES[name](**options)
    except TypeError as err:
        raise InputError(f"bad options for objective {name!r}: {err}") from None
