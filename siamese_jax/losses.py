"""Losses on the head's logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def pair_loss(logits: jax.Array, same: jax.Array, balanced: bool) -> jax.Array:
    """Binary cross-entropy of same-class logits; `balanced` weighs same and different pairs equally.

    Balancing matters when a batch scores all pairs of a group: different pairs then outnumber
    same pairs many times over, and the plain mean would learn to answer 'different'.
    """
    per_pair = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), same)
    if not balanced:
        return jnp.mean(per_pair)
    positive = jnp.sum(per_pair * same) / jnp.maximum(jnp.sum(same), 1.0)
    negative = jnp.sum(per_pair * (1 - same)) / jnp.maximum(jnp.sum(1 - same), 1.0)
    return 0.5 * (positive + negative)
