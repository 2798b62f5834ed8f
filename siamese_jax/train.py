"""Trains the siamese network (Omniglot, or faces on LFW) and evaluates its best checkpoint.

    python -m siamese_jax.train --config=configs/omniglot.py --workdir=runs/omniglot
    python -m siamese_jax.train --config=configs/lfw.py --workdir=runs/lfw

Starting again with the same workdir resumes from the latest checkpoint. Training is data parallel
over every visible device; several processes (hosts) join with --coordinator_address,
--num_processes and --process_id, or --distributed on TPU pods and Slurm (see launch/).
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags
from tqdm import tqdm

from siamese_jax import augment, distributed, evaluation, experiments, losses, optim, sampling
from siamese_jax.checkpointing import COLLECTIONS, Checkpoints
from siamese_jax.data.images import to_float
from siamese_jax.errors import ConfigError, UserError
from siamese_jax.files import write_atomically
from siamese_jax.models import SiameseNet, build_model, init_variables, input_shape
from siamese_jax.provenance import provenance

# Config entries that fix the parameters' shapes: a workdir's checkpoints only fit these.
MODEL_KEYS = ("model", "image_size", "channels")
# Entries of config.model that change how the network computes, not its parameters: a run may
# resume with another compute dtype or dropout rate.
NOT_SHAPE_KEYS = ("dtype", "dropout")
LOSSES = ("cross_entropy", "contrastive")
METRICS = ("one_shot_accuracy", "verification_accuracy", "verification_auc")


def group_layout(config) -> sampling.GroupLayout:
    """The alphabet groups of a sampling='groups' config."""
    per_alphabet = config.classes_per_alphabet * config.images_per_class
    if per_alphabet < 2 or config.batch_size % per_alphabet:
        raise ConfigError(
            f"sampling='groups' needs batch_size ({config.batch_size}) to be a multiple of "
            f"classes_per_alphabet x images_per_class ({per_alphabet}, at least 2)"
        )
    return sampling.GroupLayout(config.batch_size // per_alphabet, config.classes_per_alphabet, config.images_per_class)


def pairs_per_step(config) -> int:
    """Pairs scored per training step: batch_size for 'pairs', every within-group pair for 'groups'."""
    if config.sampling == "pairs":
        return config.batch_size
    if config.sampling == "groups":
        return len(group_layout(config).pairs()[0])
    raise ConfigError(f"config.sampling must be 'pairs' or 'groups', got {config.sampling!r}")


def make_sampler(config, tables: sampling.SamplingTables):
    """The minibatch sampler of config.sampling, and how many pairs it scores per step."""
    if config.sampling == "groups":
        layout = group_layout(config)
        sampling.check_group_layout(tables, layout)
        return functools.partial(sampling.sample_groups, layout=layout), pairs_per_step(config)
    return functools.partial(sampling.sample_pairs, num_pairs=config.batch_size), pairs_per_step(config)


def make_train_step(model: SiameseNet, optimizer: optax.GradientTransformation, sampler, config, l2: dict,
                    mesh: Mesh | None = None):
    """One training step, state -> (state, loss): sample, distort, encode, score, update, on the device.

    With a mesh, each device gathers, distorts and encodes its slice of the batch's images; the
    random draws do not depend on the slicing, so any device count follows the same trajectory.
    Batch-norm statistics are those of the whole global batch, whatever the device count.
    """
    # Plain values, so the step closes over constants and no ConfigDict lookups are traced.
    distortion = SimpleNamespace(**config.augment.to_dict())
    balanced = bool(config.balanced_loss)
    contrastive = config.get("loss", "cross_entropy") == "contrastive"
    ranking_weight = float(config.ranking_loss_weight)
    split_batch = distributed.batch_sharded(mesh) if mesh is not None else None

    def on_slices(x):
        return x if split_batch is None else jax.lax.with_sharding_constraint(x, split_batch)

    def step(state, train_images, tables):
        key = jax.random.fold_in(state["rng"], state["step"])
        sample_key, augment_key = jax.random.split(key)
        dropout_key = jax.random.fold_in(key, 2)  # Folded in, so runs without dropout draw as before.
        batch = sampler(sample_key, tables)
        images = to_float(train_images[on_slices(batch.images)])
        if distortion.enabled:
            images = augment.augment_batch(augment_key, images, distortion)
        images = on_slices(images)

        def loss_fn(params):
            variables = dict(model_variables(state), params=params)
            embeddings, mutated = model.apply(
                variables, images, True, method=SiameseNet.embed, mutable=["batch_stats"],
                rngs={"dropout": dropout_key},
            )
            h1, h2 = embeddings[batch.left], embeddings[batch.right]
            logits = model.apply(variables, h1, h2, method=SiameseNet.score)
            if contrastive:
                distance = model.apply(variables, h1, h2, method=SiameseNet.distance)
                data_loss = losses.contrastive_loss(distance, batch.same, model.margin, balanced)
            else:
                data_loss = losses.pair_loss(logits, batch.same, balanced)
            if ranking_weight:
                data_loss += ranking_weight * losses.ranking_loss(
                    logits, batch.same, batch.left, batch.right, batch.images.shape[0]
                )
            return data_loss + optim.l2_penalty(params, l2), (data_loss, mutated)

        (_, (data_loss, mutated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = dict(
            state,
            **mutated,  # The batch-norm running averages, when the model has them.
            step=state["step"] + 1,
            params=optax.apply_updates(state["params"], updates),
            opt_state=opt_state,
            loss_sum=state["loss_sum"] + data_loss,
            loss_count=state["loss_count"] + 1,
        )
        return new_state, data_loss

    return step


def initial_state(variables: dict, optimizer: optax.GradientTransformation, seed: int) -> dict:
    """The training state before the first step: the pytree that steps carry and checkpoints hold.

    It holds the model's variable collections ('params', and 'batch_stats' with batch norm) at
    its top level.
    """
    return {
        **variables,
        "step": jnp.zeros([], jnp.int32),
        "opt_state": optimizer.init(variables["params"]),
        "rng": jax.random.PRNGKey(seed + 1),
        "loss_sum": jnp.zeros([], jnp.float32),
        "loss_count": jnp.zeros([], jnp.int32),
    }


def model_variables(state: dict) -> dict:
    """The model's variable collections in a training state: what model.apply and the best checkpoint take."""
    return {name: state[name] for name in COLLECTIONS if name in state}


