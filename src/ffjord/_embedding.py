"""Embedding networks: learned summaries of the conditions, trained with the flow.

A simulator's output is often hundreds of numbers (a time series, a set of i.i.d.
trials) while the posterior depends on it through a few statistics. An embedding maps
each condition row `(k,)` to `features` numbers that the flow's fields see instead;
`EmbeddedContext` puts one in front of a conditional flow, so it is trained by either
objective and saved with the model.

Condition rows stay flat everywhere (`(..., k)`). `Conv1dEmbedding` and `SetEmbedding`
read a row as `shape = (T, C)`, row-major: T time steps (or N trials) of C values each,
so the row `[x(t=0, c=0), x(0, 1), ..., x(1, 0), ...]` is `row.reshape(T, C)`.

Example:
    >>> import jax, jax.numpy as jnp, ffjord
    >>> embedding = ffjord.SetEmbedding((50, 2), 8, key=jax.random.key(0))
    >>> rows = jax.random.normal(jax.random.key(1), (3, 100))
    >>> embedding(rows).shape
    (3, 8)
    >>> shuffled = rows.reshape(3, 50, 2)[:, ::-1].reshape(3, 100)  # trials reordered
    >>> bool(jnp.allclose(embedding(rows), embedding(shuffled), atol=1e-6))
    True
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ._bijector import AbstractBijector, ContextMap, check_wrapped
from ._checks import is_int
from ._config import Described, InitKeys, config_of

EMBEDDINGS = ("mlp", "conv1d", "set", "linear", "none")  # `ffjord train --embedding`
SHAPED_EMBEDDINGS = ("conv1d", "set")  # read a row as the data's context_shape (T, C)
HIDDEN = 64  # units of the embeddings' hidden layers
CHANNELS = 16  # channels of the convolution's hidden layers
KERNEL = 5  # the convolution's kernel (time steps), stride 2
CONV_LAYERS = 3  # stride-2 convolutions: a series of T steps is summarised at about T / 8


def _count(value, name: str, owner: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def _shape(shape, owner: str) -> tuple[int, int]:
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"{owner}: shape must be a pair (T, C), got {shape!r}")
    return _count(shape[0], "shape[0]", owner), _count(shape[1], "shape[1]", owner)


class AbstractEmbedding(eqx.Module, Described):
    """A learned map from condition rows `(..., context_dim)` to `(..., features)`.

    Subclasses define `context_dim`, `features` and `embed`, the map of one row; calling
    the embedding maps any leading batch shape.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> class Mean(ffjord.AbstractEmbedding):  # the mean of each row: one feature
        ...     context_dim = 10
        ...     features = 1
        ...     def embed(self, row):
        ...         return jnp.mean(row, keepdims=True)
        >>> Mean()(jnp.ones((4, 3, 10))).shape
        (4, 3, 1)
    """

    config_family: ClassVar[str] = "embedding"  # saved and rebuilt: see `ffjord._config`

    @property
    @abc.abstractmethod
    def context_dim(self) -> int:
        """The condition columns `k` a row has."""

    @property
    @abc.abstractmethod
    def features(self) -> int:
        """The numbers each row is summarised by."""

    @abc.abstractmethod
    def embed(self, row: Array) -> Array:
        """One condition row `(k,)` -> its summary `(features,)`."""

    def __call__(self, context: Array) -> Array:
        lead = context.shape[:-1]
        rows = context.reshape(-1, self.context_dim)
        return jax.vmap(self.embed)(rows).reshape(*lead, self.features)


class MLPEmbedding(AbstractEmbedding):
    """An MLP of `layers` hidden layers of `hidden` SiLU units: rows `(k,)` ->
    `(features,)`. For condition columns with no structure to exploit. With
    `keep_input`, each row's summary is the row itself followed by the MLP's `features`
    numbers (`k + features` in all), so that the fields keep what the raw conditions say
    linearly (a linear-Gaussian posterior's mean) beside what the MLP learns (a scale that
    a spread of the conditions sets).

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> ffjord.MLPEmbedding(40, 8, key=jax.random.key(0))(jnp.ones((5, 40))).shape
        (5, 8)
        >>> kept = ffjord.MLPEmbedding(3, 8, keep_input=True, key=jax.random.key(0))
        >>> summary = kept(jnp.arange(6.0).reshape(2, 3))
        >>> summary.shape, summary[:, :3].tolist()
        ((2, 11), [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    """

    mlp: eqx.nn.MLP
    hidden: int = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    keep_input: bool = eqx.field(static=True)

    config_type: ClassVar[str | None] = "MLPEmbedding"

    def __init__(
        self,
        context_dim: int,
        features: int,
        hidden: int = HIDDEN,
        layers: int = 2,
        *,
        keep_input: bool = False,
        key: PRNGKeyArray,
    ):
        name = "MLPEmbedding"
        for what, value in (("context_dim", context_dim), ("features", features)):
            _count(value, what, name)
        self.hidden, self.layers = _count(hidden, "hidden", name), _count(layers, "layers", name)
        self.keep_input = bool(keep_input)
        self.mlp = eqx.nn.MLP(context_dim, features, hidden, layers, jax.nn.silu, key=key)

    @property
    def context_dim(self) -> int:
        return self.mlp.in_size  # type: ignore[return-value]

    @property
    def features(self) -> int:
        return self.learned + (self.context_dim if self.keep_input else 0)

    @property
    def learned(self) -> int:
        """The MLP's own numbers per row (`features` less the kept row)."""
        return self.mlp.out_size  # type: ignore[return-value]

    def embed(self, row: Array) -> Array:
        learned = self.mlp(row)
        return jnp.concatenate([row, learned]) if self.keep_input else learned

    def to_config(self) -> dict:
        return {
            "type": "MLPEmbedding",
            "context_dim": self.context_dim,
            "features": self.learned,
            "hidden": self.hidden,
            "layers": self.layers,
            "keep_input": self.keep_input,
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "MLPEmbedding":
        return cls(
            config["context_dim"],
            config["features"],
            config["hidden"],
            config["layers"],
            keep_input=config.get("keep_input", False),  # runs saved before it existed
            key=keys.context,
        )


class SetEmbedding(AbstractEmbedding):
    """A DeepSet (Zaheer et al., 2017) over `shape = (N, C)`: each of N i.i.d. trials of
    C values passes through one MLP (`hidden` SiLU units, two layers), their mean through
    a second MLP to `features` numbers. Reordering the trials leaves the summary
    unchanged (up to rounding), as it leaves an i.i.d. likelihood unchanged.

    Example:
        >>> import jax, ffjord
        >>> ffjord.SetEmbedding((20, 1), 4, key=jax.random.key(0)).context_dim
        20
    """

    phi: eqx.nn.MLP
    rho: eqx.nn.MLP
    shape: tuple[int, int] = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    config_type: ClassVar[str | None] = "SetEmbedding"

    def __init__(
        self, shape: tuple[int, int], features: int, hidden: int = HIDDEN, *, key: PRNGKeyArray
    ):
        name = "SetEmbedding"
        self.shape = _shape(shape, name)
        _count(features, "features", name)
        self.hidden = _count(hidden, "hidden", name)
        phi_key, rho_key = jax.random.split(key)
        channels = self.shape[1]
        silu = jax.nn.silu
        self.phi = eqx.nn.MLP(channels, hidden, hidden, 1, silu, silu, key=phi_key)
        self.rho = eqx.nn.MLP(hidden, features, hidden, 1, silu, key=rho_key)

    @property
    def context_dim(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def features(self) -> int:
        return self.rho.out_size  # type: ignore[return-value]

    def embed(self, row: Array) -> Array:
        trials = row.reshape(self.shape)
        return self.rho(jnp.mean(jax.vmap(self.phi)(trials), axis=0))

    def to_config(self) -> dict:
        return {
            "type": "SetEmbedding",
            "shape": list(self.shape),
            "features": self.features,
            "hidden": self.hidden,
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "SetEmbedding":
        shape = tuple(config["shape"])
        return cls(shape, config["features"], config["hidden"], key=keys.context)  # type: ignore[arg-type]


class Conv1dEmbedding(AbstractEmbedding):
    """A 1-D convolutional network over `shape = (T, C)`: T time steps of C channels,
    each channel rescaled to unit root mean square, pass through `CONV_LAYERS`
    convolutions (kernel 5, stride 2, `channels` SiLU channels); an MLP of `hidden` units
    maps their output (flattened in time order, and averaged over time) and the channels'
    log scales to `features` numbers. It sees time order: a reversed series gives another
    summary.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> net = ffjord.Conv1dEmbedding((100, 1), 4, key=jax.random.key(0))
        >>> series = jnp.sin(jnp.linspace(0, 3, 100))
        >>> bool(jnp.allclose(net(series), net(series[::-1])))
        False
    """

    convs: tuple[eqx.nn.Conv1d, ...]
    head: eqx.nn.MLP
    shape: tuple[int, int] = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)

    config_type: ClassVar[str | None] = "Conv1dEmbedding"

    def __init__(
        self,
        shape: tuple[int, int],
        features: int,
        channels: int = CHANNELS,
        hidden: int = HIDDEN,
        *,
        key: PRNGKeyArray,
    ):
        name = "Conv1dEmbedding"
        self.shape = _shape(shape, name)
        _count(features, "features", name)
        self.channels = _count(channels, "channels", name)
        self.hidden = _count(hidden, "hidden", name)
        keys = jax.random.split(key, CONV_LAYERS + 1)
        steps, width = self.shape
        convs = []
        for i in range(CONV_LAYERS):
            convs.append(
                eqx.nn.Conv1d(width, channels, KERNEL, stride=2, padding=KERNEL // 2, key=keys[i])
            )
            width, steps = channels, (steps + 1) // 2  # padding k // 2, stride 2: ceil(T / 2)
        self.convs = tuple(convs)
        head_in = width * steps + width + self.shape[1]  # see `embed`
        self.head = eqx.nn.MLP(head_in, features, hidden, 1, jax.nn.silu, key=keys[-1])

    @property
    def context_dim(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def features(self) -> int:
        return self.head.out_size  # type: ignore[return-value]

    def embed(self, row: Array) -> Array:
        h = row.reshape(self.shape).T  # (C, T): channels first, as the convolution reads
        # each channel at unit scale, its log scale kept: a series' scale (a variance)
        # spans orders of magnitude that a few SiLU units do not resolve
        scale = jnp.sqrt(jnp.mean(h**2, axis=1, keepdims=True) + 1e-6)
        h = h / scale
        for conv in self.convs:
            conv, h = _one_dtype(conv, h)
            h = jax.nn.silu(conv(h))
        # time-major (step by step, channels within), then each channel's mean over time:
        # a stationary series' statistics are means of local features
        return self.head(jnp.concatenate([h.T.ravel(), h.mean(axis=1), jnp.log(scale[:, 0])]))

    def to_config(self) -> dict:
        return {
            "type": "Conv1dEmbedding",
            "shape": list(self.shape),
            "features": self.features,
            "channels": self.channels,
            "hidden": self.hidden,
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "Conv1dEmbedding":
        shape = tuple(config["shape"])
        return cls(
            shape,  # type: ignore[arg-type]
            config["features"],
            config["channels"],
            config["hidden"],
            key=keys.context,
        )


def _one_dtype(conv: eqx.nn.Conv1d, h: Array) -> tuple[eqx.nn.Conv1d, Array]:
    """`conv` and its input `h` in the wider of their dtypes (`lax.conv` takes one; nothing
    is downcast)."""
    wide = jnp.result_type(h.dtype, conv.weight.dtype)
    return jax.tree.map(lambda a: a.astype(wide) if eqx.is_array(a) else a, conv), h.astype(wide)


class EmbeddedContext(ContextMap):
    """`bijector`, given its conditions through a learned `embedding`: the fields see
    `embedding.features` numbers per condition row instead of its `k` columns. The
    embedding is trained with the flow (by either objective) and saved with it.

    Example:
        >>> import jax, jax.numpy as jnp, ffjord
        >>> field = ffjord.MLPField(2, 8, 3, context_dim=4, key=jax.random.key(0))
        >>> embedding = ffjord.Conv1dEmbedding((30, 2), 4, key=jax.random.key(1))
        >>> flow = ffjord.EmbeddedContext(ffjord.FFJORD(field), embedding)
        >>> flow.context_dim, flow.forward(jnp.zeros(2), context=jnp.ones(60)).shape
        (60, (2,))
    """

    bijector: AbstractBijector
    embedding: AbstractEmbedding

    config_type: ClassVar[str | None] = "EmbeddedContext"

    def __init__(self, bijector: AbstractBijector, embedding: AbstractEmbedding):
        if not isinstance(embedding, AbstractEmbedding):
            raise TypeError(
                f"EmbeddedContext takes an AbstractEmbedding, got {type(embedding).__name__}"
            )
        width = embedding.features
        check_wrapped("EmbeddedContext", bijector, width, f"the embedding gives {width} features")
        self.bijector, self.embedding = bijector, embedding

    def to_config(self) -> dict:
        return {
            "type": "EmbeddedContext",
            "bijector": config_of(self.bijector),
            "embedding": config_of(self.embedding),
        }

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "EmbeddedContext":
        inner = AbstractBijector.from_config(config["bijector"], keys)
        return cls(inner, AbstractEmbedding.from_config(config["embedding"], keys))

    @property
    def context_dim(self) -> int:
        return self.embedding.context_dim

    def map_context(self, context: Array) -> Array:
        return self.embedding(context)
