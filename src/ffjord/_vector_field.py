"""Vector fields: the right-hand side f(t, z, context) of the flow's ODE."""

import abc
import copy
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._config import Described, InitKeys
from ._keys import key_bits


def _truncated_normals(key: PRNGKeyArray, n: int) -> np.ndarray:
    """`n` standard normals truncated to [-2, 2] (float64), determined by `key`.

    The key's bits seed NumPy's PCG64 generator, whose raw stream is fixed across
    NumPy versions; Box-Muller turns it into normals and draws beyond two standard
    deviations are rejected. No XLA compilation is involved, where
    `jax.random.truncated_normal` compiles an inverse error function for every
    layer shape (about a second at start-up for the tutorial's model).
    """
    seed = np.random.SeedSequence(np.asarray(key_bits(key)).ravel().tolist())
    bits = np.random.PCG64(seed)
    accepted: list[np.ndarray] = []
    got = 0
    while got < n:
        pairs = (n - got) // 2 + 4 * math.isqrt(n) + 8  # ~95% accepted: rarely a second round
        u = (bits.random_raw(2 * pairs) >> 11) * 2.0**-53  # uniform on [0, 1)
        radius = np.sqrt(-2.0 * np.log1p(-u[:pairs]))  # 1 - u lies in (0, 1]: no log(0)
        angle = 2 * np.pi * u[pairs:]
        draws = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
        draws = draws[np.abs(draws) <= 2.0]
        accepted.append(draws)
        got += draws.size
    return np.concatenate(accepted)[:n]


class _Linear(eqx.Module):
    """An affine layer initialised like Sonnet's `Linear`.

    Weights start from a normal truncated at two standard deviations with standard
    deviation ``1/sqrt(fan_in)``; biases start at zero. (The tutorial's model uses
    this initialisation, and it visibly changes how fast the first epochs learn.)
    `unit_draws` are ``out_size * in_size`` standard normals truncated to [-2, 2].
    """

    weight: Float[Array, "out inp"]
    bias: Float[Array, " out"]

    def __init__(self, in_size: int, out_size: int, unit_draws: np.ndarray):
        std = 1.0 / math.sqrt(in_size)
        weight = std * unit_draws.reshape(out_size, in_size)
        dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless x64 is on
        self.weight = jnp.asarray(weight, dtype=dtype)
        self.bias = jnp.asarray(np.zeros(out_size), dtype=dtype)  # no compiled zeros

    def __call__(self, x: Float[Array, " inp"]) -> Float[Array, " out"]:
        return self.weight @ x + self.bias


def _silu_slope(pre: Array, h: Array) -> Array:
    s = jax.nn.sigmoid(pre)
    return s * (1 + pre * (1 - s))


# name -> (activation, its derivative from the pre-activation and the activation)
ACTIVATIONS = {
    "tanh": (jnp.tanh, lambda pre, h: 1 - h * h),
    "silu": (jax.nn.silu, _silu_slope),
    "softplus": (jax.nn.softplus, lambda pre, h: jax.nn.sigmoid(pre)),
}


