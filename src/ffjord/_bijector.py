"""The bijector interface, solver statistics and `Chain`."""

import abc
import dataclasses
import math
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._config import Described, InitKeys, config_of, floats


class SolveStats(eqx.Module):
    r"""Work done by the ODE solves behind one call, summed over blocks.

    `num_fn_evals` counts evaluations of the vector field over the whole batch
    (a batched solve evaluates every point at once). `failed` is true when any
    solve stopped before its end time (e.g. `max_steps` was exhausted).

    A call that asks for RNODE's regularisers (`transform(..., regularize=)`) also
    gets, per point (shape `(...)`, summed over blocks; `None` otherwise), the kinetic
    energy `kinetic` $\int \lVert f \rVert^2 dt$ and `jacobian_frobenius`
    $\int \lVert \partial f / \partial z \rVert_F^2 dt$ along its path.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> y, ldj, stats = ffjord.FFJORD(field).forward_with_stats(jnp.zeros((5, 2)))
        >>> int(stats.num_fn_evals) > 0, bool(stats.failed), stats.kinetic is None
        (True, False, True)
    """

    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    num_fn_evals: Int[Array, ""]
    failed: Array
    kinetic: Float[Array, "..."] | None = None
    jacobian_frobenius: Float[Array, "..."] | None = None

    @staticmethod
    def zero() -> "SolveStats":
        z = jnp.zeros((), jnp.int32)
        return SolveStats(z, z, z, z, jnp.zeros((), bool))

    def __add__(self, other: "SolveStats") -> "SolveStats":
        return SolveStats(
            self.num_steps + other.num_steps,
            self.num_accepted_steps + other.num_accepted_steps,
            self.num_rejected_steps + other.num_rejected_steps,
            self.num_fn_evals + other.num_fn_evals,
            self.failed | other.failed,
            _add_integrals(self.kinetic, other.kinetic),
            _add_integrals(self.jacobian_frobenius, other.jacobian_frobenius),
        )

    def total(self) -> "SolveStats":
        """Sum stacked statistics (leading axis) into one, integrals included."""
        return SolveStats(
            jnp.sum(self.num_steps),
            jnp.sum(self.num_accepted_steps),
            jnp.sum(self.num_rejected_steps),
            jnp.sum(self.num_fn_evals),
            jnp.any(self.failed),
            None if self.kinetic is None else jnp.sum(self.kinetic, axis=0),
            None if self.jacobian_frobenius is None else jnp.sum(self.jacobian_frobenius, axis=0),
        )

    def counters(self) -> "SolveStats":
        """The same statistics without the regularisation integrals."""
        return dataclasses.replace(self, kinetic=None, jacobian_frobenius=None)


def _add_integrals(a: Array | None, b: Array | None) -> Array | None:
    """Per-point integrals of two calls; `None` (no dynamics, or not asked for) adds nothing."""
    if a is None:
        return b
    return a if b is None else a + b


Regularize = Literal["kinetic", "all"] | None
StepsFollow = Literal["all", "state"]


class Mode(eqx.Module):
    """What one call of a bijector computes: the frozen options of
    `AbstractBijector.transform_flat`.

    - `inverse`: map data to base (`False`: base to data).
    - `log_det`: compute log|det J| (`False`: zeros, and an FFJORD block solves for the
      state alone).
    - `throw`: raise on a failed ODE solve (`False`: report it in `stats.failed`).
    - `regularize`: `"kinetic"` or `"all"` for RNODE's integrals in the statistics (the
      kinetic energy; `"all"` also the Jacobian's Frobenius norm, else zeros); implies
      `log_det`.
    - `steps_follow`: what an FFJORD block's adaptive step size keeps within tolerance:
      `"all"` (the state and the log-determinant) or `"state"` (the state alone; the
      log-determinant is accumulated on the same steps, its error not controlled: about
      25% cheaper, for log densities that only need ranking, e.g. expected coverage).

    Example:
        >>> import ffjord
        >>> ffjord.Mode(inverse=True, regularize="all").log_det
        True
    """

    inverse: bool = eqx.field(static=True, default=False)
    log_det: bool = eqx.field(static=True, default=True)
    throw: bool = eqx.field(static=True, default=True)
    regularize: Regularize = eqx.field(static=True, default=None)
    steps_follow: StepsFollow = eqx.field(static=True, default="all")

    def __check_init__(self):
        if self.regularize not in ("kinetic", "all", None):
            raise ValueError(
                f"Mode: regularize must be 'kinetic', 'all' or None, got {self.regularize!r}"
            )
        if self.steps_follow not in ("all", "state"):
            raise ValueError(
                f"Mode: steps_follow must be 'all' or 'state', got {self.steps_follow!r}"
            )
        if self.regularize is not None and not self.log_det:
            raise ValueError("Mode: regularize= needs log_det=True")


