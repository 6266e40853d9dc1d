"""Conditional flows: closed forms under two conditions, standardised contexts, training."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ffjord
from ffjord._spec import build, describe

TIGHT = dict(rtol=1e-9, atol=1e-11)
A1 = np.array([[0.3, -1.2], [0.8, -0.2]])
A2 = np.array([[-0.4, 0.1], [0.5, 0.6]])
SHIFT, SCALE = np.array([10.0, -3.0]), np.array([4.0, 0.5])


class ContextLinearField(ffjord.AbstractVectorField):
    """dz/dt = (c0 A1 + c1 A2) z: a linear field whose matrix depends on the condition."""

    a1: jax.Array
    a2: jax.Array
    dim: int = eqx.field(static=True, default=2)
    context_dim: int = eqx.field(static=True, default=2)

    def __call__(self, t, z, context):
        return (context[0] * self.a1 + context[1] * self.a2) @ z


def linear_model():
    flow = ffjord.FFJORD(ContextLinearField(jnp.asarray(A1), jnp.asarray(A2)), **TIGHT)
    bijector = ffjord.StandardizedContext(flow, jnp.asarray(SHIFT), jnp.asarray(SCALE))
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, bijector)


def matrix(raw_context):
    c = (np.asarray(raw_context) - SHIFT) / SCALE  # what the field sees
    return c[0] * A1 + c[1] * A2


def test_context_dependent_linear_field_matches_its_closed_form():
    dist = linear_model()
    raw = np.array([[14.0, -2.5], [6.0, -3.5]])  # standardised: (1, 1) and (-1, -1)
    x = np.array([[1.0, -2.0], [0.5, 0.3]])
    y, ldj = dist.bijector.forward_and_log_det(jnp.asarray(x), context=jnp.asarray(raw))
    for i in range(2):
        a = matrix(raw[i])
        np.testing.assert_allclose(y[i], scipy.linalg.expm(a) @ x[i], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ldj[i], np.trace(a), rtol=1e-8)
    # The two conditions give different maps: the batch is not one condition broadcast.
    assert abs(np.trace(matrix(raw[0])) - np.trace(matrix(raw[1]))) > 0.1
    # log p(y | c) = log N(expm(-A) y) - tr(A), with one condition for a batch of points.
    points = np.array([[0.2, 0.1], [-1.0, 0.7], [0.0, 2.0]])
    lp = dist.log_prob(jnp.asarray(points), context=jnp.asarray(raw[0]))
    a = matrix(raw[0])
    x_back = points @ scipy.linalg.expm(-a).T
    expected = -0.5 * np.sum(x_back**2, axis=1) - np.log(2 * np.pi) - np.trace(a)
    np.testing.assert_allclose(lp, expected, rtol=1e-7)


def test_sample_shapes_for_one_and_many_conditions(getkey):
    dist = linear_model()
    key = getkey()
    one = dist.sample(key, (5,), context=jnp.array([14.0, -2.5]))
    assert one.shape == (5, 2)
    many = dist.sample(key, (5,), context=jnp.array([[14.0, -2.5], [6.0, -3.5], [10.0, -3.0]]))
    assert many.shape == (5, 3, 2)
    # Column j holds draws under condition j: undo each condition's map to get the base.
    base = jax.random.normal(jax.random.split(key)[0], (5, 3, 2), dtype=many.dtype)
    for j, raw in enumerate([[14.0, -2.5], [6.0, -3.5], [10.0, -3.0]]):
        expected = np.asarray(base[:, j]) @ scipy.linalg.expm(matrix(raw)).T
        np.testing.assert_allclose(many[:, j], expected, rtol=1e-7, atol=1e-9)
    y, lp = dist.sample_and_log_prob(key, (4,), context=jnp.array([[14.0, -2.5], [6.0, -3.5]]))
    assert y.shape == (4, 2, 2) and lp.shape == (4, 2)
    np.testing.assert_allclose(
        lp, dist.log_prob(y, context=jnp.array([[14.0, -2.5], [6.0, -3.5]])), rtol=1e-7
    )


def test_standardized_context_errors():
    dist = linear_model()
    with pytest.raises(ValueError, match=r"conditional \(2-dimensional contexts\): pass context="):
        dist.log_prob(jnp.zeros((3, 2)))
    flow = ffjord.FFJORD(ContextLinearField(jnp.asarray(A1), jnp.asarray(A2)))
    with pytest.raises(ValueError, match="shift has 3 entries but the bijector takes 2-dim"):
        ffjord.StandardizedContext(flow, jnp.zeros(3), jnp.ones(3))


def test_description_round_trip_keeps_the_context_map(getkey):
    field = ffjord.MLPField(2, 8, 2, context_dim=2, key=getkey())
    inner = ffjord.Chain([ffjord.FFJORD(field), ffjord.Affine(jnp.ones(2), 2 * jnp.ones(2))])
    bijector = ffjord.StandardizedContext(inner, jnp.asarray(SHIFT), jnp.asarray(SCALE))
    dist = ffjord.TransformedDistribution(
        ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)), bijector
    )
    spec = describe(dist)
    assert spec is not None and spec["bijector"]["type"] == "StandardizedContext"
    assert spec["bijector"]["shift"] == SHIFT.tolist()
    rebuilt = build(spec)
    assert isinstance(rebuilt.bijector, ffjord.StandardizedContext)
    assert rebuilt.bijector.context_dim == 2
    np.testing.assert_array_equal(rebuilt.bijector.context_map.scale, SCALE)


def conditional_pairs(n, seed):
    """y | c ~ N((u, -u), 0.3^2 I) with u = (c - 500) / 100 and c uniform on [300, 700]:
    raw conditions far from unit scale, so training depends on their standardisation."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(300.0, 700.0, (n, 1))
    u = (c - 500.0) / 100.0
    y = np.concatenate([u, -u], axis=1) + 0.3 * rng.standard_normal((n, 2))
    return y, c


