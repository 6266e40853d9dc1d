"""Trace estimators for the instantaneous change of variables.

Both estimators are written as ``scale * sum_v v^T J v`` over a set of probe
vectors ``v``: the standard basis (exact trace, ``d`` Jacobian-vector products,
scale 1) or ``num_samples`` random vectors (Hutchinson, scale ``1/num_samples``).
The probes are drawn once per solve and held fixed over time, which is what makes
Hutchinson's estimate of the log-determinant unbiased.
"""

import abc
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._config import Described, InitKeys


class AbstractTrace(eqx.Module, Described):
    """How the trace of the field's Jacobian is computed: `ExactTrace` or
    `HutchinsonTrace`, given to `ffjord.FFJORD(..., trace=)`.

    Example:
        >>> import ffjord
        >>> ffjord.ExactTrace().stochastic, ffjord.HutchinsonTrace().stochastic
        (False, True)
    """

    stochastic: eqx.AbstractClassVar[bool]
    config_family: ClassVar[str] = "trace"  # saved and rebuilt: see `ffjord._config`

    @abc.abstractmethod
    def probes(
        self, key: PRNGKeyArray | None, batch: int, dim: int, dtype: jnp.dtype
    ) -> tuple[Float[Array, "m batch dim"], float]:
        """Probe vectors of shape `(m, batch, dim)` and the scale of their sum."""


class ExactTrace(AbstractTrace):
    """The exact trace, from `d` Jacobian-vector products (fine in low dimension).

    Example:
        >>> import jax, ffjord
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> flow = ffjord.FFJORD(field, trace=ffjord.ExactTrace())
        >>> flow.forward_and_log_det(jax.numpy.zeros((5, 2)))[1].shape
        (5,)
    """

    stochastic: ClassVar[bool] = False
    config_type: ClassVar[str | None] = "exact"

    def to_config(self) -> dict:
        return {"type": "exact"}

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "ExactTrace":
        return cls()

    def probes(self, key, batch, dim, dtype):
        del key
        eye = jnp.eye(dim, dtype=dtype)
        return jnp.broadcast_to(eye[:, None, :], (dim, batch, dim)), 1.0


class HutchinsonTrace(AbstractTrace):
    """Hutchinson's unbiased estimator ``E[eps^T J eps]``.

    `noise` is ``"rademacher"`` (entries +-1, lower variance) or ``"gaussian"``.
    Every method that returns a log-determinant or log-density then needs `key=`.

    Example:
        >>> import ffjord
        >>> trace = ffjord.HutchinsonTrace(num_samples=2, noise="gaussian")
    """

    num_samples: int = eqx.field(static=True, default=1)
    noise: Literal["rademacher", "gaussian"] = eqx.field(static=True, default="rademacher")

    stochastic: ClassVar[bool] = True
    config_type: ClassVar[str | None] = "hutchinson"

    def to_config(self) -> dict:
        return {"type": "hutchinson", "num_samples": self.num_samples, "noise": self.noise}

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "HutchinsonTrace":
        return cls(num_samples=config["num_samples"], noise=config["noise"])

    def __check_init__(self):
        n = self.num_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"HutchinsonTrace: num_samples must be an integer >= 1, got {n!r}")
        if self.noise not in ("rademacher", "gaussian"):
            raise ValueError(
                f"HutchinsonTrace: noise must be 'rademacher' or 'gaussian', got {self.noise!r}"
            )

    def probes(self, key, batch, dim, dtype):
        if key is None:
            raise ValueError(
                "HutchinsonTrace is stochastic: pass key= (a jax.random.key) to any method "
                "that returns a log-determinant or log-density"
            )
        shape = (self.num_samples, batch, dim)
        if self.noise == "rademacher":
            v = jax.random.rademacher(key, shape, dtype=dtype)
        else:
            v = jax.random.normal(key, shape, dtype=dtype)
        return v, 1.0 / self.num_samples