def check_points(x: Array, dim: int | None, name: str) -> None:
    """Raise a `ValueError` naming `name` unless `x` is a floating-point array of shape
    `(..., dim)` (any last dimension when `dim` is `None`)."""
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (..., d), got a scalar")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(
            f"{name} has dimension {x.shape[-1]} (shape {tuple(x.shape)}) but the flow is "
            f"{dim}-dimensional"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")


class AbstractBijector(eqx.Module, Described):
    """A differentiable bijection with log-determinants, over any batch shape.

    Subclasses implement `transform_flat` on a flat batch of shape `(n, d)`; this class
    handles leading batch shapes `(..., d)`, broadcasting of `context`, and the
    public method names (TFP's meaning of forward and inverse). A subclass whose
    arrays are fixed maps that training leaves alone (e.g. a standardisation) declares
    `frozen = True`.

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> b = ffjord.Affine(jnp.zeros(2), 2.0 * jnp.ones(2))
        >>> isinstance(b, ffjord.AbstractBijector), b.forward(jnp.ones((3, 4, 2))).shape
        (True, (3, 4, 2))
        >>> b.frozen  # a fixed map: training leaves its arrays alone
        True
    """

    # True for a bijector whose arrays are fixed: training leaves them alone, and flow
    # matching accepts it around its FFJORD block (it maps base and data alike).
    frozen: ClassVar[bool] = False
    config_family: ClassVar[str] = "bijector"  # saved and rebuilt: see `ffjord._config`

    @property
    def dim(self) -> int | None:
        """The event dimension `d`, when known."""
        return None

    @property
    def context_dim(self) -> int | None:
        """The width `k` of the conditions it takes (0: unconditional), when known."""
        return None

    @abc.abstractmethod
    def transform_flat(
        self,
        x: Float[Array, "n d"],
        context: Float[Array, "n k"] | None,
        key: PRNGKeyArray | None,
        mode: Mode,
    ) -> tuple[Float[Array, "n d"], Float[Array, " n"], SolveStats]:
        """Map a flat batch as `mode` says; return the image, log|det J| per point (zeros
        without `mode.log_det`) and the statistics of its solves.

        With `mode.regularize`, `stats.kinetic` and `stats.jacobian_frobenius` hold the
        integrals of shape `(n,)` (a bijector without dynamics leaves them `None`). The
        public methods (`transform`, `forward`, ...) call this one.
        """

    def transform(
        self,
        x: Array,
        *,
        context: Array | None = None,
        key: PRNGKeyArray | None = None,
        inverse: bool = False,
        log_det: bool = True,
        throw: bool = True,
        regularize: Regularize = None,
        steps_follow: StepsFollow = "all",
    ) -> tuple[Array, Array, SolveStats]:
        """`(image, log|det J|, stats)` of points `x` of shape `(..., d)`: the one call
        behind every other method, with the options of [`ffjord.Mode`][].

        The log-determinant has shape `(...)` whatever is asked for (zeros without
        `log_det`); with `regularize`, `stats.kinetic` and `stats.jacobian_frobenius`
        have shape `(...)` too (zeros for a map without dynamics).

        Example:
            >>> import jax, jax.numpy as jnp, ffjord
            >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
            >>> flow = ffjord.FFJORD(field)
            >>> x, ildj, stats = flow.transform(jnp.ones((4, 2)), inverse=True, regularize="all")
            >>> ildj.shape, stats.kinetic.shape, stats.jacobian_frobenius.shape
            ((4,), (4,), (4,))
        """
        mode = Mode(
            inverse=inverse,
            log_det=log_det or regularize is not None,
            throw=throw,
            regularize=regularize,
            steps_follow=steps_follow,
        )
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        check_points(x, self.dim, "y" if inverse else "x")
        batch_shape, d = x.shape[:-1], x.shape[-1]
        flat_context = None
        if context is not None:
            context = jnp.asarray(context)
            if context.ndim < 1:
                raise ValueError("context must have shape (..., c), got a scalar")
            try:
                batch_shape = jnp.broadcast_shapes(batch_shape, context.shape[:-1])
            except ValueError:
                raise ValueError(
                    f"context batch shape {context.shape[:-1]} does not broadcast with the "
                    f"points' batch shape {x.shape[:-1]}"
                ) from None
            c = context.shape[-1]
            flat_context = jnp.broadcast_to(context, batch_shape + (c,)).reshape(-1, c)
        n = math.prod(batch_shape)
        flat_x = jnp.broadcast_to(x, batch_shape + (d,)).reshape(n, d)
        y, ld, stats = self.transform_flat(flat_x, flat_context, key, mode)
        if regularize is not None:
            zeros = jnp.zeros((n,), y.dtype)  # no dynamics anywhere: nothing accumulated
            kinetic = zeros if stats.kinetic is None else stats.kinetic
            frobenius = zeros if stats.jacobian_frobenius is None else stats.jacobian_frobenius
            stats = dataclasses.replace(
                stats,
                kinetic=kinetic.reshape(batch_shape),
                jacobian_frobenius=frobenius.reshape(batch_shape),
            )
        return y.reshape(batch_shape + (d,)), ld.reshape(batch_shape), stats

    # Public API ---------------------------------------------------------------------------

    def forward(self, x: Array, *, context: Array | None = None, key=None) -> Array:
        """Map base-space points `x` of shape `(..., d)` to data space."""
        return self.transform(x, context=context, key=key, log_det=False)[0]

    def inverse(self, y: Array, *, context: Array | None = None, key=None) -> Array:
        """Map data-space points `y` of shape `(..., d)` back to base space."""
        return self.transform(y, context=context, key=key, inverse=True, log_det=False)[0]

    def forward_and_log_det(
        self, x: Array, *, context: Array | None = None, key=None
    ) -> tuple[Array, Array]:
        """`(forward(x), log|det dforward/dx|)`, the latter of shape `(...)`."""
        y, ld, _ = self.transform(x, context=context, key=key)
        return y, ld

    def inverse_and_log_det(
        self, y: Array, *, context: Array | None = None, key=None
    ) -> tuple[Array, Array]:
        """`(inverse(y), log|det dinverse/dy|)`, the latter of shape `(...)`."""
        x, ld, _ = self.transform(y, context=context, key=key, inverse=True)
        return x, ld

    def forward_log_det_jacobian(self, x: Array, *, context: Array | None = None, key=None):
        """`log|det dforward/dx|` at `x`, shape `(...)`."""
        return self.forward_and_log_det(x, context=context, key=key)[1]

    def inverse_log_det_jacobian(self, y: Array, *, context: Array | None = None, key=None):
        """`log|det dinverse/dy|` at `y`, shape `(...)`."""
        return self.inverse_and_log_det(y, context=context, key=key)[1]

    def forward_with_stats(
        self, x: Array, *, context: Array | None = None, key=None
    ) -> tuple[Array, Array, SolveStats]:
        """Like `forward_and_log_det`, plus the solver statistics of the call.

        Never raises on a failed solve: check `stats.failed` (the values are then
        meaningless).
        """
        return self.transform(x, context=context, key=key, throw=False)

    def inverse_with_stats(
        self, y: Array, *, context: Array | None = None, key=None
    ) -> tuple[Array, Array, SolveStats]:
        """Like `inverse_and_log_det`, plus the solver statistics (see `forward_with_stats`)."""
        return self.transform(y, context=context, key=key, inverse=True, throw=False)


