"""JSON descriptions of models built from ffjord's own parts.

A run directory stores its model as a description (`config.json`, key `model`) plus
the trained arrays (the checkpoint), so `ffjord.load` rebuilds any run without the
code that made it and without pickle. `describe` returns `None` for a model with a
part it cannot describe (e.g. a user's own vector field); such a run is reloaded with
`ffjord.load(run_dir, like=model)`.
"""

from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._bijector import (
    AbstractBijector,
    Affine,
    Chain,
    ProjectedContext,
    StandardizedContext,
    UnitInterval,
)
from ._distributions import MultivariateNormalDiag, TransformedDistribution
from ._errors import InputError
from ._ffjord import FFJORD
from ._trace import AbstractTrace, ExactTrace, HutchinsonTrace
from ._vector_field import MLPField

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "dopri5": diffrax.Dopri5,
    "tsit5": diffrax.Tsit5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
}
ADJOINTS: dict[str, type[diffrax.AbstractAdjoint]] = {
    "backprop": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
}


def make_adjoint(name: str, checkpoints: int | None = None) -> diffrax.AbstractAdjoint:
    """The adjoint called `name` in `ADJOINTS`; backpropagation keeps `checkpoints` states
    of the solve (None: diffrax's default, one per step up to `max_steps`).

    Example:
        >>> make_adjoint("backprop", 8).checkpoints
        8
    """
    if name == "backprop":
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)
    return ADJOINTS[name]()


class _Unknown(Exception):
    """A part without a description."""


def _floats(a) -> list[float]:
    return [float(v) for v in np.asarray(a).ravel()]


def _name_of(value: Any, table: dict[str, type]) -> str:
    for name, cls in table.items():
        if type(value) is cls:
            return name
    raise _Unknown(type(value).__name__)


def _trace(trace: AbstractTrace) -> dict[str, Any]:
    if type(trace) is ExactTrace:
        return {"type": "exact"}
    if type(trace) is HutchinsonTrace:
        return {"type": "hutchinson", "num_samples": trace.num_samples, "noise": trace.noise}
    raise _Unknown(type(trace).__name__)


def _field(field: Any) -> dict[str, Any]:
    if type(field) is MLPField:
        hidden = field.layers[0].weight.shape[0] if len(field.layers) > 1 else 1
        return {
            "type": "MLPField",
            "dim": field.dim,
            "hidden": hidden,
            "layers": len(field.layers),
            "context_dim": field.context_dim,
            "activation": field.activation,
        }
    raise _Unknown(type(field).__name__)


def _bijector(b: AbstractBijector) -> dict[str, Any]:
    if type(b) is Chain:
        return {"type": "Chain", "bijectors": [_bijector(inner) for inner in b.bijectors]}
    if type(b) is Affine:
        return {"type": "Affine", "shift": _floats(b.shift), "scale": _floats(b.scale)}
    if type(b) is UnitInterval:
        return {"type": "UnitInterval", "dim": b.dim, "alpha": b.alpha}
    if type(b) is StandardizedContext:
        return {
            "type": "StandardizedContext",
            "bijector": _bijector(b.bijector),
            "shift": _floats(b.context_map.shift),
            "scale": _floats(b.context_map.scale),
        }
    if type(b) is ProjectedContext:
        return {
            "type": "ProjectedContext",
            "bijector": _bijector(b.bijector),
            "context_dim": b.context_dim,
            "features": b.features,
        }
    if type(b) is FFJORD:
        controller = b.stepsize_controller
        if type(controller) is not diffrax.PIDController:
            raise _Unknown(type(controller).__name__)
        spec = {
            "type": "FFJORD",
            "field": _field(b.field),
            "trace": _trace(b.trace),
            "solver": _name_of(b.solver, SOLVERS),
            "rtol": float(controller.rtol),
            "atol": float(controller.atol),
            "t0": b.t0,
            "t1": b.t1,
            "dt0": b.dt0,
            "max_steps": b.max_steps,
            "adjoint": _name_of(b.adjoint, ADJOINTS),
            "per_point": b.per_point,
        }
        checkpoints = getattr(b.adjoint, "checkpoints", None)
        if checkpoints is not None:  # only when set: descriptions made before it still match
            spec["checkpoints"] = int(checkpoints)
        return spec
    raise _Unknown(type(b).__name__)


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
        bijector = _bijector(dist.bijector)
    except _Unknown:
        return None
    base = {"loc": _floats(dist.base.loc), "scale_diag": _floats(dist.base.scale_diag)}
    return {"base": base, "bijector": bijector}


def _count_blocks(spec: dict[str, Any]) -> int:
    inner = spec.get("bijectors", []) + ([spec["bijector"]] if "bijector" in spec else [])
    return (spec["type"] == "FFJORD") + sum(_count_blocks(s) for s in inner)


class _Keys:
    """Where a built model's initial arrays come from: the fields of the FFJORD blocks, in
    forward order, from `split(key, blocks)`; a `ProjectedContext` from `fold_in(key, 2)`."""

    def __init__(self, key: jax.Array, blocks: int):
        self.fields = iter(jax.random.split(key, max(blocks, 1)))
        self.projection = jax.random.fold_in(key, 2)


def _build_bijector(spec: dict[str, Any], keys: _Keys) -> AbstractBijector:
    kind = spec["type"]
    if kind == "Chain":
        return Chain([_build_bijector(s, keys) for s in spec["bijectors"]])
    if kind == "Affine":
        return Affine(jnp.asarray(spec["shift"]), jnp.asarray(spec["scale"]))
    if kind == "UnitInterval":
        return UnitInterval(spec["dim"], alpha=spec["alpha"])
    if kind == "StandardizedContext":
        inner = _build_bijector(spec["bijector"], keys)
        return StandardizedContext(inner, jnp.asarray(spec["shift"]), jnp.asarray(spec["scale"]))
    if kind == "ProjectedContext":
        inner = _build_bijector(spec["bijector"], keys)
        return ProjectedContext(inner, spec["context_dim"], spec["features"], key=keys.projection)
    if kind == "FFJORD":
        f = spec["field"]
        if f["type"] != "MLPField":
            raise ValueError(f"unknown field type {f['type']!r}")
        field = MLPField(
            f["dim"],
            f["hidden"],
            f["layers"],
            context_dim=f["context_dim"],
            activation=f["activation"],
            key=next(keys.fields),
        )
        t = spec["trace"]
        trace = (
            ExactTrace()
            if t["type"] == "exact"
            else HutchinsonTrace(num_samples=t["num_samples"], noise=t["noise"])
        )
        return FFJORD(
            field,
            trace=trace,
            solver=SOLVERS[spec["solver"]](),
            rtol=spec["rtol"],
            atol=spec["atol"],
            t0=spec["t0"],
            t1=spec["t1"],
            dt0=spec["dt0"],
            max_steps=spec["max_steps"],
            adjoint=make_adjoint(spec["adjoint"], spec.get("checkpoints")),
            per_point=spec["per_point"],
        )
    raise ValueError(f"unknown bijector type {kind!r}")


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
        keys = _Keys(key, _count_blocks(spec["bijector"]))
        return TransformedDistribution(base, _build_bijector(spec["bijector"], keys))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"the model description is incomplete or corrupt ({err})") from None
