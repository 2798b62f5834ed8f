"""A drop-in `lax.conv_general_dilated` for flax's nn.Conv whose kernel gradient is fast on XLA:CPU.

XLA:CPU computes a convolution's kernel gradient as one more convolution with a huge "kernel"
(the output's spatial extent), which its convolution runtime handles badly: on the paper's
second layer (48x48x64 -> 42x42x128, 7x7, 16 images) it took 1,521 ms against 458 ms for the
forward pass. Written as kh matrix products, one per kernel row, over patches of that row, the
same gradient took 324 ms (results/cpu_kernels.json). Other backends keep XLA's own gradient.
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
    plain = (
        lhs.ndim == 4
        and tuple(window_strides) == (1, 1)
        and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and dimension_numbers in (_FLAX_2D, _LAYOUT)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    return _conv(lhs, rhs, tuple(tuple(int(p) for p in pair) for pair in padding), precision)


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