def _same_structure(a: eqx.Module, b: eqx.Module) -> bool:
    """True when two bijectors differ only in the values of their arrays."""
    da, sa = eqx.partition(a, eqx.is_array)
    db, sb = eqx.partition(b, eqx.is_array)
    if jax.tree.structure(da) != jax.tree.structure(db):
        return False
    la, lb = jax.tree.leaves(da), jax.tree.leaves(db)
    if any(u.shape != v.shape or u.dtype != v.dtype for u, v in zip(la, lb, strict=True)):
        return False
    try:
        return bool(eqx.tree_equal(sa, sb))
    except Exception:  # static leaves that cannot be compared
        return False


class Chain(AbstractBijector):
    """Composition of bijectors; `forward` applies the list in order.

    (TFP's `Chain` applies its list last-first; this one reads like the code.)
    When every bijector has the same structure (e.g. stacked FFJORD blocks of one
    shape) the chain scans over stacked parameters, so one block is traced and
    compiled instead of all of them.

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> shift = ffjord.Affine(jnp.ones(2), jnp.ones(2))  # x + 1
        >>> double = ffjord.Affine(jnp.zeros(2), 2 * jnp.ones(2))  # 2 x
        >>> ffjord.Chain([shift, double]).forward(jnp.zeros(2)).tolist()  # double(shift(x))
        [2.0, 2.0]
    """

    bijectors: tuple[AbstractBijector, ...]

    config_type: ClassVar[str | None] = "Chain"

    def __init__(self, bijectors):
        bijectors = tuple(bijectors)
        if not bijectors:
            raise ValueError("Chain needs at least one bijector")
        for b in bijectors:
            if not isinstance(b, AbstractBijector):
                raise TypeError(f"Chain takes bijectors, got {type(b).__name__}")
        dims = {b.dim for b in bijectors} - {None}
        if len(dims) > 1:
            raise ValueError(f"Chain: bijectors have different dimensions {sorted(dims)}")
        widths = {b.context_dim for b in bijectors} - {None, 0}
        if len(widths) > 1:
            raise ValueError(f"Chain: bijectors take contexts of different widths {sorted(widths)}")
        self.bijectors = bijectors

    def to_config(self) -> dict:
        return {"type": "Chain", "bijectors": [config_of(b) for b in self.bijectors]}

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "Chain":
        return cls([AbstractBijector.from_config(inner, keys) for inner in config["bijectors"]])

    @property
    def dim(self) -> int | None:
        dims = [b.dim for b in self.bijectors if b.dim is not None]
        return dims[0] if dims else None

    @property
    def context_dim(self) -> int | None:
        widths = [b.context_dim for b in self.bijectors]
        if any(w for w in widths):
            return max(w for w in widths if w is not None)
        return None if any(w is None for w in widths) else 0

    def transform_flat(self, x, context, key, mode):
        n = len(self.bijectors)
        first = self.bijectors[0]
        if n > 1 and all(_same_structure(first, b) for b in self.bijectors[1:]):
            return self._scan(x, context, key, mode)
        keys = [None] * n if key is None else list(jax.random.split(key, n))
        order = range(n - 1, -1, -1) if mode.inverse else range(n)
        total_ld = jnp.zeros(x.shape[:1], x.dtype)
        stats = SolveStats.zero()
        for i in order:
            x, ld, s = self.bijectors[i].transform_flat(x, context, keys[i], mode)
            total_ld = total_ld + ld
            stats = stats + s
        return x, total_ld, stats

    def _scan(self, x, context, key, mode):
        n = len(self.bijectors)
        parts = [eqx.partition(b, eqx.is_array) for b in self.bijectors]
        static = parts[0][1]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(p[0] for p in parts))
        keys = None if key is None else jax.random.split(key, n)
        regularized = mode.regularize is not None

        def body(carry, xs):
            z, totals = carry
            params, k = xs
            block = eqx.combine(params, static)
            z, ld, s = block.transform_flat(z, context, k, mode)
            # The regularisers accumulate in the carry beside the log-determinant, block by
            # block; the counters are stacked and summed at the end.
            terms = (ld, s.kinetic, s.jacobian_frobenius) if regularized else (ld,)
            terms = [_zeros_if_none(t, z) for t in terms]
            # The points keep their dtype (float32 points through a float64 model: float32)
            totals = tuple((u + v).astype(u.dtype) for u, v in zip(totals, terms, strict=True))
            return (z.astype(carry[0].dtype), totals), s.counters()

        zeros = jnp.zeros(x.shape[:1], x.dtype)
        init = (x, (zeros,) * (3 if regularized else 1))
        (y, totals), stats = jax.lax.scan(body, init, (stacked, keys), reverse=mode.inverse)
        stats = stats.total()
        if regularized:
            stats = dataclasses.replace(stats, kinetic=totals[1], jacobian_frobenius=totals[2])
        return y, totals[0], stats


