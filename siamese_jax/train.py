"""Trains the siamese network on a config's dataset and evaluates its best checkpoint.

    python -m siamese_jax.train --config=configs/omniglot.py --workdir=runs/omniglot
    python -m siamese_jax.train --config=configs/lfw.py --workdir=runs/lfw

The paper's procedure: epochs of minibatch steps (sample pairs, distort, encode, score, update,
all in one jitted step on the device), each epoch followed by validation on held-out classes,
keeping the best parameters and stopping early when validation stops improving; then the best
parameters are evaluated. The dataset's part (its images, validation tasks and final evaluation)
comes from siamese_jax/experiments/, found by config.dataset; this module names no dataset or
metric. Starting again with the same workdir resumes from the latest checkpoint. Training is data
parallel over every visible device; several processes (hosts) join with --coordinator_address,
--num_processes and --process_id, or --distributed on TPU pods and Slurm (see launch/).
"""

from __future__ import annotations

import dataclasses
import functools
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
from ml_collections import config_flags
from tqdm import tqdm

from siamese_jax import augment, distributed, evaluation, experiments, losses, optim, sampling
from siamese_jax import workdir as workdir_files
from siamese_jax.checkpointing import COLLECTIONS, Checkpoints
from siamese_jax.data.images import to_float
from siamese_jax.errors import ConfigError, UserError
from siamese_jax.models import SiameseNet, build_model, init_variables, input_shape
from siamese_jax.provenance import provenance


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


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What the training step computes besides the model and optimiser: loss, balancing, distortions."""

    loss: str = "cross_entropy"
    balanced: bool = False
    ranking_weight: float = 0.0
    ranking_scale: float = 1.0
    distortion: SimpleNamespace | None = None  # config.augment's values; None when disabled.

    @classmethod
    def from_config(cls, config) -> "StepSettings":
        """A config's values, as plain Python values for the traced step to close over."""
        distortion = SimpleNamespace(**config.augment.to_dict())
        return cls(loss=config.get("loss", "cross_entropy"), balanced=bool(config.balanced_loss),
                   ranking_weight=float(config.ranking_loss_weight),
                   ranking_scale=float(config.get("ranking_loss_scale", 1.0)),
                   distortion=distortion if distortion.enabled else None)


