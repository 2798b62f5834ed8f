"""Optimisers: the paper's per-layer SGD with momentum schedule, and Adam; per-layer L2."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

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
    return {layer: float(values[layer] if layer in values else default) for layer in layers}


def l2_penalty(params, l2: dict[str, float]) -> jax.Array:
    """sum_j lambda_j * ||W_j||^2 over the weight matrices (kernels) only, not the biases."""

    def term(path, leaf):
        if path[-1].key != "kernel":
            return jnp.zeros((), jnp.float32)
        return l2[layer_of(path)] * jnp.sum(jnp.square(leaf.astype(jnp.float32)))

    return sum(jax.tree_util.tree_leaves(jax.tree_util.tree_map_with_path(term, params)))


SCHEDULES = ("exponential", "cosine")


def rate_factor(schedule: str, decay: float, steps_per_epoch: int, warmup_steps: int, total_steps: int):
    """step -> multiplier of every base learning rate.

    'exponential' is the paper's: x `decay` after each epoch. 'cosine' rises linearly from 0 over
    `warmup_steps`, then falls along a half cosine to 0 at `total_steps`.
    """
    if schedule == "exponential":
        return optax.exponential_decay(1.0, transition_steps=steps_per_epoch, decay_rate=decay, staircase=True)
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps, max(total_steps, warmup_steps + 1), 0.0)
    raise ConfigError(f"config.lr_schedule must be one of {SCHEDULES}, got {schedule!r}")


def ramped_momentum(final: float, start: float, ramp_epochs: int, epoch):
    """Momentum in epoch `epoch` (0-based): `start` in the first, rising linearly each epoch to reach `final` in
    epoch `ramp_epochs` and staying there (`final` throughout when `ramp_epochs` is 0). check_config keeps
    `final` >= `start` and the ramp within the run, so momentum only rises and reaches `final`."""
    if ramp_epochs <= 0:
        return final + 0.0 * epoch
    progress = jnp.minimum(epoch / ramp_epochs, 1.0)
    return start + (final - start) * progress


class PaperMomentumState(NamedTuple):
    """Step count and the previous update Delta_w(T-1)."""

    count: jax.Array
    velocity: optax.Params


def paper_momentum(learning_rate: optax.Schedule, momentum: optax.Schedule) -> optax.GradientTransformation:
    """Delta_w(T) = -eta(T) * grad + mu(T) * Delta_w(T-1), the paper's update form (schedules of the step T).

    Unlike optax.sgd's trace (which scales the accumulated gradient by the current rate), the
    stored update already carries the rate it was made with, so a decaying eta stays faithful.
    """

    def init(params):
        return PaperMomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        eta, mu = learning_rate(state.count), momentum(state.count)
        velocity = jax.tree.map(lambda v, g: mu * v - eta * g, state.velocity, grads)
        return velocity, PaperMomentumState(state.count + 1, velocity)

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Schedules:
    """Each layer's learning rate and momentum as functions of the step: what the optimiser applies."""

    learning_rates: dict[str, optax.Schedule]
    momenta: dict[str, optax.Schedule]

    def at(self, step: int) -> dict[str, dict[str, float]]:
        """Each layer's learning rate and momentum at `step`, for the epoch log."""
        return {layer: {"learning_rate": float(self.learning_rates[layer](step)),
                        "momentum": float(self.momenta[layer](step))} for layer in self.learning_rates}


