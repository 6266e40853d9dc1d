"""A conditional flow as a posterior estimator: the `arcs` simulator, whose posterior is known.

Trains p(theta | x) on 10,000 simulated pairs with `ffjord.fit`, then compares the
model's draws at a few observations with the exact posterior: the mean exact posterior
log-density of the model's draws against that of exact draws (equal when the model is
right). About a minute on two CPU cores.

    python examples/conditional.py
"""

import jax
import jax.numpy as jnp
import numpy as np

import ffjord
from ffjord import simulators


def main() -> None:
    theta, x = simulators.simulate(10_000, seed=0)
    theta_test, x_test = simulators.simulate(2_000, seed=1)
    keys = jax.random.split(jax.random.key(0), 3)
    fields = [ffjord.MLPField(dim=2, hidden=64, layers=3, context_dim=2, key=k) for k in keys[:2]]
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain([ffjord.FFJORD(f) for f in fields]))
    dist, history = ffjord.fit(
        keys[2],
        dist,
        theta,
        context=x,
        test_data=theta_test,
        test_context=x_test,
        learning_rate=3e-3,
        validation=0.1,
        patience=8,
        epochs=60,
    )
    best = max(history, key=lambda r: -r["validation_nll"])
    print(f"best epoch {best['epoch']}: held-out NLL {best['test_nll']:.3f} nats")
    for i, observation in enumerate(simulators.SHOWN_OBSERVATIONS):
        obs = np.asarray(observation, np.float32)
        draws = np.asarray(dist.sample(jax.random.key(10 + i), (2000,), context=jnp.asarray(obs)))
        exact = simulators.posterior_sample(obs, 2000, seed=i)
        model_score = simulators.posterior_log_prob(draws, obs).mean()
        exact_score = simulators.posterior_log_prob(exact, obs).mean()
        print(
            f"x = {observation}: mean exact log posterior of the model's draws "
            f"{model_score:.2f}, of exact draws {exact_score:.2f}"
        )


if __name__ == "__main__":
    main()
