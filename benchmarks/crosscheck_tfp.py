"""Step-by-step equivalence check against the seed's TFP code.

Run: `python benchmarks/crosscheck_tfp.py [--steps 32] [--epochs 4]`
(needs the peer environment, see benchmarks/peer_tfp.py: `.venv-peers/bin/python`).

1. In the TFP environment: build the tutorial's model (seeded), record its initial
   weights, train it with Adam 1e-2 on `--steps` fixed batches of 256 moons (the data
   in file order), recording every step's loss; then continue with TFP's own shuffled
   `tf.data` pipeline for `--epochs` epochs, recording held-out NLL after each.
2. In ffjord: load those initial weights into `MLPField`s, train on the same batches,
   and compare the losses step by step; then train `--epochs` epochs with ffjord's
   own shuffling from the same initial weights.

Identical initial weights and batches must give identical training losses (to solver
tolerance); the per-epoch NLL from the same start then shows how much of a difference
between the two libraries' runs is due to the initialisation rather than the code.
Writes docs/benchmarks/crosscheck.json. ``--smoke``: 2 steps and 1 epoch into a temporary
directory; without the peer venv, ffjord's side alone from random weights.
"""

import argparse
import json
import sys

import numpy as np

import harness

ROOT = harness.ROOT
PEER = ROOT / ".venv-peers" / "bin" / "python"


def tfp_side(out: str, steps: int, epochs: int, seed: int) -> None:
    import sklearn.datasets as skd
    import sonnet as snt
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)

    class MLP_ODE(snt.Module):  # noqa: N801 - the tutorial's name
        def __init__(self):
            super().__init__(name="mlp_ode")
            self.layers = [snt.Linear(8), snt.Linear(8), snt.Linear(2)]

        def __call__(self, t, inputs):
            h = tf.concat([tf.broadcast_to(t, inputs.shape), inputs], -1)
            h = tf.tanh(self.layers[0](h))
            h = tf.tanh(self.layers[1](h))
            return self.layers[2](h)

    moons = skd.make_moons(n_samples=8192, noise=0.06, random_state=seed)[0].astype(np.float32)
    test = skd.make_moons(n_samples=4096, noise=0.06, random_state=seed + 1)[0]
    test = test.astype(np.float32)
    base = tfd.MultivariateNormalDiag(np.zeros(2, np.float32), np.full(2, 0.8, np.float32))
    solver = tfp.math.ode.DormandPrince(atol=1e-5)
    mlps = [MLP_ODE() for _ in range(4)]
    bijectors = [
        tfb.FFJORD(
            state_time_derivative_fn=m,
            ode_solve_fn=solver.solve,
            trace_augmentation_fn=tfb.ffjord.trace_jacobian_exact,
        )
        for m in mlps
    ]
    dist = tfd.TransformedDistribution(distribution=base, bijector=tfb.Chain(bijectors[::-1]))
    for m in mlps:  # build the variables
        m(0.0, moons[:1])
    weights = {
        f"{b}_{i}_{kind}": getattr(layer, kind).numpy()
        for b, m in enumerate(mlps)
        for i, layer in enumerate(m.layers)
        for kind in ("w", "b")
    }

    def make_step():
        optimizer = snt.optimizers.Adam(tf.Variable(1e-2, trainable=False))

        @tf.function
        def step(batch):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(dist.log_prob(batch))
            variables = tape.watched_variables()
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        return step

    step = make_step()

    @tf.function
    def log_prob(x):
        return dist.log_prob(x)

    def nll():
        return -float(
            np.mean(
                np.concatenate([log_prob(test[i : i + 1024]).numpy() for i in range(0, 4096, 1024)])
            )
        )

    losses = [float(step(moons[256 * i : 256 * (i + 1)]).numpy()) for i in range(steps)]
    # Restart from the same weights for the epochs with TFP's own shuffling.
    for b, m in enumerate(mlps):
        for i, layer in enumerate(m.layers):
            layer.w.assign(weights[f"{b}_{i}_w"])
            layer.b.assign(weights[f"{b}_{i}_b"])
    step2 = make_step()  # a fresh Adam state

    ds = tf.data.Dataset.from_tensor_slices(moons).cache().shuffle(8192).batch(256)
    nlls = []
    for _ in range(epochs):
        for batch in ds:
            step2(batch)
        nlls.append(nll())
    np.savez(out, moons=moons, test=test, losses=np.array(losses), nlls=np.array(nlls), **weights)


