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

    def __call__(
        self, t: Float[Array, ""] | float, z: Float[Array, " d"], context: Array | None = None
    ) -> Float[Array, " d"]:
        """Evaluate dz/dt at one point `z` of shape `(dim,)`."""
        t_z = jnp.broadcast_to(jnp.asarray(t, dtype=z.dtype), z.shape)
        parts = [t_z, z]
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"MLPField was built with context_dim={self.context_dim}: pass context="
                )
            parts.append(jnp.asarray(context, dtype=z.dtype))
        h = jnp.concatenate(parts)
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
        return self.layers[-1](h)
