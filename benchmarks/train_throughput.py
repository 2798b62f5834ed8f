"""Training-step throughput of siamese_jax against PyTorch eager on the same device.

    python benchmarks/train_throughput.py [--config=configs/omniglot.py] [--batch_sizes=128,512,1024]
        [--torch_modes=float32,tf32,bfloat16] [--frameworks=jax,torch] [--breakdown] [--output=FILE]

The JAX step is the real one from siamese_jax.train: sampling, augmentation, forward, backward and
update, all on the device, for each batch size (pairs) of --batch_sizes, and each device count of
--devices (data parallel over a mesh; on a CPU, N devices are forced with
--xla_force_host_platform_device_count and share the same cores). The evaluation path is timed
too: images encoded per second by the jitted encoder.

The PyTorch step is what the public implementations do: the same network and loss in eager
mode, SGD with momentum, on a ready batch (no sampling or augmentation cost counted, which favours
PyTorch), on the device JAX uses (CUDA when JAX runs on a GPU), in each mode of --torch_modes:
float32, tf32 (TensorFloat-32 matrix products, CUDA only), bfloat16 (autocast), each optionally
with '+channels_last'. JAX and PyTorch steps alternate, --repeats times; the best repetition
counts. With --frameworks=jax or =torch only one is timed, so a CPU comparison can run each in a
process of its own, with no thread pools competing.

FLOPs come from the layer shapes (siamese_jax.flops), since XLA's GPU cost analysis does not
count cuDNN's convolutions; TFLOP/s are reported against the device's dense bfloat16 datasheet
peak (--peak_tflops overrides it). --breakdown also times the parts of the step: sampling and
augmentation alone, the encoder's forward pass, forward and backward without the update.

The last line printed is one JSON object; --output also writes it to a file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS

# Dense bfloat16 peak TFLOP/s per device, from vendor datasheets (SXM parts for NVIDIA). The best
# an 8192^3 bf16 matrix product reached on these machines: about 790-800 (H100 and H200).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5p": 459.0}
TORCH_MODES = ("float32", "tf32", "bfloat16")
# The default modes on a GPU: eager in each precision, the fastest layout, and torch.compile of that.
CUDA_TORCH_MODES = ["float32", "tf32", "bfloat16", "bfloat16+channels_last", "bfloat16+channels_last+compile"]


def define_flags() -> None:
    """The benchmark's flags; defined only when run as a script, so tests can import it."""
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", str(REPO / "configs" / "omniglot.py"), "Experiment config.")
    flags.DEFINE_list("batch_sizes", ["32"], "Pairs per training step, each timed (overrides the config's).")
    flags.DEFINE_list("devices", ["1"], "Device counts to time the JAX step on, e.g. 1,2,4,8 (first batch size).")
    flags.DEFINE_enum("scaling", "strong", ["strong", "weak"], "Keep the global batch (strong) or scale it with N (weak).")
    flags.DEFINE_integer("steps", 3, "Timed steps per repetition.")
    flags.DEFINE_integer("repeats", 2, "Alternating repetitions of (JAX, PyTorch).")
    flags.DEFINE_list("frameworks", ["jax", "torch"], "What to time: jax, torch or both.")
    flags.DEFINE_list("torch_modes", None, "PyTorch modes: float32, tf32, bfloat16, each optionally +channels_last "
                      "(default: all three on CUDA, float32 on a CPU).")
    flags.DEFINE_list("model_variants", [], "More JAX rows at the first batch size on 1 device, each with one "
                      "config.model entry changed (e.g. first_layer_as_matmul=True), timed in turn with the others.")
    flags.DEFINE_bool("breakdown", False, "Also time the parts of the JAX step (first batch size, 1 device).")
    flags.DEFINE_integer("eval_batch", 0, "Images per encoding call for the evaluation timing (0: the config's; "
                         "-1: skip).")
    flags.DEFINE_integer("profile_steps", 0, "Trace this many JAX steps (first batch size, 1 device) with "
                         "jax.profiler and summarise where the time goes (0: no trace).")
    flags.DEFINE_string("profile_output", None, "Also copy the trace (Perfetto JSON, gzipped) to this file.")
    flags.DEFINE_float("peak_tflops", None, "The device's peak TFLOP/s for the fraction of peak (default: datasheet).")
    flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


