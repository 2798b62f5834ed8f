"""The paper's optimiser: per-layer rates, momentum ramp, 1% decay per epoch, L2 on kernels only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from siamese_jax import optim
from siamese_jax.errors import ConfigError

PARAMS = {
    "encoder": {"conv_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "embed": {"kernel": jnp.ones(3), "bias": jnp.ones(3)}},
    "head": {"alpha": {"kernel": jnp.ones(3), "bias": jnp.ones(1)}},
}


def sgd_config(**kw):
    config = ConfigDict(dict(
        optimizer="sgd_paper",
        learning_rates={"conv_0": 0.1, "embed": 0.01, "alpha": 0.001},
        momenta={"conv_0": 0.9, "embed": 0.7, "alpha": 0.5},
        lr_decay=0.99, momentum_start=0.5, momentum_ramp_epochs=4, learning_rate=1e-3,
    ))
    config.update(kw)
    return config


def test_layer_names_follow_modules():
    assert optim.layer_names(PARAMS) == ["conv_0", "embed", "alpha"]


@pytest.mark.parametrize("epoch", [0, 1, 2, 4, 10])
def test_hyperparameters_follow_schedule(epoch):
    h = optim.hyperparameters(sgd_config(), ["conv_0", "embed", "alpha"], epoch)
    assert h["conv_0"]["learning_rate"] == pytest.approx(0.1 * 0.99**epoch)
    assert h["embed"]["learning_rate"] == pytest.approx(0.01 * 0.99**epoch)
    ramp = min(epoch / 4, 1.0)
    assert h["conv_0"]["momentum"] == pytest.approx(0.5 + 0.4 * ramp)
    assert h["embed"]["momentum"] == pytest.approx(0.5 + 0.2 * ramp)
    assert h["alpha"]["momentum"] == pytest.approx(0.5)


def test_updates_follow_paper_form_step_by_step():
    """Delta_w(T) = -eta_j(epoch) grad + mu_j(epoch) Delta_w(T-1), with epochs of 3 steps."""
    config = sgd_config()
    steps_per_epoch = 3
    tx = optim.create_optimizer(config, PARAMS, steps_per_epoch)
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    expected = {"conv_0": 0.0, "embed": 0.0, "alpha": 0.0}
    for step in range(10):
        updates, state = tx.update(grads, state, PARAMS)
        h = optim.hyperparameters(config, list(expected), step // steps_per_epoch)
        for layer in expected:
            expected[layer] = -h[layer]["learning_rate"] * 1.0 + h[layer]["momentum"] * expected[layer]
        np.testing.assert_allclose(updates["encoder"]["conv_0"]["kernel"], expected["conv_0"], rtol=1e-5)
        np.testing.assert_allclose(updates["encoder"]["embed"]["bias"], expected["embed"], rtol=1e-5)
        np.testing.assert_allclose(updates["head"]["alpha"]["kernel"], expected["alpha"], rtol=1e-5)


def test_adam_learning_rate_decays_per_epoch():
    config = sgd_config(optimizer="adam", learning_rate=0.01, lr_decay=0.5)
    tx = optim.create_optimizer(config, PARAMS, steps_per_epoch=2)
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    sizes = []
    for _ in range(4):
        updates, state = tx.update(grads, state, PARAMS)
        sizes.append(float(jnp.abs(updates["head"]["alpha"]["bias"][0])))
    # Adam's first steps with constant gradients move by about the learning rate.
    np.testing.assert_allclose(sizes, [0.01, 0.01, 0.005, 0.005], rtol=1e-3)


def test_l2_reaches_only_kernels_of_penalised_layers():
    l2 = {"conv_0": 0.5, "embed": 0.0, "alpha": 0.25}
    params = jax.tree.map(lambda x: 2.0 * x, PARAMS)
    grads = jax.grad(optim.l2_penalty)(params, l2)
    np.testing.assert_allclose(grads["encoder"]["conv_0"]["kernel"], 2 * 0.5 * 2.0)
    np.testing.assert_allclose(grads["head"]["alpha"]["kernel"], 2 * 0.25 * 2.0)
    for leaf in (grads["encoder"]["embed"]["kernel"], grads["encoder"]["conv_0"]["bias"],
                 grads["encoder"]["embed"]["bias"], grads["head"]["alpha"]["bias"]):
        np.testing.assert_array_equal(leaf, 0.0)
    assert float(optim.l2_penalty(params, l2)) == pytest.approx(0.5 * 16 + 0.25 * 12)


def test_per_layer_rejects_unknown_and_missing_layers():
    layers = ["conv_0", "embed"]
    assert optim.per_layer({"*": 0.1, "embed": 0.2}, layers, "l2") == {"conv_0": 0.1, "embed": 0.2}
    with pytest.raises(ConfigError, match="unknown layer"):
        optim.per_layer({"conv_9": 0.1, "*": 0.0}, layers, "l2")
    with pytest.raises(ConfigError, match="no value for layer"):
        optim.per_layer({"conv_0": 0.1}, layers, "l2")
