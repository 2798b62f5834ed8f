"""Optimisers: the paper's per-layer rates and momentum ramp, Adam(W), schedules, L2 on kernels only."""

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
        lr_decay=0.99, momentum_start=0.5, momentum_ramp_epochs=4, learning_rate=1e-3, num_epochs=10,
        lr_schedule="exponential", warmup_epochs=0.0, weight_decay=0.0, on_nonfinite="stop",
    ))
    config.update(kw)
    return config


def test_layer_names_follow_modules():
    assert optim.layer_names(PARAMS) == ["conv_0", "embed", "alpha"]


@pytest.mark.parametrize("epoch", [0, 1, 2, 4, 10])
def test_hyperparameters_follow_schedule(epoch):
    _, schedules = optim.create_optimizer(sgd_config(), PARAMS, steps_per_epoch=3)
    h = schedules.at(3 * epoch)
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
    tx, schedules = optim.create_optimizer(config, PARAMS, steps_per_epoch)
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    expected = {"conv_0": 0.0, "embed": 0.0, "alpha": 0.0}
    for step in range(10):
        updates, state = tx.update(grads, state, PARAMS)
        h = schedules.at(step)
        for layer in expected:
            expected[layer] = -h[layer]["learning_rate"] * 1.0 + h[layer]["momentum"] * expected[layer]
        np.testing.assert_allclose(updates["encoder"]["conv_0"]["kernel"], expected["conv_0"], rtol=1e-5)
        np.testing.assert_allclose(updates["encoder"]["embed"]["bias"], expected["embed"], rtol=1e-5)
        np.testing.assert_allclose(updates["head"]["alpha"]["kernel"], expected["alpha"], rtol=1e-5)


def test_adam_learning_rate_decays_per_epoch():
    config = sgd_config(optimizer="adam", learning_rate=0.01, lr_decay=0.5)
    tx, _ = optim.create_optimizer(config, PARAMS, steps_per_epoch=2)
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


def _adam_steps(config, steps: int, steps_per_epoch: int = 2):
    """Sizes of the alpha bias's first Adam updates under constant gradients (about the learning rate)."""
    tx, schedules = optim.create_optimizer(config, PARAMS, steps_per_epoch=steps_per_epoch)
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    sizes = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, PARAMS)
        sizes.append(float(jnp.abs(updates["head"]["alpha"]["bias"][0])))
    return sizes, schedules


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = sgd_config(optimizer="adam", learning_rate=0.01, lr_schedule="cosine", warmup_epochs=1, num_epochs=3)
    sizes, schedules = _adam_steps(config, 6, steps_per_epoch=2)
    rates = [schedules.at(step)["alpha"]["learning_rate"] for step in range(7)]
    # Warm-up over 2 steps from 0, then a half cosine over the remaining 4 steps to 0.
    np.testing.assert_allclose(rates, [0, 0.005, 0.01, 0.01 * (1 + np.cos(np.pi / 4)) / 2, 0.005,
                                       0.01 * (1 + np.cos(3 * np.pi / 4)) / 2, 0], atol=1e-7)
    np.testing.assert_allclose(sizes, rates[:6], rtol=1e-3, atol=1e-7)  # The optimiser applies the logged rates.


def test_paper_sgd_follows_a_cosine_schedule_too():
    config = sgd_config(lr_schedule="cosine", num_epochs=2)
    _, schedules = optim.create_optimizer(config, PARAMS, steps_per_epoch=2)
    assert schedules.at(0)["conv_0"]["learning_rate"] == pytest.approx(0.1)
    assert schedules.at(2)["embed"]["learning_rate"] == pytest.approx(0.005)
    assert schedules.at(4)["alpha"]["learning_rate"] == pytest.approx(0.0)


def test_adamw_decays_kernels_only():
    config = sgd_config(optimizer="adam", learning_rate=0.0, weight_decay=0.5)
    params = jax.tree.map(lambda x: 2.0 * x, PARAMS)
    tx, _ = optim.create_optimizer(config, params, steps_per_epoch=2)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    # With a zero learning rate nothing moves: decoupled decay is scaled by the rate too.
    np.testing.assert_array_equal(updates["encoder"]["conv_0"]["kernel"], 0.0)
    config = sgd_config(optimizer="adam", learning_rate=0.1, weight_decay=0.5)
    tx, _ = optim.create_optimizer(config, params, steps_per_epoch=2)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["encoder"]["conv_0"]["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(updates["encoder"]["conv_0"]["bias"], 0.0)


def test_unknown_optimizer_and_schedule_are_config_errors():
    with pytest.raises(ConfigError, match="config.optimizer"):
        optim.create_optimizer(sgd_config(optimizer="lion"), PARAMS, steps_per_epoch=2)
    with pytest.raises(ConfigError, match="config.lr_schedule"):
        optim.create_optimizer(sgd_config(lr_schedule="step"), PARAMS, steps_per_epoch=2)


@pytest.mark.parametrize("epochs", [1, 2, 5, 36])
def test_the_ramp_reaches_each_mu_within_any_run_length(epochs):
    config = sgd_config(num_epochs=epochs, momentum_ramp_epochs=epochs - 1)  # The longest ramp a run allows.
    optim.check_config(config)
    _, schedules = optim.create_optimizer(config, PARAMS, steps_per_epoch=3)
    last_epoch = schedules.at((epochs - 1) * 3)
    assert {layer: h["momentum"] for layer, h in last_epoch.items()} == pytest.approx(dict(config.momenta))
    with pytest.raises(ConfigError, match=rf"config.momentum_ramp_epochs={epochs} outlasts the run's {epochs} "
                                          rf"epochs: momentum reaches config.momenta in epoch {epochs + 1}"):
        optim.check_config(sgd_config(num_epochs=epochs, momentum_ramp_epochs=epochs))


def test_momentum_only_rises_from_its_start_to_each_mu():
    config = sgd_config()
    _, schedules = optim.create_optimizer(config, PARAMS, steps_per_epoch=3)
    series = [schedules.at(step) for step in range(0, 3 * config.num_epochs)]
    for layer, final in config.momenta.items():
        values = [h[layer]["momentum"] for h in series]
        assert values == sorted(values) and values[0] == 0.5 and values[-1] == pytest.approx(final)
    with pytest.raises(ConfigError, match=r"config.momenta \{'alpha': 0.467\} lie outside "
                                          r"\[config.momentum_start=0.5, 1\): momentum rises"):
        optim.check_config(sgd_config(momenta={"conv_0": 0.9, "embed": 0.7, "alpha": 0.467}))
    optim.check_config(sgd_config(optimizer="adam", momenta={"conv_0": 0.1}))  # Adam reads no momenta.