def _zeros_if_none(a: Array | None, like: Array) -> Array:
    return jnp.zeros(like.shape[:1], like.dtype) if a is None else a


class Affine(AbstractBijector):
    """Elementwise affine map `y = shift + scale * x` (e.g. to undo standardisation).

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> a = ffjord.Affine(jnp.array([1.0, 0.0]), jnp.array([2.0, 0.5]))
        >>> float(a.forward_and_log_det(jnp.zeros(2))[1])  # log 2 + log 0.5
        0.0
    """

    shift: Float[Array, " d"]
    scale: Float[Array, " d"]

    frozen: ClassVar[bool] = True  # a fixed map (e.g. undoing a standardisation)
    config_type: ClassVar[str | None] = "Affine"

    def __init__(self, shift, scale):
        shift, scale = jnp.asarray(shift), jnp.asarray(scale)
        if shift.ndim != 1 or scale.shape != shift.shape:
            raise ValueError(
                f"Affine: shift and scale must be vectors of one shape, got {shift.shape} "
                f"and {scale.shape}"
            )
        self.shift, self.scale = shift, scale

    def to_config(self) -> dict:
        return {"type": "Affine", "shift": floats(self.shift), "scale": floats(self.scale)}

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "Affine":
        return cls(jnp.asarray(config["shift"]), jnp.asarray(config["scale"]))

    @property
    def dim(self) -> int:
        return self.shift.shape[0]

    @property
    def context_dim(self) -> int:
        return 0

    def transform_flat(self, x, context, key, mode):
        ld = jnp.broadcast_to(jnp.sum(jnp.log(jnp.abs(self.scale))), x.shape[:1]).astype(x.dtype)
        if mode.inverse:
            return ((x - self.shift) / self.scale).astype(x.dtype), -ld, SolveStats.zero()
        return (self.shift + self.scale * x).astype(x.dtype), ld, SolveStats.zero()


