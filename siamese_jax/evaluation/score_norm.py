"""Score normalisation: AS-norm, each pair's score standardised by both images' scores against a cohort."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from siamese_jax import distributed
from siamese_jax.evaluation.scoring import pair_logits, replicated_inputs
from siamese_jax.models import SiameseNet
from siamese_jax.tasks import Pairs


COHORT_CHUNK = 64  # Images scored against the whole cohort per call: bounds the [chunk, C, D] head input.


@functools.lru_cache(maxsize=8)
def _cohort_statistics_fn(model: SiameseNet, top: int):
    @jax.jit
    def statistics(variables, embeddings, cohort):
        logits = model.apply(variables, embeddings[:, None, :], cohort[None], method="score")  # [B, C]
        best = jax.lax.top_k(logits.astype(jnp.float32), top)[0]
        return best.mean(axis=-1), best.std(axis=-1)

    return statistics


def cohort_statistics(model: SiameseNet, variables: dict, embeddings: jax.Array, cohort: jax.Array, top: int,
                      mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation [M] of each embedding's `top` highest logits against cohort embeddings [C, D]."""
    statistics = _cohort_statistics_fn(model, min(top, len(cohort)))
    count = len(embeddings)
    padded = jnp.concatenate([embeddings, jnp.zeros((-count % COHORT_CHUNK, embeddings.shape[1]), embeddings.dtype)])
    variables, cohort = replicated_inputs(mesh, variables, cohort)
    out = list(distributed.paced(statistics(variables, *replicated_inputs(mesh, padded[i : i + COHORT_CHUNK]), cohort)
                                 for i in range(0, len(padded), COHORT_CHUNK)))
    return tuple(np.concatenate([np.asarray(chunk[j]) for chunk in out])[:count] for j in (0, 1))


def adaptive_score_norm(logits: np.ndarray, pairs: Pairs, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm; Matejka et al., 2017) of pair logits [P].

    Each pair's logit is standardised by the cohort statistics of either image (mean and std [M]
    of its highest logits against a cohort of other people), and the two are averaged: an image
    that looks like many people has its matches discounted, a distinctive one has them raised.
    """
    return 0.5 * ((logits - mean[pairs.left]) / np.maximum(std[pairs.left], 1e-6)
                  + (logits - mean[pairs.right]) / np.maximum(std[pairs.right], 1e-6))


class CohortNorm:
    """AS-norm against fixed cohort images: pair logits from embeddings, normalised by each image's `top` best
    cohort scores. The cohort is encoded once per model and variables, since an evaluation scores several pair
    sets (validation, protocol pairs) with one model."""

    def __init__(self, images: np.ndarray, top: int, encode: Callable):
        self.images, self.top, self.encode = images, top, encode  # encode(model, variables, images, mesh)
        self._cached = None

    def cohort_embeddings(self, model: SiameseNet, variables: dict, mesh: Mesh | None = None) -> jax.Array:
        """The cohort's embeddings under this model and variables."""
        if self._cached is None or self._cached[0] != model or self._cached[1] is not variables:
            self._cached = (model, variables, self.encode(model, variables, self.images, mesh))
        return self._cached[2]

    def __call__(self, model: SiameseNet, variables: dict, embeddings: jax.Array, pairs: Pairs,
                 mesh: Mesh | None = None) -> np.ndarray:
        """The AS-normalised logits [P] of `pairs` over `embeddings`."""
        logits = pair_logits(model, variables, embeddings, pairs, mesh)
        cohort = self.cohort_embeddings(model, variables, mesh)
        mean, std = cohort_statistics(model, variables, embeddings, cohort, self.top, mesh)
        return adaptive_score_norm(logits, pairs, mean, std)
