"""Training-step and evaluation throughput of siamese_jax, against a plain PyTorch eager baseline.

    python benchmarks/train_throughput.py [--config=configs/omniglot.py] [--batch_size=32] [--steps=3]

The JAX step is the real one from siamese_jax.train: sampling, augmentation, forward, backward and
update, all on the device. The PyTorch step is what the public implementations do: the same
network and loss in eager mode, SGD with momentum, on a ready batch (no sampling or augmentation
cost counted, which favours PyTorch). Timings alternate between the two in one process. The last
line printed is one JSON object; --output also writes it to a file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", str(REPO / "configs" / "omniglot.py"), "Experiment config.")
flags.DEFINE_integer("batch_size", 32, "Pairs per training step (overrides the config's).")
flags.DEFINE_integer("steps", 3, "Timed steps per repetition.")
flags.DEFINE_integer("repeats", 2, "Alternating repetitions of (JAX, PyTorch).")
flags.DEFINE_bool("torch", True, "Also time the PyTorch baseline.")
flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


def synthetic_tables(num_alphabets: int = 30, classes: int = 30, drawers: int = 12):
    """Sampling tables of an Omniglot-sized training set, for timing without the dataset."""
    import numpy as np

    from siamese_jax import sampling

    alphabet = np.repeat(np.arange(num_alphabets), classes * drawers)
    character = np.repeat(np.arange(num_alphabets * classes), drawers)
    return sampling.build_tables(alphabet, character), len(alphabet)


def jax_setup(config):
    """The real training step, its state and inputs, and its XLA FLOP count per dispatch."""
    import jax
    import jax.numpy as jnp

    from siamese_jax import evaluation, optim, train
    from siamese_jax.models import build_model, init_params

    tables, num_images = synthetic_tables()
    sampler, pairs_per_step = train.make_sampler(config, tables)
    size = config.image_size
    images = (jax.random.uniform(jax.random.PRNGKey(0), (num_images, size, size)) < 0.1).astype(jnp.uint8) * 255
    model = build_model(config.model)
    params = init_params(model, jax.random.PRNGKey(1), size)
    layers = optim.layer_names(params)
    optimizer = optim.create_optimizer(config, params, steps_per_epoch=1000)
    state = train.initial_state(params, optimizer, config.seed)
    step = train.make_train_step(model, optimizer, sampler, config, optim.per_layer(config.l2, layers, "l2"))
    flops = jax.jit(step).lower(state, images, tables).compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, list) else flops).get("flops", float("nan"))
    dispatch = train.make_dispatch(step, 1)
    embed = evaluation.embed_fn(model)
    return dispatch, state, images, tables, pairs_per_step, flops, (embed, params, images[:256])


def time_jax(setup, steps: int):
    """Seconds per step of the JAX training step (state carried between calls)."""
    import jax

    dispatch, state, images, tables = setup["dispatch"], setup["state"], setup["images"], setup["tables"]
    state, loss = dispatch(state, images, tables)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = dispatch(state, images, tables)
    jax.block_until_ready(loss)
    setup["state"] = state
    return (time.perf_counter() - start) / steps


def time_jax_eval(embed, params, images, repeats: int = 3) -> float:
    """Images encoded per second (forward only) in batches of 256."""
    import jax

    jax.block_until_ready(embed(params, images))
    start = time.perf_counter()
    for _ in range(repeats):
        out = embed(params, images)
    jax.block_until_ready(out)
    return repeats * images.shape[0] / (time.perf_counter() - start)


def torch_setup(config, batch_size: int):
    """A plain PyTorch eager twin of the network and the paper's SGD step."""
    import torch
    from torch import nn

    size = config.image_size
    layers, channels = [], 1
    for i, (width, kernel) in enumerate(zip(config.model.features, config.model.kernel_sizes)):
        layers += [nn.Conv2d(channels, width, kernel, padding=0 if config.model.padding == "VALID" else "same"), nn.ReLU()]
        if i < len(config.model.features) - 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    conv = nn.Sequential(*layers)
    with torch.no_grad():
        flat = conv(torch.zeros(1, 1, size, size)).numel()
    encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(flat, config.model.embedding_dim), nn.Sigmoid())
    head = nn.Linear(config.model.embedding_dim, 1)
    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9, weight_decay=2e-4)
    x1 = (torch.rand(batch_size, 1, size, size) < 0.1).float()
    x2 = (torch.rand(batch_size, 1, size, size) < 0.1).float()
    target = (torch.arange(batch_size) < batch_size // 2).float()

    def step():
        optimizer.zero_grad()
        h = encoder(torch.cat([x1, x2]))
        h1, h2 = h.chunk(2)
        loss = nn.functional.binary_cross_entropy_with_logits(head((h1 - h2).abs()).squeeze(1), target)
        loss.backward()
        optimizer.step()
        return loss

    return step, sum(p.numel() for p in parameters)


def time_torch(step, steps: int) -> float:
    """Seconds per PyTorch step."""
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv):
    """Times both frameworks and prints the JSON summary."""
    del argv
    from siamese_jax.provenance import provenance

    config = FLAGS.config
    config.batch_size = FLAGS.batch_size
    dispatch, state, images, tables, pairs_per_step, flops, (embed, _, eval_images) = jax_setup(config)
    setup = {"dispatch": dispatch, "state": state, "images": images, "tables": tables}
    torch_step = None
    if FLAGS.torch:
        import torch

        torch_step, torch_params = torch_setup(config, config.batch_size)
    jax_times, torch_times = [], []
    for repeat in range(FLAGS.repeats):
        jax_times.append(time_jax(setup, FLAGS.steps))
        if torch_step is not None:
            torch_times.append(time_torch(torch_step, FLAGS.steps))
        print(f"repeat {repeat + 1}: jax {jax_times[-1]:.3f} s/step"
              + (f", torch {torch_times[-1]:.3f} s/step" if torch_times else ""), flush=True)
    jax_step = min(jax_times)
    result = {
        "benchmark": "train_throughput",
        **provenance(),
        "image_size": config.image_size,
        "sampling": config.sampling,
        "batch_size": config.batch_size,
        "pairs_per_step": pairs_per_step,
        "jax_pairs_per_s": pairs_per_step / jax_step,
        "jax_eval_images_per_s": time_jax_eval(embed, setup["state"]["params"], eval_images),
        "flops_per_pair": flops / pairs_per_step,
        "jax_gflop_per_s": flops / jax_step / 1e9,
    }
    if torch_times:
        torch_step_time = min(torch_times)
        result.update(
            torch_version=torch.__version__,
            torch_threads=torch.get_num_threads(),
            torch_pairs_per_s=config.batch_size / torch_step_time,
            ratio=(pairs_per_step / jax_step) / (config.batch_size / torch_step_time),
        )
        if config.sampling != "pairs":
            result["note"] = "torch baseline scores batch_size sampled pairs; JAX scores every within-group pair"
    line = json.dumps(result)
    if FLAGS.output:
        Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
        Path(FLAGS.output).write_text(json.dumps(result, indent=2) + "\n")
    print(line)


if __name__ == "__main__":
    app.run(main)
