"""What faces add to the model and loss: the contrastive loss, the Euclidean head, batch norm, the flip."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import augment, losses, train
from siamese_jax.errors import ConfigError
from siamese_jax.models import Encoder, SiameseNet, init_variables
from tests.conftest import tiny_lfw_config


def test_contrastive_loss_against_hand_values():
    distance = jnp.array([0.5, 2.0, 0.3, 1.5])
    same = jnp.array([1.0, 1.0, 0.0, 0.0])
    each = [0.5 * 0.25, 0.5 * 4.0, 0.5 * 0.7**2, 0.0]  # Margin 1: the last pair is already beyond it.
    assert float(losses.contrastive_loss(distance, same, 1.0, balanced=False)) == pytest.approx(np.mean(each), rel=1e-5)
    balanced = 0.5 * np.mean(each[:2]) + 0.5 * np.mean(each[2:])
    assert float(losses.contrastive_loss(distance, same, 1.0, balanced=True)) == pytest.approx(balanced, rel=1e-5)


def test_euclidean_head_scores_closer_pairs_higher():
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun",
                               embedding="normalize"), head_type="euclidean", margin=1.0)
    variables = init_variables(model, jax.random.PRNGKey(0), (8, 8))
    h = jnp.eye(8)[:3]
    close, far = h[0] * 0.9 + h[1] * 0.1, h[2]
    distance = model.apply(variables, h[0], jnp.stack([close, far]), method=SiameseNet.distance)
    np.testing.assert_allclose(distance, [np.linalg.norm(h[0] - close), np.sqrt(2)], rtol=1e-5)
    logits = model.apply(variables, h[0], jnp.stack([close, far]), method=SiameseNet.score)
    np.testing.assert_allclose(logits, 0.5 - np.asarray(distance), rtol=1e-5)
    embeddings = model.apply(variables, jnp.ones((2, 8, 8)), method=SiameseNet.embed)
    np.testing.assert_allclose(jnp.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-5)


def test_batch_norm_uses_batch_statistics_in_training_and_running_averages_in_evaluation():
    model = SiameseNet(Encoder(features=(4,), kernel_sizes=(3,), embedding_dim=8, padding="SAME", init_scheme="lecun",
                               norm="batch"))
    variables = init_variables(model, jax.random.PRNGKey(0), (8, 8))
    assert set(variables) == {"params", "batch_stats"}
    images = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8))
    out, mutated = model.apply(variables, images, True, method=SiameseNet.embed, mutable=["batch_stats"])
    before = variables["batch_stats"]["encoder"]["norm_0"]["mean"]
    after = mutated["batch_stats"]["encoder"]["norm_0"]["mean"]
    assert not np.allclose(before, after)  # Training moves the running averages...
    train_first = model.apply(variables, images[:3], True, method=SiameseNet.embed, mutable=["batch_stats"])[0]
    assert not np.allclose(train_first, out[:3], atol=1e-5)  # ...and depends on the rest of the batch.
    eval_all = model.apply(variables, images, method=SiameseNet.embed)
    eval_first = model.apply(variables, images[:3], method=SiameseNet.embed)
    np.testing.assert_allclose(eval_first, eval_all[:3], rtol=1e-5)  # Evaluation does not, and mutates nothing.


def test_flip_mirrors_left_right_and_colour_channels_warp_alike():
    config = augment.Distortion(probability=0.0, rotation=0.0, shear=0.0, scale=(1.0, 1.0), translation=0.0, flip=1.0)
    image = jax.random.uniform(jax.random.PRNGKey(0), (9, 9, 3))
    out = augment.augment_image(jax.random.PRNGKey(1), image, config)
    np.testing.assert_allclose(out, image[:, ::-1], atol=1e-5)
    config = dataclasses.replace(config, flip=0.0)
    np.testing.assert_allclose(augment.augment_image(jax.random.PRNGKey(1), image, config), image, atol=1e-5)


@pytest.mark.slow
def test_contrastive_loss_needs_the_euclidean_head(synthetic_lfw_dir, cache_dir, tmp_path):
    config = tiny_lfw_config(synthetic_lfw_dir, cache_dir)
    config.model.head = "l1"
    with pytest.raises(ConfigError, match="needs the Euclidean distance head"):
        train.train_and_evaluate(config, str(tmp_path))