def synthetic_tables(num_alphabets: int = 30, classes: int = 30, drawers: int = 12):
    """Sampling tables of an Omniglot-sized training set, for timing without the dataset."""
    import numpy as np

    from siamese_jax import sampling

    alphabet = np.repeat(np.arange(num_alphabets), classes * drawers)
    character = np.repeat(np.arange(num_alphabets * classes), drawers)
    return sampling.build_tables(alphabet, character), len(alphabet)


def jax_setup(config, devices) -> dict:
    """The real training step (train_step.create, as train runs it) on a mesh of `devices`, its state and inputs."""
    import numpy as np

    from siamese_jax import distributed, train_step
    from siamese_jax.models import input_shape

    mesh = distributed.data_mesh(devices)
    everywhere = distributed.replicated(mesh)
    tables, num_images = synthetic_tables()
    core, state = train_step.create(config, tables, mesh)
    images = (np.random.default_rng(0).random((num_images, *input_shape(config))) < 0.1).astype(np.uint8) * 255
    return {"dispatch": core.dispatch, "steps_per_call": config.steps_per_dispatch, "state": state,
            "images": distributed.put(images, everywhere), "tables": distributed.put(tables, everywhere),
            "pairs_per_step": core.pairs_per_step, "sampler": core.sampler, "model": core.model, "mesh": mesh}


def model_variant(config, spec: str):
    """A copy of `config` with one config.model entry changed, from 'key=value' (a Python literal, else a string)."""
    import ast

    key, sep, text = spec.partition("=")
    if not sep or key not in config.model:
        raise ValueError(f"--model_variants entry {spec!r} must be KEY=VALUE with KEY in config.model")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    changed = config.copy_and_resolve_references()
    changed.model[key] = value
    return changed


def seconds_per_call(fn, *args, steps: int) -> float:
    """Mean seconds of a jitted call that returns its first argument's next value (or nothing to carry)."""
    import jax

    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def time_jax(setup: dict, steps: int) -> float:
    """Seconds per step of the JAX training step (the state carried between calls; `steps` calls of
    config.steps_per_dispatch steps each)."""
    import jax

    dispatch, state, images, tables = setup["dispatch"], setup["state"], setup["images"], setup["tables"]
    state, loss = dispatch(state, images, tables)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = dispatch(state, images, tables)
    jax.block_until_ready(loss)
    setup["state"] = state
    return (time.perf_counter() - start) / (steps * setup["steps_per_call"])


def breakdown(setup: dict, config, steps: int) -> dict:
    """Milliseconds of the parts of one step: inputs (sample, gather, distort), forward, forward + backward."""
    import jax

    from siamese_jax import augment, train_step
    from siamese_jax.data.images import to_float
    from siamese_jax.models import SiameseNet

    model, sampler, tables, train_images = setup["model"], setup["sampler"], setup["tables"], setup["images"]
    variables = {k: v for k, v in setup["state"].items() if k in ("params", "batch_stats")}
    distortion = train_step.distortion_settings(config.augment)

    @jax.jit
    def inputs(key):
        batch = sampler(key, tables)
        images = to_float(train_images[batch.images])
        return augment.augment_batch(key, images, distortion) if distortion is not None else images

    images = inputs(jax.random.PRNGKey(0))

    @jax.jit
    def forward(variables, images):
        return model.apply(variables, images, method=SiameseNet.embed)

    @jax.jit
    def forward_backward(variables, images):
        return jax.grad(lambda p: model.apply(dict(variables, params=p), images, method=SiameseNet.embed)
                        .astype("float32").sum())(variables["params"])

    key = jax.random.PRNGKey(1)
    return {
        "inputs_ms": 1e3 * seconds_per_call(inputs, key, steps=steps),
        "encoder_forward_ms": 1e3 * seconds_per_call(forward, variables, images, steps=steps),
        "encoder_forward_backward_ms": 1e3 * seconds_per_call(forward_backward, variables, images, steps=steps),
        "images": int(images.shape[0]),
    }


