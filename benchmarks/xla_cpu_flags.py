"""The paper encoder's forward and backward time under XLA:CPU flag settings, each in a fresh process.

    python benchmarks/xla_cpu_flags.py [--batch=16] [--output=results/xla_cpu_flags.json]

XLA reads XLA_FLAGS once, when the backend starts, so every setting runs in its own subprocess.
Times are for jax.grad of the encoder's summed embeddings over `--batch` random 105x105 images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The benchmark's flags; defined only when run as a script."""
    flags.DEFINE_integer("batch", 16, "Images per call.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per setting.")
    flags.DEFINE_list("settings", [
        "",
        "--xla_cpu_use_onednn=true",
        "--xla_cpu_experimental_onednn_custom_call=true",
        "--xla_cpu_use_xnnpack=true",
        "--xla_cpu_enable_fast_math=true",
    ], "XLA_FLAGS values to compare ('' is the default).")
    flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


# Run in the child: prints {"forward_s": ..., "forward_backward_s": ...}.
CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r})
import jax, jax.numpy as jnp
from siamese_jax.models import SiameseNet, build_model, init_variables
from siamese_jax.config_files import load_config_file
config = load_config_file({config!r})
config.model.dtype = "float32"
model = build_model(config.model)
params = init_variables(model, jax.random.PRNGKey(0), (105, 105))["params"]
x = (jax.random.uniform(jax.random.PRNGKey(1), ({batch}, 105, 105)) < 0.1).astype(jnp.float32)
loss = lambda p, x: model.apply({{"params": p}}, x, method=SiameseNet.embed).sum()
out = {{}}
for name, fn in (("forward_s", jax.jit(loss)), ("forward_backward_s", jax.jit(jax.grad(loss)))):
    jax.block_until_ready(fn(params, x))
    start = time.perf_counter()
    for _ in range({repeats}):
        result = fn(params, x)
    jax.block_until_ready(result)
    out[name] = (time.perf_counter() - start) / {repeats}
print(json.dumps(out))
"""


def main(argv):
    """Runs every setting and prints one JSON line."""
    del argv
    from siamese_jax.provenance import provenance

    code = CHILD.format(repo=str(REPO), config=str(REPO / "configs" / "omniglot.py"), batch=FLAGS.batch,
                        repeats=FLAGS.repeats)
    rows = []
    for setting in FLAGS.settings:
        env = {**os.environ, "XLA_FLAGS": setting, "JAX_PLATFORMS": "cpu"}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if done.returncode:
            rows.append({"xla_flags": setting, "error": done.stderr.strip().splitlines()[-1]})
        else:
            rows.append({"xla_flags": setting, **json.loads(done.stdout.strip().splitlines()[-1])})
        print(rows[-1], flush=True)
    result = {"benchmark": "xla_cpu_flags", **provenance(), "batch": FLAGS.batch, "settings": rows}
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
