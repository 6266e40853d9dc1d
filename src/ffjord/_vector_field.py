"""Vector fields: the right-hand side f(t, z, context) of the flow's ODE."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class _Linear(eqx.Module):
    """An affine layer initialised like Sonnet's `Linear`.

    Weights start from a normal truncated at two standard deviations with standard
    deviation ``1/sqrt(fan_in)``; biases start at zero. (The tutorial's model uses
    this initialisation, and it visibly changes how fast the first epochs learn.)
    """

    weight: Float[Array, "out inp"]
    bias: Float[Array, " out"]

    def __init__(self, in_size: int, out_size: int, *, key: PRNGKeyArray):
        std = 1.0 / math.sqrt(in_size)
        # jax.random.truncated_normal has unit variance before truncation, like Sonnet's.
        self.weight = std * jax.random.truncated_normal(key, -2.0, 2.0, (out_size, in_size))
        self.bias = jnp.zeros((out_size,))

    def __call__(self, x: Float[Array, " inp"]) -> Float[Array, " out"]:
        return self.weight @ x + self.bias


class MLPField(eqx.Module):
    """The tutorial's `MLP_ODE`: a small tanh MLP with time as an input.

    The input is ``concat([t broadcast to z's shape, z, context])``; then ``layers``
    affine layers with ``tanh`` between them (``hidden`` units each, the last one
    with ``dim`` outputs).

    Example:
        >>> import jax, ffjord
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> field(0.5, jax.numpy.ones(2), None).shape
        (2,)
    """

    layers: tuple[_Linear, ...]
    dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        hidden: int,
        layers: int,
        *,
        context_dim: int = 0,
        key: PRNGKeyArray,
    ):
        for name, value, least in (
            ("dim", dim, 1),
            ("hidden", hidden, 1),
            ("layers", layers, 1),
            ("context_dim", context_dim, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"MLPField: {name} must be an integer >= {least}, got {value!r}")
        sizes = [2 * dim + context_dim] + [hidden] * (layers - 1) + [dim]
        keys = jax.random.split(key, layers)
        self.layers = tuple(
            _Linear(i, o, key=k) for i, o, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        )
        self.dim = dim
        self.context_dim = context_dim

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
        h = self._input(t, z, context)
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
        return self.layers[-1](h)

    def value_and_divergence(
        self, t: Float[Array, ""] | float, z: Float[Array, " d"], context: Array | None = None
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """dz/dt and its divergence ``tr(d(dz/dt)/dz)`` at one point, exactly.

        With up to 3 layers the trace has a closed form that costs about one extra
        hidden-by-hidden product: writing the Jacobian as ``W3 D2 W2 D1 A`` (``A`` the
        columns of the first layer that see `z`, ``Dk = diag(1 - tanh^2)``),
        ``tr = s2 . (W2 * (A W3)^T) s1`` with ``sk`` the diagonals of ``Dk``. Deeper
        fields use one Jacobian-vector product per dimension. `ffjord.ExactTrace` uses
        this method, so the tutorial's model never forms a Jacobian.

        Example:
            >>> import jax, ffjord
            >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
            >>> dz, div = field.value_and_divergence(0.5, jax.numpy.ones(2))
            >>> dz.shape, div.shape
            ((2,), ())
        """
        n_layers = len(self.layers)
        if n_layers > 3:
            dz, jvp = jax.linearize(lambda u: self(t, u, context), z)
            eye = jnp.eye(self.dim, dtype=z.dtype)
            return dz, jnp.sum(jax.vmap(jvp)(eye) * eye)
        h = self._input(t, z, context)
        a = self.layers[0].weight[:, self.dim : 2 * self.dim]
        slopes = []
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
            slopes.append(1 - h * h)
        dz = self.layers[-1](h)
        if n_layers == 1:
            return dz, jnp.trace(a)
        a_out = a @ self.layers[-1].weight  # A W_last: hidden x hidden
        if n_layers == 2:
            return dz, jnp.dot(slopes[0], jnp.diagonal(a_out))
        mixed = self.layers[1].weight * a_out.T
        return dz, jnp.dot(slopes[1], mixed @ slopes[0])