def time_encoding(setup: dict, batch: int, steps: int) -> float:
    """Images per second through the evaluation encoder (scoring.embed_fn), uint8 in, embeddings out."""
    import jax
    import numpy as np

    from siamese_jax import distributed
    from siamese_jax.evaluation import scoring

    mesh = setup["mesh"]
    embed = scoring.embed_fn(setup["model"], mesh)
    variables = {k: v for k, v in setup["state"].items() if k in ("params", "batch_stats")}
    images = distributed.put(np.asarray(jax.device_get(setup["images"][:batch])), distributed.batch_sharded(mesh))
    return batch / seconds_per_call(embed, variables, images, steps=steps)


def profile(setup: dict, steps: int, copy_to: str | None = None, top: int = 30) -> dict:
    """Traces `steps` training steps and sums the time of each operation: on a GPU its kernels and
    copies (XLA's GPU cost analysis misses cuDNN's work, the trace does not), on a CPU XLA's threads."""
    import collections
    import gzip
    import shutil
    import tempfile

    import jax

    folder = tempfile.mkdtemp(prefix="siamese_jax_profile_")
    state, images, tables = setup["state"], setup["images"], setup["tables"]
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        for _ in range(steps):  # Calls, each of steps_per_call steps.
            state, loss = setup["dispatch"](state, images, tables)
        jax.block_until_ready(loss)
    setup["state"] = state
    (trace,) = Path(folder).rglob("perfetto_trace.json.gz")
    if copy_to:
        Path(copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trace, copy_to)
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    device_pids = {pid for pid, name in processes.items() if name.startswith("/device:")}
    device_threads = {key: name for key, name in threads.items() if key[0] in device_pids}
    # A GPU trace shows each kernel on its stream and again summarised on the 'XLA Ops' and 'XLA
    # Modules' lines: count the streams' kernels and copies once, and the XLA operations apart.
    streams = {key for key, name in device_threads.items() if name.lower().startswith("stream")}
    xla_ops = {key for key, name in device_threads.items() if name == "XLA Ops"}

    def counted(event):
        if event.get("ph") != "X":
            return False
        if device_pids:
            return (event["pid"], event["tid"]) in streams if streams else event["pid"] in device_pids
        # On a CPU: XLA's operations, not the Python tracer's frames ('$file:line') or the executor
        # that wraps them (its time is theirs).
        name = event["name"]
        return (threads.get((event["pid"], event["tid"]), "python") != "python" and not name.startswith("$")
                and not name.startswith("ThunkExecutor"))

    def table(selected):
        total_us, count = collections.Counter(), collections.Counter()
        for event in selected:
            total_us[event["name"]] += event.get("dur", 0.0)
            count[event["name"]] += 1
        busy = sum(total_us.values())
        return busy, [{"name": name, "ms_per_step": us / 1e3 / steps, "calls_per_step": count[name] / steps,
                       "share": us / busy if busy else None} for name, us in total_us.most_common(top)]

    steps *= setup["steps_per_call"]
    busy, kernels = table(filter(counted, events))
    shutil.rmtree(folder, ignore_errors=True)
    result = {
        "steps": steps,
        "where": "device kernels and copies" if device_pids else "XLA's host threads",
        "busy_ms_per_step": busy / 1e3 / steps,
        "top": kernels,
    }
    if xla_ops:
        _, result["top_xla_ops"] = table(e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) in xla_ops)
    return result


def torch_device(jax_platform: str) -> str:
    """The PyTorch device on the same hardware as JAX's: CUDA when JAX runs on a GPU."""
    import torch

    if jax_platform == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("JAX runs on a GPU but PyTorch sees no CUDA device: install a CUDA build of torch")
        return "cuda"
    return "cpu"


