"""Turning decoded images into the network's input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_model_input(ink: np.ndarray, image_size: int, chunk: int = 2048) -> np.ndarray:
    """Resizes ink masks [M, H, W] (True = stroke) to uint8 [M, S, S] with ink = 255, background = 0.

    Ink is bright so that affine warps, which fill new pixels with 0, add background. uint8 keeps
    the training set on the device at a quarter of float32's size; steps scale to [0, 1].
    """
    ink = np.asarray(ink)
    if ink.shape[1:] == (image_size, image_size):
        return ink.astype(np.uint8) * np.uint8(255)
    resize = jax.jit(
        lambda x: jax.image.resize(x, (x.shape[0], image_size, image_size), "linear", antialias=True)
    )
    out = np.empty((len(ink), image_size, image_size), np.uint8)
    for start in range(0, len(ink), chunk):
        block = jnp.asarray(ink[start : start + chunk], jnp.float32)
        out[start : start + chunk] = np.asarray(jnp.clip(jnp.round(resize(block) * 255), 0, 255))
    return out


def to_float(images: jax.Array) -> jax.Array:
    """uint8 model input to float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0
