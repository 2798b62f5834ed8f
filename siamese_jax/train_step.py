"""The training core: what a config trains (`create`: the model, its optimiser and schedules, the initial state)
and the step that trains it: sample, distort, encode, score and update in one jitted function on the device, and
its dispatch (several steps per call with lax.scan). `train` and the benchmarks run what `create` returns."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from siamese_jax import augment, distributed, losses, optim, sampling
from siamese_jax.checkpointing import COLLECTIONS
from siamese_jax.data.images import to_float
from siamese_jax.models import SiameseNet, build_model, init_variables, input_shape


@dataclasses.dataclass(frozen=True)
class Core:
    """What one training of a config runs, built by `create`: `dispatch(state, train_images, tables)` runs
    config.steps_per_dispatch steps and returns the next state and the last step's loss."""

    model: SiameseNet
    sampler: Callable  # (key, tables) -> sampling.Batch
    pairs_per_step: int
    steps_per_epoch: int  # A multiple of config.steps_per_dispatch.
    schedules: optim.Schedules
    dispatch: Callable


def create(config, tables: sampling.SamplingTables, mesh: Mesh) -> tuple[Core, dict]:
    """The model, optimiser, step and dispatch of `config` for training data with these sampling `tables`
    (sampling.build_tables), and the initial training state replicated over `mesh`."""
    sampler_settings = sampling.SamplerSettings.from_config(config)
    sampler, pairs_per_step = sampler_settings.sampler(tables), sampler_settings.pairs_per_step()
    model = build_model(config.model)
    variables = init_variables(model, jax.random.PRNGKey(config.seed), input_shape(config))
    l2 = optim.per_layer(config.l2, optim.layer_names(variables["params"]), "l2")
    spd = config.steps_per_dispatch
    epoch_steps = steps_per_epoch(config.pairs_per_epoch, pairs_per_step, spd)
    optimizer, schedules = optim.create_optimizer(config, variables["params"], epoch_steps)
    state = distributed.put(initial_state(variables, optimizer, config.seed), distributed.replicated(mesh))
    step = make_train_step(model, optimizer, sampler, losses.Objective.from_config(config),
                           distortion_settings(config.augment), l2, mesh)
    return Core(model, sampler, pairs_per_step, epoch_steps, schedules, make_dispatch(step, spd, mesh)), state


def steps_per_epoch(pairs_per_epoch: int, pairs_per_step: int, steps_per_dispatch: int) -> int:
    """Steps of an epoch: enough for `pairs_per_epoch` pairs, in whole dispatches."""
    return max(1, math.ceil(pairs_per_epoch / pairs_per_step / steps_per_dispatch)) * steps_per_dispatch


def make_train_step(model: SiameseNet, optimizer: optax.GradientTransformation, sampler, objective: losses.Objective,
                    distortion: augment.Distortion | None, l2: dict, mesh: Mesh | None = None):
    """One training step, state -> (state, loss): sample, distort, encode, score, update, on the device.

    With a mesh, each device gathers, distorts and encodes its slice of the batch's images; the
    random draws do not depend on the slicing, so any device count follows the same trajectory.
    Batch-norm statistics are those of the whole global batch, whatever the device count.
    `distortion` holds config.augment's values, None when it is off.
    """
    split_batch = distributed.batch_sharded(mesh) if mesh is not None else None

    def on_slices(x):
        return x if split_batch is None else jax.lax.with_sharding_constraint(x, split_batch)

    def step(state, train_images, tables):
        key = jax.random.fold_in(state["rng"], state["step"])
        sample_key, augment_key = jax.random.split(key)
        dropout_key = jax.random.fold_in(key, 2)  # Folded in, so runs without dropout draw as before.
        batch = sampler(sample_key, tables)
        images = to_float(train_images[on_slices(batch.images)])
        if batch.symmetries is not None:
            images = augment.square_symmetries(images, on_slices(batch.symmetries))
        if distortion is not None:
            images = augment.augment_batch(augment_key, images, distortion)
        images = on_slices(images)

        def loss_fn(params):
            variables = dict(model_variables(state), params=params)
            embeddings, mutated = model.apply(
                variables, images, True, method=SiameseNet.embed, mutable=["batch_stats"],
                rngs={"dropout": dropout_key},
            )
            data_loss = objective(model, variables, embeddings, batch.left, batch.right, batch.same)
            return data_loss + optim.l2_penalty(params, l2), (data_loss, mutated)

        (_, (data_loss, mutated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = dict(
            state,
            **mutated,  # The batch-norm running averages, when the model has them.
            step=state["step"] + 1,
            params=optax.apply_updates(state["params"], updates),
            opt_state=opt_state,
            # Steps whose loss is not finite (updates skipped with on_nonfinite='skip') are left out of the mean.
            loss_sum=state["loss_sum"] + jnp.where(jnp.isfinite(data_loss), data_loss, 0.0),
            loss_count=state["loss_count"] + jnp.isfinite(data_loss).astype(jnp.int32),
        )
        return new_state, data_loss

    return step


def initial_state(variables: dict, optimizer: optax.GradientTransformation, seed: int) -> dict:
    """The training state before the first step: the pytree that steps carry and checkpoints hold.

    It holds the model's variable collections ('params', and 'batch_stats' with batch norm) at
    its top level.
    """
    return {
        **variables,
        "step": jnp.zeros([], jnp.int32),
        "opt_state": optimizer.init(variables["params"]),
        "rng": jax.random.PRNGKey(seed + 1),
        "loss_sum": jnp.zeros([], jnp.float32),
        "loss_count": jnp.zeros([], jnp.int32),
    }


def model_variables(state: dict) -> dict:
    """The model's variable collections in a training state: what model.apply and the best checkpoint take."""
    return {name: state[name] for name in COLLECTIONS if name in state}


def make_dispatch(step, steps_per_dispatch: int, mesh: Mesh | None = None):
    """Jits `steps_per_dispatch` steps as one call (lax.scan when more than one).

    With a mesh, the returned state and loss are replicated over it.
    """
    out_shardings = distributed.replicated(mesh) if mesh is not None else None
    if steps_per_dispatch == 1:
        return jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

    def many(state, train_images, tables):
        state, step_losses = jax.lax.scan(
            lambda s, _: step(s, train_images, tables), state, None, length=steps_per_dispatch
        )
        return state, step_losses[-1]

    return jax.jit(many, donate_argnums=0, out_shardings=out_shardings)


def distortion_settings(augment_section) -> augment.Distortion | None:
    """config.augment's values as plain Python values for the traced step to close over; None when disabled."""
    return augment.Distortion.from_config(augment_section) if augment_section.enabled else None


@jax.jit
def all_finite(params) -> jax.Array:
    """Whether every parameter is finite: one boolean, reduced on the device."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)]))
