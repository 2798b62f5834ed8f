"""Optimisers: the paper's per-layer SGD with momentum schedule, and Adam; per-layer L2."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from siamese_jax.errors import ConfigError


def layer_of(path) -> str:
    """Name of the layer (the innermost module) a parameter belongs to, e.g. 'conv_0' or 'alpha'."""
    return str(path[-2].key)


def layer_labels(params):
    """A tree like `params` holding each leaf's layer name."""
    return jax.tree_util.tree_map_with_path(lambda path, _: layer_of(path), params)


def layer_names(params) -> list[str]:
    """Layer names in parameter order, without repeats."""
    return list(dict.fromkeys(jax.tree_util.tree_leaves(layer_labels(params))))


def per_layer(values, layers: list[str], what: str) -> dict[str, float]:
    """Reads a per-layer config mapping, accepting '*' as the default for unnamed layers."""
    values = dict(values)
    default = values.pop("*", None)
    unknown = sorted(set(values) - set(layers))
    if unknown:
        raise ConfigError(f"config.{what} names unknown layer(s) {unknown}; the model's layers are {layers}")
    missing = [layer for layer in layers if layer not in values and default is None]
    if missing:
        raise ConfigError(f"config.{what} gives no value for layer(s) {missing} (add them or a '*' default)")
    return {layer: float(values.get(layer, default)) for layer in layers}


def l2_penalty(params, l2: dict[str, float]) -> jax.Array:
    """sum_j lambda_j * ||W_j||^2 over the weight matrices (kernels) only, not the biases."""

    def term(path, leaf):
        if path[-1].key != "kernel":
            return jnp.zeros((), jnp.float32)
        return l2[layer_of(path)] * jnp.sum(jnp.square(leaf.astype(jnp.float32)))

    return sum(jax.tree_util.tree_leaves(jax.tree_util.tree_map_with_path(term, params)))


def decayed_learning_rate(base: float, decay: float, epoch):
    """eta at `epoch`: the paper decays every layer's rate by a fixed factor per epoch."""
    return base * decay**epoch


def ramped_momentum(final: float, start: float, ramp_epochs: int, epoch):
    """Momentum at `epoch`: moves linearly from `start` to `final` over `ramp_epochs`, then stays."""
    progress = jnp.minimum(epoch / max(ramp_epochs, 1), 1.0)
    return start + (final - start) * progress


class PaperMomentumState(NamedTuple):
    """Step count and the previous update Delta_w(T-1)."""

    count: jax.Array
    velocity: optax.Params


def paper_momentum(
    learning_rate: Callable[[jax.Array], jax.Array],
    momentum: Callable[[jax.Array], jax.Array],
    steps_per_epoch: int,
) -> optax.GradientTransformation:
    """Delta_w(T) = -eta(epoch) * grad + mu(epoch) * Delta_w(T-1), the paper's update form.

    Unlike optax.sgd's trace (which scales the accumulated gradient by the current rate), the
    stored update already carries the rate it was made with, so a decaying eta stays faithful.
    """

    def init(params):
        return PaperMomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        epoch = state.count // steps_per_epoch
        eta, mu = learning_rate(epoch), momentum(epoch)
        velocity = jax.tree.map(lambda v, g: mu * v - eta * g, state.velocity, grads)
        return velocity, PaperMomentumState(state.count + 1, velocity)

    return optax.GradientTransformation(init, update)


def hyperparameters(config, layers: list[str], epoch: int) -> dict[str, dict[str, float]]:
    """Each layer's learning rate and momentum at `epoch`, as the optimiser applies them."""
    if config.optimizer == "adam":
        rate = decayed_learning_rate(config.learning_rate, config.lr_decay, epoch)
        return {layer: {"learning_rate": float(rate), "momentum": 0.9} for layer in layers}
    rates = per_layer(config.learning_rates, layers, "learning_rates")
    momenta = per_layer(config.momenta, layers, "momenta")
    return {
        layer: {
            "learning_rate": float(decayed_learning_rate(rates[layer], config.lr_decay, epoch)),
            "momentum": float(ramped_momentum(momenta[layer], config.momentum_start, config.momentum_ramp_epochs, epoch)),
        }
        for layer in layers
    }


def create_optimizer(config, params, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimiser named by config.optimizer ('sgd_paper' or 'adam') for these params."""
    layers = layer_names(params)
    if config.optimizer == "adam":
        schedule = optax.exponential_decay(
            config.learning_rate, transition_steps=steps_per_epoch, decay_rate=config.lr_decay, staircase=True
        )
        return optax.adam(schedule)
    if config.optimizer != "sgd_paper":
        raise ConfigError(f"config.optimizer must be 'sgd_paper' or 'adam', got {config.optimizer!r}")
    rates = per_layer(config.learning_rates, layers, "learning_rates")
    momenta = per_layer(config.momenta, layers, "momenta")
    transforms = {
        layer: paper_momentum(
            lambda epoch, base=rates[layer]: decayed_learning_rate(base, config.lr_decay, epoch),
            lambda epoch, final=momenta[layer]: ramped_momentum(
                final, config.momentum_start, config.momentum_ramp_epochs, epoch
            ),
            steps_per_epoch,
        )
        for layer in layers
    }
    return optax.multi_transform(transforms, layer_labels(params))
