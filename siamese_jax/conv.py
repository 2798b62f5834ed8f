"""Drop-in `lax.conv_general_dilated`s for flax's nn.Conv: a kernel gradient fast on XLA:CPU, and patches x kernel.

XLA:CPU computes a convolution's kernel gradient as one more convolution with a huge "kernel"
(the output's spatial extent), which its convolution runtime handles badly: on the paper's
second layer it took three times as long as the forward pass. Written as kh matrix products, one
per kernel row, over patches of that row, it is faster than the forward pass
(results/cpu_kernels.json). Other backends keep XLA's own gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Flax's layout for 2-D convolutions: NHWC images, HWIO kernels.
_LAYOUT = ("NHWC", "HWIO", "NHWC")
_FLAX_2D = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """lax.conv_general_dilated; stride-1, undilated 2-D NHWC convolutions get the fast kernel gradient."""
    if not _plain(lhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                  batch_group_count, preferred_element_type):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
        )
    return _conv(lhs, rhs, _pads(padding, lhs.shape, rhs.shape), precision)


def patches_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                                 dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                                 preferred_element_type=None):
    """conv_general_dilated as one matrix product over the image's patches (stride-1 2-D NHWC; others as above).

    For a layer with one or a few input channels, which cuDNN may run without the tensor cores:
    the paper's first layer (1 -> 64 channels, 10x10) took a third of the training step on an H100
    for 4% of its FLOPs (results/throughput_gpu_h100.json). As patches [B, H', W', kh*kw*cin]
    times the kernel [kh*kw*cin, cout], both it and its kernel gradient are plain matrix products.
    """
    if not _plain(lhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                  batch_group_count, preferred_element_type):
        return conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
    kh, kw, cin, cout = rhs.shape
    x = jnp.pad(lhs, ((0, 0), *_pads(padding, lhs.shape, rhs.shape), (0, 0)))
    out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    # Tap (i, j), channel c lands at (i * kw + j) * cin + c: the order of an HWIO kernel's reshape.
    patches = jnp.concatenate([x[:, i:i + out_h, j:j + out_w] for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.einsum("bhwk,ko->bhwo", patches, rhs.reshape(kh * kw * cin, cout), precision=precision)


def _plain(lhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
           batch_group_count, preferred_element_type) -> bool:
    """Whether a convolution is a stride-1, undilated, ungrouped 2-D one in Flax's NHWC/HWIO layout."""
    return (
        lhs.ndim == 4
        and tuple(window_strides) == (1, 1)
        and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and dimension_numbers in (_FLAX_2D, _LAYOUT)
    )


def _pads(padding, lhs_shape, rhs_shape) -> tuple[tuple[int, int], ...]:
    """Explicit (low, high) pads of the two spatial axes for a padding string or pairs."""
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], (1, 1), padding)
    return tuple(tuple(int(p) for p in pair) for pair in padding)


def _xla_conv(x, kernel, pads, precision):
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_LAYOUT, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, pads, precision):
    return _xla_conv(x, kernel, pads, precision)


def _conv_forward(x, kernel, pads, precision):
    return _xla_conv(x, kernel, pads, precision), (x, kernel)


def _conv_backward(pads, precision, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, pads, precision), x)
    (dx,) = input_vjp(dy)

    def xla_kernel_grad(x, dy):
        _, kernel_vjp = jax.vjp(lambda k: _xla_conv(x, k, pads, precision), kernel)
        return kernel_vjp(dy)[0]

    def kernel_grad_by_rows(x, dy):
        return kernel_grad_as_matmuls(x, dy, kernel.shape, pads).astype(kernel.dtype)

    dk = lax.platform_dependent(x, dy, cpu=kernel_grad_by_rows, default=xla_kernel_grad)
    return dx, dk


_conv.defvjp(_conv_forward, _conv_backward)


def kernel_grad_as_matmuls(x, dy, kernel_shape, pads):
    """The kernel gradient [kh, kw, cin, cout] of a stride-1 NHWC convolution, one matmul per kernel row."""
    kh, kw, cin, cout = kernel_shape
    x = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    out_h, out_w = dy.shape[1:3]

    def row(i):
        band = lax.dynamic_slice_in_dim(x, i, out_h, axis=1)  # [B, out_h, W, cin]
        patches = jnp.concatenate([band[:, :, j : j + out_w] for j in range(kw)], axis=-1)  # [B, out_h, out_w, kw*cin]
        grad = jnp.einsum("bhwk,bhwo->ko", patches, dy, preferred_element_type=jnp.float32)
        return grad.reshape(kw, cin, cout)

    # lax.map, not a Python loop: one row's patches live at a time.
    return lax.map(row, jnp.arange(kh))
