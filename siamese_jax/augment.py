"""The paper's random affine distortions, as pure jittable functions over device arrays."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

# Identity value of each component, in the order sample_affine_params returns them.
COMPONENTS = ("rotation", "shear_x", "shear_y", "scale_x", "scale_y", "translate_x", "translate_y")
# A host constant: a device array here would start the backend at import, before a
# multi-process run can call jax.distributed.initialize().
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], np.float32)


@dataclasses.dataclass(frozen=True)
class Distortion:
    """The distortions' ranges (config.augment): each component applied with `probability`; `flip` is
    the probability of a left-right mirror (faces; characters must not be mirrored)."""

    probability: float
    rotation: float  # degrees, +-
    shear: float  # +-
    scale: tuple[float, float]
    translation: float  # pixels at 105x105, +-
    flip: float = 0.0

    @classmethod
    def from_config(cls, section) -> "Distortion":
        """The values of a config's augment section."""
        return cls(float(section.probability), float(section.rotation), float(section.shear),
                   tuple(float(s) for s in section.scale), float(section.translation), float(section.flip))


def sample_affine_params(key: jax.Array, config: Distortion, image_size: int) -> jax.Array:
    """Draws one distortion [7] (see COMPONENTS); each component is applied with config.probability.

    Rotation is in radians; translation is in pixels of an image of `image_size`, scaled from the
    paper's range at 105x105 so that small configs see the same relative shift.
    """
    draw, keep = jax.random.split(key)
    degrees = jnp.deg2rad(config.rotation)
    shift = config.translation * image_size / 105.0
    low = jnp.array([-degrees, -config.shear, -config.shear, config.scale[0], config.scale[0], -shift, -shift])
    high = jnp.array([degrees, config.shear, config.shear, config.scale[1], config.scale[1], shift, shift])
    values = jax.random.uniform(draw, (len(COMPONENTS),), minval=low, maxval=high)
    applied = jax.random.bernoulli(keep, config.probability, (len(COMPONENTS),))
    return jnp.where(applied, values, IDENTITY)


def affine_matrix(params: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The 2x2 linear part (rotation @ shear @ scale) and the translation of a distortion."""
    rotation, shear_x, shear_y, scale_x, scale_y, translate_x, translate_y = params
    cos, sin = jnp.cos(rotation), jnp.sin(rotation)
    rotate = jnp.array([[cos, -sin], [sin, cos]])
    shear = jnp.array([[1.0, shear_x], [shear_y, 1.0]])
    scale = jnp.diag(jnp.array([scale_x, scale_y]))
    return rotate @ shear @ scale, jnp.array([translate_x, translate_y])


def inverse_2x2(matrix: jax.Array) -> jax.Array:
    """The inverse of a 2x2 matrix in closed form.

    jnp.linalg.solve would do, but on a GPU it runs as two cuBLAS batched triangular solves, a
    measurable share of the paper network's training step (results/throughput_gpu_h100.json).
    """
    (a, b), (c, d) = matrix
    return jnp.array([[d, -b], [-c, a]]) / (a * d - b * c)


def warp(image: jax.Array, linear: jax.Array, translation: jax.Array) -> jax.Array:
    """Applies x -> linear @ (x - c) + c + translation to an image [H, W] or [H, W, C], bilinear, background 0."""
    if image.ndim == 3:
        return jax.vmap(warp, in_axes=(2, None, None), out_axes=2)(image, linear, translation)
    height, width = image.shape
    center = jnp.array([(width - 1) / 2.0, (height - 1) / 2.0])
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")
    # Each output pixel reads from the inverse-mapped source location.
    out = jnp.stack([xs.ravel(), ys.ravel()]) - (center + translation)[:, None]
    source = inverse_2x2(linear) @ out + center[:, None]
    sampled = jax.scipy.ndimage.map_coordinates(image, [source[1], source[0]], order=1, mode="constant", cval=0.0)
    return sampled.reshape(height, width).astype(image.dtype)


def augment_image(key: jax.Array, image: jax.Array, config: Distortion) -> jax.Array:
    """One randomly distorted copy of an image [H, W] or [H, W, C].

    With config.flip > 0 (faces; characters must not be mirrored), the image is also mirrored
    left-right with that probability, folded into the same warp.
    """
    linear, translation = affine_matrix(sample_affine_params(key, config, image.shape[0]))
    flip = config.flip
    if flip:  # A separate key, so configs without flips draw exactly what they did before.
        mirrored = jax.random.bernoulli(jax.random.fold_in(key, 1), flip)
        linear = linear @ jnp.diag(jnp.where(mirrored, jnp.array([-1.0, 1.0]), jnp.array([1.0, 1.0])))
    return warp(image, linear, translation)


def square_symmetries(images: jax.Array, symmetry: jax.Array) -> jax.Array:
    """Each square image of a batch [B, H, H] or [B, H, H, C] under one of the square's 8 symmetries
    (exact, no resampling): symmetry[b] % 4 quarter turns, after a left-right mirror when symmetry[b] >= 4."""

    def turned(k, mirrored):
        return lambda image: jnp.rot90(jnp.flip(image, axis=1) if mirrored else image, k)

    branches = [turned(k, mirrored) for mirrored in (False, True) for k in range(4)]
    return jax.vmap(lambda image, s: jax.lax.switch(s % 8, branches, image))(images, symmetry)


def augment_batch(key: jax.Array, images: jax.Array, config: Distortion) -> jax.Array:
    """Distorts every image of a batch [B, H, W] or [B, H, W, C] independently (vmapped)."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(functools.partial(augment_image, config=config))(keys, images)
