"""PRNG keys of both kinds: typed (`jax.random.key`) and raw (`jax.random.PRNGKey`)."""

import jax
import jax.numpy as jnp
from jaxtyping import Array


def is_typed_key(key) -> bool:
    """True for a typed key (`jax.random.key`), False for raw key data or None."""
    return key is not None and jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key)


def key_bits(key) -> Array:
    """The raw key data (uint32) of either kind of key; no compilation involved."""
    return jax.random.key_data(key) if is_typed_key(key) else jnp.asarray(key)


def as_typed_key(key) -> Array:
    """A typed key from either kind (raw data is wrapped in JAX's default generator)."""
    return key if is_typed_key(key) else jax.random.wrap_key_data(key)
