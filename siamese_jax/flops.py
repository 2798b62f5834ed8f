"""Floating-point operations of the encoder, counted from its layer shapes.

XLA's GPU cost analysis does not count the convolutions it hands to cuDNN, so throughput in
TFLOP/s comes from here: 2 operations per multiply-add of every convolution and dense layer.
Training costs a forward pass, the gradient with respect to the weights (as much again) and the
gradient with respect to the layer's input (as much again), except for the first layer, whose
input is the image. Pooling, activations, the head and the optimiser are left out: together they
are well under 1% of the paper network's count.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """Forward and training operations of one layer, per image."""

    name: str
    output_shape: tuple[int, ...]
    forward: int
    training: int


def encoder_flops(image_size: int, channels: int, features: Sequence[int], kernel_sizes: Sequence[int],
                  padding: str, embedding_dim: int) -> list[LayerFlops]:
    """Per-image operations of each convolution (with 2x2 pooling after all but the last) and the embedding."""
    layers = []
    size, width = image_size, channels
    for i, (out, kernel) in enumerate(zip(features, kernel_sizes)):
        taps = kernel_taps(size, kernel, padding)
        size = size - kernel + 1 if padding == "VALID" else size
        forward = 2 * taps * taps * width * out
        # The first layer needs no gradient with respect to its input (the image).
        layers.append(LayerFlops(f"conv_{i}", (size, size, out), forward, forward * (2 if i == 0 else 3)))
        width = out
        if i < len(features) - 1:
            size //= 2
    flat = size * size * width
    forward = 2 * flat * embedding_dim
    layers.append(LayerFlops("embed", (embedding_dim,), forward, 3 * forward))
    return layers


def kernel_taps(size: int, kernel: int, padding: str) -> int:
    """Kernel positions that fall inside an input of `size` along one axis, summed over the outputs.

    With 'VALID' padding every output sees the whole kernel; with 'SAME', outputs near the border
    see fewer input pixels, and multiplying by the zeros of the padding is no work.
    """
    if padding == "VALID":
        return (size - kernel + 1) * kernel
    low = (kernel - 1) // 2
    return sum(sum(1 for j in range(kernel) if 0 <= o - low + j < size) for o in range(size))


def model_flops(config) -> list[LayerFlops]:
    """encoder_flops of a config's model and input."""
    m = config.model
    return encoder_flops(config.image_size, config.channels, m.features, m.kernel_sizes, m.padding,
                         m.embedding_dim)


def training_flops_per_image(config) -> int:
    """Operations to train on one image: forward and both gradients of every layer."""
    return sum(layer.training for layer in model_flops(config))


def forward_flops_per_image(config) -> int:
    """Operations to encode one image (evaluation)."""
    return sum(layer.forward for layer in model_flops(config))
