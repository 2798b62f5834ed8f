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

import contextlib
import functools
import math
import signal
import sys
import time
import traceback

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from ml_collections import config_flags

from siamese_jax import distributed, ensemble, experiments, losses, optim, progress, sampling, train_step
from siamese_jax.evaluation import evaluators
from siamese_jax import workdir as workdir_files
from siamese_jax.checkpointing import Checkpoints
from siamese_jax.config_files import upgrade_config
from siamese_jax.errors import ConfigError, TrainingDiverged, TrainingInterrupted, UserError
from siamese_jax.models import build_model, check_image_size
from siamese_jax.provenance import provenance


def validate_config(config, num_devices: int) -> None:
    """Rejects values that cannot work on `num_devices` devices, before any data is loaded: the run's own
    entries here, each registry's section by that registry."""
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
    value = config.max_train_seconds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"config.max_train_seconds must be a number >= 0, got {value!r}")
    if config.ensemble_seeds:
        ensemble.check_config(config)
    optim.check_config(config)
    losses.check_config(config)
    evaluators.check_config(config.validation)
    sampling.SamplerSettings.from_config(config)
    build_model(config.model)
    check_image_size(config.image_size, config.model)


class _StopRequest:
    """Signal handler that only records SIGTERM or Ctrl-C; the loop stops at the next step boundary.

    Raising from the handler instead could land anywhere, in the middle of a checkpoint write
    or a thread start, and leave a traceback or a half-finished operation behind. In a multi-process
    run, SIGTERM is left to JAX's preemption notifier, which makes every process stop at one step
    (`at`): processes stopping at their own steps would save with one collective while a peer still
    steps with another, and hang.
    """

    def __init__(self, agreed: bool):
        self.agreed = agreed
        self.signal_name: str | None = None

    def __call__(self, signum, frame):
        del frame
        self.signal_name = signal.Signals(signum).name

    def signals(self) -> tuple[signal.Signals, ...]:
        """The signals this handler takes."""
        return (signal.SIGINT,) if self.agreed else (signal.SIGTERM, signal.SIGINT)

    def at(self, dispatch: int) -> str | None:
        """The signal that stops training before dispatch number `dispatch`, if any. Every process of a run must
        call it before every dispatch, counting one up each time."""
        if self.agreed and distributed.preempted_at(dispatch):
            return "SIGTERM"
        return self.signal_name

    @classmethod
    @contextlib.contextmanager
    def installed(cls, agreed: bool):
        """A new request, its handler installed for its signals while the block runs, the previous ones after."""
        stop = cls(agreed)
        previous = {signum: signal.signal(signum, stop) for signum in stop.signals()}
        try:
            yield stop
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class _LaggedLoss:
    """The loss of the previous log point, read when the next is dispatched: long computed by then, so reading it
    never stalls the host while the device works through the queued steps."""

    def __init__(self):
        self.pending = None

    def swap(self, loss: jax.Array, step: int) -> tuple[float, int] | None:
        """Holds this log point's loss (of step `step`); returns the previous one's value and step, if any."""
        previous, self.pending = self.pending, (loss, step)
        return None if previous is None else (float(previous[0]), previous[1])


class _Interrupted(Exception):
    """Raised by the training loop, at a step boundary, once a stop was requested."""


class _Diverged(Exception):
    """Raised by the training loop when the loss, the parameters or validation's scores are no longer finite."""

    def __init__(self, step: int, loss: float, what: str = ""):
        super().__init__(step, loss, what)
        self.step, self.loss, self.what = step, loss, what or f"loss {loss}"


def out_of_time(time_limit_s: float, elapsed_s: float, epoch_s: float | None) -> bool:
    """Whether another epoch of about `epoch_s` seconds would end past the training time limit (0: none)."""
    return bool(time_limit_s) and elapsed_s + (epoch_s or 0.0) > time_limit_s


def after_epoch(meta: dict, epoch: int, score: float, **entries) -> tuple[dict, bool]:
    """A run's bookkeeping (checkpoint meta) once epoch `epoch` scored `score` on the validation metric (higher is
    better), with `entries` set too; and whether the epoch improved on the best score."""
    improved = score > meta["best_score"]
    return dict(
        meta,
        epoch=epoch,
        best_score=max(meta["best_score"], score),
        best_epoch=epoch if improved else meta["best_epoch"],
        epochs_without_improvement=0 if improved else meta["epochs_without_improvement"] + 1,
        **entries,
    ), improved


