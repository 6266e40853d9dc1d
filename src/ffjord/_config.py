"""Descriptions of model parts: how a saved model is written and rebuilt.

A part that can be saved names itself (a class variable `config_type`), writes its
settings as JSON-ready values (`to_config`) and is rebuilt from them (the classmethod
`from_config(config, keys)`). Defining `config_type` on a subclass of an abstract part
registers it under its family ("bijector", "field", "trace", "embedding"), so `from_config` finds a
part by the `"type"` its description names, with no list of known classes to edit.
A part without a description (a user's own field, say) raises `NotDescribed`.

Example:
    >>> import jax, ffjord
    >>> config = ffjord.UnitInterval(2, alpha=0.05).to_config()
    >>> config
    {'type': 'UnitInterval', 'dim': 2, 'alpha': 0.05}
    >>> from_config("bijector", config, InitKeys(jax.random.key(0), 0)).alpha
    0.05
"""

from typing import Any, ClassVar

import jax
import numpy as np

_PARTS: dict[str, dict[str, type]] = {}  # family -> config_type -> class


class NotDescribed(Exception):
    """A model part that has no description (e.g. a user's own vector field)."""


class InitKeys:
    """Where a model rebuilt from its description gets its initial arrays: the fields of
    its FFJORD blocks, in forward order, from `jax.random.split(key, blocks)`, and the
    weights of the map of its conditions (`ProjectedContext`, an embedding) from
    `jax.random.fold_in(key, 2)`."""

    def __init__(self, key: jax.Array, blocks: int):
        self._fields = iter(jax.random.split(key, max(blocks, 1)))
        self.context = jax.random.fold_in(key, 2)

    def field(self) -> jax.Array:
        """The key of the next field, in forward order."""
        return next(self._fields)


class Described:
    """What every part that can be saved declares (a mixin of `AbstractBijector`,
    `AbstractVectorField` and `AbstractTrace`): its `config_family`, the `config_type` a
    description names it by (defining it registers the class), `to_config` and the
    classmethod `from_config`, which on an abstract class builds whichever registered
    part a description names."""

    config_family: ClassVar[str] = ""
    config_type: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "config_type" in cls.__dict__:
            register(cls.config_family, cls)

    def to_config(self) -> dict:
        """This part's description (JSON-ready), from which `from_config` rebuilds it;
        raises `NotDescribed` for a part without one."""
        raise NotDescribed(type(self).__name__)

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> Any:
        """The part `config` describes, its trainable arrays initialised from `keys`."""
        return from_config(cls.config_family, config, keys)


def register(family: str, cls: type) -> None:
    """Make `cls` what a description of `family` with `"type": cls.config_type` builds."""
    _PARTS.setdefault(family, {})[cls.config_type] = cls  # type: ignore[attr-defined]


def from_config(family: str, config: dict[str, Any], keys: InitKeys) -> Any:
    """The part of `family` that `config` describes (its `"type"` picks the class)."""
    name = config["type"]
    cls = _PARTS.get(family, {}).get(name)
    if cls is None:
        raise ValueError(f"unknown {family} type {name!r}")
    return cls.from_config(config, keys)  # type: ignore[attr-defined]


def config_of(part: Any) -> dict[str, Any]:
    """`part.to_config()`, for a part whose own class declares `config_type`: a subclass
    that does not declare one (it may change what the part computes) is `NotDescribed`."""
    if "config_type" not in type(part).__dict__:
        raise NotDescribed(type(part).__name__)
    return part.to_config()


def floats(array: Any) -> list[float]:
    """An array's values as a flat list of Python floats (JSON-ready)."""
    return [float(v) for v in np.asarray(array).ravel()]
