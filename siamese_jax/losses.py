"""Training losses on pairs of embeddings: a table of main losses (LOSSES), auxiliary terms, and the
Objective the training step minimises, built from the config in one place."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from siamese_jax.errors import ConfigError
from siamese_jax.models import SiameseNet


def pair_mean(per_pair: jax.Array, same: jax.Array, balanced: bool) -> jax.Array:
    """Mean of per-pair losses; `balanced` weighs same and different pairs equally.

    Balancing matters when a batch scores all pairs of a group: different pairs then outnumber
    same pairs many times over, and the plain mean would learn to answer 'different'.
    """
    if not balanced:
        return jnp.mean(per_pair)
    positive = jnp.sum(per_pair * same) / jnp.maximum(jnp.sum(same), 1.0)
    negative = jnp.sum(per_pair * (1 - same)) / jnp.maximum(jnp.sum(1 - same), 1.0)
    return 0.5 * (positive + negative)


def pair_loss(logits: jax.Array, same: jax.Array, balanced: bool) -> jax.Array:
    """Binary cross-entropy of same-class logits (the paper's loss), averaged by pair_mean."""
    return pair_mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), same), same, balanced)


def contrastive_loss(distance: jax.Array, same: jax.Array, margin: float, balanced: bool) -> jax.Array:
    """Hadsell, Chopra & LeCun (2006): d^2 / 2 for same pairs, max(0, margin - d)^2 / 2 for different ones."""
    distance = distance.astype(jnp.float32)
    per_pair = 0.5 * jnp.where(same > 0, jnp.square(distance), jnp.square(jnp.maximum(margin - distance, 0.0)))
    return pair_mean(per_pair, same, balanced)


def ranking_loss(logits: jax.Array, same: jax.Array, left: jax.Array, right: jax.Array, num_images: int,
                 scale: float = 1.0) -> jax.Array:
    """Softmax cross-entropy of picking a same-class partner among each image's scored partners.

    Every image of the batch acts as a one-shot query over the images it was paired with (its
    alphabet group): the loss is -log(sum of exp(scale * logit) over same-class partners / sum over
    all partners), averaged over images that have a same-class partner. It trains the decision the
    one-shot test makes, the argmax over candidates, with the paper's head as the score. `scale`
    is an inverse temperature: the Euclidean head's logits span only 2 units on unit-length
    embeddings, too flat a softmax without one (configs/lfw.py uses 32).
    """
    logits = scale * logits.astype(jnp.float32)
    anchor = jnp.concatenate([left, right])
    scores = jnp.concatenate([logits, logits])  # The head is symmetric: each pair serves both ends.
    positive = jnp.concatenate([same, same])
    peak = jax.ops.segment_max(scores, anchor, num_segments=num_images)
    weights = jnp.exp(scores - peak[anchor])
    total = jax.ops.segment_sum(weights, anchor, num_segments=num_images)
    matched = jax.ops.segment_sum(weights * positive, anchor, num_segments=num_images)
    has_match = matched > 0
    per_image = jnp.where(has_match, jnp.log(total) - jnp.log(jnp.where(has_match, matched, 1.0)), 0.0)
    return jnp.sum(per_image) / jnp.maximum(jnp.sum(has_match), 1)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss on embedding pairs: (model, variables, h1, h2, same, balanced) -> scalar, and the head it needs."""

    compute: Callable[..., jax.Array]
    head: str | None = None  # The model.head it needs ('euclidean'), or None for any.


def _cross_entropy(model, variables, h1, h2, same, balanced):
    return pair_loss(model.apply(variables, h1, h2, method=SiameseNet.score), same, balanced)


def _contrastive(model, variables, h1, h2, same, balanced):
    distance = model.apply(variables, h1, h2, method=SiameseNet.distance)
    return contrastive_loss(distance, same, model.margin, balanced)


# config.loss -> Loss.
LOSSES = {
    "cross_entropy": Loss(_cross_entropy),  # The paper's.
    "contrastive": Loss(_contrastive, head="euclidean"),  # Hadsell et al. (2006), on distances.
}


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a training step minimises on its scored pairs, but for L2: config.loss, plus the ranking loss
    with weight ranking_loss_weight (0: off) at scale ranking_loss_scale."""

    loss: str = "cross_entropy"
    balanced: bool = False
    ranking_weight: float = 0.0
    ranking_scale: float = 1.0

    @classmethod
    def from_config(cls, config) -> "Objective":
        """The config's loss entries, checked against the model's head."""
        check_config(config)
        return cls(loss=config.loss, balanced=bool(config.balanced_loss),
                   ranking_weight=float(config.ranking_loss_weight), ranking_scale=float(config.ranking_loss_scale))

    def __call__(self, model: SiameseNet, variables: dict, embeddings: jax.Array, left: jax.Array, right: jax.Array,
                 same: jax.Array) -> jax.Array:
        """The loss of the pairs (left[i], right[i]) of `embeddings` [M, D], labelled `same`."""
        h1, h2 = embeddings[left], embeddings[right]
        total = LOSSES[self.loss].compute(model, variables, h1, h2, same, self.balanced)
        if self.ranking_weight:
            logits = model.apply(variables, h1, h2, method=SiameseNet.score)
            total += self.ranking_weight * ranking_loss(logits, same, left, right, embeddings.shape[0],
                                                        self.ranking_scale)
        return total


def check_config(config) -> None:
    """Rejects an unknown config.loss, one whose head the model lacks, or a negative ranking weight."""
    if config.loss not in LOSSES:
        raise ConfigError(f"config.loss must be one of {tuple(LOSSES)}, got {config.loss!r}")
    head = LOSSES[config.loss].head
    if head and config.model.head != head:
        raise ConfigError(f"config.loss={config.loss!r} needs the {head.capitalize()} distance head: set "
                          f"config.model.head={head!r}")
    if config.ranking_loss_weight < 0:
        raise ConfigError(f"config.ranking_loss_weight must be >= 0, got {config.ranking_loss_weight!r}")