class UnitInterval(AbstractBijector):
    r"""Elementwise map of $\mathbb{R}^d$ onto the unit cube: $x = (\sigma(y) - \alpha) /
    (1 - 2\alpha)$ forward, the logit transform $y = \operatorname{logit}(\alpha + (1 -
    2\alpha) x)$ inverse.

    Put last in a chain, it lets the flow model data confined to $[0, 1]$ (dequantised
    pixels, proportions) in unbounded logit space, where the walls of the box are
    infinitely far; the log-determinant keeps every density in the data's own units.
    $\alpha$ keeps the box's faces at finite logits: the forward map's range is
    $(-\alpha, 1 - \alpha) / (1 - 2\alpha)$, a little wider than $[0, 1]$, and points
    outside it have density zero (`log_prob` gives `-inf`). A fixed map (`frozen`).

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> m = ffjord.UnitInterval(2, alpha=0.01)
        >>> y, ld = m.inverse_and_log_det(jnp.array([0.0, 0.5]))
        >>> bool(jnp.allclose(m.forward(y), jnp.array([0.0, 0.5]), atol=1e-6))
        True
    """

    size: int = eqx.field(static=True)
    alpha: float = eqx.field(static=True)

    frozen: ClassVar[bool] = True
    config_type: ClassVar[str | None] = "UnitInterval"

    def __init__(self, dim: int, alpha: float = 0.01):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"UnitInterval: dim must be a positive integer, got {dim!r}")
        if not (isinstance(alpha, int | float) and 0.0 <= alpha < 0.5):
            raise ValueError(f"UnitInterval: alpha must lie in [0, 0.5), got {alpha!r}")
        self.size, self.alpha = dim, float(alpha)

    def to_config(self) -> dict:
        return {"type": "UnitInterval", "dim": self.size, "alpha": self.alpha}

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "UnitInterval":
        return cls(config["dim"], alpha=config["alpha"])

    @property
    def dim(self) -> int:
        return self.size

    @property
    def context_dim(self) -> int:
        return 0

    def transform_flat(self, x, context, key, mode):
        a = self.alpha
        if mode.inverse:  # x in the unit cube -> logits
            u = a + (1 - 2 * a) * x
            inside = jnp.all((u > 0) & (u < 1), axis=-1)
            u = jnp.clip(u, jnp.finfo(x.dtype).tiny, 1 - jnp.finfo(x.dtype).eps)
            y = jnp.log(u) - jnp.log1p(-u)
            per_point = jnp.sum(jnp.log1p(-2 * a) - jnp.log(u) - jnp.log1p(-u), axis=-1)
            ld = jnp.where(inside, per_point, -jnp.inf)  # outside the cube: density zero
        else:  # logits -> the unit cube
            s = jax.nn.sigmoid(x)
            y = (s - a) / (1 - 2 * a)
            ld = jnp.sum(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x) - jnp.log1p(-2 * a), -1)
        return y.astype(x.dtype), ld.astype(x.dtype), SolveStats.zero()


