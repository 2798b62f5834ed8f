"""The affine distortions: identity, ranges, and how often each component fires."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import augment
from tests.conftest import load_config

CONFIG = augment.Distortion.from_config(load_config("omniglot").augment)


def test_identity_transform_returns_image():
    image = jax.random.uniform(jax.random.PRNGKey(0), (21, 21))
    linear, translation = augment.affine_matrix(augment.IDENTITY)
    np.testing.assert_allclose(augment.warp(image, linear, translation), image, atol=1e-6)


def test_translation_moves_pixels():
    image = jnp.zeros((11, 11)).at[5, 5].set(1.0)
    params = jnp.asarray(augment.IDENTITY).at[5].set(2.0).at[6].set(-1.0)  # 2 px right, 1 px up.
    out = augment.warp(image, *augment.affine_matrix(params))
    assert out[4, 7] == pytest.approx(1.0) and float(out.sum()) == pytest.approx(1.0)


def test_components_stay_in_range_and_fire_half_the_time():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    params = np.asarray(jax.vmap(lambda k: augment.sample_affine_params(k, CONFIG, 105))(keys))
    rotation, shear_x, shear_y, scale_x, scale_y, tx, ty = params.T
    assert np.abs(rotation).max() <= np.deg2rad(10) + 1e-6
    assert np.abs(np.stack([shear_x, shear_y])).max() <= 0.3 + 1e-6
    assert scale_x.min() >= 0.8 - 1e-6 and scale_x.max() <= 1.2 + 1e-6
    assert scale_y.min() >= 0.8 - 1e-6 and scale_y.max() <= 1.2 + 1e-6
    assert np.abs(np.stack([tx, ty])).max() <= 2.0 + 1e-6
    fired = params != np.asarray(augment.IDENTITY)
    # 4000 draws: the standard error of each rate is 0.008, so 0.45-0.55 is over 6 sigma.
    assert np.all(np.abs(fired.mean(axis=0) - 0.5) < 0.05)


def test_translation_range_scales_with_image_size():
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    params = np.asarray(jax.vmap(lambda k: augment.sample_affine_params(k, CONFIG, 21))(keys))
    assert np.abs(params[:, 5:]).max() <= 2.0 * 21 / 105 + 1e-6
    assert np.abs(params[:, 5:]).max() > 0.3


def test_batch_distorts_each_image_differently_and_keeps_shape():
    images = jnp.broadcast_to(jnp.zeros((28, 28)).at[8:20, 12:16].set(1.0), (6, 28, 28))
    out = augment.augment_batch(jax.random.PRNGKey(3), images, CONFIG)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
    assert len({np.asarray(o).tobytes() for o in out}) > 1


def test_closed_form_inverse_matches_numpy_on_random_distortions():
    config = load_config("omniglot").augment
    keys = jax.random.split(jax.random.PRNGKey(7), 64)
    linears = jax.vmap(lambda k: augment.affine_matrix(augment.sample_affine_params(k, config, 105))[0])(keys)
    inverses = jax.vmap(augment.inverse_2x2)(linears)
    np.testing.assert_allclose(inverses, np.linalg.inv(np.asarray(linears, np.float64)), rtol=1e-5, atol=1e-6)


def test_square_symmetries_are_numpy_turns_then_mirrored_turns():
    images = np.arange(8 * 5 * 5 * 2, dtype=np.float32).reshape(8, 5, 5, 2)
    symmetry = np.arange(8)
    turned = np.asarray(augment.square_symmetries(jnp.asarray(images), jnp.asarray(symmetry)))
    for image, s, result in zip(images, symmetry, turned):
        np.testing.assert_array_equal(result, np.rot90(np.fliplr(image) if s >= 4 else image, s % 4))
    one = np.broadcast_to(images[:1], images.shape)  # An image without symmetry: 8 different results.
    assert len({r.tobytes() for r in np.asarray(augment.square_symmetries(jnp.asarray(one), jnp.asarray(symmetry)))}) == 8
