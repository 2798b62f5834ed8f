"""The MNIST test set in LeCun's idx format, for the paper's one-shot transfer experiment."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from siamese_jax.data.sources import locate
from siamese_jax.errors import DataError

BASE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension


def parse_idx(data: bytes, where: str, magic: int) -> np.ndarray:
    """The uint8 array of an idx file (gzip-compressed or not), checking its magic number and size."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise DataError(f"{where} is a damaged gzip file: {error}") from None
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(f"{where}: idx magic number {found}, expected {magic}: not the right MNIST file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{where}: {len(data) - header} bytes of data, but its header promises shape {shape}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load_mnist_test(data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28], white digits on black; labels int32 [10000]) of the MNIST test set."""
    paths = locate(data_dir, "mnist", {name: BASE_URL + name for name in (TEST_IMAGES, TEST_LABELS)})
    images = parse_idx(Path(paths[TEST_IMAGES]).read_bytes(), str(paths[TEST_IMAGES]), IMAGES_MAGIC)
    labels = parse_idx(Path(paths[TEST_LABELS]).read_bytes(), str(paths[TEST_LABELS]), LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{paths[TEST_IMAGES]} holds {len(images)} images but {paths[TEST_LABELS]} {len(labels)} labels")
    return images, labels.astype(np.int32)