class ContextMap(AbstractBijector):
    """`bijector`, given its conditions through a map: the base of `StandardizedContext`
    and `ProjectedContext`. Subclasses define `map_context`, the map from the raw
    conditions `(n, k)` to the ones `bijector` sees; the points pass unchanged. Flow
    matching and the engine look through these maps to the flow inside.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> field = ffjord.MLPField(2, 8, 3, context_dim=2, key=jax.random.key(0))
        >>> flow = ffjord.ProjectedContext(ffjord.FFJORD(field), 4, 2, key=jax.random.key(1))
        >>> isinstance(flow, ffjord.ContextMap), flow.map_context(jnp.ones(4)).shape
        (True, (2,))
    """

    bijector: eqx.AbstractVar[AbstractBijector]

    @abc.abstractmethod
    def map_context(self, context: Array) -> Array:
        """Raw conditions `(..., k)` -> the conditions the wrapped bijector sees."""

    @property
    def dim(self) -> int | None:
        return self.bijector.dim

    def transform_flat(self, x, context, key, mode):
        if context is None:
            raise ValueError(
                f"this flow is conditional ({self.context_dim}-dimensional contexts): pass context="
            )
        return self.bijector.transform_flat(
            x, self.map_context(context).astype(context.dtype), key, mode
        )


def check_wrapped(name: str, bijector: AbstractBijector, width: int, what: str) -> None:
    if not isinstance(bijector, AbstractBijector):
        raise TypeError(f"{name} wraps a bijector, got {type(bijector).__name__}")
    inner = bijector.context_dim
    if inner is not None and inner != width:
        raise ValueError(f"{name}: {what} but the bijector takes {inner}-dimensional contexts")