def make_dispatch(step, steps_per_dispatch: int, mesh: Mesh | None = None):
    """Jits `steps_per_dispatch` steps as one call (lax.scan when more than one).

    With a mesh, the returned state and loss are replicated over it.
    """
    out_shardings = distributed.replicated(mesh) if mesh is not None else None
    if steps_per_dispatch == 1:
        return jax.jit(step, donate_argnums=0, out_shardings=out_shardings)

    def many(state, train_images, tables):
        state, step_losses = jax.lax.scan(
            lambda s, _: step(s, train_images, tables), state, None, length=steps_per_dispatch
        )
        return state, step_losses[-1]

    return jax.jit(many, donate_argnums=0, out_shardings=out_shardings)


def validate_config(config, num_devices: int) -> None:
    """Rejects values that cannot work on `num_devices` devices, before any data is loaded."""
    for name in ("batch_size", "pairs_per_epoch", "num_epochs", "steps_per_dispatch", "eval_batch_size",
                 "log_every_steps", "checkpoint_every_steps"):
        value = config[name]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.{name} must be a positive integer, got {value!r}")
    if config.batch_size % num_devices:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the {num_devices} devices: each "
            f"device takes an equal slice of the batch, so use a multiple of {num_devices}"
        )
    if config.optimizer not in optim.OPTIMIZERS:
        raise ConfigError(f"config.optimizer must be one of {tuple(optim.OPTIMIZERS)}, got {config.optimizer!r}")
    if config.get("lr_schedule", "exponential") not in optim.SCHEDULES:
        raise ConfigError(f"config.lr_schedule must be one of {optim.SCHEDULES}, got {config.lr_schedule!r}")
    for name in ("warmup_epochs", "weight_decay", "max_train_seconds"):
        value = config.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"config.{name} must be a number >= 0, got {value!r}")
    dropout = config.model.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"config.model.dropout must be a rate in [0, 1), got {dropout!r}")
    experiments.dataset_name(config)
    loss = config.get("loss", "cross_entropy")
    if loss not in LOSSES:
        raise ConfigError(f"config.loss must be one of {LOSSES}, got {loss!r}")
    if loss == "contrastive" and config.model.get("head", "l1") != "euclidean":
        raise ConfigError("config.loss='contrastive' needs the Euclidean distance head: set config.model.head='euclidean'")
    metric = config.validation.get("metric", "one_shot_accuracy")
    if metric not in METRICS:
        raise ConfigError(f"config.validation.metric must be one of {METRICS}, got {metric!r}")


