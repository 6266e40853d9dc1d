"""Closed forms, brute-force Jacobians, round trips and errors of the FFJORD bijector."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ffjord

TIGHT = dict(rtol=1e-9, atol=1e-11)


class LinearField(ffjord.AbstractVectorField):
    a: jax.Array
    dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True, default=0)

    def __call__(self, t, z, context):
        return self.a @ z


class TimeField(ffjord.AbstractVectorField):
    """A nonlinear, time-dependent field with a non-trivial Jacobian."""

    w: jax.Array
    dim: int = eqx.field(static=True, default=3)
    context_dim: int = eqx.field(static=True, default=0)

    def __call__(self, t, z, context):
        return jnp.tanh(self.w @ z + jnp.sin(2.0 * t)) * (1.0 + 0.5 * t) - 0.3 * z**3


def linear_flow(a, **kw):
    return ffjord.FFJORD(LinearField(a, a.shape[0]), **{**TIGHT, **kw})


@pytest.fixture
def a_matrix():
    return jnp.array([[0.3, -1.2, 0.1], [0.8, -0.2, 0.4], [-0.5, 0.2, 0.5]])


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (0.5, 2.0), (1.0, -0.5)])
def test_linear_field_matches_matrix_exponential(a_matrix, t0, t1):
    x = jnp.array([[1.0, -2.0, 0.5], [0.1, 0.2, 0.3]])
    flow = linear_flow(a_matrix, t0=t0, t1=t1)
    y, ldj = flow.forward_and_log_det(x)
    expm = scipy.linalg.expm(np.asarray(a_matrix) * (t1 - t0))
    np.testing.assert_allclose(y, x @ expm.T, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ldj, np.trace(a_matrix) * (t1 - t0) * np.ones(2), rtol=1e-8)
    xb, ildj = flow.inverse_and_log_det(y)
    np.testing.assert_allclose(xb, x, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ildj, -ldj, rtol=1e-8)


def test_nonlinear_log_det_matches_brute_force_jacobian(getkey):
    field = TimeField(jax.random.normal(getkey(), (3, 3)))
    flow = ffjord.FFJORD(field, **TIGHT, t0=0.0, t1=1.3)
    xs = jax.random.normal(getkey(), (4, 3))
    # one compiled program per quantity, applied to every point (tracing a solve per
    # point and quantity would take most of the test's time)
    forward_jac, inverse_jac = (
        eqx.filter_jit(jax.jacobian(flow.forward)),
        eqx.filter_jit(jax.jacobian(flow.inverse)),
    )
    forward_ldj, inverse_ldj = (
        eqx.filter_jit(flow.forward_log_det_jacobian),
        eqx.filter_jit(flow.inverse_log_det_jacobian),
    )
    forward = eqx.filter_jit(flow.forward)
    for x in xs:
        expected = jnp.linalg.slogdet(forward_jac(x))[1]
        np.testing.assert_allclose(forward_ldj(x), expected, rtol=1e-6)
        y = forward(x)
        np.testing.assert_allclose(inverse_ldj(y), jnp.linalg.slogdet(inverse_jac(y))[1], rtol=1e-6)


@pytest.mark.parametrize("per_point", [False, True])
def test_round_trip_mlp_field(getkey, per_point):
    field = ffjord.MLPField(2, 16, 3, key=getkey())
    flow = ffjord.FFJORD(field, **TIGHT, per_point=per_point)
    x = 1.5 * jax.random.normal(getkey(), (7, 2))
    y, ldj = flow.forward_and_log_det(x)
    x_back, ildj = flow.inverse_and_log_det(y)
    np.testing.assert_allclose(x_back, x, atol=1e-8)
    np.testing.assert_allclose(ildj, -ldj, atol=1e-8)
    assert not np.allclose(y, x)  # the flow actually moved the points


def test_batched_and_per_point_solves_agree(getkey):
    field = ffjord.MLPField(2, 8, 3, key=getkey())
    x = jax.random.normal(getkey(), (5, 2))
    joint = ffjord.FFJORD(field, **TIGHT).forward_and_log_det(x)
    single = ffjord.FFJORD(field, **TIGHT, per_point=True).forward_and_log_det(x)
    for a, b in zip(joint, single, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)


@pytest.mark.parametrize("batch_shape", [(), (1,), (5,), (3, 4)])
def test_shapes(getkey, batch_shape):
    flow = ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=getkey()))
    x = jax.random.normal(getkey(), batch_shape + (2,))
    y, ldj = flow.forward_and_log_det(x)
    assert y.shape == x.shape and ldj.shape == batch_shape
    assert flow.inverse(y).shape == x.shape
    assert flow.inverse_log_det_jacobian(y).shape == batch_shape
    if batch_shape:  # each point equals its own single-point evaluation
        flat = x.reshape(-1, 2)
        single = jnp.stack([flow.forward_log_det_jacobian(p) for p in flat])
        np.testing.assert_allclose(ldj.reshape(-1), single, rtol=1e-3, atol=1e-4)


def test_float64_is_kept_and_float32_default(getkey):
    flow = ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=getkey()))
    x64 = jnp.ones((3, 2), jnp.float64)
    y, ldj = flow.forward_and_log_det(x64)
    assert y.dtype == jnp.float64 and ldj.dtype == jnp.float64


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(getkey, noise):
    field = TimeField(jax.random.normal(getkey(), (3, 3)))
    x = jnp.array([0.3, -0.7, 1.1])
    exact = ffjord.FFJORD(field, rtol=1e-7, atol=1e-9).forward_log_det_jacobian(x)
    flow = ffjord.FFJORD(field, trace=ffjord.HutchinsonTrace(noise=noise), rtol=1e-7, atol=1e-9)
    n = 4000
    estimates = flow.forward_log_det_jacobian(jnp.broadcast_to(x, (n, 3)), key=getkey())
    mean, se = jnp.mean(estimates), jnp.std(estimates) / np.sqrt(n)
    assert float(jnp.std(estimates)) > 1e-3  # really stochastic
    assert abs(float(mean - exact)) < 4 * float(se)


def test_hutchinson_exact_for_diagonal_jacobian_with_rademacher(getkey):
    # For a diagonal Jacobian, eps^T J eps = tr(J) for every Rademacher eps.
    a = jnp.diag(jnp.array([0.5, -0.2, 0.1]))
    flow = linear_flow(a, trace=ffjord.HutchinsonTrace(num_samples=3))
    ldj = flow.forward_log_det_jacobian(jnp.ones((4, 3)), key=getkey())
    np.testing.assert_allclose(ldj, 0.4 * np.ones(4), rtol=1e-8)


def test_hutchinson_accepts_both_key_kinds(getkey):
    flow = ffjord.FFJORD(ffjord.MLPField(2, 8, 2, key=getkey()), trace=ffjord.HutchinsonTrace())
    x = jnp.ones((3, 2))
    a = flow.forward_log_det_jacobian(x, key=jax.random.PRNGKey(3))
    b = flow.forward_log_det_jacobian(x, key=jax.random.key(3))
    assert a.shape == b.shape == (3,)
    c = flow.forward_log_det_jacobian(x, key=jax.random.key(4))
    assert not np.allclose(b, c)


def test_hutchinson_without_key_names_key(getkey):
    flow = ffjord.FFJORD(ffjord.MLPField(2, 8, 2, key=getkey()), trace=ffjord.HutchinsonTrace())
    with pytest.raises(ValueError, match="key="):
        flow.forward_and_log_det(jnp.ones((3, 2)))
    # A plain forward pass needs no trace, hence no key.
    assert flow.forward(jnp.ones((3, 2))).shape == (3, 2)


def test_dimension_mismatch_is_an_error(getkey):
    flow = ffjord.FFJORD(ffjord.MLPField(2, 8, 2, key=getkey()))
    with pytest.raises(ValueError, match=r"x has dimension 3 .* flow is 2-dimensional"):
        flow.forward(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"y has dimension 1 .* flow is 2-dimensional"):
        flow.inverse_and_log_det(jnp.ones((4, 1)))
    with pytest.raises(ValueError, match="scalar"):
        flow.forward(jnp.float32(1.0))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(rtol=0.0), "rtol must be positive, got 0.0"),
        (dict(atol=-1e-5), "atol must be positive, got -1e-05"),
        (dict(t0=1.0, t1=1.0), "t0 and t1 must differ"),
        (dict(max_steps=0), "max_steps must be a positive integer, got 0"),
        (dict(dt0=-0.1), "dt0 must be positive"),
        (dict(stepsize_controller=diffrax.ConstantStepSize()), "constant step size needs dt0"),
    ],
)
def test_bad_options_are_errors(getkey, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ffjord.FFJORD(ffjord.MLPField(2, 8, 2, key=getkey()), **kwargs)


def test_max_steps_exhausted_is_an_error(a_matrix):
    flow = linear_flow(10 * a_matrix, max_steps=3)
    with pytest.raises(Exception, match="max_steps=3"):
        jax.block_until_ready(flow.forward_and_log_det(jnp.ones((2, 3))))
    _, _, stats = flow.forward_with_stats(jnp.ones((2, 3)))  # reports instead of raising
    assert bool(stats.failed) and int(stats.num_steps) == 3


def test_solver_statistics_count_real_evaluations(a_matrix):
    calls = []

    class CountingField(eqx.Module):
        a: jax.Array
        dim: int = eqx.field(static=True, default=3)

        def __call__(self, t, z, context):
            jax.debug.callback(lambda: calls.append(1))
            return self.a @ z

    for solver in [diffrax.Dopri5(), diffrax.Tsit5(), diffrax.Heun(), diffrax.Bosh3()]:
        for scale, dt0 in [(1.0, 1e-4), (5.0, 1e-4), (1.0, None), (5.0, None)]:
            calls.clear()
            flow = ffjord.FFJORD(
                CountingField(scale * a_matrix), solver=solver, rtol=1e-6, atol=1e-8, dt0=dt0
            )
            _, _, stats = flow.forward_with_stats(jnp.ones((1, 3)))
            jax.effects_barrier()
            steps, rejected = int(stats.num_steps), int(stats.num_rejected_steps)
            assert steps > 2 and steps == int(stats.num_accepted_steps) + rejected
            if dt0 is not None:  # a first step small enough to be accepted: exact
                assert int(stats.num_fn_evals) == len(calls), type(solver).__name__
            else:  # a rejected first attempt re-evaluates an FSAL solver's first stage
                assert int(stats.num_fn_evals) <= len(calls) <= stats.num_fn_evals + rejected


def test_constant_step_solver(a_matrix):
    flow = ffjord.FFJORD(
        LinearField(a_matrix, 3),
        solver=diffrax.Euler(),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=0.1,
    )
    y, ldj, stats = flow.forward_with_stats(jnp.ones((2, 3)))
    assert int(stats.num_steps) == 10
    np.testing.assert_allclose(ldj, np.trace(a_matrix) * np.ones(2), rtol=1e-6)


class ContextField(ffjord.AbstractVectorField):
    w: jax.Array
    dim: int = eqx.field(static=True, default=2)
    context_dim: int = eqx.field(static=True, default=1)

    def __call__(self, t, z, context):
        return context[0] * (self.w @ z)


def test_context_scales_the_dynamics():
    w = jnp.array([[0.2, 0.0], [0.0, -0.4]])
    flow = ffjord.FFJORD(ContextField(w), **TIGHT)
    x = jnp.ones((3, 2))
    ctx = jnp.array([[1.0], [2.0], [0.0]])
    y, ldj = flow.forward_and_log_det(x, context=ctx)
    np.testing.assert_allclose(ldj, [-0.2, -0.4, 0.0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(y[2], x[2])
    # A single context broadcasts over the batch.
    np.testing.assert_allclose(
        flow.forward_log_det_jacobian(x, context=jnp.array([2.0])), -0.4 * np.ones(3), rtol=1e-8
    )
    with pytest.raises(ValueError, match="pass context="):
        flow.forward(x)
    with pytest.raises(ValueError, match="context has dimension 2"):
        flow.forward(x, context=jnp.ones((3, 2)))


def test_mlp_field_context_and_init(getkey):
    field = ffjord.MLPField(2, 8, 3, context_dim=3, key=getkey())
    assert [layer.weight.shape for layer in field.layers] == [(8, 7), (8, 8), (2, 8)]
    assert all(float(jnp.abs(layer.bias).max()) == 0.0 for layer in field.layers)
    w = ffjord.MLPField(2, 512, 2, key=getkey()).layers[1].weight
    # Truncated normal at 2 sd with sd 1/sqrt(fan_in): bounded, std ~ 0.88/sqrt(512).
    assert float(jnp.abs(w).max()) <= 2.0 / np.sqrt(512) + 1e-6
    np.testing.assert_allclose(float(jnp.std(w)), 0.88 / np.sqrt(512), rtol=0.05)
    with pytest.raises(ValueError, match="hidden must be an integer >= 1, got 0"):
        ffjord.MLPField(2, 0, 3, key=getkey())


def test_mlp_field_init_is_a_truncated_normal_fixed_by_the_key():
    def weights(key):
        layers = ffjord.MLPField(3, 64, 3, key=key).layers
        return np.concatenate([np.ravel(layer.weight) for layer in layers])

    # Both kinds of key give the same draw; another key gives another one.
    np.testing.assert_array_equal(weights(jax.random.key(7)), weights(jax.random.PRNGKey(7)))
    assert not np.allclose(weights(jax.random.key(7)), weights(jax.random.key(8)))
    field = ffjord.MLPField(3, 64, 3, key=jax.random.key(7))
    units = np.concatenate([np.ravel(w.weight) * np.sqrt(w.weight.shape[1]) for w in field.layers])
    # N(0, 1) truncated to [-2, 2]: variance 1 - 4 phi(2) / (2 Phi(2) - 1) = 0.7737.
    assert units.size > 4000 and np.abs(units).max() <= 2.0 + 1e-6
    assert abs(units.mean()) < 4 * np.sqrt(0.7737 / units.size)
    np.testing.assert_allclose(units.var(), 0.7737, rtol=0.06)
    assert 0.005 < np.mean(np.abs(units) > 1.9) < 0.025  # 0.0125 expected; clipping: 0.057


class PlainField(eqx.Module):
    """Hides `value_and_divergence`, so FFJORD falls back to Jacobian-vector products."""

    inner: ffjord.MLPField

    def __call__(self, t, z, context):
        return self.inner(t, z, context)


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("context_dim", [0, 3])
@pytest.mark.parametrize("activation", ["tanh", "silu", "softplus"])
def test_mlp_divergence_is_the_jacobian_trace(getkey, layers, context_dim, activation):
    field = ffjord.MLPField(
        3, 7, layers, context_dim=context_dim, activation=activation, key=getkey()
    )
    z = jax.random.normal(getkey(), (3,))
    context = jax.random.normal(getkey(), (context_dim,)) if context_dim else None
    dz, div = field.value_and_divergence(0.37, z, context)
    jac = jax.jacobian(lambda u: field(0.37, u, context))(z)
    np.testing.assert_allclose(dz, field(0.37, z, context), rtol=1e-14)
    np.testing.assert_allclose(div, jnp.trace(jac), rtol=1e-12, atol=1e-14)


def test_unknown_activation_is_an_error(getkey):
    with pytest.raises(ValueError, match="unknown activation 'relu'; choose one of: tanh"):
        ffjord.MLPField(2, 4, 2, activation="relu", key=getkey())


def test_closed_form_trace_matches_jvp_trace_and_its_gradient(getkey):
    field = ffjord.MLPField(2, 8, 3, key=getkey())
    x = jax.random.normal(getkey(), (6, 2))

    def mean_ldj(f):
        return jnp.mean(ffjord.FFJORD(f, **TIGHT).inverse_and_log_det(x)[1])

    closed, g_closed = eqx.filter_jit(eqx.filter_value_and_grad(mean_ldj))(field)
    plain, g_plain = eqx.filter_jit(eqx.filter_value_and_grad(mean_ldj))(PlainField(field))
    np.testing.assert_allclose(closed, plain, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(g_closed), jax.tree.leaves(g_plain.inner), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("activation", ["tanh", "silu"])
def test_unit_by_unit_and_matrix_forms_agree_with_their_gradients(
    getkey, layers, context_dim, activation
):
    dense = ffjord.MLPField(
        3, 7, layers, context_dim=context_dim, activation=activation, key=getkey()
    )
    field = dense.for_inference()
    assert field.unit_by_unit and not dense.unit_by_unit
    z = jax.random.normal(getkey(), (5, 3))
    context = jax.random.normal(getkey(), (5, context_dim)) if context_dim else None

    def total(f):
        dz, div = jax.vmap(lambda zi, ci: f.value_and_divergence(0.3, zi, ci))(z, context)
        return jnp.sum(jnp.sin(dz)) + jnp.sum(div**2)

    value, grad = eqx.filter_value_and_grad(total)(field)
    value_dense, grad_dense = eqx.filter_value_and_grad(total)(dense)
    np.testing.assert_allclose(value, value_dense, rtol=1e-13)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad_dense), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    c0 = None if context is None else context[0]
    np.testing.assert_allclose(field(0.3, z[0], c0), dense(0.3, z[0], c0), rtol=1e-13)


def test_bulk_evaluation_uses_the_inference_form(getkey):
    from ffjord._trainer import for_inference

    blocks = [ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=getkey())) for _ in range(2)]
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain(blocks))
    converted = for_inference(dist)
    assert [b.field.unit_by_unit for b in dist.bijector.bijectors] == [False, False]
    assert [b.field.unit_by_unit for b in converted.bijector.bijectors] == [True, True]
    x = jax.random.normal(getkey(), (6, 2))
    np.testing.assert_allclose(converted.log_prob(x), dist.log_prob(x), rtol=1e-10)


def test_steps_that_follow_the_state_leave_it_as_a_solve_without_log_det():
    """`Mode(steps_follow="state")`: the step size watches the state alone, so the state
    takes exactly the steps (and values) of a solve without the log-determinant, and the
    log-determinant, carried on those steps, stays near the controlled one."""
    # a slow state under a fast-changing divergence: 10 cos(10 z) against 0.2 sin(10 z)
    field = ffjord.CallableField(lambda t, z, context: 0.2 * jnp.sin(10.0 * z + t), dim=2)
    flow = ffjord.FFJORD(field, rtol=1e-3, atol=1e-5)
    x = 2.0 * jax.random.normal(jax.random.key(1), (256, 2))
    alone, _, alone_stats = flow.transform_flat(x, None, None, ffjord.Mode(log_det=False))
    y, ld, stats = flow.transform_flat(x, None, None, ffjord.Mode(steps_follow="state"))
    _, controlled, controlled_stats = flow.transform_flat(x, None, None, ffjord.Mode())
    np.testing.assert_array_equal(np.asarray(y), np.asarray(alone))
    assert int(stats.num_steps) == int(alone_stats.num_steps) < int(controlled_stats.num_steps)
    np.testing.assert_allclose(ld, controlled, atol=0.05 * float(jnp.std(controlled)))
    with pytest.raises(ValueError, match="steps_follow must be 'all' or 'state', got 'z'"):
        ffjord.Mode(steps_follow="z")
