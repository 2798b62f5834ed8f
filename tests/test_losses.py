"""Losses on the head's logits, against values computed by hand."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import losses


def _bce(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_pair_loss_plain_and_balanced():
    logits = jnp.array([2.0, -1.0, 0.5, -3.0])
    same = jnp.array([1.0, 0.0, 0.0, 0.0])
    each = [_bce(z, y) for z, y in zip([2.0, -1.0, 0.5, -3.0], [1, 0, 0, 0])]
    assert float(losses.pair_loss(logits, same, balanced=False)) == pytest.approx(np.mean(each), rel=1e-5)
    assert float(losses.pair_loss(logits, same, balanced=True)) == pytest.approx(
        0.5 * each[0] + 0.5 * np.mean(each[1:]), rel=1e-5
    )


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_ranking_loss_matches_softmax_over_partners(scale):
    # Images 0,1 are one class and 2,3 another; all six pairs are scored.
    left, right = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 2, 3, 3])
    same = np.array([1, 0, 0, 0, 0, 1.0])
    logits = np.array([2.0, 0.5, -1.0, 0.3, 0.1, 1.5])
    matrix = np.full((4, 4), -np.inf)
    matrix[left, right] = matrix[right, left] = scale * logits
    partner = [1, 0, 3, 2]
    expected = np.mean([
        -(matrix[i, partner[i]] - np.log(np.exp(matrix[i][np.isfinite(matrix[i])]).sum())) for i in range(4)
    ])
    got = losses.ranking_loss(jnp.asarray(logits), jnp.asarray(same), jnp.asarray(left), jnp.asarray(right), 4, scale)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_ranking_loss_ignores_images_without_a_match():
    left, right = jnp.array([0, 0, 1]), jnp.array([1, 2, 2])
    same = jnp.array([1.0, 0.0, 0.0])
    logits = jnp.array([1.0, 0.0, 5.0])
    # Image 2 has no same-class partner; images 0 and 1 do.
    expected = np.mean([np.log(np.exp(1) + np.exp(0)) - 1, np.log(np.exp(1) + np.exp(5)) - 1])
    assert float(losses.ranking_loss(logits, same, left, right, 3)) == pytest.approx(expected, rel=1e-5)