def ffjord_side(npz: str, steps: int, epochs: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import ffjord

    z = np.load(npz)
    flows = []
    for b in range(4):
        field = ffjord.MLPField(2, 8, 3, key=jax.random.key(b))
        field = eqx.tree_at(
            lambda f: [layer.weight for layer in f.layers] + [layer.bias for layer in f.layers],
            field,
            [jnp.asarray(z[f"{b}_{i}_w"].T) for i in range(3)]
            + [jnp.asarray(z[f"{b}_{i}_b"]) for i in range(3)],
        )
        flows.append(ffjord.FFJORD(field))
    base = ffjord.MultivariateNormalDiag(jnp.zeros(2), 0.8 * jnp.ones(2))
    dist = ffjord.TransformedDistribution(base, ffjord.Chain(flows))
    params, static = eqx.partition(dist.bijector, eqx.is_inexact_array)
    optimizer = optax.adam(1e-2)

    @eqx.filter_jit
    def step(params, opt_state, batch):
        def loss_fn(p):
            d = ffjord.TransformedDistribution(base, eqx.combine(p, static))
            return -jnp.mean(d.log_prob(batch))

        loss, grads = eqx.filter_value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for i in range(steps):
        batch = jnp.asarray(z["moons"][256 * i : 256 * (i + 1)])
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    nlls_by_order = []
    for order_seed in range(3):  # the same start, three shuffling orders
        _, history = ffjord.fit(
            jax.random.key(order_seed),
            dist,
            z["moons"],
            test_data=z["test"],
            epochs=epochs,
            batch_size=256,
            show_progress=False,
        )
        nlls_by_order.append([r["test_nll"] for r in history])
    tfp_losses = z["losses"].tolist()
    return {
        "steps": steps,
        "tfp_losses": tfp_losses,
        "ffjord_losses": losses,
        "max_abs_loss_difference": float(np.max(np.abs(np.array(losses) - tfp_losses))),
        "tfp_nll_per_epoch_same_init": z["nlls"].tolist(),
        "ffjord_nll_per_epoch_same_init_3_orders": nlls_by_order,
    }


def random_side(out: str, steps: int) -> None:
    """Without the peer: the npz the TFP side writes, from random weights (smoke mode)."""
    import jax

    import ffjord
    from ffjord import datasets

    rng = np.random.default_rng(0)
    field = ffjord.MLPField(2, 8, 3, key=jax.random.key(0))
    sizes = [layer.weight.shape[::-1] for layer in field.layers]  # TFP's (in, out)
    weights = {}
    for b in range(4):
        for i, (m, n) in enumerate(sizes):
            weights[f"{b}_{i}_w"] = (0.3 * rng.standard_normal((m, n))).astype(np.float32)
            weights[f"{b}_{i}_b"] = np.zeros(n, np.float32)
    moons = datasets.sample_toy("moons", 256 * steps, 0)
    test = datasets.sample_toy("moons", 512, 1)
    losses, nlls = np.zeros(steps), np.zeros(1)
    np.savez(out, moons=moons, test=test, losses=losses, nlls=nlls, **weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=["tfp"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default="/tmp/ffjord_crosscheck.npz", help=argparse.SUPPRESS)
    harness.add_smoke(parser)
    args = parser.parse_args()
    if args.side == "tfp":
        tfp_side(args.out, args.steps, args.epochs, args.seed)
        return
    docs = ROOT / "docs"
    if args.smoke:
        docs, args.steps, args.epochs = harness.smoke_dir(__file__), 2, 1
        args.out = str(docs / "crosscheck.npz")
        if not PEER.exists():
            harness.skip_peer(f"the TFP peer venv ({PEER})")
            random_side(args.out, args.steps)
            print(json.dumps(ffjord_side(args.out, args.steps, args.epochs))[:300])
            return
    if not PEER.exists():
        print(f"no peer environment at {PEER}; see benchmarks/peer_tfp.py", file=sys.stderr)
        sys.exit(2)
    harness.run(
        [
            str(PEER),
            __file__,
            "--side",
            "tfp",
            "--out",
            args.out,
            "--steps",
            str(args.steps),
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
        ],
        capture=False,
    ).check()
    result = ffjord_side(args.out, args.steps, args.epochs)
    (docs / "benchmarks").mkdir(parents=True, exist_ok=True)
    (docs / "benchmarks" / "crosscheck.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if "losses" not in k}, indent=2))


if __name__ == "__main__":
    main()