def make_train_step(model: SiameseNet, optimizer: optax.GradientTransformation, sampler, settings: StepSettings,
                    l2: dict, mesh: Mesh | None = None):
    """One training step, state -> (state, loss): sample, distort, encode, score, update, on the device.

    With a mesh, each device gathers, distorts and encodes its slice of the batch's images; the
    random draws do not depend on the slicing, so any device count follows the same trajectory.
    Batch-norm statistics are those of the whole global batch, whatever the device count.
    """
    loss = losses.LOSSES[settings.loss]
    split_batch = distributed.batch_sharded(mesh) if mesh is not None else None

    def on_slices(x):
        return x if split_batch is None else jax.lax.with_sharding_constraint(x, split_batch)

    def step(state, train_images, tables):
        key = jax.random.fold_in(state["rng"], state["step"])
        sample_key, augment_key = jax.random.split(key)
        dropout_key = jax.random.fold_in(key, 2)  # Folded in, so runs without dropout draw as before.
        batch = sampler(sample_key, tables)
        images = to_float(train_images[on_slices(batch.images)])
        if settings.distortion is not None:
            images = augment.augment_batch(augment_key, images, settings.distortion)
        images = on_slices(images)

        def loss_fn(params):
            variables = dict(model_variables(state), params=params)
            embeddings, mutated = model.apply(
                variables, images, True, method=SiameseNet.embed, mutable=["batch_stats"],
                rngs={"dropout": dropout_key},
            )
            h1, h2 = embeddings[batch.left], embeddings[batch.right]
            data_loss = loss.compute(model, variables, h1, h2, batch.same, settings.balanced)
            if settings.ranking_weight:
                logits = model.apply(variables, h1, h2, method=SiameseNet.score)
                data_loss += settings.ranking_weight * losses.ranking_loss(
                    logits, batch.same, batch.left, batch.right, batch.images.shape[0], settings.ranking_scale
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
    loss = config.get("loss", "cross_entropy")
    if loss not in losses.LOSSES:
        raise ConfigError(f"config.loss must be one of {tuple(losses.LOSSES)}, got {loss!r}")
    head = losses.LOSSES[loss].head
    if head and config.model.get("head", "l1") != head:
        raise ConfigError(f"config.loss={loss!r} needs the {head.capitalize()} distance head: set "
                          f"config.model.head={head!r}")
    metric = config.validation.get("metric", "one_shot_accuracy")
    if metric not in evaluation.metric_names(config.validation):
        raise ConfigError(f"config.validation.metric={metric!r} is none of the metrics of config.validation.evals: "
                          f"{evaluation.metric_names(config.validation)}")
    pairs_per_step(config)  # The sampling, and for groups the batch layout.


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
        if not self.pending or step >= last_step:
            return None
        if self.start is None:  # The first step compiles: time from its end.
            jax.block_until_ready(loss)
            self.start = (time.time(), step)
            return None
        seconds, steps = time.time() - self.start[0], step - self.start[1]
        if steps < self.MIN_STEPS and seconds < self.MIN_SECONDS:
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


def format_scores(scores: dict[str, float]) -> str:
    """Validation metrics for the epoch line: accuracies in percent, other scores as they are."""
    return ", ".join(f"{name} {100 * value:.1f}%" if name.endswith("accuracy") else f"{name} {value:.3f}"
                     for name, value in scores.items())


class Trainer:
    """One training run, set up from a config and a workdir (resuming what it holds), run epoch by epoch.

    With several processes, every process runs it; only process 0 prints and writes metrics and
    results.
    """

    def __init__(self, config, workdir: str, devices=None):
        self.config, self.workdir = config, workdir
        self.mesh = distributed.data_mesh(devices)
        self.primary = distributed.is_primary()
        validate_config(config, self.mesh.size)
        experiment = experiments.build(config)  # Checks the dataset's config section, reads no data.
        self.metric = config.validation.get("metric", "one_shot_accuracy")
        workdir_files.prepare(workdir, config, save_config=self.primary)
        self.experiment = experiment

        # The dataset: training images and sampling tables on every device, fixed validation tasks.
        everywhere = distributed.replicated(self.mesh)
        training = experiment.training_set()
        tables = sampling.build_tables(training.groups, training.labels)
        self.sampler, self.pairs_per_step = make_sampler(config, tables)
        self.tables = distributed.put(tables, everywhere)
        self.train_images = distributed.put(training.images, everywhere)
        self.evaluators = experiment.evaluators(self.mesh)

        # The model, its optimiser and the training state, restored from the workdir if it has one.
        self.model = build_model(config.model)
        variables = init_variables(self.model, jax.random.PRNGKey(config.seed), input_shape(config))
        l2 = optim.per_layer(config.l2, optim.layer_names(variables["params"]), "l2")
        spd = config.steps_per_dispatch
        self.steps_per_epoch = max(1, math.ceil(config.pairs_per_epoch / self.pairs_per_step / spd)) * spd
        self.total_steps = config.num_epochs * self.steps_per_epoch
        optimizer, self.schedules = optim.create_optimizer(config, variables["params"], self.steps_per_epoch)
        self.state = distributed.put(initial_state(variables, optimizer, config.seed), everywhere)
        # best_score is the best value of the validation metric (config.validation.metric).
        self.meta = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "epochs_without_improvement": 0,
                     "wall_time": 0.0}
        self.checkpoints = Checkpoints(workdir)
        self.restore()
        self.history = workdir_files.read_metrics(workdir, self.meta["epoch"])
        if self.primary:
            workdir_files.write_metrics(workdir, self.history)
        self.dispatch = make_dispatch(make_train_step(self.model, optimizer, self.sampler,
                                                      StepSettings.from_config(config), l2, self.mesh), spd, self.mesh)
        self.step = int(self.state["step"])
        self.tensorboard = workdir_files.TensorBoard(workdir, enabled=self.primary)

    def restore(self) -> None:
        """Continues from the workdir's latest checkpoint, if any."""
        try:
            restored = self.checkpoints.restore_latest(self.state)
        except Exception as error:  # noqa: BLE001 - orbax reports shape mismatches in many ways.
            raise UserError(
                f"cannot restore {self.workdir}/checkpoints/latest ({type(error).__name__}): it was written by a "
                "different model or is damaged; pass a new --workdir"
            ) from None
        if restored is None:
            return
        self.state, meta = restored
        if "best_accuracy" in meta:  # Checkpoints written before the metric was configurable.
            meta["best_score"] = meta.pop("best_accuracy")
        self.meta = meta
        if self.primary:
            print(f"resuming from step {int(self.state['step'])} (epoch {meta['epoch']} done) in {self.workdir}",
                  flush=True)

    def train(self) -> str:
        """Epochs until num_epochs, patience or the time limit; returns which one ended training."""
        config = self.config
        if self.meta["epochs_without_improvement"] >= config.patience:
            return "patience"
        time_limit = float(config.get("max_train_seconds", 0))
        # Seconds of the last epoch, to tell whether one more fits the time limit.
        epoch_seconds = self.meta.get("last_epoch_s",
                                      self.meta["wall_time"] / self.meta["epoch"] if self.meta["epoch"] else None)
        if self.primary:
            images = jax.eval_shape(self.sampler, jax.random.PRNGKey(0), self.tables).images.shape[0]
            print(describe_mesh(self.mesh, images, self.model.encoder.dtype), flush=True)
        self.progress = tqdm(
            total=self.total_steps * self.pairs_per_step, initial=self.step * self.pairs_per_step, unit="pair",
            unit_scale=True, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0, smoothing=0.1,
            disable=not self.primary,
        )
        self.speed = SpeedReport(jax.default_backend(), self.pairs_per_step,
                                 enabled=self.primary and self.step < self.total_steps)
        self.started = time.time() - self.meta["wall_time"]
        stop = _StopRequest()
        previous_term, previous_int = signal.signal(signal.SIGTERM, stop), signal.signal(signal.SIGINT, stop)
        try:
            while self.meta["epoch"] < config.num_epochs:
                if out_of_time(time_limit, time.time() - self.started, epoch_seconds):
                    return "time_limit"
                epoch_start = time.time()
                self.train_epoch(stop)
                epoch_seconds = time.time() - epoch_start
                self.end_epoch(epoch_seconds)
                if self.meta["epochs_without_improvement"] >= config.patience and self.meta["epoch"] < config.num_epochs:
                    return "patience"
            return "num_epochs"
        except _Interrupted as why:
            self.progress.close()
            self.checkpoints.save_latest(self.step, self.state, dict(self.meta, wall_time=time.time() - self.started))
            self.checkpoints.close()
            raise UserError(f"interrupted ({why}); saved step {self.step}. Run the same command to resume") from None
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)
            self.progress.close()

    def train_epoch(self, stop: "_StopRequest") -> None:
        """The minibatch steps of one epoch, with progress, a speed estimate and periodic checkpoints."""
        config, spd = self.config, self.config.steps_per_dispatch
        epoch_end = (self.meta["epoch"] + 1) * self.steps_per_epoch
        in_flight = distributed.InFlight()
        shown_loss = None
        while self.step < epoch_end:
            if stop.signal_name:
                raise _Interrupted(stop.signal_name)
            self.state, loss = self.dispatch(self.state, self.train_images, self.tables)
            in_flight.add(loss)  # Not the state: its buffers are donated to the next step.
            self.step += spd
            self.progress.update(spd * self.pairs_per_step)
            line = self.speed.after_step(loss, self.step, self.total_steps)
            if line:
                self.progress.write(line)
            if self.step % config.log_every_steps < spd:
                # Show the loss of the previous log point: long computed, so reading it never
                # stalls the host while the device works through the queued steps.
                if shown_loss is not None:
                    self.progress.set_postfix(epoch=self.meta["epoch"] + 1, loss=f"{float(shown_loss):.4f}",
                                              refresh=False)
                shown_loss = loss
            if self.step % config.checkpoint_every_steps < spd and self.step < epoch_end:
                self.checkpoints.save_latest(self.step, self.state,
                                             dict(self.meta, wall_time=time.time() - self.started))

    def end_epoch(self, epoch_seconds: float) -> None:
        """Validates, logs the epoch, keeps the best parameters and saves the state."""
        epoch = self.meta["epoch"] + 1
        state = self.state
        train_loss = float(state["loss_sum"]) / max(int(state["loss_count"]), 1)
        self.state = dict(state, loss_sum=jnp.zeros_like(state["loss_sum"]), loss_count=jnp.zeros_like(state["loss_count"]))
        scores = evaluation.run_evaluators(self.evaluators, self.model, model_variables(self.state))
        improved = scores[self.metric] > self.meta["best_score"]
        self.meta = dict(
            self.meta,
            epoch=epoch,
            best_score=max(self.meta["best_score"], scores[self.metric]),
            best_epoch=epoch if improved else self.meta["best_epoch"],
            epochs_without_improvement=0 if improved else self.meta["epochs_without_improvement"] + 1,
            wall_time=time.time() - self.started,
            last_epoch_s=epoch_seconds,
        )
        hyperparameters = self.schedules.at((epoch - 1) * self.steps_per_epoch)
        self.history.append({
            "epoch": epoch,
            "step": self.step,
            "pairs": self.step * self.pairs_per_step,
            "train_loss": train_loss,
            **{f"val_{name}": value for name, value in scores.items()},
            "hyperparameters": hyperparameters,
            "wall_time": self.meta["wall_time"],
        })
        if self.primary:
            workdir_files.write_metrics(self.workdir, self.history)
            self.tensorboard.write(self.step, {
                "train_loss": train_loss, **{f"val_{name}": value for name, value in scores.items()},
                **{f"learning_rate/{layer}": h["learning_rate"] for layer, h in hyperparameters.items()},
            })
        if improved:
            self.checkpoints.save_best(self.step, model_variables(self.state), dict(self.meta, val=scores))
        self.checkpoints.save_latest(self.step, self.state, self.meta)
        if self.primary:
            best = "" if improved else f" (best {self.metric} {self.meta['best_score']:.4f} at epoch {self.meta['best_epoch']})"
            self.progress.write(f"epoch {epoch}: train loss {train_loss:.4f}, val {format_scores(scores)}"
                                + (" (best)" if improved else best))

    def evaluate_best(self, stopped_by: str) -> dict:
        """Evaluates the best parameters into WORKDIR/eval.json and prints the dataset's summary."""
        model, best_variables = workdir_files.restore_model(self.workdir, self.config, "best", self.mesh)
        result = {
            "checkpoint": "best",
            **self.experiment.evaluate(model, best_variables, self.mesh),
            "training": {"epochs": self.meta["epoch"], "best_epoch": self.meta["best_epoch"], "steps": self.step,
                         "pairs": self.step * self.pairs_per_step, "wall_time_s": self.meta["wall_time"],
                         "stopped_by": stopped_by},
            "provenance": provenance(self.mesh.size),
        }
        if self.primary:
            workdir_files.write_json(result, workdir_files.evaluation_path(self.workdir))
            print(self.experiment.summarize(result), flush=True)
        return result

    def run(self) -> dict:
        """Trains, then evaluates the best checkpoint."""
        stopped_by = self.train()
        self.checkpoints.close()
        self.tensorboard.close()
        if self.primary and stopped_by == "patience":
            print(f"stopped early: no better validation {self.metric} for {self.config.patience} epochs", flush=True)
        if self.primary and stopped_by == "time_limit":
            print(f"stopped after epoch {self.meta['epoch']}: another epoch (about {self.meta.get('last_epoch_s', 0):.0f}"
                  f" s) would pass config.max_train_seconds={float(self.config.max_train_seconds):g}", flush=True)
        return self.evaluate_best(stopped_by)


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
    """Trains (resuming from WORKDIR if possible), then evaluates the best checkpoint into WORKDIR/eval.json.

    Data parallel over `devices` (default: every device of every process).
    """
    return Trainer(config, workdir, devices).run()


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