def torch_setup(config, batch_size: int, device: str, mode: str):
    """A plain PyTorch eager twin of the network and an SGD step, in `mode` (see TORCH_MODES)."""
    import contextlib

    import torch
    from torch import nn

    precision, *options = mode.split("+")
    if precision not in TORCH_MODES or not set(options) <= {"channels_last", "compile"}:
        raise ValueError(f"unknown PyTorch mode {mode!r}: use {TORCH_MODES}, optionally +channels_last and/or "
                         "+compile")
    layout = "channels_last" in options
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    elif precision == "tf32":
        raise ValueError("TF32 is a CUDA mode")
    tf32 = precision == "tf32"
    size = config.image_size
    layers, channels = [], config.channels
    for i, (width, kernel) in enumerate(zip(config.model.features, config.model.kernel_sizes)):
        layers += [nn.Conv2d(channels, width, kernel, padding=0 if config.model.padding == "VALID" else "same"), nn.ReLU()]
        if i < len(config.model.features) - 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    conv = nn.Sequential(*layers)
    with torch.no_grad():
        flat = conv(torch.zeros(1, config.channels, size, size)).numel()
    encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(flat, config.model.embedding_dim), nn.Sigmoid()).to(device)
    head = nn.Linear(config.model.embedding_dim, 1).to(device)
    memory_format = torch.channels_last if layout else torch.contiguous_format
    encoder = encoder.to(memory_format=memory_format)
    parameters = list(encoder.parameters()) + list(head.parameters())
    if "compile" in options:  # Compiled on the first (untimed) step.
        encoder, head = torch.compile(encoder), torch.compile(head)
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9, weight_decay=2e-4)
    shape = (batch_size, config.channels, size, size)
    x1 = (torch.rand(shape, device=device) < 0.1).float().to(memory_format=memory_format)
    x2 = (torch.rand(shape, device=device) < 0.1).float().to(memory_format=memory_format)
    target = (torch.arange(batch_size, device=device) < batch_size // 2).float()
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if precision == "bfloat16"
                else contextlib.nullcontext())

    def step():
        # The TF32 switches are global: set them at each step, since the modes' steps alternate.
        # (Set once at setup, every mode ran with the last mode's switches.)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            h = encoder(torch.cat([x1, x2]))
            h1, h2 = h.float().chunk(2)
            logits = head((h1 - h2).abs()).squeeze(1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        optimizer.step()
        return loss

    return step


def time_torch(step, steps: int, device: str) -> float:
    """Seconds per PyTorch step, synchronised with the device."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def peak_tflops(device_kind: str) -> float | None:
    """--peak_tflops, else the datasheet's dense bfloat16 peak of a known accelerator, else None."""
    if FLAGS.peak_tflops:
        return FLAGS.peak_tflops
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device_kind), None)