class AbstractVectorField(eqx.Module, Described):
    r"""The right-hand side $f(t, z, \text{context})$ of a flow's ODE, on one point.

    A field declares its dimension `dim` and the width `context_dim` of the conditions it
    takes (0: unconditional; `None`: not known until called, as for a wrapped plain
    callable), evaluates $dz/dt$ with `__call__`, and gives $dz/dt$ together with its
    divergence $\mathrm{Tr}(\partial f / \partial z)$ with `value_and_divergence`, which
    [`ffjord.ExactTrace`][] uses. The default divergence takes `d` Jacobian-vector
    products; a field with a cheaper closed form (e.g. [`ffjord.MLPField`][]) overrides
    it. `for_inference` gives the form fastest to evaluate without derivatives (the
    field itself unless overridden). [`ffjord.FFJORD`][] also takes any plain callable
    `field(t, z, context)`, wrapped in [`ffjord.CallableField`][].

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> class Rotation(ffjord.AbstractVectorField):
        ...     dim: int = 2
        ...     context_dim: int = 0
        ...
        ...     def __call__(self, t, z, context=None):
        ...         return jnp.array([-z[1], z[0]])
        >>> dz, div = Rotation().value_and_divergence(0.0, jnp.ones(2))
        >>> dz.tolist(), float(div)
        ([-1.0, 1.0], 0.0)
    """

    dim: eqx.AbstractVar[int | None]
    context_dim: eqx.AbstractVar[int | None]
    config_family: ClassVar[str] = "field"  # saved and rebuilt: see `ffjord._config`

    @abc.abstractmethod
    def __call__(
        self, t: Float[Array, ""] | float, z: Float[Array, " d"], context: Array | None = None
    ) -> Float[Array, " d"]:
        """dz/dt at one point `z` of shape `(d,)` (scalar `t`, `context` `None` or `(k,)`)."""

    def value_and_divergence(
        self, t: Float[Array, ""] | float, z: Float[Array, " d"], context: Array | None = None
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """dz/dt and its divergence ``tr(d(dz/dt)/dz)`` at one point, exactly: here from
        `d` Jacobian-vector products, one per basis vector."""
        dz, jvp = jax.linearize(lambda u: self(t, u, context), z)
        columns = jax.vmap(jvp)(jnp.eye(z.shape[-1], dtype=z.dtype))  # row i: J e_i
        return dz, jnp.trace(columns)

    def for_inference(self) -> "AbstractVectorField":
        """The same field in its fastest form for evaluation without derivatives; values
        agree to rounding. [`ffjord.for_inference`][] applies it to a whole model."""
        return self


class CallableField(AbstractVectorField):
    """A plain callable `fn(t, z, context) -> dz/dt` as a vector field: the adapter
    [`ffjord.FFJORD`][] wraps any callable field in that is not an
    [`ffjord.AbstractVectorField`][]. Its divergence takes `d` Jacobian-vector products.

    `dim` and `context_dim` declare what the callable expects when known (`None`: not
    checked, e.g. for a callable given to `FFJORD` directly). An `eqx.Module` callable
    keeps its arrays as leaves, so they train like any field's.

    Example:
        >>> import jax.numpy as jnp, ffjord
        >>> field = ffjord.CallableField(lambda t, z, context: -z, dim=2)
        >>> dz, div = field.value_and_divergence(0.0, jnp.ones(2))
        >>> dz.tolist(), float(div)
        ([-1.0, -1.0], -2.0)
        >>> type(ffjord.FFJORD(lambda t, z, context: -z).field).__name__
        'CallableField'
    """

    fn: Callable
    dim: int | None = eqx.field(static=True)
    context_dim: int | None = eqx.field(static=True)

    def __init__(self, fn: Callable, *, dim: int | None = None, context_dim: int | None = None):
        self.fn, self.dim, self.context_dim = fn, dim, context_dim

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError(f"CallableField: fn must be callable, got {self.fn!r}")
        for name, value, least in (("dim", self.dim, 1), ("context_dim", self.context_dim, 0)):
            bad = isinstance(value, bool) or not isinstance(value, int) or value < least
            if value is not None and bad:
                raise ValueError(
                    f"CallableField: {name} must be None or an integer >= {least}, got {value!r}"
                )

    def __call__(self, t, z, context=None):
        return self.fn(t, z, context)


class MLPField(AbstractVectorField):
    """The tutorial's `MLP_ODE`: a small MLP with time as an input.

    The input is ``concat([t broadcast to z's shape, z, context])``; then ``layers``
    affine layers with `activation` between them (``hidden`` units each, the last one
    with ``dim`` outputs). `activation` is ``"tanh"`` (the tutorial's), ``"silu"``
    (smoother fields for flow matching) or ``"softplus"``.

    Example:
        >>> import jax, ffjord
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> field(0.5, jax.numpy.ones(2), None).shape
        (2,)
    """

    layers: tuple[_Linear, ...]
    dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    unit_by_unit: bool = eqx.field(static=True)

    config_type: ClassVar[str | None] = "MLPField"

    def __init__(
        self,
        dim: int,
        hidden: int,
        layers: int,
        *,
        context_dim: int = 0,
        activation: str = "tanh",
        key: PRNGKeyArray,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"MLPField: unknown activation {activation!r}; choose one of: "
                + ", ".join(ACTIVATIONS)
            )
        for name, value, least in (
            ("dim", dim, 1),
            ("hidden", hidden, 1),
            ("layers", layers, 1),
            ("context_dim", context_dim, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"MLPField: {name} must be an integer >= {least}, got {value!r}")
        sizes = [2 * dim + context_dim] + [hidden] * (layers - 1) + [dim]
        counts = [i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
        draws = np.split(_truncated_normals(key, sum(counts)), np.cumsum(counts)[:-1])
        self.layers = tuple(
            _Linear(i, o, d) for i, o, d in zip(sizes[:-1], sizes[1:], draws, strict=True)
        )
        self.dim = dim
        self.context_dim = context_dim
        self.activation = activation
        self.unit_by_unit = False

    def to_config(self) -> dict:
        return {
            "type": "MLPField",
            "dim": self.dim,
            "hidden": self.layers[0].weight.shape[0] if len(self.layers) > 1 else 1,
            "layers": len(self.layers),
            "context_dim": self.context_dim,
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "MLPField":
        return cls(
            config["dim"],
            config["hidden"],
            config["layers"],
            context_dim=config["context_dim"],
            activation=config["activation"],
            key=keys.field(),
        )

    def _input(self, t, z, context):
        t_z = jnp.broadcast_to(jnp.asarray(t, dtype=z.dtype), z.shape)
        parts = [t_z, z]
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"MLPField was built with context_dim={self.context_dim}: pass context="
                )
            parts.append(jnp.asarray(context, dtype=z.dtype))
        return jnp.concatenate(parts)

    def __call__(
        self, t: Float[Array, ""] | float, z: Float[Array, " d"], context: Array | None = None
    ) -> Float[Array, " d"]:
        """Evaluate dz/dt at one point `z` of shape `(dim,)`."""
        return self._evaluate(jnp.asarray(t, dtype=z.dtype), z, context, False)

    def value_and_divergence(
        self, t: Float[Array, ""] | float, z: Float[Array, " d"], context: Array | None = None
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """dz/dt and its divergence ``tr(d(dz/dt)/dz)`` at one point, exactly.

        With up to 3 layers the trace has a closed form that costs about one extra
        hidden-by-hidden product: writing the Jacobian as ``W3 D2 W2 D1 A`` (``A`` the
        columns of the first layer that see `z`, ``Dk`` the activation's slopes),
        ``tr = s2 . (W2 * (A W3)^T) s1`` with ``sk`` the diagonals of ``Dk``. Deeper
        fields form the ``d x d`` Jacobian layer by layer (the cost of ``d``
        Jacobian-vector products). `ffjord.ExactTrace` uses
        this method, so the tutorial's model never forms a Jacobian.

        Example:
            >>> import jax, ffjord
            >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
            >>> dz, div = field.value_and_divergence(0.5, jax.numpy.ones(2))
            >>> dz.shape, div.shape
            ((2,), ())
        """
        return self._evaluate(jnp.asarray(t, dtype=z.dtype), z, context, True)

    def for_inference(self) -> "MLPField":
        """The same field, evaluated in the form that is fastest without derivatives.

        A small field (up to 3 layers of at most 16 units) is then evaluated unit by
        unit: under `vmap` XLA fuses the whole network into one loop, about 2x faster
        than small matrix products on a CPU, but slower to differentiate and to compile
        for gradients. The values agree to rounding. The command line and
        `Trainer.log_prob` evaluate densities and samples in this form; training keeps
        the default (matrix products).

        Example:
            >>> import jax, ffjord
            >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
            >>> field.for_inference().unit_by_unit
            True
        """
        field = copy.copy(self)
        object.__setattr__(field, "unit_by_unit", True)  # a static field: not a leaf
        return field

    def _evaluate(self, t, z, context, divergence: bool) -> Any:
        small = len(self.layers) <= 3 and all(
            max(layer.weight.shape) <= _UNROLL_WIDTH for layer in self.layers
        )
        if self.unit_by_unit and small:
            return self._unit_by_unit(t, z, context, divergence)
        return self._dense(t, z, context, divergence)

    def _dense(self, t, z, context, divergence: bool) -> Any:
        """Matrix products: the form that is differentiated."""
        act, slope = ACTIVATIONS[self.activation]
        h = self._input(t, z, context)
        slopes = []
        for layer in self.layers[:-1]:
            pre = layer(h)
            h = act(pre)
            slopes.append(slope(pre, h))
        dz = self.layers[-1](h)
        if not divergence:
            return dz
        if len(self.layers) > 3:
            # The Jacobian itself, layer by layer: (hidden x d) columns carried through
            # W_k diag(slopes); as costly as d tangents, but 1.25x faster than jax's
            # forward mode for the 5-layer flow-matching field (one product per layer).
            d = self.dim
            jac = self.layers[0].weight[:, d : 2 * d]
            for layer, slope in zip(self.layers[1:], slopes, strict=True):
                jac = layer.weight @ (slope[:, None] * jac)
            return dz, jnp.trace(jac)
        weights = self._trace_weights()
        if len(self.layers) == 1:
            return dz, weights
        if len(self.layers) == 2:
            return dz, jnp.dot(slopes[0], weights)
        return dz, jnp.dot(slopes[1], weights @ slopes[0])

    def _trace_weights(self) -> Array:
        """The parameters' part of the closed-form trace (up to 3 layers): the trace of
        ``A`` (1 layer), the diagonal of ``A W2`` (2 layers), or ``W2 * (A W3)^T``
        (3 layers), with ``A`` the first layer's columns that see `z`."""
        a = self.layers[0].weight[:, self.dim : 2 * self.dim]
        if len(self.layers) == 1:
            return jnp.trace(a)
        a_out = a @ self.layers[-1].weight  # A W_last: hidden x hidden
        if len(self.layers) == 2:
            return jnp.diagonal(a_out)
        return self.layers[1].weight * a_out.T

    def _unit_by_unit(self, t, z, context, divergence: bool) -> Any:
        """The same values as `_dense`, written as scalar multiply-adds per unit.

        Under `vmap` every unit becomes one contiguous vector over the batch, and XLA
        fuses the whole network into one loop: 3x faster than small matrix products on
        a CPU for the tutorial's widths (8 hidden units), but slower to differentiate.
        """
        d = self.dim
        first = self.layers[0]
        t_weight = jnp.sum(first.weight[:, :d], axis=1)  # t enters d identical columns
        inputs = [z[i] for i in range(d)]
        if self.context_dim:
            inputs += [context[i] for i in range(self.context_dim)]
        columns = list(range(d, 2 * d + self.context_dim))
        h = [
            first.bias[j]
            + t * t_weight[j]
            + sum(first.weight[j, c] * x for c, x in zip(columns, inputs, strict=True))
            for j in range(first.weight.shape[0])
        ]
        act, slope = ACTIVATIONS[self.activation]
        slopes = []
        for layer in self.layers[1:]:
            pre, h = h, [act(u) for u in h]
            slopes.append([slope(p, u) for p, u in zip(pre, h, strict=True)])
            h = [
                layer.bias[j] + sum(layer.weight[j, k] * u for k, u in enumerate(h))
                for j in range(layer.weight.shape[0])
            ]
        dz = jnp.stack(h, axis=-1)  # under vmap: (batch, d), the layout the solver keeps
        if not divergence:
            return dz
        weights = self._trace_weights()
        if len(self.layers) == 1:
            return dz, weights
        if len(self.layers) == 2:
            return dz, sum(weights[b] * s for b, s in enumerate(slopes[0]))
        second, first_slopes = slopes[1], slopes[0]
        inner = [
            sum(weights[a, b] * s for b, s in enumerate(first_slopes)) for a in range(len(second))
        ]
        return dz, sum(s * m for s, m in zip(second, inner, strict=True))


_UNROLL_WIDTH = 16  # widest layer evaluated unit by unit; wider ones use matrix products
