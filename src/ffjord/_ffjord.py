"""The FFJORD bijector: state and log-determinant in one augmented ODE solve."""

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

from ._bijector import AbstractBijector, SolveStats
from ._config import InitKeys, NotDescribed, config_of
from ._trace import AbstractTrace, ExactTrace
from ._vector_field import AbstractVectorField, CallableField

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {  # the solvers a description names
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


def _name_in(table: dict[str, type], value: object) -> str:
    """The name `table` gives `value`'s exact class (`NotDescribed` if none)."""
    for name, cls in table.items():
        if type(value) is cls:
            return name
    raise NotDescribed(type(value).__name__)


def _evals_per_step(solver: diffrax.AbstractSolver) -> tuple[int, int]:
    """(field evaluations per step, extra evaluations at the start) for `solver`.

    Read off the Butcher tableau of explicit Runge-Kutta solvers (first-same-as-last
    tableaus reuse one stage); other solvers are counted as one evaluation per step.
    The counts match evaluations counted at run time (see the tests), except that a
    first-same-as-last solver evaluates its first stage once more for each rejected
    attempt at the very first step (diffrax's stats do not tell those apart).
    """
    if not isinstance(solver, diffrax.AbstractRungeKutta):
        return 1, 0
    tableau = solver.tableau
    if not isinstance(tableau, diffrax.ButcherTableau):  # e.g. an IMEX pair of tableaus
        return 1, 0
    stages = len(tableau.c) + 1
    if tableau.fsal:
        return stages - 1, 1
    return stages, 0


def _per_point(fn, z, context):
    """`fn(z_i, context_i)` over the batch; every output keeps the dtype of the points."""
    out = jax.vmap(fn, in_axes=(0, None if context is None else 0))(z, context)
    return jax.tree.map(lambda a: a.astype(z.dtype), out)


def _batched_field(field, t, z, context):
    return _per_point(lambda zi, ci: field(t, zi, ci), z, context)


def _dynamics(t, z, args):
    field, context, _, _ = args
    return _batched_field(field, t, z, context)


def _divergence_dynamics(t, state, args):
    """d/dt (z, log-det) = (f(t, z), tr(df/dz)), from the field's own exact divergence."""
    z, _ = state
    field, context, _, _ = args
    return _per_point(lambda zi, ci: field.value_and_divergence(t, zi, ci), z, context)


def _kinetic_dynamics(t, state, args):
    """`_divergence_dynamics` plus d/dt kinetic energy = ||f||^2 (RNODE without Frobenius)."""
    dz, div = _divergence_dynamics(t, state[:2], args)
    return dz, div, jnp.sum(dz * dz, axis=-1), jnp.zeros_like(div)


def _augmented_dynamics(t, state, args):
    """d/dt (z, log-det) = (f(t, z), scale * sum_v v^T (df/dz) v), per point.

    With four state parts (RNODE), also d/dt kinetic energy = ||f||^2 and d/dt Frobenius
    = scale * sum_v ||(df/dz) v||^2, an estimate of ||df/dz||_F^2 from the same probes
    (exact for the standard basis, unbiased for Hutchinson's).
    """
    z = state[0]
    field, context, probes, scale = args
    dz, jvp = jax.linearize(lambda u: _batched_field(field, t, u, context), z)
    probes = probes.astype(z.dtype)
    j_probes = jax.vmap(jvp)(probes)  # (m, n, d): J v for every probe v, every point
    trace = scale * jnp.sum(j_probes * probes, axis=(0, 2))
    if len(state) == 2:
        return dz, trace
    kinetic = jnp.sum(dz * dz, axis=-1)
    frobenius = scale * jnp.sum(j_probes * j_probes, axis=(0, 2))
    return dz, trace, kinetic, frobenius


def _norm_of_flow(state) -> jax.Array:
    """diffrax's RMS error norm over the state and log-determinant only (of RNODE's four
    augmented parts), so that regularising does not change how the solver steps."""
    return optx.rms_norm(state[:2])


def _norm_of_state(state) -> jax.Array:
    """diffrax's RMS error norm over the state alone (`Mode.steps_follow="state"`)."""
    return optx.rms_norm(state[0])


class FFJORD(AbstractBijector):
    r"""Free-form continuous dynamics: the bijector $x = z(t_0) \mapsto y = z(t_1)$.

    The state solves $dz/dt = f(t, z, \text{context})$ and the log-determinant the
    instantaneous change of variables $d\log|\det| / dt = \mathrm{Tr}(\partial f/\partial z)$,
    together in one augmented solve; the inverse is the same solve run from $t_1$
    back to $t_0$. `field` is an [`ffjord.AbstractVectorField`][] (e.g.
    [`ffjord.MLPField`][]) or any callable `field(t, z, context)` on one point `z` of
    shape `(d,)`, which is wrapped in [`ffjord.CallableField`][]. The exact trace is the
    field's own `value_and_divergence` (a closed form for `MLPField`, `d`
    Jacobian-vector products by default).

    By default all points of a batch are integrated as one ODE with shared adaptive
    steps (fast); a point's result then depends on its batch-mates at the level of
    the solver tolerance. `per_point=True` solves each point on its own instead.

    Arguments:
        field: the vector field (a plain callable is wrapped in `CallableField`).
        trace: `ExactTrace()` (default) or `HutchinsonTrace(...)`.
        solver: any diffrax solver (default `diffrax.Dopri5()`).
        rtol: relative tolerance of the default PID step-size controller.
        atol: absolute tolerance of the default PID step-size controller.
        t0: start of the integration interval (the base distribution's side).
        t1: end of the integration interval (the data's side).
        stepsize_controller: a diffrax controller, replacing the rtol/atol PID one.
        dt0: the first step of an adaptive solve (`None`: the whole interval, shrunk by
            the controller as the field demands); required with a constant step size.
        max_steps: steps allowed per solve before it is an error.
        adjoint: how gradients pass through the solver; backpropagation through the
            solver by default, `diffrax.BacksolveAdjoint()` for O(1) memory.
        per_point: solve each point separately (vmap) instead of the batch at once.

    A failed solve (e.g. `max_steps` exhausted) raises an error from every method,
    except the `*_with_stats` ones, which report it in `stats.failed` instead (the
    training loop uses this to reject a step rather than stop).

    Example:
        >>> import jax, ffjord
        >>> field = ffjord.MLPField(dim=2, hidden=8, layers=3, key=jax.random.key(0))
        >>> flow = ffjord.FFJORD(field)
        >>> y, ldj = flow.forward_and_log_det(jax.numpy.zeros((5, 2)))
        >>> y.shape, ldj.shape
        ((5, 2), (5,))
    """

    field: AbstractVectorField
    trace: AbstractTrace
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    per_point: bool = eqx.field(static=True)

    config_type: ClassVar[str | None] = "FFJORD"

    def __init__(
        self,
        field: AbstractVectorField | Callable,
        *,
        trace: AbstractTrace | None = None,
        solver: diffrax.AbstractSolver | None = None,
        rtol: float = 1e-3,
        atol: float = 1e-5,
        t0: float = 0.0,
        t1: float = 1.0,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
        adjoint: diffrax.AbstractAdjoint | None = None,
        per_point: bool = False,
    ):
        if not callable(field):
            raise TypeError(f"FFJORD: field must be callable field(t, z, context), got {field!r}")
        trace = ExactTrace() if trace is None else trace
        if not isinstance(trace, AbstractTrace):
            raise TypeError(
                f"FFJORD: trace must be ExactTrace() or HutchinsonTrace(...), got {trace!r}"
            )
        solver = diffrax.Dopri5() if solver is None else solver
        if not isinstance(solver, diffrax.AbstractSolver):
            raise TypeError(f"FFJORD: solver must be a diffrax solver, got {solver!r}")
        if float(t0) == float(t1):
            raise ValueError(f"FFJORD: t0 and t1 must differ, got t0 == t1 == {t0}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"FFJORD: max_steps must be a positive integer, got {max_steps!r}")
        if stepsize_controller is None:
            for name, tol in (("rtol", rtol), ("atol", atol)):
                if not float(tol) > 0:
                    raise ValueError(f"FFJORD: {name} must be positive, got {tol}")
            stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol)
        elif not isinstance(stepsize_controller, diffrax.AbstractStepSizeController):
            raise TypeError(
                f"FFJORD: stepsize_controller must be a diffrax controller, "
                f"got {stepsize_controller!r}"
            )
        if dt0 is None and isinstance(stepsize_controller, diffrax.ConstantStepSize):
            raise ValueError("FFJORD: a constant step size needs dt0=")
        if dt0 is not None and not float(dt0) > 0:
            raise ValueError(f"FFJORD: dt0 must be positive, got {dt0}")
        self.field = field if isinstance(field, AbstractVectorField) else CallableField(field)
        self.trace = trace
        self.solver = solver
        self.stepsize_controller = stepsize_controller
        self.adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
        self.t0 = float(t0)
        self.t1 = float(t1)
        self.dt0 = None if dt0 is None else float(dt0)
        self.max_steps = max_steps
        self.per_point = bool(per_point)

    def to_config(self) -> dict:
        controller = self.stepsize_controller
        if type(controller) is not diffrax.PIDController:
            raise NotDescribed(type(controller).__name__)
        config = {
            "type": "FFJORD",
            "field": config_of(self.field),
            "trace": config_of(self.trace),
            "solver": _name_in(SOLVERS, self.solver),
            "rtol": float(controller.rtol),
            "atol": float(controller.atol),
            "t0": self.t0,
            "t1": self.t1,
            "dt0": self.dt0,
            "max_steps": self.max_steps,
            "adjoint": _name_in(ADJOINTS, self.adjoint),
            "per_point": self.per_point,
        }
        adjoint = self.adjoint
        if (
            isinstance(adjoint, diffrax.RecursiveCheckpointAdjoint)
            and adjoint.checkpoints is not None
        ):
            config["checkpoints"] = int(adjoint.checkpoints)  # only when set, as before
        return config

    @classmethod
    def from_config(cls, config: dict, keys: InitKeys) -> "FFJORD":
        return cls(
            AbstractVectorField.from_config(config["field"], keys),
            trace=AbstractTrace.from_config(config["trace"], keys),
            solver=SOLVERS[config["solver"]](),
            rtol=config["rtol"],
            atol=config["atol"],
            t0=config["t0"],
            t1=config["t1"],
            dt0=config["dt0"],
            max_steps=config["max_steps"],
            adjoint=make_adjoint(config["adjoint"], config.get("checkpoints")),
            per_point=config["per_point"],
        )

    @property
    def dim(self) -> int | None:
        return self.field.dim

    @property
    def context_dim(self) -> int | None:
        return self.field.context_dim

    def _check_context(self, context):
        context_dim = self.field.context_dim
        if context_dim is None:
            return
        if context_dim and context is None:
            raise ValueError(f"this flow is conditional (context_dim={context_dim}): pass context=")
        if context is not None and context.shape[-1] != context_dim:
            raise ValueError(
                f"context has dimension {context.shape[-1]} but the field expects "
                f"context_dim={context_dim}"
            )

    def transform_flat(self, x, context, key, mode):
        self._check_context(context)
        n, d = x.shape
        # The exact trace is the field's own divergence, except when RNODE's Frobenius
        # integral needs the Jacobian-vector products of the probes anyway.
        closed_form = isinstance(self.trace, ExactTrace) and mode.regularize != "all"
        if mode.log_det and not closed_form:
            probes, scale = self.trace.probes(key, n, d, x.dtype)
        else:
            probes, scale = None, 1.0
        if self.per_point:
            return self._solve_per_point(x, context, probes, scale, mode)
        return self._solve(x, context, probes, scale, mode)

    def _solve_per_point(self, x, context, probes, scale, mode):
        def one(xi, ci, pi):
            ci = None if ci is None else ci[None]
            pi = None if pi is None else pi[:, None]
            y, ld, stats = self._solve(xi[None], ci, pi, scale, mode)
            integrals = jax.tree.map(lambda a: a[0], (stats.kinetic, stats.jacobian_frobenius))
            return y[0], ld[0], stats.counters(), integrals

        in_axes = (0, None if context is None else 0, None if probes is None else 1)
        y, ld, stats, (kinetic, frobenius) = jax.vmap(one, in_axes=in_axes)(x, context, probes)
        total = dataclasses.replace(stats.total(), kinetic=kinetic, jacobian_frobenius=frobenius)
        return y, ld, total

    def _solve(self, x, context, probes, scale, mode):
        inverse, regularize = mode.inverse, mode.regularize
        t0, t1 = (self.t1, self.t0) if inverse else (self.t0, self.t1)
        # The first step tries the whole interval (`dt0=None`); the controller shrinks it
        # as the field demands. diffrax's own initial guess is far more cautious: it
        # spends about three steps per block even on a field that is nearly constant.
        first = abs(t1 - t0) if self.dt0 is None else self.dt0
        dt0 = first if t1 > t0 else -first
        zeros = jnp.zeros(x.shape[:1], x.dtype)
        if regularize is not None:
            dynamics = _kinetic_dynamics if probes is None else _augmented_dynamics
            y0 = (x, zeros, zeros, zeros)
        elif mode.log_det:
            dynamics = _divergence_dynamics if probes is None else _augmented_dynamics
            y0 = (x, zeros)
        else:
            dynamics = _dynamics
            y0 = x
        controller = self.stepsize_controller
        if isinstance(controller, diffrax.PIDController) and mode.log_det:
            if mode.steps_follow == "state":
                controller = eqx.tree_at(lambda c: c.norm, controller, _norm_of_state)
            elif regularize is not None:
                # The regularisers are accumulated, not integrated to a tolerance: step
                # sizes follow the state and log-determinant alone, as without them.
                controller = eqx.tree_at(lambda c: c.norm, controller, _norm_of_flow)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(dynamics),
            self.solver,
            t0,
            t1,
            dt0,
            y0,
            args=(self.field, context, probes, scale),
            stepsize_controller=controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=False,
        )
        assert sol.ys is not None and sol.stats is not None
        ys = jax.tree.map(lambda a: a[-1], sol.ys)
        integrals = None, None
        if regularize is not None:
            # The integrals of ||f||^2 and ||df/dz||_F^2 along the path, positive in
            # both directions (an inverse solve integrates them from t1 back to t0).
            y, ld, kinetic, frobenius = ys
            if regularize == "kinetic":  # JVP probes estimate it anyway: not asked for
                frobenius = jnp.zeros_like(frobenius)
            sign = -1.0 if inverse else 1.0
            integrals = sign * kinetic, sign * frobenius
        elif mode.log_det:
            y, ld = ys
        else:
            y, ld = ys, zeros
        per_step, at_start = _evals_per_step(self.solver)
        num_steps = sol.stats["num_steps"]
        stats = SolveStats(
            num_steps=num_steps,
            num_accepted_steps=sol.stats["num_accepted_steps"],
            num_rejected_steps=sol.stats["num_rejected_steps"],
            num_fn_evals=per_step * num_steps + at_start,
            failed=sol.result != diffrax.RESULTS.successful,
            kinetic=integrals[0],
            jacobian_frobenius=integrals[1],
        )
        if mode.throw:
            y = eqx.error_if(
                y,
                sol.result == diffrax.RESULTS.max_steps_reached,
                f"FFJORD: the ODE solver used all max_steps={self.max_steps} steps before "
                "reaching the end time; raise max_steps, loosen rtol/atol, or regularise "
                "the vector field",
            )
            y = eqx.error_if(
                y,
                stats.failed,
                "FFJORD: the ODE solve failed (non-finite values or a step size that "
                "shrank to nothing); check the inputs for NaN/inf, loosen rtol/atol or "
                "lower the learning rate",
            )
        return y, ld, stats