def _sgd_paper(config, layers: list[str], factor, steps_per_epoch: int):
    """The paper's per-layer SGD: eta_j x the schedule, momentum ramped per epoch from momentum_start to mu_j."""
    rates = per_layer(config.learning_rates, layers, "learning_rates")
    momenta = per_layer(config.momenta, layers, "momenta")
    schedules = Schedules(
        {layer: (lambda step, base=rates[layer]: base * factor(step)) for layer in layers},
        {layer: (lambda step, final=momenta[layer]: ramped_momentum(
            final, config.momentum_start, config.momentum_ramp_epochs, step // steps_per_epoch)) for layer in layers},
    )
    return schedules, {layer: paper_momentum(schedules.learning_rates[layer], schedules.momenta[layer])
                       for layer in layers}


def _adam(config, layers: list[str], factor, steps_per_epoch: int):
    """Adam with one learning rate for every layer; decoupled weight decay on the kernels (AdamW) if set."""
    del steps_per_epoch
    base = config.learning_rate

    def rate(step):
        return base * factor(step)

    beta1 = 0.9  # optax's default first-moment decay: Adam's momentum.
    schedules = Schedules({layer: rate for layer in layers}, {layer: (lambda step: beta1) for layer in layers})
    decay = float(config.weight_decay)
    if decay:
        kernels = lambda params: jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)
        return schedules, optax.adamw(rate, b1=beta1, weight_decay=decay, mask=kernels)
    return schedules, optax.adam(rate, b1=beta1)


# With on_nonfinite='skip', how many updates in a row may have non-finite gradients and be skipped.
MAX_SKIPPED_IN_A_ROW = 20
# What a non-finite loss does (config.on_nonfinite): stop training, or skip the update.
ON_NONFINITE = ("stop", "skip")

# config.optimizer -> builder(config, layers, rate factor, steps per epoch) -> (Schedules, transform or
# {layer: transform}).
OPTIMIZERS = {"sgd_paper": _sgd_paper, "adam": _adam}


def create_optimizer(config, params, steps_per_epoch: int, total_steps: int | None = None
                     ) -> tuple[optax.GradientTransformation, Schedules]:
    """The optimiser named by config.optimizer for these params, and the schedules it follows.

    `total_steps` (default: config.num_epochs epochs) is where a cosine schedule reaches 0.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"config.optimizer must be one of {tuple(OPTIMIZERS)}, got {config.optimizer!r}")
    layers = layer_names(params)
    total_steps = total_steps if total_steps is not None else config.num_epochs * steps_per_epoch
    warmup_steps = round(float(config.warmup_epochs) * steps_per_epoch)
    factor = rate_factor(config.lr_schedule, config.lr_decay, steps_per_epoch, warmup_steps,
                         total_steps)
    schedules, transform = OPTIMIZERS[config.optimizer](config, layers, factor, steps_per_epoch)
    if isinstance(transform, dict):
        transform = optax.multi_transform(transform, layer_labels(params))
    if config.on_nonfinite == "skip":  # After MAX_SKIPPED_IN_A_ROW, the update goes through and training stops.
        transform = optax.apply_if_finite(transform, MAX_SKIPPED_IN_A_ROW)
    return transform, schedules


def check_momentum_schedule(config) -> None:
    """The paper's momentum "start[s] at 0.5 in every layer, increasing linearly each epoch until reaching the value
    mu_j": refuses a mu_j outside [momentum_start, 1), and a ramp that would not reach mu_j within the run."""
    start, ramp, epochs = config.momentum_start, config.momentum_ramp_epochs, config.num_epochs
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 <= start < 1:
        raise ConfigError(f"config.momentum_start must be in [0, 1), got {start!r}")
    falling = {layer: value for layer, value in dict(config.momenta).items() if not start <= value < 1}
    if falling:
        raise ConfigError(f"config.momenta {falling} lie outside [config.momentum_start={start:g}, 1): momentum rises "
                          "from momentum_start to each mu_j, never falls")
    if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
        raise ConfigError(f"config.momentum_ramp_epochs must be an integer >= 0, got {ramp!r}")
    if ramp > epochs - 1:
        raise ConfigError(f"config.momentum_ramp_epochs={ramp} outlasts the run's {epochs} epochs: momentum reaches "
                          f"config.momenta in epoch {ramp + 1}; use at most {epochs - 1}")


# Config entries that an optimiser or learning-rate schedule does not read: setting (or searching) one of them
# changes nothing.
UNREAD_BY = {"sgd_paper": ("learning_rate", "weight_decay"),
             "adam": ("learning_rates", "momenta", "momentum_start", "momentum_ramp_epochs"),
             "exponential": ("warmup_epochs",), "cosine": ("lr_decay",)}


def unread_keys(config) -> tuple[str, ...]:
    """The config entries that config.optimizer and config.lr_schedule do not read."""
    return UNREAD_BY.get(config.optimizer, ()) + UNREAD_BY.get(config.lr_schedule, ())


def skipped_updates(opt_state) -> int:
    """How many updates an optimiser state made with on_nonfinite='skip' has skipped in all (0 for any other)."""
    if isinstance(opt_state, optax.ApplyIfFiniteState):
        return int(opt_state.total_notfinite)
    return 0


def check_config(config) -> None:
    """Rejects an unknown optimiser or schedule, negative warm-up or weight decay, and for the paper's SGD a
    momentum that would fall (a mu_j below momentum_start) or a ramp that outlasts the run."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"config.optimizer must be one of {tuple(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.lr_schedule not in SCHEDULES:
        raise ConfigError(f"config.lr_schedule must be one of {SCHEDULES}, got {config.lr_schedule!r}")
    if config.optimizer == "sgd_paper":
        check_momentum_schedule(config)
    for name in ("warmup_epochs", "weight_decay"):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"config.{name} must be a number >= 0, got {value!r}")
    if config.on_nonfinite not in ON_NONFINITE:
        raise ConfigError(f"config.on_nonfinite must be one of {ON_NONFINITE}, got {config.on_nonfinite!r}")