def prepare_workdir(workdir: str, config, save_config: bool = True) -> None:
    """Creates the workdir, checks it is writable and that its checkpoints fit this model; saves the config."""
    path = epath.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to workdir {workdir}: {error.strerror or error}") from None
    saved_path = path / "config.json"
    if saved_path.exists():
        saved = json.loads(saved_path.read_text())
        current = json.loads(config.to_json())
        for entries in (saved, current):
            model_section = entries.get("model") or {}
            entries["model"] = {k: v for k, v in model_section.items() if k not in NOT_SHAPE_KEYS}
        changed = [k for k in MODEL_KEYS if saved.get(k) != current.get(k)]
        if changed:
            raise UserError(
                f"{workdir} holds checkpoints of a different model ({', '.join(changed)} differ from this "
                "config): pass a new --workdir, or delete that one to start over"
            )
    if save_config:
        write_atomically(saved_path, config.to_json(indent=2) + "\n")


def read_metrics(path: epath.Path, up_to_epoch: int) -> list[dict]:
    """metrics.jsonl records of epochs 1..up_to_epoch (later ones belong to work being redone)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= up_to_epoch]


def write_metrics(path: epath.Path, records: list[dict]) -> None:
    """Rewrites metrics.jsonl atomically."""
    write_atomically(path, "".join(json.dumps(r) + "\n" for r in records))


class _StopRequest:
    """Signal handler that only records SIGTERM or Ctrl-C; the loop stops at the next step boundary.

    Raising from the handler instead could land anywhere, in the middle of a checkpoint write
    or a thread start, and leave a traceback or a half-finished operation behind.
    """

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self, signum, frame):
        del frame
        self.signal_name = signal.Signals(signum).name


class _Interrupted(Exception):
    """Raised by the training loop, at a step boundary, once a stop was requested."""


def describe_mesh(mesh: Mesh, images_per_step: int, compute_dtype) -> str:
    """One line naming where training runs, e.g. 'data parallel over 8 cpu devices, 32 of 256 images each'."""
    device = mesh.devices.flat[0]
    where = f"{mesh.size} {device.platform} device{'s' if mesh.size > 1 else ''} ({device.device_kind})"
    split = (f"data parallel over {where}, {images_per_step // mesh.size} of {images_per_step} images each"
             if mesh.size > 1 else f"training on {where}, {images_per_step} images per step")
    return f"{split}, {jnp.dtype(compute_dtype).name} compute"


class SpeedReport:
    """Times the first steps after compilation and says once how long the whole run will take.

    On a CPU the paper's network takes weeks: the line says so at once and points to the CPU
    config and the GPU instructions, instead of leaving a user to find out from the progress bar.
    """

    SLOW_S = 6 * 3600  # Above this, on a CPU, the line suggests the alternatives.
    MIN_STEPS, MIN_SECONDS = 20, 30.0

    def __init__(self, platform: str, pairs_per_step: int, enabled: bool):
        self.platform = platform
        self.pairs_per_step = pairs_per_step
        self.pending = enabled
        self.start: tuple[float, int] | None = None

    def after_step(self, loss, step: int, last_step: int) -> str | None:
        """Call after each dispatch; returns the line to print once enough steps were timed."""
        if not self.pending:
            return None
        if self.start is None:  # The first step compiles: time from its end.
            jax.block_until_ready(loss)
            self.start = (time.time(), step)
            return None
        seconds, steps = time.time() - self.start[0], step - self.start[1]
        if steps < self.MIN_STEPS and seconds < self.MIN_SECONDS and step < last_step:
            return None
        jax.block_until_ready(loss)  # Once: the queued steps must finish for an honest rate.
        self.pending = False
        seconds = time.time() - self.start[0]
        rate = steps * self.pairs_per_step / seconds
        remaining = (last_step - step) * self.pairs_per_step / rate
        line = f"measured {rate:,.1f} pairs/s: the remaining {last_step - step:,} steps take about {_duration(remaining)}"
        if self.platform == "cpu" and remaining > self.SLOW_S:
            line += (". This config is meant for a GPU: configs/omniglot_cpu.py trains a smaller network on "
                     "a CPU in about 20 minutes, and BUILD.md shows how to install JAX for GPUs. Training "
                     "goes on; Ctrl-C saves and stops, and the same command resumes")
        return line


def _duration(seconds: float) -> str:
    """A rough human duration: '40 s', '12 min', '3.5 h', '21 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def out_of_time(time_limit_s: float, elapsed_s: float, epoch_s: float | None) -> bool:
    """Whether another epoch of about `epoch_s` seconds would end past the training time limit (0: none)."""
    return bool(time_limit_s) and elapsed_s + (epoch_s or 0.0) > time_limit_s


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
    """Trains (resuming from WORKDIR if possible), then evaluates the best checkpoint into WORKDIR/eval.json.

    Data parallel over `devices` (default: every device of every process). With several
    processes, every process runs this; only process 0 prints and writes metrics and results.
    """
    mesh = distributed.data_mesh(devices)
    everywhere = distributed.replicated(mesh)
    primary = distributed.is_primary()
    validate_config(config, mesh.size)
    prepare_workdir(workdir, config, save_config=primary)
    workdir_path = epath.Path(workdir)

    experiment = experiments.load_experiment(config, mesh)
    tables = sampling.build_tables(experiment.train_groups, experiment.train_labels)
    sampler, pairs_per_step = make_sampler(config, tables)
    tables = distributed.put(tables, everywhere)
    train_images = distributed.put(experiment.train_images, everywhere)
    metric = config.validation.get("metric", "one_shot_accuracy")

    model = build_model(config.model)
    variables = init_variables(model, jax.random.PRNGKey(config.seed), input_shape(config))
    layers = optim.layer_names(variables["params"])
    l2 = optim.per_layer(config.l2, layers, "l2")
    spd = config.steps_per_dispatch
    steps_per_epoch = max(1, math.ceil(config.pairs_per_epoch / pairs_per_step / spd)) * spd
    optimizer, schedules = optim.create_optimizer(config, variables["params"], steps_per_epoch)
    state = distributed.put(initial_state(variables, optimizer, config.seed), everywhere)
    # best_accuracy is the best value of the validation metric (config.validation.metric).
    meta = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": 0, "epochs_without_improvement": 0, "wall_time": 0.0}

    checkpoints = Checkpoints(workdir)
    try:
        restored = checkpoints.restore_latest(state)
    except Exception as error:  # noqa: BLE001 - orbax reports shape mismatches in many ways.
        raise UserError(
            f"cannot restore {workdir}/checkpoints/latest ({type(error).__name__}): it was written by a "
            "different model or is damaged; pass a new --workdir"
        ) from None
    if restored is not None:
        state, meta = restored
        if primary:
            print(f"resuming from step {int(state['step'])} (epoch {meta['epoch']} done) in {workdir}", flush=True)
    metrics_path = workdir_path / "metrics.jsonl"
    history = read_metrics(metrics_path, meta["epoch"])
    if primary:
        write_metrics(metrics_path, history)

    dispatch = make_dispatch(make_train_step(model, optimizer, sampler, config, l2, mesh), spd, mesh)
    total_steps = config.num_epochs * steps_per_epoch
    step = int(state["step"])
    stopped_early = meta["epochs_without_improvement"] >= config.patience
    time_limit = float(config.get("max_train_seconds", 0))
    # Seconds of the last epoch, to tell whether one more fits the time limit.
    epoch_seconds = meta.get("last_epoch_s", meta["wall_time"] / meta["epoch"] if meta["epoch"] else None)
    stop_reason = "patience" if stopped_early else None
    speed = SpeedReport(jax.default_backend(), pairs_per_step, enabled=primary and step < total_steps)
    if primary:
        images_per_step = jax.eval_shape(sampler, jax.random.PRNGKey(0), tables).images.shape[0]
        print(describe_mesh(mesh, images_per_step, model.encoder.dtype), flush=True)
    stop = _StopRequest()
    previous_term = signal.signal(signal.SIGTERM, stop)
    previous_int = signal.signal(signal.SIGINT, stop)
    progress = tqdm(
        total=total_steps * pairs_per_step, initial=step * pairs_per_step, unit="pair", unit_scale=True,
        dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0, smoothing=0.1, disable=not primary,
    )
    started = time.time() - meta["wall_time"]
    in_flight = distributed.InFlight()
    try:
        while meta["epoch"] < config.num_epochs and not stopped_early:
            if out_of_time(time_limit, time.time() - started, epoch_seconds):
                stop_reason = "time_limit"
                break
            epoch_start = time.time()
            epoch_end = (meta["epoch"] + 1) * steps_per_epoch
            shown_loss = None
            while step < epoch_end:
                if stop.signal_name:
                    raise _Interrupted(stop.signal_name)
                state, loss = dispatch(state, train_images, tables)
                in_flight.add(loss)  # Not the state: its buffers are donated to the next step.
                step += spd
                progress.update(spd * pairs_per_step)
                line = speed.after_step(loss, step, total_steps)
                if line:
                    progress.write(line)
                if step % config.log_every_steps < spd:
                    # Show the loss of the previous log point: long computed, so reading it never
                    # stalls the host while the device works through the queued steps.
                    if shown_loss is not None:
                        progress.set_postfix(epoch=meta["epoch"] + 1, loss=f"{float(shown_loss):.4f}", refresh=False)
                    shown_loss = loss
                if step % config.checkpoint_every_steps < spd and step < epoch_end:
                    checkpoints.save_latest(step, state, dict(meta, wall_time=time.time() - started))

            epoch = meta["epoch"] + 1
            epoch_seconds = time.time() - epoch_start
            train_loss = float(state["loss_sum"]) / max(int(state["loss_count"]), 1)
            state = dict(state, loss_sum=jnp.zeros_like(state["loss_sum"]), loss_count=jnp.zeros_like(state["loss_count"]))
            scores = experiment.validator(model, model_variables(state))
            improved = scores[metric] > meta["best_accuracy"]
            meta = dict(
                meta,
                epoch=epoch,
                best_accuracy=max(meta["best_accuracy"], scores[metric]),
                best_epoch=epoch if improved else meta["best_epoch"],
                epochs_without_improvement=0 if improved else meta["epochs_without_improvement"] + 1,
                wall_time=time.time() - started,
                last_epoch_s=epoch_seconds,
            )
            record = {
                "epoch": epoch,
                "step": step,
                "pairs": step * pairs_per_step,
                "train_loss": train_loss,
                "val_verification_accuracy": scores["verification_accuracy"],
                "val_one_shot_accuracy": scores["one_shot_accuracy"],
                "val_verification_auc": scores["verification_auc"],
                "hyperparameters": schedules.at((epoch - 1) * steps_per_epoch),
                "wall_time": meta["wall_time"],
            }
            history.append(record)
            if primary:
                write_metrics(metrics_path, history)
            if improved:
                checkpoints.save_best(step, model_variables(state), dict(meta, val=scores))
            checkpoints.save_latest(step, state, meta)
            if primary:
                progress.write(
                    f"epoch {epoch}: train loss {train_loss:.4f}, val one-shot "
                    f"{100 * scores['one_shot_accuracy']:.1f}%, val verification {100 * scores['verification_accuracy']:.1f}% "
                    f"(AUC {scores['verification_auc']:.3f})"
                    + (" (best)" if improved else f" (best {metric} {meta['best_accuracy']:.4f} at epoch {meta['best_epoch']})")
                )
            stopped_early = meta["epochs_without_improvement"] >= config.patience and epoch < config.num_epochs
            if stopped_early:
                stop_reason = "patience"
    except _Interrupted as why:
        progress.close()
        checkpoints.save_latest(step, state, dict(meta, wall_time=time.time() - started))
        checkpoints.close()
        raise UserError(f"interrupted ({why}); saved step {step}. Run the same command to resume") from None
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        progress.close()
    checkpoints.close()
    if primary and stop_reason == "patience":
        print(f"stopped early: no better validation {metric} for {config.patience} epochs", flush=True)
    if primary and stop_reason == "time_limit":
        print(f"stopped after epoch {meta['epoch']}: another epoch (about {epoch_seconds:.0f} s) would pass "
              f"config.max_train_seconds={time_limit:g}", flush=True)

    model, best_variables = evaluation.restore_model(workdir, config, "best", mesh)
    result = {
        "checkpoint": "best",
        **experiment.evaluate(model, best_variables, mesh),
        "training": {"epochs": meta["epoch"], "best_epoch": meta["best_epoch"], "steps": step,
                     "pairs": step * pairs_per_step, "wall_time_s": meta["wall_time"],
                     "stopped_by": stop_reason or "num_epochs"},
        "provenance": provenance(mesh.size),
    }
    if primary:
        evaluation.write_json(result, workdir_path / "eval.json")
        print(experiment.summarize(result), flush=True)
    return result


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/omniglot.py.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and eval.json; reused to resume. "
                        "With several hosts it must be shared by all (NFS, or gs:// on TPU VMs).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 in a multi-process run; needs "
                        "--num_processes and --process_id too (see launch/).")
    flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index in [0, --num_processes).")
    flags.DEFINE_bool("distributed", False, "Join a multi-process run that JAX detects by itself (TPU pod "
                      "slices, Slurm jobs) without --coordinator_address.")
    flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for every process to join before giving up.")


def main(argv):
    """Command-line entry point."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
    if FLAGS.config is None or not FLAGS.workdir:
        sys.exit("error: --config=FILE and --workdir=DIR are both required")
    try:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               auto=FLAGS.distributed, timeout_s=FLAGS.distributed_timeout)
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except UserError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # Before or after the training loop, which handles its own.
        sys.exit("error: interrupted outside training; checkpoints already written are kept")


if __name__ == "__main__":
    define_flags()
    app.run(main)
