"""Three ways to train one continuous flow: flow matching with OT coupling, maximum
likelihood regularised as in RNODE, and reverse KL to an unnormalised density.

Run: `python examples/objectives.py` (about a minute on 2 CPU cores). Prints the exact
held-out NLL of the first two and the moments of the third against their true values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ffjord
from ffjord import datasets

keys = iter(jax.random.split(jax.random.key(0), 8))
data = datasets.sample_toy("moons", 8192, seed=0)
test = datasets.sample_toy("moons", 4096, seed=1)
base = ffjord.MultivariateNormalDiag(jnp.zeros(2), 0.8 * jnp.ones(2))

# 1. Flow matching: one FFJORD block, trained without solving an ODE; the result is an
#    ordinary FFJORD model whose log_prob is exact.
field = ffjord.MLPField(dim=2, hidden=48, layers=5, activation="silu", key=next(keys))
fm = ffjord.TransformedDistribution(base, ffjord.FFJORD(field))
epochs, batch = 40, 64
schedule = optax.cosine_decay_schedule(1e-2, epochs * (len(data) // batch), alpha=0.05)
fm, history = ffjord.fit(
    next(keys),
    fm,
    data,
    test_data=test,
    objective=ffjord.FlowMatching(coupling="ot"),
    epochs=epochs,
    batch_size=batch,
    optimizer=optax.adam(schedule),
    show_progress=False,
)
print(
    f"flow matching (OT):  held-out NLL {history[-1]['test_nll']:.3f} nats, "
    f"{history[-1]['eval_nfe']:.0f} field evaluations per solve"
)

# 2. Maximum likelihood with RNODE's kinetic-energy and Jacobian-Frobenius penalties.
blocks = [ffjord.FFJORD(ffjord.MLPField(2, 8, 3, key=k)) for k in jax.random.split(next(keys), 4)]
rnode = ffjord.TransformedDistribution(base, ffjord.Chain(blocks))
rnode, history = ffjord.fit(
    next(keys),
    rnode,
    data,
    test_data=test,
    objective=ffjord.MaximumLikelihood(kinetic=0.01, jacobian_frobenius=0.01),
    show_progress=False,
)
print(
    f"likelihood + RNODE:  held-out NLL {history[-1]['test_nll']:.3f} nats, "
    f"kinetic energy {history[-1]['train_kinetic']:.2f}"
)

# 3. Reverse KL to an unnormalised correlated Gaussian (no samples of it needed).
mean, cov = jnp.array([1.0, -2.0]), jnp.array([[1.0, 0.8], [0.8, 1.0]])
precision = jnp.linalg.inv(cov)


def log_density(y):  # points (n, 2) -> (n,), up to a constant
    u = y - mean
    return -0.5 * jnp.einsum("ni,ij,nj->n", u, precision, u)


vi = ffjord.TransformedDistribution(
    ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)),
    ffjord.FFJORD(ffjord.MLPField(2, 16, 3, key=next(keys)), rtol=1e-4, atol=1e-6),
)
vi, history = ffjord.fit_to_density(next(keys), vi, log_density, steps=600, show_progress=False)
samples = np.asarray(vi.sample(next(keys), (20000,)))
print(
    f"reverse KL:          mean {samples.mean(0).round(2)} (true [1, -2]), "
    f"covariance {np.cov(samples.T).round(2).tolist()} (true [[1, 0.8], [0.8, 1]])"
)
