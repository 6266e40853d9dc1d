"""Objectives: RNODE's integrals against closed forms, flow matching, OT coupling, and
reverse-KL fitting to an unnormalised density."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffjord
from ffjord._objectives import ot_pairing
from ffjord._trainer import Trainer


class LinearField(eqx.Module):
    """f(t, z) = A z: the flow is expm(A t) and every integral has a closed form."""

    a: jax.Array

    def __call__(self, t, z, context):
        return self.a @ z


def linear_dist(a, trace=None):
    flow = ffjord.FFJORD(LinearField(jnp.asarray(a)), trace=trace, rtol=1e-10, atol=1e-12)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, flow)


def test_kinetic_and_frobenius_of_a_linear_field_match_closed_forms():
    # A = diag(a): z_i(t) = x_i exp(a_i t), so int_0^1 ||A z||^2 dt = sum_i a_i x_i^2
    # (exp(2 a_i) - 1) / 2 with x = exp(-a) y, and int_0^1 ||A||_F^2 dt = sum_i a_i^2.
    a = np.array([0.7, -0.4])
    dist = linear_dist(np.diag(a))
    y = np.array([[1.0, 2.0], [-0.5, 0.3], [2.0, -1.5]])
    lp, kinetic, frob, stats = dist.log_prob_with_regularizers(y)
    x = y * np.exp(-a)
    expected_kinetic = np.sum(a * x**2 * (np.exp(2 * a) - 1) / 2, axis=1)
    np.testing.assert_allclose(kinetic, expected_kinetic, rtol=1e-7)
    np.testing.assert_allclose(frob, np.full(3, np.sum(a**2)), rtol=1e-9)
    np.testing.assert_allclose(lp, dist.log_prob(y), rtol=1e-10)
    assert not bool(stats.failed)
    # Without the Frobenius term the kinetic energy is unchanged and the other is zero.
    _, kinetic2, frob2, _ = dist.log_prob_with_regularizers(y, frobenius=False)
    np.testing.assert_allclose(kinetic2, expected_kinetic, rtol=1e-7)
    np.testing.assert_array_equal(frob2, 0.0)


def test_kinetic_energy_of_a_rotation_is_constant_speed():
    # A skew-symmetric A rotates: ||A z|| = w ||z|| is constant along the path.
    w = 1.3
    dist = linear_dist([[0.0, -w], [w, 0.0]])
    y = np.array([[1.0, 0.5], [-2.0, 0.1]])
    _, kinetic, frob, _ = dist.log_prob_with_regularizers(y)
    np.testing.assert_allclose(kinetic, w**2 * np.sum(y**2, axis=1), rtol=1e-7)
    np.testing.assert_allclose(frob, 2 * w**2, rtol=1e-9)


def test_hutchinson_frobenius_is_unbiased(getkey):
    a = np.array([[0.5, -1.2], [0.8, 0.3]])
    dist = linear_dist(a, trace=ffjord.HutchinsonTrace())
    y = np.tile([[0.3, -0.2]], (4000, 1))  # every point its own probe
    _, _, frob, _ = dist.log_prob_with_regularizers(y, key=getkey())
    assert np.std(frob) > 0.1  # a genuine estimate, not the exact value
    np.testing.assert_allclose(np.mean(frob), np.sum(a**2), rtol=0.03)
    with pytest.raises(ValueError, match="key"):
        dist.log_prob_with_regularizers(y)


def test_rnode_gradients_match_finite_differences():
    def loss(scale):
        a = jnp.array([[0.2, -0.3], [0.4, 0.1]]) * scale
        dist = linear_dist(a)
        objective = ffjord.MaximumLikelihood(kinetic=0.3, jacobian_frobenius=0.2)
        y = jnp.array([[1.0, 2.0], [-0.5, 0.3]])
        return objective.loss(dist, y, None, jax.random.key(0))[0]

    grad = jax.grad(loss)(1.0)
    eps = 1e-5
    numeric = (loss(1.0 + eps) - loss(1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


def gaussian_samples(key, n, mean=(1.0, -0.5), scale=(0.6, 1.5)):
    return np.asarray(jnp.asarray(mean) + jnp.asarray(scale) * jax.random.normal(key, (n, 2)))


def one_block(key, hidden=32, layers=3):
    field = ffjord.MLPField(2, hidden, layers, key=key)
    flow = ffjord.FFJORD(field, rtol=1e-5, atol=1e-7)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return ffjord.TransformedDistribution(base, flow)


def test_flow_matching_recovers_a_gaussian(getkey):
    data = gaussian_samples(getkey(), 4096)
    test = gaussian_samples(getkey(), 4096)
    dist, history = ffjord.fit(
        getkey(),
        one_block(getkey()),
        data,
        test_data=test,
        objective=ffjord.FlowMatching(),
        epochs=40,
        batch_size=256,
        learning_rate=3e-3,
        show_progress=False,
    )
    entropy = float(ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.array([0.6, 1.5])).entropy())
    empirical = -np.mean(
        np.asarray(
            ffjord.MultivariateNormalDiag(jnp.array([1.0, -0.5]), jnp.array([0.6, 1.5])).log_prob(
                test
            )
        )
    )
    assert history[0]["test_nll"] > history[-1]["test_nll"]
    assert abs(history[-1]["test_nll"] - empirical) < 0.03, (history[-1]["test_nll"], entropy)
    assert history[-1]["nfe"] == 1  # one field evaluation per step: no ODE solve
    samples = np.asarray(dist.sample(getkey(), (20000,)))
    np.testing.assert_allclose(samples.mean(0), [1.0, -0.5], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [0.6, 1.5], rtol=0.05)


def test_flow_matching_trains_through_fixed_affine_maps(getkey):
    # Standardisation around the block (as `ffjord train --data FILE` builds it): the
    # block learns in standardised units; samples come out in the data's units.
    shift, scale = jnp.array([10.0, -5.0]), jnp.array([3.0, 0.5])
    data = np.asarray(shift + scale * jax.random.normal(getkey(), (2048, 2)))
    field = ffjord.MLPField(2, 16, 3, key=getkey())
    chain = ffjord.Chain([ffjord.FFJORD(field), ffjord.Affine(shift, scale)])
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, chain)
    trained, _ = ffjord.fit(
        getkey(),
        dist,
        data,
        objective=ffjord.FlowMatching(),
        epochs=8,
        learning_rate=3e-3,
        show_progress=False,
    )
    np.testing.assert_array_equal(trained.bijector.bijectors[1].shift, shift)  # fixed
    samples = np.asarray(trained.sample(getkey(), (4000,)))
    np.testing.assert_allclose(samples.mean(0), shift, atol=0.3)


def test_ot_pairing_is_the_exact_assignment(getkey):
    from itertools import permutations

    x0 = np.asarray(jax.random.normal(getkey(), (6, 2)))
    x1 = np.asarray(jax.random.normal(getkey(), (6, 2)))
    order = np.asarray(jax.jit(ot_pairing)(x0, x1))
    assert sorted(order) == list(range(6))

    def cost(p):
        return np.sum((x0 - x1[list(p)]) ** 2)

    best = min(permutations(range(6)), key=cost)
    np.testing.assert_allclose(cost(order), cost(best), rtol=1e-6)


def test_epoch_pairings_equal_the_per_step_pairings(getkey):
    # The epoch's OT pairings are solved together before its steps; each step's loss must
    # be what it would be with its own pairing.
    objective = ffjord.FlowMatching(coupling="ot")
    dist = one_block(getkey(), 8)
    batches = jnp.asarray(gaussian_samples(getkey(), 3 * 32).reshape(3, 32, 2))
    keys = jax.random.split(getkey(), 3)
    prepared = objective.prepare(dist, batches, None, keys)
    assert prepared.shape == (3, 32)
    # Compiled, as in training (a host callback is only ever called from compiled code).
    loss = eqx.filter_jit(lambda d, b, k, p: objective.loss(d, b, None, k, p)[0])
    pairing = jax.jit(ot_pairing)
    for i in range(3):
        together = loss(dist, batches[i], keys[i], prepared[i])
        alone = loss(dist, batches[i], keys[i], None)  # pairs inside the step instead
        np.testing.assert_allclose(together, alone, rtol=1e-12)
        x0, x1 = objective._ends(dist, batches[i], None, keys[i])
        np.testing.assert_array_equal(prepared[i], pairing(x0, x1))
    independent = ffjord.FlowMatching().prepare(dist, batches, None, keys)
    assert independent is None


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_flow_matching_epochs_do_not_recompile(getkey, coupling, max_traces):
    epoch = max_traces(Trainer, "_epoch", 1)
    trainer = Trainer(one_block(getkey(), 8), objective=ffjord.FlowMatching(coupling=coupling))
    state = trainer.init(getkey())
    data = gaussian_samples(getkey(), 1024)
    for _ in range(3):
        state, record = trainer.run_epoch(state, data)
    assert eqx.debug.get_num_traces(epoch) == 1 and record["rejected_steps"] == 0


def test_ot_coupling_lowers_the_evaluation_nfe(getkey):
    from ffjord import datasets

    data = datasets.sample_toy("moons", 4096, 0)
    test = datasets.sample_toy("moons", 1024, 1)
    key_init, key_fit = getkey(), getkey()
    nfe, nll = {}, {}
    for coupling in ("independent", "ot"):
        field = ffjord.MLPField(2, 32, 3, activation="silu", key=key_init)
        base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
        dist = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
        _, history = ffjord.fit(
            key_fit,
            dist,
            data,
            test_data=test,
            objective=ffjord.FlowMatching(coupling=coupling),
            epochs=20,
            batch_size=64,
            learning_rate=1e-2,
            show_progress=False,
        )
        nfe[coupling] = np.mean([r["eval_nfe"] for r in history[-3:]])
        nll[coupling] = history[-1]["test_nll"]
    assert nfe["ot"] < 0.8 * nfe["independent"], (nfe, nll)
    assert nll["ot"] < nll["independent"] + 0.1, (nfe, nll)  # straighter, not worse


def test_fit_to_density_recovers_a_correlated_gaussian(getkey):
    mean = jnp.array([1.0, -2.0])
    cov = jnp.array([[1.0, 0.8], [0.8, 1.0]])
    precision = jnp.linalg.inv(cov)

    def log_density(y):  # unnormalised
        u = y - mean
        return -0.5 * jnp.einsum("ni,ij,nj->n", u, precision, u)

    field = ffjord.MLPField(2, 16, 3, key=getkey())
    flow = ffjord.FFJORD(field, rtol=1e-4, atol=1e-6)
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist, history = ffjord.fit_to_density(
        getkey(),
        ffjord.TransformedDistribution(base, flow),
        log_density,
        steps=600,
        num_samples=256,
        learning_rate=1e-2,
        show_progress=False,
    )
    assert history[-1]["step"] == 600 and history[-1]["loss"] < history[0]["loss"]
    # The loss is KL + log Z with log Z = log(2 pi sqrt(det cov)): KL near zero.
    log_z = float(jnp.log(2 * jnp.pi * jnp.sqrt(jnp.linalg.det(cov))))
    assert history[-1]["loss"] + log_z < 0.05
    samples = np.asarray(dist.sample(getkey(), (20000,)))
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.08)


def test_fit_to_density_rejects_a_wrong_shaped_density(getkey):
    dist = one_block(getkey(), 4)
    with pytest.raises(ffjord.InputError, match=r"log_density must map points of shape \(8, 2\)"):
        ffjord.fit_to_density(
            getkey(), dist, lambda y: jnp.sum(y), steps=1, num_samples=8, show_progress=False
        )


BAD_OBJECTIVES = [
    (
        lambda: ffjord.MaximumLikelihood(kinetic=-0.1),
        "kinetic must be a non-negative number, got -0.1",
    ),
    (
        lambda: ffjord.MaximumLikelihood(jacobian_frobenius=float("nan")),
        "jacobian_frobenius must be a non-negative number, got nan",
    ),
    (lambda: ffjord.FlowMatching(coupling="sinkhorn"), "unknown coupling 'sinkhorn'"),
    (lambda: ffjord.FlowMatching(sigma=-1.0), "sigma must be a non-negative number"),
]


@pytest.mark.parametrize("make, message", BAD_OBJECTIVES)
def test_bad_objective_options(make, message):
    with pytest.raises(ffjord.InputError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_flow_matching_refuses_a_multi_block_model(getkey):
    keys = jax.random.split(getkey(), 2)
    flows = [ffjord.FFJORD(ffjord.MLPField(2, 4, 2, key=k)) for k in keys]
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain(flows))
    with pytest.raises(ffjord.InputError, match="single FFJORD block, but this model has 2"):
        ffjord.fit(getkey(), dist, np.eye(64, 2), objective=ffjord.FlowMatching())


def test_fit_refuses_an_objective_of_the_wrong_type(getkey):
    with pytest.raises(ffjord.InputError, match="objective must be ffjord.MaximumLikelihood"):
        ffjord.fit(getkey(), one_block(getkey(), 4), np.eye(64, 2), objective="ot")
