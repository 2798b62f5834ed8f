"""Turning decoded images into the network's input."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.errors import DataError

# What a folder of user images may hold; other files (notes, .DS_Store) are not images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def to_model_input(ink: np.ndarray, image_size: int, chunk: int = 2048) -> np.ndarray:
    """Resizes ink [M, H, W] (True or 1.0 = stroke) to uint8 [M, S, S] with ink = 255, background = 0.

    Ink is bright so that affine warps, which fill new pixels with 0, add background. uint8 keeps
    the training set on the device at a quarter of float32's size; steps scale to [0, 1].
    """
    ink = np.asarray(ink)
    if ink.shape[1:] == (image_size, image_size):
        return np.round(np.asarray(ink, np.float32) * 255).astype(np.uint8)
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


def read_image_file(path) -> bytes:
    """The bytes of an image file, or a DataError naming it."""
    from pathlib import Path

    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"cannot read image {path}: {error.strerror}") from None


def open_image(data: bytes, where: str):
    """A decoded PIL image, or a DataError naming `where` when the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise DataError(f"{where} is not an image file (or not in a format Pillow reads)") from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad files.
        raise DataError(f"cannot decode image {where}: {error}") from None
    return image


def strokes_input(data: bytes, where: str, image_size: int) -> np.ndarray:
    """Any image of dark strokes on light (or light on dark) to uint8 [S, S] model input, ink bright.

    The lighter of the two polarities, judged by the median pixel, is taken as the background, so
    Omniglot's black-on-white PNGs and MNIST's white-on-black digits both give bright ink on black.
    An Omniglot PNG gives exactly the training input.
    """
    gray = np.asarray(open_image(data, where).convert("L"), np.float32) / 255.0
    ink = 1.0 - gray if np.median(gray) > 0.5 else gray
    return to_model_input(ink[None], image_size)[0]


def photo_input(data: bytes, where: str, image_size: int, channels: int, crop: int | None = None) -> np.ndarray:
    """Any photo to uint8 [S, S] (channels=1) or [S, S, 3]: the centred square of side `crop` (default: the
    shorter side), resized. A photo that is not RGB where RGB is asked for is an error, not a guess."""
    from PIL import Image

    image = open_image(data, where)
    if channels == 3 and image.mode != "RGB":
        raise DataError(
            f"{where} is a {image.mode} image where RGB was expected (config.channels=3): convert it to "
            "RGB, or use grayscale with --config.channels=1"
        )
    image = image.convert("RGB" if channels == 3 else "L")
    width, height = image.size
    side = min(crop or width, width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(image, np.uint8)