class Trainer:
    """One training run, set up from a config and a workdir (resuming what it holds), run epoch by epoch.

    With several processes, every process runs it; only process 0 prints and writes metrics and
    results.
    """

    def __init__(self, config, workdir: str, devices=None, epoch_callback=None, allow_config_change: bool = False):
        """`epoch_callback(epoch, scores)`, if given, runs after each epoch's validation on every process, with
        the epoch's validation metrics; a string it returns ends training there, as the reason it stopped.
        `allow_config_change`: resume a workdir that trained under another config (workdir.prepare)."""
        if config.ensemble_seeds:
            raise ConfigError("config.ensemble_seeds trains an ensemble, one run per seed: train it with "
                              "siamese_jax.train (train.train_and_evaluate), not one Trainer or a tuning study")
        self.config, self.workdir, self.epoch_callback = config, workdir, epoch_callback
        self.allow_config_change = allow_config_change
        self.mesh = distributed.data_mesh(devices)
        self.primary = distributed.is_primary()
        validate_config(config, self.mesh.size)
        self.experiment = experiments.build(config)  # Checks the dataset's config section, reads no data.
        self.metric = config.validation.metric
        # Held until run() ends, so that a second training of this workdir refuses; released here on failure.
        self.lock = workdir_files.lock_for_training(workdir)
        try:
            self.set_up()
        except BaseException:
            self.lock.release()
            raise

    def set_up(self) -> None:
        """Reads the data, builds the model, optimiser and step, and restores the workdir's latest state."""
        config, workdir, experiment = self.config, self.workdir, self.experiment
        workdir_files.prepare(workdir, config, allow_config_change=self.allow_config_change)

        # The dataset: training images and sampling tables on every device, fixed validation tasks.
        everywhere = distributed.replicated(self.mesh)
        training = experiment.training_set()
        distributed.require_same_everywhere((training.images, training.labels), "training data")
        tables = sampling.build_tables(training.groups, training.labels)
        self.core, self.state = train_step.create(config, tables, self.mesh)
        self.tables = distributed.put(tables, everywhere)
        self.train_images = distributed.put(training.images, everywhere)
        self.validation = experiment.validation(self.mesh)
        self.total_steps = config.num_epochs * self.core.steps_per_epoch
        # best_score is the best value of the validation metric (config.validation.metric).
        self.meta = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "epochs_without_improvement": 0,
                     "wall_time": 0.0}
        self.checkpoints = Checkpoints(workdir)
        self.restore()
        self.history = workdir_files.read_metrics(workdir, self.meta["epoch"])
        if self.primary:  # Resumed: the records say what it goes on under, and that it has not ended.
            workdir_files.record_config(workdir, config, self.meta["epoch"])
            workdir_files.clear_finished(workdir)
            workdir_files.write_metrics(workdir, self.history)
        self.step = int(self.state["step"])
        self.last_loss = None  # The last dispatched step's loss, on the device.
        self.tensorboard = workdir_files.TensorBoard(workdir, enabled=self.primary)

    def restore(self) -> None:
        """Continues from the workdir's latest checkpoint, if any."""
        restored = self.checkpoints.restore_latest(self.state)  # Skips damaged steps; never starts over silently.
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
        if self.meta["epochs_without_improvement"] >= self.config.patience:
            return "patience"
        if self.primary:
            images = jax.eval_shape(self.core.sampler, jax.random.PRNGKey(0), self.tables).images.shape[0]
            print(progress.describe_mesh(self.mesh, images, self.core.model.encoder.dtype), flush=True)
        self.progress = progress.TrainingProgress(self.step, self.total_steps, self.core.pairs_per_step, self.primary)
        self.started = time.time() - self.meta["wall_time"]
        with _StopRequest.installed(agreed=jax.process_count() > 1) as stop:
            try:
                return self.epochs(stop)
            except (_Interrupted, _Diverged) as reason:
                raise self.stopped(reason) from None
            finally:
                self.progress.close()

    def epochs(self, stop: _StopRequest) -> str:
        """The epochs of train, each one's steps, then its validation; returns what ended them."""
        config, time_limit = self.config, float(self.config.max_train_seconds)
        # Seconds of the last epoch, its validation included, to tell whether one more fits the time limit.
        epoch_seconds = self.meta.get("last_epoch_s",
                                      self.meta["wall_time"] / self.meta["epoch"] if self.meta["epoch"] else None)
        while self.meta["epoch"] < config.num_epochs:
            if out_of_time(time_limit, time.time() - self.started, epoch_seconds):
                return "time_limit"
            epoch_start = time.time()
            self.train_epoch(stop)
            scores = self.end_epoch(epoch_start)
            epoch_seconds = self.meta["last_epoch_s"]
            reason = self.epoch_callback(self.meta["epoch"], scores) if self.epoch_callback else None
            if reason:
                return reason
            if self.meta["epochs_without_improvement"] >= config.patience and self.meta["epoch"] < config.num_epochs:
                return "patience"
        return "num_epochs"

    def train_epoch(self, stop: _StopRequest) -> None:
        """The minibatch steps of one epoch, with progress, the loss at each log point and periodic checkpoints."""
        config, spd = self.config, self.config.steps_per_dispatch
        epoch_end = (self.meta["epoch"] + 1) * self.core.steps_per_epoch
        in_flight, logged = distributed.InFlight(), _LaggedLoss()
        while self.step < epoch_end:
            if signal_name := stop.at(self.step // spd):
                raise _Interrupted(signal_name)
            self.state, loss = self.core.dispatch(self.state, self.train_images, self.tables)
            in_flight.add(loss)  # Not the state: its buffers are donated to the next step.
            self.last_loss = loss
            self.step += spd
            self.progress.advance(loss, self.step, spd)
            if self.step % config.log_every_steps < spd and (shown := logged.swap(loss, self.step)):
                value, at = shown
                if not math.isfinite(value) and config.on_nonfinite == "stop":
                    raise _Diverged(at, value)
                self.progress.show(epoch=self.meta["epoch"] + 1, loss=value)
            if self.step % config.checkpoint_every_steps < spd and self.step < epoch_end:
                self.save_latest(dict(self.meta, wall_time=time.time() - self.started))

    def stopped(self, reason: _Interrupted | _Diverged) -> UserError:
        """Saves an interrupted run's state (never a diverged one's: the checkpoints keep the last finite state),
        closes the workdir's writers, and returns the error that ends the command."""
        self.progress.close()
        if isinstance(reason, _Interrupted):
            try:
                self.save_latest(dict(self.meta, wall_time=time.time() - self.started))
            except _Diverged as diverged:  # Asked to stop while diverging: the state is not saved either.
                reason = diverged
        self.checkpoints.close()
        # Now, not at exit, where Python 3.12 refuses the thread tensorboardX's cleanup starts (a traceback).
        self.tensorboard.close()
        if isinstance(reason, _Diverged):
            return TrainingDiverged(self.divergence_message(reason))
        return TrainingInterrupted(f"interrupted ({reason}); saved step {self.step}. Run the same command to resume")

    def check_finite(self) -> None:
        """Raises _Diverged unless every parameter is finite: checked before each save, never per step."""
        if not bool(train_step.all_finite(self.state["params"])):
            raise _Diverged(self.step, math.nan if self.last_loss is None else float(self.last_loss))

    def save_latest(self, meta: dict) -> None:
        """Saves the training state as the latest checkpoint, if its parameters are finite."""
        self.check_finite()
        self.checkpoints.save_latest(self.step, self.state, meta)

    def divergence_message(self, diverged: _Diverged) -> str:
        """One line: where training diverged, at what learning rate, what the workdir keeps, what to do."""
        rates = sorted({h["learning_rate"] for h in self.core.schedules.at(max(diverged.step - 1, 0)).values()})
        rate = f"learning rate {rates[0]:.3g}" if len(rates) == 1 else f"learning rates {rates[0]:.3g}-{rates[-1]:.3g}"
        kept = self.checkpoints.latest.latest_step()
        return (f"training diverged at step {diverged.step}: {diverged.what}, {rate}. Nothing after step "
                f"{kept or 0} was saved ({'its checkpoint is kept' if kept else 'no checkpoint yet'}): to resume from it, "
                "run again with --allow_config_change and a lower learning rate; or train anew (another --workdir) with "
                "--config.on_nonfinite=skip to skip such steps")

    def end_epoch(self, epoch_start: float) -> dict:
        """Validates, logs the epoch, keeps the best parameters and saves the state; returns the validation metrics.

        The epoch's seconds (meta's last_epoch_s, what the time limit expects of the next one) run from
        `epoch_start` to the end of its validation."""
        epoch = self.meta["epoch"] + 1
        self.check_finite()  # Before validating or saving anything of this epoch.
        state = self.state
        train_loss = float(state["loss_sum"]) / max(int(state["loss_count"]), 1)
        skipped = self.core.steps_per_epoch - int(state["loss_count"]) if self.config.on_nonfinite == "skip" else 0
        self.state = dict(state, loss_sum=jnp.zeros_like(state["loss_sum"]), loss_count=jnp.zeros_like(state["loss_count"]))
        scores = self.validation(self.core.model, train_step.model_variables(self.state))
        # Finite but huge parameters can score NaN: a run that has diverged all the same.
        broken = [name for name, value in scores.items() if not math.isfinite(value)]
        if broken:
            raise _Diverged(self.step, train_loss, f"validation {', '.join(broken)} not finite (train loss {train_loss:.4g})")
        # What the optimiser applied at the epoch's first step: updates it skipped before (on_nonfinite='skip') did
        # not advance its schedules.
        applied_updates = (epoch - 1) * self.core.steps_per_epoch - self.meta.get("skipped_updates", 0)
        hyperparameters = self.core.schedules.at(applied_updates)
        self.meta, improved = after_epoch(self.meta, epoch, scores[self.metric], wall_time=time.time() - self.started,
                                          last_epoch_s=time.time() - epoch_start,
                                          skipped_updates=optim.skipped_updates(state["opt_state"]))
        self.history.append({
            "epoch": epoch,
            "step": self.step,
            "pairs": self.step * self.core.pairs_per_step,
            "train_loss": train_loss,
            **{f"val_{name}": value for name, value in scores.items()},
            "hyperparameters": hyperparameters,
            "wall_time": self.meta["wall_time"],
            **({"skipped_steps": skipped} if skipped else {}),
        })
        if self.primary:
            workdir_files.write_metrics(self.workdir, self.history)
            self.tensorboard.write(self.step, {
                "train_loss": train_loss, **{f"val_{name}": value for name, value in scores.items()},
                **{f"learning_rate/{layer}": h["learning_rate"] for layer, h in hyperparameters.items()},
            })
        if improved:
            self.checkpoints.save_best(self.step, train_step.model_variables(self.state), dict(self.meta, val=scores))
        self.checkpoints.save_latest(self.step, self.state, self.meta)  # Its parameters were checked finite above.
        if self.primary:
            best = "" if improved else f" (best {self.metric} {self.meta['best_score']:.4f} at epoch {self.meta['best_epoch']})"
            dropped = f" ({skipped} steps skipped: loss not finite)" if skipped else ""
            self.progress.write(f"epoch {epoch}: train loss {train_loss:.4f}{dropped}, val "
                                f"{progress.format_scores(scores)}" + (" (best)" if improved else best))
        return scores

    def evaluate_best(self, stopped_by: str) -> dict:
        """Evaluates the best parameters into WORKDIR/eval.json and prints the dataset's summary."""
        model, best_variables = workdir_files.restore_model(self.workdir, self.config, "best", self.mesh)
        result = {
            "checkpoint": "best",
            **self.experiment.evaluate(model, best_variables, self.mesh),
            "training": self.training_record(stopped_by),
            "provenance": provenance(self.mesh.size),
        }
        if self.primary:
            workdir_files.write_json(result, workdir_files.evaluation_path(self.workdir))
            print(self.experiment.summarize(result), flush=True)
        return result

    def run(self, evaluate: bool = True) -> dict:
        """Trains, then evaluates the best checkpoint (unless not `evaluate`: then only the training's record);
        the workdir's lock is released however it ends."""
        try:
            return self.train_and_evaluate(evaluate)
        finally:
            self.lock.release()

    def training_record(self, stopped_by: str) -> dict:
        """How training went: epochs, the best one, steps, pairs, seconds and what ended it."""
        return {"epochs": self.meta["epoch"], "best_epoch": self.meta["best_epoch"], "steps": self.step,
                "pairs": self.step * self.core.pairs_per_step, "wall_time_s": self.meta["wall_time"],
                "stopped_by": stopped_by}

    def train_and_evaluate(self, evaluate: bool = True) -> dict:
        """Trains, then evaluates the best checkpoint (see run)."""
        stopped_by = self.train()
        self.checkpoints.close()
        self.tensorboard.close()
        if self.primary and stopped_by == "patience":
            print(f"stopped early: no better validation {self.metric} for {self.config.patience} epochs", flush=True)
        if self.primary and stopped_by == "time_limit":
            print(f"stopped after epoch {self.meta['epoch']}: another epoch (about {self.meta.get('last_epoch_s', 0):.0f}"
                  f" s) would pass config.max_train_seconds={float(self.config.max_train_seconds):g}", flush=True)
        result = self.evaluate_best(stopped_by) if evaluate else {"training": self.training_record(stopped_by)}
        if self.primary:
            workdir_files.mark_finished(self.workdir, {
                "training": result["training"], "metric": self.metric, "best_score": self.meta["best_score"],
                "evaluation": workdir_files.EVALUATION if evaluate else None})
        return result


def train_and_evaluate(config, workdir: str, devices=None, allow_config_change: bool = False) -> dict:
    """Trains (resuming from WORKDIR if possible), then evaluates the best checkpoint into WORKDIR/eval.json.

    Data parallel over `devices` (default: every device of every process). A workdir that trained under
    another config resumes only with `allow_config_change` (workdir.prepare). A config with ensemble_seeds
    trains its members and evaluates them as one model (siamese_jax.ensemble).
    """
    config = upgrade_config(config)
    if config.ensemble_seeds:
        # The whole config checked before the ensemble's workdir is touched: its members would find a mistake only
        # one by one, and name their shares of its values.
        validate_config(config, len(devices) if devices is not None else jax.device_count())
        experiments.build(config)
        train_member = functools.partial(train_and_evaluate, devices=devices, allow_config_change=allow_config_change)
        return ensemble.train_and_evaluate(config, workdir, train_member, devices, allow_config_change)
    return Trainer(config, workdir, devices, allow_config_change=allow_config_change).run()


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/omniglot.py.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and eval.json; reused to resume. "
                        "With several hosts it must be shared by all (NFS, or gs:// on TPU VMs).")
    flags.DEFINE_bool("allow_config_change", False, "Resume a workdir that trained under another config (by default "
                      "refused, naming the keys that differ, unless they only set the run's length, its logging or "
                      "its evaluation). configs.jsonl keeps every config the workdir trained under.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 in a multi-process run; needs "
                        "--num_processes and --process_id too (see launch/).")
    flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index in [0, --num_processes).")
    flags.DEFINE_bool("distributed", False, "Join a multi-process run that JAX detects by itself (TPU pod "
                      "slices, Slurm jobs) without --coordinator_address.")
    flags.DEFINE_list("local_device_ids", None, "Accelerators this process drives, e.g. 0,1,2,3 (default: JAX's "
                      "choice; under Slurm's --distributed that is one GPU a task: launch/slurm_gpu.sh --per=node "
                      "names all of a node's).")
    flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for every process to join before giving up.")