def versions() -> dict:
    """Versions of what was timed."""
    import jax
    import jaxlib

    found = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}
    try:
        import torch

        found["torch"] = torch.__version__
        found["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    return found


def main(argv):
    """Times JAX and PyTorch as asked; prints the JSON summary (a config mistake: one line, exit 1)."""
    del argv
    from siamese_jax.errors import UserError

    try:
        run_benchmark()
    except UserError as error:
        sys.exit(f"error: {error}")


def run_benchmark() -> None:
    """The timings named by the flags, printed (and written to --output) as one JSON object."""
    counts = sorted({int(n) for n in FLAGS.devices})
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    frameworks = set(FLAGS.frameworks)
    if not frameworks or frameworks - {"jax", "torch"}:
        sys.exit(f"error: --frameworks takes jax and/or torch, got {FLAGS.frameworks}")
    # Before JAX starts: on a CPU, make as many devices as the largest count asks for. They share
    # the cores, so a device can reach a collective minutes after the others: XLA:CPU's default
    # 40 s rendezvous timeout aborted the paper network on 8 devices of a 2-core machine.
    if max(counts) > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(counts)}"
            " --xla_cpu_collective_call_terminate_timeout_seconds=1800"
        )
    import jax

    from siamese_jax import flops
    from siamese_jax.config_files import upgrade_config
    from siamese_jax.models import compute_dtype
    from siamese_jax.provenance import provenance

    config = upgrade_config(FLAGS.config)
    device = jax.devices()[0]
    missing = [n for n in counts if n > jax.device_count()]
    if missing:
        sys.exit(f"error: --devices asks for {missing} but JAX sees only {jax.device_count()} devices")
    if "torch" in frameworks and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: timing JAX alone", flush=True)
        frameworks.discard("torch")
    on = torch_device(device.platform) if "torch" in frameworks else None
    modes = FLAGS.torch_modes or (CUDA_TORCH_MODES if on == "cuda" else ["float32"])
    train_flops_image = flops.training_flops_per_image(config)
    peak = peak_tflops(device.device_kind)
    jax_rows, torch_rows = [], []

    # What the result says of the run, whatever has been timed: computed once (provenance runs git).
    described = {
        "benchmark": "train_throughput",
        **provenance(max(counts)),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "versions": versions(),
        "compute_dtype": jax.numpy.dtype(compute_dtype(config.model.dtype)).name,
        "image_size": config.image_size,
        "sampling": config.sampling,
        "scaling_mode": FLAGS.scaling,
        "training_flops_per_image": train_flops_image,
        "flops_note": "counted from the layer shapes (siamese_jax.flops): forward, weight and input gradients",
        "peak_tflop_per_s_per_device": peak,
    }

    def write_result(complete: bool) -> None:
        """The JSON of what is timed so far: to --output after each batch size (a run stopped at its
        time limit keeps its finished rows), and printed at the end."""
        result = {**described, "jax": jax_rows, "torch_device": on, "torch": torch_rows, "complete": complete}
        base = next((r for r in jax_rows if r["devices"] == 1 and r["batch_size"] == batch_sizes[0]
                     and not r["model_variant"]), None)
        variants = {r["model_variant"]: r["pairs_per_s"] for r in jax_rows if r["model_variant"]}
        if variants:
            result["jax_model_variant_pairs_per_s"] = variants
        if base is not None:
            per_device = [r for r in jax_rows if (r["batch_size"] == batch_sizes[0] or FLAGS.scaling == "weak")
                          and not r["model_variant"]]
            for row in per_device:  # Pairs/s per device against 1 device's: 1.0 is perfect scaling.
                row["scaling_efficiency"] = row["pairs_per_s"] / row["devices"] / base["pairs_per_s"]
            result["jax_pairs_per_s"] = base["pairs_per_s"]
        same_batch = [r for r in torch_rows if r["batch_size"] == batch_sizes[0]]
        eager = [r for r in same_batch if "compile" not in r["mode"]]
        compiled = [r for r in same_batch if "compile" in r["mode"]]
        if eager:  # The comparison with eager PyTorch; torch.compile's is reported beside it.
            fastest = max(eager, key=lambda r: r["pairs_per_s"])
            result["torch_fastest_mode"] = fastest["mode"]
            result["torch_pairs_per_s"] = fastest["pairs_per_s"]
            if base is not None:
                result["ratio_to_fastest_torch"] = base["pairs_per_s"] / fastest["pairs_per_s"]
        if compiled:
            fastest = max(compiled, key=lambda r: r["pairs_per_s"])
            result["torch_compiled_fastest_mode"] = fastest["mode"]
            result["torch_compiled_pairs_per_s"] = fastest["pairs_per_s"]
            if base is not None:
                result["ratio_to_fastest_torch_compiled"] = base["pairs_per_s"] / fastest["pairs_per_s"]
            if config.sampling != "pairs":
                result["note"] = "PyTorch scores batch_size sampled pairs; JAX scores every within-group pair"
        if FLAGS.output:
            Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
            Path(FLAGS.output).write_text(json.dumps(result, indent=2) + "\n")
        if complete:
            print(json.dumps(result))

    started = time.perf_counter()

    def phase(what: str) -> None:
        """Prints what starts now, with the seconds since the first timing began: where the time
        went between timings, for a run stopped at its limit."""
        print(f"[{time.perf_counter() - started:5.0f} s] {what}", flush=True)

    runs = [(n, b) for b in batch_sizes for n in (counts if b == batch_sizes[0] else [1])]
    for n, batch in runs:
        config.batch_size = batch * (n if FLAGS.scaling == "weak" else 1)
        phase(f"{n} device(s), batch {config.batch_size}: setting up")
        setup = jax_setup(config, jax.devices()[:n]) if "jax" in frameworks else None
        first = n == 1 and batch == batch_sizes[0]
        variant_setups = {spec: jax_setup(model_variant(config, spec), jax.devices()[:1])
                          for spec in FLAGS.model_variants} if setup is not None and first else {}
        steppers = {mode: torch_setup(config, config.batch_size, on, mode) for mode in modes} if (
            "torch" in frameworks and n == 1) else {}
        jax_times, torch_times = [], {mode: [] for mode in steppers}
        variant_times = {spec: [] for spec in variant_setups}
        for repeat in range(FLAGS.repeats):
            if setup is not None:
                jax_times.append(time_jax(setup, FLAGS.steps))
            for spec, variant_setup in variant_setups.items():
                variant_times[spec].append(time_jax(variant_setup, FLAGS.steps))
            for mode, step in steppers.items():
                torch_times[mode].append(time_torch(step, FLAGS.steps, on))
            timed = ([f"jax {jax_times[-1]:.4f} s/step"] if jax_times else []) + [
                f"jax {spec} {t[-1]:.4f} s/step" for spec, t in variant_times.items()] + [
                f"torch {mode} {t[-1]:.4f} s/step" for mode, t in torch_times.items()]
            print(f"{n} device(s), batch {config.batch_size}, repeat {repeat + 1}: {', '.join(timed)}", flush=True)
        if setup is not None:
            images_per_step = jax.eval_shape(setup["sampler"], jax.random.PRNGKey(0), setup["tables"]).images.shape[0]
            pairs_per_step, steps_per_call = setup["pairs_per_step"], setup["steps_per_call"]

            def jax_row(best: float, devices: int, variant: str | None) -> dict:
                row = {"devices": devices, "batch_size": config.batch_size, "model_variant": variant,
                       "pairs_per_step": pairs_per_step, "images_per_step": images_per_step,
                       "steps_per_dispatch": steps_per_call, "s_per_step": best,
                       "pairs_per_s": pairs_per_step / best, "images_per_s": images_per_step / best,
                       "tflop_per_s_per_device": train_flops_image * images_per_step / best / devices / 1e12}
                row["fraction_of_peak"] = row["tflop_per_s_per_device"] / peak if peak else None
                return row

            row = jax_row(min(jax_times), n, None)
            jax_rows.extend(jax_row(min(times), 1, spec) for spec, times in variant_times.items())
            if FLAGS.breakdown and n == 1 and batch == batch_sizes[0]:
                phase("breakdown")
                row["breakdown"] = breakdown(setup, config, FLAGS.steps)
            if FLAGS.profile_steps and n == 1 and batch == batch_sizes[0]:
                phase("profile")
                row["profile"] = profile(setup, FLAGS.profile_steps, FLAGS.profile_output)
            if FLAGS.eval_batch >= 0 and n == 1 and batch == batch_sizes[0]:
                eval_batch = FLAGS.eval_batch or config.eval_batch_size
                phase(f"encoding for evaluation, {eval_batch} images a call")
                row["eval_images_per_s"] = time_encoding(setup, eval_batch, FLAGS.steps)
                row["eval_batch"] = eval_batch
            jax_rows.append(row)
        for mode, times in torch_times.items():
            torch_rows.append({"mode": mode, "batch_size": config.batch_size, "s_per_step": min(times),
                               "pairs_per_s": config.batch_size / min(times),
                               "tflop_per_s": train_flops_image * 2 * config.batch_size / min(times) / 1e12})
        del setup, steppers, variant_setups
        write_result(complete=False)

    write_result(complete=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