def conditional_model(key, hidden=16):
    field = ffjord.MLPField(2, hidden, 3, context_dim=1, key=key)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, ffjord.FFJORD(field, rtol=1e-4, atol=1e-6))


def test_fit_learns_the_condition_and_load_restores_it(getkey, tmp_path):
    y, c = conditional_pairs(2048, 0)
    y_test, c_test = conditional_pairs(512, 1)
    dist, history = ffjord.fit(
        getkey(),
        conditional_model(getkey()),
        y,
        context=c,
        test_data=y_test,
        test_context=c_test,
        epochs=12,
        batch_size=128,
        run_dir=tmp_path / "run",
        show_progress=False,
    )
    # The map is part of the model: the training conditions' mean and deviation.
    assert isinstance(dist.bijector, ffjord.StandardizedContext)
    np.testing.assert_allclose(dist.bijector.context_map.shift, c.mean(0), rtol=1e-6)
    np.testing.assert_allclose(dist.bijector.context_map.scale, c.std(0), rtol=1e-6)
    right = dist.log_prob(jnp.asarray(y_test), context=jnp.asarray(c_test))
    wrong = dist.log_prob(jnp.asarray(y_test), context=jnp.asarray(1000.0 - c_test))
    # Under the true conditional: entropy 2 * (0.5 log(2 pi e 0.3^2)) = 0.43 nats.
    assert history[-1]["test_nll"] == pytest.approx(-float(np.mean(right)), abs=1e-3)
    assert -float(np.mean(right)) < 1.0
    assert float(np.mean(right)) > float(np.mean(wrong)) + 5.0
    loaded = ffjord.load(tmp_path / "run")
    np.testing.assert_allclose(  # the same batch: one shared adaptive solve, same steps
        loaded.log_prob(jnp.asarray(y_test), context=jnp.asarray(c_test)), right, rtol=1e-9
    )
    # The conditional samples follow the condition's mean (u, -u).
    samples = loaded.sample(getkey(), (2000,), context=jnp.array([[300.0], [700.0]]))
    np.testing.assert_allclose(samples.mean(axis=0), [[-2, 2], [2, -2]], atol=0.2)


