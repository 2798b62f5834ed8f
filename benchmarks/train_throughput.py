"""Training-step throughput of siamese_jax against device count, and against PyTorch eager.

    python benchmarks/train_throughput.py [--config=configs/omniglot.py] [--batch_size=32]
        [--devices=1,2,4,8] [--scaling=strong|weak] [--peak_tflops=X]

The JAX step is the real one from siamese_jax.train: sampling, augmentation, forward, backward and
update, all on the device, data parallel over a mesh of the first N devices for each N of
--devices. On a CPU, N devices are made with --xla_force_host_platform_device_count and share the
same cores, so scaling there measures the cost of partitioning, not added hardware. 'strong'
scaling keeps the global batch; 'weak' multiplies it by N.

FLOPs per pair come from XLA's cost analysis of the 1-device step; the fraction of peak uses
--peak_tflops, or a datasheet value for known accelerators (dense bfloat16), none for CPUs.

The PyTorch step is what the public implementations do: the same network and loss in eager mode,
SGD with momentum, on a ready batch (no sampling or augmentation cost counted, which favours
PyTorch), timed alternately with the 1-device JAX step in the same process. The last line printed
is one JSON object; --output also writes it to a file.
"""

from __future__ import annotations

import json
import os
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
flags.DEFINE_list("devices", ["1"], "Device counts to time the JAX step on, e.g. 1,2,4,8.")
flags.DEFINE_enum("scaling", "strong", ["strong", "weak"], "Keep the global batch (strong) or scale it with N (weak).")
flags.DEFINE_float("peak_tflops", None, "The device's peak TFLOP/s for the fraction of peak (default: datasheet).")

# Dense bfloat16 peak TFLOP/s per device, from vendor datasheets (SXM parts for NVIDIA).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5p": 459.0}
flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


def synthetic_tables(num_alphabets: int = 30, classes: int = 30, drawers: int = 12):
    """Sampling tables of an Omniglot-sized training set, for timing without the dataset."""
    import numpy as np

    from siamese_jax import sampling

    alphabet = np.repeat(np.arange(num_alphabets), classes * drawers)
    character = np.repeat(np.arange(num_alphabets * classes), drawers)
    return sampling.build_tables(alphabet, character), len(alphabet)


def jax_setup(config, devices):
    """The real training step on a mesh of `devices`: a dict of its state, inputs and XLA FLOP count."""
    import jax
    import numpy as np

    from siamese_jax import distributed, optim, train
    from siamese_jax.models import build_model, init_variables

    mesh = distributed.data_mesh(devices)
    everywhere = distributed.replicated(mesh)
    tables, num_images = synthetic_tables()
    sampler, pairs_per_step = train.make_sampler(config, tables)
    size = config.image_size
    images = (np.random.default_rng(0).random((num_images, size, size)) < 0.1).astype(np.uint8) * 255
    model = build_model(config.model)
    params = init_variables(model, jax.random.PRNGKey(1), (size, size))["params"]
    layers = optim.layer_names(params)
    optimizer = optim.create_optimizer(config, params, steps_per_epoch=1000)
    state = distributed.put(train.initial_state(params, optimizer, config.seed), everywhere)
    images, tables = distributed.put(images, everywhere), distributed.put(tables, everywhere)
    step = train.make_train_step(model, optimizer, sampler, config, optim.per_layer(config.l2, layers, "l2"), mesh)
    dispatch = train.make_dispatch(step, 1, mesh)
    cost = dispatch.lower(state, images, tables).compile().cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost).get("flops", float("nan"))
    return {"dispatch": dispatch, "state": state, "images": images, "tables": tables,
            "pairs_per_step": pairs_per_step, "flops_per_device": flops}


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


def peak_tflops(device) -> float | None:
    """--peak_tflops, else the datasheet's dense bfloat16 peak of a known accelerator, else None."""
    if FLAGS.peak_tflops:
        return FLAGS.peak_tflops
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device.device_kind), None)


def main(argv):
    """Times the JAX step on each device count and PyTorch once; prints the JSON summary."""
    del argv
    counts = sorted({int(n) for n in FLAGS.devices})
    # Before JAX starts: on a CPU, make as many devices as the largest count asks for. They share
    # the cores, so a device can reach a collective minutes after the others: XLA:CPU's default
    # 40 s rendezvous timeout aborted the paper network on 8 devices of a 2-core machine.
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(counts)}"
            " --xla_cpu_collective_call_terminate_timeout_seconds=1800"
        )
    import jax

    from siamese_jax.models import compute_dtype
    from siamese_jax.provenance import provenance

    config = FLAGS.config
    missing = [n for n in counts if n > jax.device_count()]
    if missing:
        sys.exit(f"error: --devices asks for {missing} but JAX sees only {jax.device_count()} devices")
    torch_step = None
    if FLAGS.torch:
        import torch

        torch_step, _ = torch_setup(config, FLAGS.batch_size)
    rows, torch_times = [], []
    for n in counts:
        config.batch_size = FLAGS.batch_size * (n if FLAGS.scaling == "weak" else 1)
        setup = jax_setup(config, jax.devices()[:n])
        times = []
        for repeat in range(FLAGS.repeats):
            times.append(time_jax(setup, FLAGS.steps))
            if n == 1 and torch_step is not None:
                torch_times.append(time_torch(torch_step, FLAGS.steps))
            print(f"{n} device(s), repeat {repeat + 1}: jax {times[-1]:.3f} s/step"
                  + (f", torch {torch_times[-1]:.3f} s/step" if n == 1 and torch_times else ""), flush=True)
        rows.append({"devices": n, "batch_size": config.batch_size, "pairs_per_step": setup["pairs_per_step"],
                     "s_per_step": min(times), "pairs_per_s": setup["pairs_per_step"] / min(times),
                     "flops_per_device": setup["flops_per_device"]})
    base = rows[0]
    for row in rows:
        # Pairs/s per device against the first count's: 1.0 is perfect scaling.
        row["scaling_efficiency"] = (row["pairs_per_s"] / row["devices"]) / (base["pairs_per_s"] / base["devices"])
    device = jax.devices()[0]
    flops_per_pair = base["flops_per_device"] * base["devices"] / base["pairs_per_step"]
    peak = peak_tflops(device)
    achieved = flops_per_pair * base["pairs_per_s"] / base["devices"] / 1e12
    result = {
        "benchmark": "train_throughput",
        **provenance(max(counts)),
        "device_kind": device.device_kind,
        "compute_dtype": jax.numpy.dtype(compute_dtype(config.model.dtype)).name,
        "image_size": config.image_size,
        "sampling": config.sampling,
        "scaling_mode": FLAGS.scaling,
        "scaling": rows,
        "flops_per_pair": flops_per_pair,
        "tflop_per_s_per_device": achieved,
        "peak_tflop_per_s_per_device": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "jax_pairs_per_s": base["pairs_per_s"],
    }
    if torch_times:
        torch_pairs_per_s = FLAGS.batch_size / min(torch_times)
        result.update(
            torch_version=torch.__version__,
            torch_threads=torch.get_num_threads(),
            torch_pairs_per_s=torch_pairs_per_s,
            ratio=base["pairs_per_s"] / torch_pairs_per_s if base["devices"] == 1 else None,
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
