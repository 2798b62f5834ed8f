"""Microbenchmarks behind two design choices, forward plus backward, on the current JAX backend.

    python benchmarks/cpu_kernels.py [--output=results/cpu_kernels.json]

1. 2x2 max-pooling: lax.reduce_window (flax's nn.max_pool) against the maximum of four strided
   slices (siamese_jax.models.max_pool_2x2), on a 128x28x28x64 batch.
2. Scoring pairs with the L1 head: every pair of a 128-image batch by broadcasting, against the
   1,984 within-group pairs of the CPU config by gathering (what the training step does).
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

from siamese_jax.models import max_pool_2x2  # noqa: E402
from siamese_jax.provenance import provenance  # noqa: E402
from siamese_jax.sampling import GroupLayout  # noqa: E402

flags.DEFINE_integer("repeats", 10, "Timed calls per measurement.")
flags.DEFINE_string("output", None, "Also write the JSON result to this file.")
FLAGS = flags.FLAGS


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
    app.run(main)
