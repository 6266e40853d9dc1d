"""JSON descriptions of models built from ffjord's own parts.

A run directory stores its model as a description (`config.json`, key `model`) plus
the trained arrays (the checkpoint), so `ffjord.load` rebuilds any run without the
code that made it and without pickle. `describe` returns `None` for a model with a
part it cannot describe (e.g. a user's own vector field); such a run is reloaded with
`ffjord.load(run_dir, like=model)`.
"""

from typing import Any

import jax
import jax.numpy as jnp

from ._bijector import AbstractBijector
from ._config import InitKeys, NotDescribed, config_of, floats
from ._distributions import MultivariateNormalDiag, TransformedDistribution
from ._errors import InputError
from ._ffjord import ADJOINTS as ADJOINTS
from ._ffjord import SOLVERS as SOLVERS
from ._ffjord import make_adjoint as make_adjoint


def describe(dist: TransformedDistribution) -> dict[str, Any] | None:
    """The JSON description of `dist`, or `None` if a part of it has none.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        >>> spec = describe(dist)
        >>> sorted(spec), spec["base"]
        (['base', 'bijector'], {'loc': [0.0, 0.0], 'scale_diag': [1.0, 1.0]})
        >>> rebuilt = build(spec)  # same structure; arrays of the base and Affine maps
        >>> type(rebuilt.bijector).__name__
        'FFJORD'
    """
    if type(dist.base) is not MultivariateNormalDiag:
        return None
    try:
        bijector = config_of(dist.bijector)
    except NotDescribed:
        return None
    base = {"loc": floats(dist.base.loc), "scale_diag": floats(dist.base.scale_diag)}
    return {"base": base, "bijector": bijector}


def _count_blocks(spec: dict[str, Any]) -> int:
    inner = spec.get("bijectors", []) + ([spec["bijector"]] if "bijector" in spec else [])
    return (spec["type"] == "FFJORD") + sum(_count_blocks(s) for s in inner)


def build(spec: dict[str, Any], key: jax.Array | None = None) -> TransformedDistribution:
    """The model a description gives, its trainable arrays initialised from `key`: the
    fields of its FFJORD blocks, in forward order, from `jax.random.split(key, blocks)`,
    a `ProjectedContext`'s weights from `jax.random.fold_in(key, 2)` (default: key 0).

    Raises `InputError` for a description that is not valid.
    """
    key = jax.random.key(0) if key is None else key
    try:
        base = MultivariateNormalDiag(
            jnp.asarray(spec["base"]["loc"]), jnp.asarray(spec["base"]["scale_diag"])
        )
        keys = InitKeys(key, _count_blocks(spec["bijector"]))
        return TransformedDistribution(base, AbstractBijector.from_config(spec["bijector"], keys))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"the model description is incomplete or corrupt ({err})") from None