def local_device_ids(values: list[str] | None) -> list[int] | None:
    """--local_device_ids as numbers; one line for a value that is not one."""
    if values is None:
        return None
    try:
        return [int(value) for value in values]
    except ValueError:
        raise ConfigError(f"--local_device_ids must be comma-separated device numbers, got {','.join(values)!r}") from None


def main(argv):
    """Command-line entry point."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
    if FLAGS.config is None or not FLAGS.workdir:
        sys.exit("error: --config=FILE and --workdir=DIR are both required")
    try:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               auto=FLAGS.distributed, timeout_s=FLAGS.distributed_timeout,
                               local_device_ids=local_device_ids(FLAGS.local_device_ids))
        train_and_evaluate(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    except UserError as error:
        sys.exit(f"error: {error}")  # Raised on every process alike: they pass the shutdown barrier together.
    except KeyboardInterrupt:  # Before or after the training loop, which handles its own.
        sys.exit("error: interrupted outside training; checkpoints already written are kept")
    except Exception as error:
        if not jax.distributed.is_initialized():
            raise
        # A process that fails leaves at once, so that its peers stop too (distributed.leave_now).
        message = distributed.lost_peer(error)
        if message is None:
            traceback.print_exc()
            message = f"error: process {jax.process_index()} failed ({type(error).__name__}, above): every process stops"
        distributed.leave_now(message)


if __name__ == "__main__":
    define_flags()
    app.run(main)
