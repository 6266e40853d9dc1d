"""The flow a run of `ffjord train` trains, as typed options (`ModelOptions`), and the
description (`ffjord._spec`) they give for a data source: the fields and their solves, the
fixed maps that undo the data's standardisation, and the conditions' embedding and
standardisation.

Example:
    >>> ModelOptions(blocks=1, embedding="linear", embedding_features=4).embedding_features
    4
"""

import dataclasses
from typing import Any

import jax
import numpy as np

from . import datasets
from ._checks import fraction, non_negative_int, one_of, positive_int, positive_number
from ._distributions import TransformedDistribution
from ._embedding import CHANNELS, EMBEDDINGS, HIDDEN, SHAPED_EMBEDDINGS
from ._errors import InputError
from ._source import DataSource
from ._spec import ADJOINTS, SOLVERS, build
from ._vector_field import ACTIVATIONS

TRACES = ("exact", "hutchinson")
BASE_SCALE_TOY = 0.8  # the tutorial's base N(0, 0.8^2 I)
BASE_SCALE_FILE = 1.0  # user data is standardised, so a unit Gaussian fits it best
EMBEDDING_TYPES = {  # the embedding an option names -> the part that makes it
    "linear": "ProjectedContext",
    "mlp": "MLPEmbedding",
    "conv1d": "Conv1dEmbedding",
    "set": "SetEmbedding",
}
EMBEDDING_SIZES: dict[str, dict[str, int]] = {  # the networks' settings besides their features
    "mlp": {"hidden": HIDDEN, "layers": 2, "keep_input": True},
    "set": {"hidden": HIDDEN},
    "conv1d": {"channels": CHANNELS, "hidden": HIDDEN},
}


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The flow a run trains: `blocks` FFJORD blocks, each an MLP field (`hidden` units,
    `layers` layers, `activation`) solved by `solver` within `rtol` / `atol` in at most
    `max_steps` steps, with the `trace` of its Jacobian exact or estimated, gradients by
    `adjoint` (`checkpoints`: states backpropagation keeps); `logit` > 0 models data in
    [0, 1] in logit space; an `embedding` other than `"none"` gives the fields
    `embedding_features` learned features of the conditions (`"linear"`: linear
    combinations, `ProjectedContext`; `"mlp"`, `"conv1d"`, `"set"`: the networks of
    `ffjord._embedding`, the last two reading rows as the data's `context_shape`).
    Checked when made; messages name the parameter.

    Example:
        >>> ModelOptions(blocks=2, hidden=64).layers
        3
        >>> ModelOptions(solver="euler")
        Traceback (most recent call last):
        ...
        ffjord._errors.InputError: unknown solver 'euler'; choose one of: dopri5, tsit5, ...
    """

    blocks: int = 4
    hidden: int = 8
    layers: int = 3
    activation: str = "tanh"
    trace: str = "exact"
    solver: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-5
    max_steps: int = 1000
    adjoint: str = "backprop"
    checkpoints: int | None = None
    logit: float = 0.0
    embedding: str = "none"
    embedding_features: int = 0

    def __post_init__(self):
        for name in ("blocks", "hidden", "layers", "max_steps"):
            positive_int(getattr(self, name), name)
        for name in ("rtol", "atol"):
            positive_number(getattr(self, name), name)
        for name, choices in (
            ("solver", SOLVERS),
            ("trace", TRACES),
            ("activation", ACTIVATIONS),
            ("adjoint", ADJOINTS),
        ):
            one_of(getattr(self, name), name, choices)
        one_of(self.embedding, "embedding", EMBEDDINGS)
        non_negative_int(self.embedding_features, "embedding_features")
        if self.embedding == "none" and self.embedding_features:
            raise InputError(
                f"embedding_features {self.embedding_features} sizes a learned summary of the "
                f"conditions, but embedding is none; choose one of {', '.join(EMBEDDINGS[:-1])}",
                parameters=("embedding_features", "embedding"),
            )
        if self.embedding != "none" and not self.embedding_features:
            raise InputError(
                f"embedding {self.embedding} needs embedding_features of at least 1",
                parameters=("embedding_features", "embedding"),
            )
        fraction(self.logit, "logit", below=0.5, what="a number in [0, 0.5) (0: off)")
        if self.checkpoints is not None:
            positive_int(self.checkpoints, "checkpoints")
            if self.adjoint != "backprop":
                raise InputError(
                    f"checkpoints applies to adjoint backprop, not {self.adjoint} "
                    "(backsolve keeps no checkpoints)",
                    parameters=("checkpoints", "adjoint"),
                )

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "ModelOptions":
        """The model options among flat settings (`TUTORIAL`'s keys)."""
        return cls(**{f.name: settings[f.name] for f in dataclasses.fields(cls)})

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "ModelOptions":
        """The options a model description (`description`, `config.json`'s `model`) was
        made from."""
        blocks: list[dict] = []
        found: dict[str, Any] = {}

        def walk(node: dict) -> None:
            if node["type"] == "FFJORD":
                blocks.append(node)
            elif node["type"] == "UnitInterval":
                found["logit"] = node["alpha"]
            elif node["type"] == EMBEDDING_TYPES["linear"]:
                found["embedding"], found["embedding_features"] = "linear", node["features"]
            elif node["type"] == "EmbeddedContext":
                part = node["embedding"]
                kind = {v: k for k, v in EMBEDDING_TYPES.items()}[part["type"]]
                if kind == "mlp" and not part.get("keep_input", False):
                    raise InputError(
                        "this run's mlp embedding gives the fields its learned features alone "
                        "(made before embedding mlp kept each condition row beside them); "
                        "ffjord.load and ffjord sample read it, but it cannot be resumed",
                        parameters=("resume=True",),
                    )
                found["embedding"], found["embedding_features"] = kind, part["features"]
            inner = node.get("bijectors", []) + ([node["bijector"]] if "bijector" in node else [])
            for part in inner:
                walk(part)

        walk(description["bijector"])
        block, field = blocks[0], blocks[0]["field"]
        return cls(
            blocks=len(blocks),
            hidden=field["hidden"],
            layers=field["layers"],
            activation=field["activation"],
            trace=block["trace"]["type"],
            solver=block["solver"],
            rtol=block["rtol"],
            atol=block["atol"],
            max_steps=block["max_steps"],
            adjoint=block["adjoint"],
            checkpoints=block.get("checkpoints"),
            **found,
        )

    def description(self, source: DataSource, train: np.ndarray) -> dict:
        """The description (`ffjord._spec`) of the flow the settings give for `source`, whose
        training rows `train` fix the standardisations: each block an MLP field in an FFJORD
        solve; then, for data other than the built-in 2-D sets, a fixed `Affine` map that
        undoes the standardisation (of the logits, with `logit`), a `UnitInterval` map
        (`logit`), learned features of the conditions (`embedding`) and their
        standardisation (per channel when the data give a `context_shape`)."""
        dim = source.dim
        points, context = source.split(train)
        features = self.embedding_features
        width = features or source.context_dims  # what the fields see of each condition row
        if EMBEDDING_SIZES.get(self.embedding, {}).get("keep_input"):  # rows beside features
            width += source.context_dims
        trace = {"type": "exact"}
        if self.trace == "hutchinson":
            trace = {"type": "hutchinson", "num_samples": 1, "noise": "rademacher"}
        block = {
            "type": "FFJORD",
            "field": {
                "type": "MLPField",
                "dim": dim,
                "hidden": self.hidden,
                "layers": self.layers,
                "context_dim": width,
                "activation": self.activation,
            },
            "trace": trace,
            "solver": self.solver,
            "rtol": float(self.rtol),
            "atol": float(self.atol),
            "t0": 0.0,
            "t1": 1.0,
            "dt0": None,
            "max_steps": self.max_steps,
            "adjoint": self.adjoint,
            "per_point": False,
        }
        if self.checkpoints is not None:
            block["checkpoints"] = self.checkpoints
        bijector: dict[str, Any] = {"type": "Chain", "bijectors": [block] * self.blocks}
        base_scale = BASE_SCALE_TOY
        if not is_toy(source):
            base_scale = BASE_SCALE_FILE  # standardised data: a unit Gaussian fits them best
            alpha = self.logit
            shift, scale = _standardisation(logits(points, alpha) if alpha else points)
            affine = {"type": "Affine", "shift": shift, "scale": scale}
            bijector = {"type": "Chain", "bijectors": [bijector, affine]}
            if alpha:
                unit = {"type": "UnitInterval", "dim": dim, "alpha": alpha}
                bijector = {"type": "Chain", "bijectors": [bijector, unit]}
        if self.embedding == "linear":
            bijector = {
                "type": "ProjectedContext",
                "bijector": bijector,
                "context_dim": source.context_dims,
                "features": features,
            }
        elif self.embedding != "none":
            embedding = {"type": EMBEDDING_TYPES[self.embedding], "features": features}
            if self.embedding in SHAPED_EMBEDDINGS:
                embedding["shape"] = list(_shape_of(source))
            else:
                embedding["context_dim"] = source.context_dims
            defaults = EMBEDDING_SIZES[self.embedding]
            bijector = {"type": "EmbeddedContext", "bijector": bijector,
                        "embedding": {**embedding, **defaults}}  # fmt: skip
        if context is not None:
            shift, scale = _standardisation(context, source.context_shape)
            bijector = {"type": "StandardizedContext", "bijector": bijector, "shift": shift,
                        "scale": scale}  # fmt: skip
        base = {"loc": [0.0] * dim, "scale_diag": [float(base_scale)] * dim}
        return {"base": base, "bijector": bijector}

    def build(self, source: DataSource, train: np.ndarray, seed: int) -> TransformedDistribution:
        """The flow for `source`, its arrays initialised from `seed` (`ffjord._spec.build`)."""
        model: TransformedDistribution = build(
            self.description(source, train), jax.random.key(seed)
        )
        return model


def is_toy(source: DataSource) -> bool:
    return source.name in datasets.TOY_DATASETS


def logits(points: np.ndarray, alpha: float) -> np.ndarray:
    """`UnitInterval`'s inverse map: ``logit(alpha + (1 - 2 alpha) x)``, in float64."""
    u = alpha + (1 - 2 * alpha) * np.asarray(points, np.float64)
    return np.log(u) - np.log1p(-u)


def _standardisation(
    columns: np.ndarray, shape: tuple[int, int] | None = None
) -> tuple[list[float], list[float]]:
    """(mean, standard deviation) per column (1 where a column has no spread); with a
    `shape` (T, C), per channel over every step, repeated for each of the T steps (so
    reordering steps or trials commutes with the standardisation)."""
    if shape is not None:
        steps, channels = shape
        per_channel = columns.reshape(-1, channels)
        mean, std = per_channel.mean(axis=0), per_channel.std(axis=0)
        mean, std = np.tile(mean, steps), np.tile(std, steps)
    else:
        mean, std = columns.mean(axis=0), columns.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


def _shape_of(source: DataSource) -> tuple[int, int]:
    assert source.context_shape is not None  # checked with the settings
    return source.context_shape
