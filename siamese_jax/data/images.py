"""Turning decoded images into the network's input."""

from __future__ import annotations

import functools
import io
import threading

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.errors import DataError

# What a folder of user images may hold; other files (notes, .DS_Store) are not images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
# The most pixels an image may have: a 6,000 x 6,000 photo is inside; a small file that decodes to
# 20,000 x 20,000 pixels (a decompression bomb) is refused before it is decoded.
MAX_IMAGE_PIXELS = 40_000_000
_PIL_LIMIT = threading.Lock()


def to_model_input(ink: np.ndarray, image_size: int, chunk: int = 2048) -> np.ndarray:
    """Resizes ink [M, H, W] (True or 1.0 = stroke) to uint8 [M, S, S] with ink = 255, background = 0.

    Ink is bright so that affine warps, which fill new pixels with 0, add background. uint8 keeps
    the training set on the device at a quarter of float32's size; steps scale to [0, 1].
    """
    ink = np.asarray(ink)
    if ink.shape[1:] == (image_size, image_size):
        return np.round(np.asarray(ink, np.float32) * 255).astype(np.uint8)
    resize = _resize_fn(image_size)
    out = np.empty((len(ink), image_size, image_size), np.uint8)
    for start in range(0, len(ink), chunk):
        block = jnp.asarray(ink[start : start + chunk], jnp.float32)
        out[start : start + chunk] = np.asarray(jnp.clip(jnp.round(resize(block) * 255), 0, 255))
    return out


@functools.lru_cache(maxsize=8)
def _resize_fn(image_size: int):
    """The jitted antialiased resize to `image_size`, built once per size: a fresh jax.jit per call would
    compile again for every image predict or the demo converts."""
    return jax.jit(lambda x: jax.image.resize(x, (x.shape[0], image_size, image_size), "linear", antialias=True))


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
    """A decoded PIL image in mode 'L' (grayscale) or 'RGB', or a DataError naming `where` when the bytes are
    empty, not an image, truncated, or more than MAX_IMAGE_PIXELS pixels.

    Other modes are converted: palette images by their colours, transparency composited over white,
    16-bit and float images scaled to 8 bits, CMYK and other colour spaces to RGB.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DataError(f"{where} is an empty file (0 bytes), not an image")
    try:
        with _PIL_LIMIT:  # Pillow's own bomb check would fail without the size; this one says it.
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        width, height = image.size  # From the header: nothing is decoded yet.
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"{where} is {width:,} x {height:,} pixels, more than the {MAX_IMAGE_PIXELS:,} an image "
                            "may have here (a decompression bomb, or a photo to shrink first)")
        image.load()
        return _eight_bit(image)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{where} is not an image file (or not in a format Pillow reads)") from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad files.
        raise DataError(f"cannot decode image {where}: {error}") from None


def _eight_bit(image):
    """`image` as 'L' or 'RGB' (see open_image)."""
    from PIL import Image

    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.round(pixels / top * 255), 0, 255).astype(np.uint8), "L")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("LA", "La"):
        image = image.convert("LA")
        white = Image.new("L", image.size, 255)
        white.paste(image.getchannel("L"), mask=image.getchannel("A"))
        return white
    if image.mode in ("RGBA", "RGBa", "PA"):
        image = image.convert("RGBA")
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image.convert("RGB"), mask=image.getchannel("A"))
        return white
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV.


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
    if channels == 3 and image.mode != "RGB":  # Gray photos are not coloured in by a guess.
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