class StandardizedContext(ContextMap):
    """`bijector`, given its conditions standardised: `(context - shift) / scale`.

    The map is part of the model, so `log_prob`, `sample` and friends take raw
    conditions; its arrays stay fixed in training (like `Affine`'s). `ffjord.fit` with
    `context=` wraps a model in one (the training conditions' mean and standard
    deviation) unless the model already has one.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> field = ffjord.MLPField(2, 8, 3, context_dim=1, key=jax.random.key(0))
        >>> flow = ffjord.StandardizedContext(ffjord.FFJORD(field), jnp.array([10.0]),
        ...                                   jnp.array([5.0]))
        >>> y = flow.forward(jnp.zeros(2), context=jnp.array([15.0]))  # the field sees 1.0
        >>> bool(jnp.allclose(y, ffjord.FFJORD(field).forward(jnp.zeros(2), context=jnp.ones(1))))
        True
    """

    bijector: AbstractBijector
    context_map: Affine

    config_type: ClassVar[str | None] = "StandardizedContext"

    def __init__(self, bijector: AbstractBijector, shift, scale):
        shift, scale = jnp.asarray(shift), jnp.asarray(scale)
        self.context_map = Affine(shift, scale)
        width = self.context_map.dim
        check_wrapped("StandardizedContext", bijector, width, f"shift has {width} entries")
        self.bijector = bijector

    def to_config(self) -> dict:
        return {
            "type": "StandardizedContext",
            "bijector": config_of(self.bijector),
            "shift": floats(self.context_map.shift),
            "scale": floats(self.context_map.scale),
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "StandardizedContext":
        inner = AbstractBijector.from_config(config["bijector"], keys)
        return cls(inner, jnp.asarray(config["shift"]), jnp.asarray(config["scale"]))

    @property
    def context_dim(self) -> int:
        return self.context_map.dim

    def standardize(self, context: Array) -> Array:
        """Raw conditions `(..., k)` -> the standardised ones the wrapped bijector sees."""
        return (context - self.context_map.shift) / self.context_map.scale

    def map_context(self, context: Array) -> Array:
        return self.standardize(context)


class ProjectedContext(ContextMap):
    """`bijector`, given `features` learned linear combinations of its `k` conditions:
    `context @ weight.T`, one map shared by every block inside.

    A condition of many columns (a simulator's raw output) that the posterior depends
    on through a few linear statistics is learned from far fewer parameters this way:
    the fields see `features` numbers instead of `k`. The weight is trained with the
    rest of the model (initialised with variance `1 / k`, so standardised conditions
    give features of unit scale). A posterior that depends on nonlinear statistics
    spread over many columns (a sum of squares) needs the raw condition instead.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> field = ffjord.MLPField(2, 8, 3, context_dim=3, key=jax.random.key(0))
        >>> flow = ffjord.ProjectedContext(ffjord.FFJORD(field), 100, 3, key=jax.random.key(1))
        >>> flow.context_dim, flow.forward(jnp.zeros(2), context=jnp.ones(100)).shape
        (100, (2,))
    """

    bijector: AbstractBijector
    weight: Float[Array, "features k"]

    config_type: ClassVar[str | None] = "ProjectedContext"

    def __init__(
        self, bijector: AbstractBijector, context_dim: int, features: int, *, key: PRNGKeyArray
    ):
        for name, value in (("context_dim", context_dim), ("features", features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectedContext: {name} must be an integer >= 1, got {value!r}")
        check_wrapped("ProjectedContext", bijector, features, f"features is {features}")
        self.weight = jax.random.normal(key, (features, context_dim)) / math.sqrt(context_dim)
        self.bijector = bijector

    def to_config(self) -> dict:
        return {
            "type": "ProjectedContext",
            "bijector": config_of(self.bijector),
            "context_dim": self.context_dim,
            "features": self.features,
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "ProjectedContext":
        inner = AbstractBijector.from_config(config["bijector"], keys)
        return cls(inner, config["context_dim"], config["features"], key=keys.context)

    @property
    def context_dim(self) -> int:
        return self.weight.shape[1]

    @property
    def features(self) -> int:
        return self.weight.shape[0]

    def map_context(self, context: Array) -> Array:
        return context @ self.weight.T.astype(context.dtype)