def test_flow_matching_trains_a_conditional_flow(getkey):
    y, c = conditional_pairs(2048, 2)
    dist, history = ffjord.fit(
        getkey(),
        conditional_model(getkey(), hidden=32),
        y,
        context=c,
        objective=ffjord.FlowMatching(),
        epochs=15,
        batch_size=64,
        show_progress=False,
    )
    y_test, c_test = conditional_pairs(512, 3)
    right = dist.log_prob(jnp.asarray(y_test), context=jnp.asarray(c_test))
    wrong = dist.log_prob(jnp.asarray(y_test), context=jnp.asarray(1000.0 - c_test))
    assert -float(np.mean(right)) < 1.2
    assert float(np.mean(right)) > float(np.mean(wrong)) + 5.0


def test_context_errors_in_fit(getkey):
    y, c = conditional_pairs(300, 0)
    conditional = conditional_model(getkey())
    field = ffjord.MLPField(2, 8, 3, key=getkey())
    plain = ffjord.TransformedDistribution(
        ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)), ffjord.FFJORD(field)
    )
    cases = [
        (dict(dist=conditional), "the model is conditional (its fields take 1-dimensional"),
        (dict(dist=plain, context=c), "context has 1 columns but the model is unconditional"),
        (dict(dist=conditional, context=np.hstack([c, c])), "context has 2 columns but the model"),
        (dict(dist=conditional, context=c[:-1]), "context has 299 rows but its data has 300"),
        (dict(dist=conditional, context=np.where(c > 600, np.nan, c)), "context has"),
        (
            dict(dist=conditional, context=c, test_data=y),
            "give test_context exactly when the data have a context and test_data is given",
        ),
        (
            dict(dist=conditional, context=c, objective=ffjord.FlowMatching(coupling="ot")),
            "OT coupling pairs base and data points regardless of their conditions",
        ),
    ]
    for kwargs, message in cases:
        dist = kwargs.pop("dist")
        with pytest.raises(ffjord.InputError, match=message.replace("(", r"\(")):
            ffjord.fit(getkey(), dist, y, epochs=1, batch_size=100, show_progress=False, **kwargs)


def projected_model(key):
    """The linear field under `ProjectedContext`: 5 raw conditions, 2 features."""
    flow = ffjord.FFJORD(ContextLinearField(jnp.asarray(A1), jnp.asarray(A2)), **TIGHT)
    return ffjord.ProjectedContext(flow, 5, 2, key=key)


def test_projected_context_matches_the_closed_form_of_its_features(getkey):
    bijector = projected_model(getkey())
    weight = np.asarray(bijector.weight)
    assert weight.shape == (2, 5) and bijector.context_dim == 5 and bijector.features == 2
    raw = np.array([[1.0, -2.0, 0.5, 0.0, 3.0], [-1.0, 0.5, 2.0, 1.0, -0.5]])
    x = np.array([[1.0, -2.0], [0.5, 0.3]])
    y, ldj = bijector.forward_and_log_det(jnp.asarray(x), context=jnp.asarray(raw))
    for i in range(2):
        c = weight @ raw[i]  # what the field sees
        a = c[0] * A1 + c[1] * A2
        np.testing.assert_allclose(y[i], scipy.linalg.expm(a) @ x[i], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ldj[i], np.trace(a), rtol=1e-8)
    x_back = bijector.inverse(y, context=jnp.asarray(raw))
    np.testing.assert_allclose(x_back, x, rtol=1e-7, atol=1e-9)


