"""Microbenchmarks behind two design choices, forward plus backward, on the current JAX backend.

    python benchmarks/cpu_kernels.py [--output=results/cpu_kernels.json]

1. 2x2 max-pooling: lax.reduce_window (flax's nn.max_pool) against the maximum of four strided
   slices (siamese_jax.models.max_pool_2x2), on a 128x28x28x64 batch.
2. Scoring pairs with the L1 head: every pair of a 128-image batch by broadcasting, against the
   1,984 within-group pairs of the CPU config by gathering (what the training step does).
3. The kernel gradient of each of the paper's four convolutions (16 images): XLA's own against
   one matmul per kernel row (siamese_jax.conv.kernel_grad_as_matmuls), with the forward pass
   for scale. The first is what XLA:CPU does for lax.conv_general_dilated's gradient. The
   forward pass written as row matmuls too, to see whether it would pay to replace XLA's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siamese_jax.conv import kernel_grad_as_matmuls  # noqa: E402
from siamese_jax.models import max_pool_2x2  # noqa: E402
from siamese_jax.provenance import provenance  # noqa: E402
from siamese_jax.sampling import GroupLayout  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The benchmark's flags; defined only when run as a script."""
    flags.DEFINE_integer("repeats", 10, "Timed calls per measurement.")
    flags.DEFINE_integer("images", 16, "Images per batch for the convolution kernel gradients.")
    flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


def milliseconds(fn, *args) -> float:
    """Mean wall time of a jitted call, after one warm-up call."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(FLAGS.repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return 1000 * (time.perf_counter() - start) / FLAGS.repeats


def reduce_window_pool(x):
    """flax.linen.max_pool's formulation."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


# The paper's convolutions: (input side, input channels, output channels, kernel side).
PAPER_CONVS = ((105, 1, 64, 10), (48, 64, 128, 7), (21, 128, 128, 4), (9, 128, 256, 4))


def conv_kernel_grads(batch: int) -> dict:
    """Forward and kernel-gradient times of each paper convolution, XLA's gradient against ours."""
    layout = ("NHWC", "HWIO", "NHWC")
    out = {}
    for size, cin, cout, k in PAPER_CONVS:
        x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, cin))
        kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout))
        dy = jax.random.normal(jax.random.PRNGKey(2), (batch, size - k + 1, size - k + 1, cout))

        def forward(x, kernel):
            return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=layout)

        def xla_grad(x, dy):
            return jax.vjp(lambda w: forward(x, w), kernel)[1](dy)[0]

        def row_matmuls(x, dy):
            return kernel_grad_as_matmuls(x, dy, kernel.shape, ((0, 0), (0, 0)))

        def forward_row_matmuls(x, kernel):
            # The forward pass written like conv.py's kernel gradient: one matmul per kernel row.
            kh, kw, cin, cout = kernel.shape
            out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1

            def row(i):
                band = x[:, i : i + out_h]
                patches = jnp.concatenate([band[:, :, j : j + out_w] for j in range(kw)], axis=-1)
                return patches @ kernel[i].reshape(kw * cin, cout)

            return sum(row(i) for i in range(kh))

        gflop = 2 * batch * (size - k + 1) ** 2 * cout * cin * k * k / 1e9
        times = {
            "forward_ms": milliseconds(jax.jit(forward), x, kernel),
            "forward_row_matmuls_ms": milliseconds(jax.jit(forward_row_matmuls), x, kernel),
            "kernel_grad_xla_ms": milliseconds(jax.jit(xla_grad), x, dy),
            "kernel_grad_row_matmuls_ms": milliseconds(jax.jit(row_matmuls), x, dy),
        }
        out[f"{size}x{size}x{cin}->{cout}_k{k}"] = {"gflop": gflop, **times}
    return out


def main(argv):
    """Runs both comparisons and prints one JSON line."""
    del argv
    x = jax.random.normal(jax.random.PRNGKey(0), (128, 28, 28, 64))
    pool = {
        name: milliseconds(jax.jit(jax.grad(lambda v, f=f: jnp.sum(f(v) ** 2))), x)
        for name, f in (("reduce_window_ms", reduce_window_pool), ("strided_slices_ms", max_pool_2x2))
    }
    h = jax.random.uniform(jax.random.PRNGKey(1), (128, 4096))
    alpha = jax.random.normal(jax.random.PRNGKey(2), (4096,))
    left, right, _ = GroupLayout(4, 8, 4).pairs()

    def broadcast_all(a, e):
        return jnp.sum((jnp.abs(e[:, None] - e[None]) @ a) ** 2)

    def gather_groups(a, e):
        return jnp.sum((jnp.abs(e[left] - e[right]) @ a) ** 2)

    heads = {
        "broadcast_all_16384_pairs_ms": milliseconds(jax.jit(jax.grad(broadcast_all, argnums=(0, 1))), alpha, h),
        "gather_1984_group_pairs_ms": milliseconds(jax.jit(jax.grad(gather_groups, argnums=(0, 1))), alpha, h),
    }
    result = {
        "benchmark": "cpu_kernels",
        f"paper_conv_kernel_grad_{FLAGS.images}_images": conv_kernel_grads(FLAGS.images),
        **provenance(),
        "max_pool_2x2_fwd_bwd_128x28x28x64": pool,
        "l1_head_fwd_bwd_128_images_4096_dims": heads,
        "pairs_per_ms": {"broadcast": 128 * 128 / heads["broadcast_all_16384_pairs_ms"],
                         "gather": len(left) / heads["gather_1984_group_pairs_ms"]},
    }
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