def test_projected_context_errors(getkey):
    flow = ffjord.FFJORD(ContextLinearField(jnp.asarray(A1), jnp.asarray(A2)))
    with pytest.raises(ValueError, match="features is 3 but the bijector takes 2-dim"):
        ffjord.ProjectedContext(flow, 5, 3, key=getkey())
    with pytest.raises(ValueError, match="features must be an integer >= 1, got 0"):
        ffjord.ProjectedContext(flow, 5, 0, key=getkey())
    with pytest.raises(ValueError, match=r"conditional \(5-dimensional contexts\): pass context="):
        projected_model(getkey()).forward(jnp.zeros(2))


def test_description_round_trip_keeps_the_projection(getkey):
    field = ffjord.MLPField(2, 8, 2, context_dim=3, key=getkey())
    projected = ffjord.ProjectedContext(ffjord.FFJORD(field), 7, 3, key=getkey())
    bijector = ffjord.StandardizedContext(projected, jnp.zeros(7), jnp.ones(7))
    dist = ffjord.TransformedDistribution(
        ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)), bijector
    )
    spec = describe(dist)
    assert spec is not None
    inner = spec["bijector"]["bijector"]
    assert (inner["type"], inner["context_dim"], inner["features"]) == ("ProjectedContext", 7, 3)
    rebuilt = build(spec)
    assert isinstance(rebuilt.bijector.bijector, ffjord.ProjectedContext)
    assert rebuilt.bijector.bijector.weight.shape == (3, 7)


def pairs_through_one_statistic(n, seed, k=40):
    """y | c ~ N((u, -u), 0.3^2 I) with u the mean of k noisy copies of a latent s: the
    condition has k columns but the posterior depends on c only through their mean."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-2.0, 2.0, (n, 1))
    c = s + 1.0 * rng.standard_normal((n, k))
    u = c.mean(axis=1, keepdims=True)
    y = np.concatenate([u, -u], axis=1) + 0.3 * rng.standard_normal((n, 2))
    return y, c


@pytest.mark.parametrize("objective", ["likelihood", "flow-matching"])
def test_the_projection_is_trained_with_the_flow(getkey, objective):
    y, c = pairs_through_one_statistic(2048, 0)
    field = ffjord.MLPField(2, 16, 3, context_dim=2, key=getkey())
    flow = ffjord.FFJORD(field, rtol=1e-4, atol=1e-6)
    dist = ffjord.TransformedDistribution(
        ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)),
        ffjord.ProjectedContext(flow, 40, 2, key=getkey()),
    )
    before = np.asarray(dist.bijector.weight)
    options = {"batch_size": 128}
    if objective == "flow-matching":
        options = {"objective": ffjord.FlowMatching(), "batch_size": 64}
    trained, _ = ffjord.fit(getkey(), dist, y, context=c, epochs=10, show_progress=False, **options)
    projection = trained.bijector.bijector
    assert isinstance(projection, ffjord.ProjectedContext)
    after = np.asarray(projection.weight)
    assert not np.allclose(after, before)

    # The learned features see the statistic: the all-ones direction (the columns' mean)
    # lies almost within the span of the projection's rows (a random span holds 0.05).
    def share_of_mean_in_span(weight):
        q = np.linalg.qr(weight.T)[0]
        return np.linalg.norm(q.T @ np.ones(40)) / np.sqrt(40)

    assert share_of_mean_in_span(before) < 0.3
    assert share_of_mean_in_span(after) > 0.9
    y_test, c_test = pairs_through_one_statistic(512, 1)
    right = trained.log_prob(jnp.asarray(y_test), context=jnp.asarray(c_test))
    wrong = trained.log_prob(jnp.asarray(y_test), context=jnp.asarray(-c_test))
    # Under the true conditional: entropy 0.43 nats plus the noise of the mean of 40.
    assert -float(np.mean(right)) < 0.8
    assert float(np.mean(right)) > float(np.mean(wrong)) + 5.0
