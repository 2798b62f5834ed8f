"""A training run's workdir: config.json, configs.jsonl, metrics.jsonl, eval.json, finished.json, tensorboard/
and checkpoints/; or a packed model (siamese_jax.pretrained): config.json, eval.json and variables.msgpack.

Every command reads and writes workdirs through this module; paths may be local or gs://
(etils.epath), and every file is written atomically, so a crash never leaves half a file. Its records are
append-only: `train` alone writes eval.json and finished.json, `evaluate` writes a file of its own named after
what it evaluated, and each config the run trained under stays in configs.jsonl (docs/faults.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
import zlib

import jax
import ml_collections
from etils import epath
from jax.sharding import Mesh

from siamese_jax import distributed
from siamese_jax.config_files import upgrade_config
from siamese_jax.errors import DataError, UserError
from siamese_jax.files import write_atomically
from siamese_jax.models import SiameseEnsemble, build_model, ensemble_variables, init_variables, input_shape

CONFIG = "config.json"
LOCK = "train.lock"
METRICS = "metrics.jsonl"
# The evaluation of the best checkpoint that training wrote when it ended, with its training record.
EVALUATION = "eval.json"
# Written last by a training that ended (not interrupted, not diverged): its record. Removed when training
# starts again, so it is there exactly when the checkpoints hold a finished run.
FINISHED = "finished.json"
# Every config the workdir has trained under, in order, one JSON line each.
CONFIG_HISTORY = "configs.jsonl"
TENSORBOARD = "tensorboard"
# A packed model (siamese_jax.pretrained) holds its best variables in this one file in place of checkpoints/.
PACKED_VARIABLES = "variables.msgpack"
# Config entries that fix the parameters' shapes: a workdir's checkpoints only fit these.
MODEL_KEYS = ("model", "image_size", "channels")
# Entries of config.model that change how the network computes, not its parameters: a run's checkpoints
# fit a model with others, and evaluation may set them (load_config's model_overrides).
NOT_SHAPE_KEYS = ("dtype", "dropout", "first_layer_as_matmul", "test_time_flip", "test_time_turns")
# Config entries (dotted paths) that only change how a trained run is evaluated.
EVALUATION_KEYS = ("lfw.cohort_norm.images", "lfw.threshold", "lfw.test_crops")
# Config entries an ensemble's members share: how an image becomes model input. (The ensemble is evaluated under
# its own config, and under its model's test-time settings.)
ENSEMBLE_KEYS = ("dataset", "image_size", "channels")

# The entries that set how long a run trains (all among RESUMABLE_KEYS).
LENGTH_KEYS = ("num_epochs", "patience", "max_train_seconds")
# Config entries (dotted paths, and everything under them) a run may resume with changed: how long it trains,
# where it reads its data, how often it logs and saves, and how it is evaluated. Any other change would mix
# two recipes in one run, and is refused unless allowed (train --allow_config_change).
RESUMABLE_KEYS = ("num_epochs", "patience", "max_train_seconds", "data_dir", "cache_dir", "folder.path", "log_every_steps",
                  "checkpoint_every_steps", "eval_batch_size", "test", "tune", "model.test_time_flip",
                  "model.test_time_turns", *EVALUATION_KEYS)


def prepare(workdir: str, config, allow_config_change: bool = False) -> None:
    """Creates the workdir, checks it is writable and, if it holds checkpoints, that they fit this model and were
    trained under this config (but for RESUMABLE_KEYS; any config with `allow_config_change`). Writes no record:
    record_config does, once the run has resumed."""
    path = epath.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to workdir {workdir}: {error.strerror or error}") from None
    saved = saved_config(workdir)
    if saved is not None and bool(saved.get("ensemble_seeds")) != bool(config.get("ensemble_seeds")):
        held = "an ensemble's members (seed_S/)" if saved.get("ensemble_seeds") else "a single run"
        raise UserError(f"{workdir} holds {held}, which this config does not train: pass another --workdir")
    if saved is None or not has_checkpoints(workdir):
        return
    current = json.loads(config.to_json())
    changed = changed_model_keys(saved, current)
    if changed:
        raise UserError(
            f"{workdir} holds checkpoints of a different model ({', '.join(changed)} differ from this "
            "config): pass a new --workdir, or delete that one to start over"
        )
    changed = changed_keys(saved, current, RESUMABLE_KEYS)
    if changed and not allow_config_change:
        raise UserError(
            f"{workdir} trained under another config ({', '.join(changed)}): resuming would mix two recipes in "
            "one run. Pass a new --workdir, or resume anyway with train --allow_config_change (configs.jsonl "
            "keeps each config the run trained under)")


def saved_config(workdir: str) -> dict | None:
    """The config.json a workdir holds, upgraded to this version's entries, as a dict; None without one."""
    path = epath.Path(workdir) / CONFIG
    if not path.exists():
        return None
    return json.loads(upgrade_config(ml_collections.ConfigDict(json.loads(path.read_text()))).to_json())


def record_config(workdir: str, config, after_epoch: int) -> None:
    """Saves the config the run goes on under as config.json, and appends it to configs.jsonl when it differs from
    the last config there (with the epochs trained before it)."""
    path = epath.Path(workdir)
    history = path / CONFIG_HISTORY
    entries = ([json.loads(line) for line in history.read_text().splitlines() if line.strip()]
               if history.exists() else [])
    if not entries and after_epoch and (saved := saved_config(workdir)) is not None:
        entries.append({"config": saved, "after_epoch": None})  # A run from before configs.jsonl: its config first.
    current = json.loads(config.to_json())
    if not entries or entries[-1]["config"] != current:
        entries.append({"config": current, "after_epoch": after_epoch, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_atomically(history, "".join(json.dumps(e) + "\n" for e in entries))
    write_atomically(path / CONFIG, config.to_json(indent=2) + "\n")


def has_checkpoints(workdir: str) -> bool:
    """Whether the workdir holds a training state (a step of checkpoints/latest)."""
    latest = epath.Path(workdir) / "checkpoints" / "latest"
    return latest.exists() and any(step.name.isdigit() for step in latest.iterdir())


def changed_keys(saved: dict, current: dict, ignored: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between two configs (as dicts), each with both values (e.g.
    "learning_rate: 0.003 -> 0.01"), but for `ignored` keys and everything under them."""

    def flat(entries: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in entries.items():
            if isinstance(value, dict) and value:
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    saved, current = flat(saved), flat(current)
    kept = lambda key: not any(key == i or key.startswith(i + ".") for i in ignored)  # noqa: E731

    def fmt(entries: dict, key: str) -> str:
        if key not in entries:
            return "(none)"
        value = entries[key]
        return str(tuple(value)) if isinstance(value, list) else repr(value)

    return [f"{key}: {fmt(saved, key)} -> {fmt(current, key)}"
            for key in sorted(set(saved) | set(current)) if kept(key) and saved.get(key) != current.get(key)]


def changed_model_keys(saved: dict, current: dict) -> list[str]:
    """The entries under MODEL_KEYS whose values differ between two configs (as dicts), as in changed_keys (e.g.
    "model.features: (8, 8) -> (16, 16)"), ignoring NOT_SHAPE_KEYS."""
    shape = lambda entries: {key: entries.get(key) for key in MODEL_KEYS}  # noqa: E731
    return changed_keys(shape(saved), shape(current), tuple(f"model.{key}" for key in NOT_SHAPE_KEYS))


def load_config(workdir: str, model_overrides: dict | None = None,
                evaluation_overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The config a training run saved in its workdir, with `model_overrides` (NOT_SHAPE_KEYS only) set in
    config.model: ways to compute with the same parameters, such as model.test_time_flip; and
    `evaluation_overrides` (EVALUATION_KEYS only, dotted paths; missing sections are created)."""
    path = epath.Path(workdir) / CONFIG
    if not path.exists():
        raise DataError(f"{path} not found: --workdir must be a directory written by siamese_jax.train")
    config = upgrade_config(ml_collections.ConfigDict(json.loads(path.read_text())))
    for key, value in (model_overrides or {}).items():
        if key not in NOT_SHAPE_KEYS:
            raise ValueError(f"model.{key} changes the parameters; only {NOT_SHAPE_KEYS} may be overridden")
        config.model[key] = value
    for key, value in (evaluation_overrides or {}).items():
        if key not in EVALUATION_KEYS:
            raise ValueError(f"{key} is not an evaluation setting; only {EVALUATION_KEYS} may be overridden")
        *sections, name = key.split(".")
        if sections[0] not in config:
            raise UserError(f"{key} does not apply to {workdir}: its config has no {sections[0]} section")
        section = config
        for part in sections:
            if part not in section:
                section[part] = ml_collections.ConfigDict()
            section = section[part]
        section[name] = value
    return config


def read_metrics(workdir: str, up_to_epoch: int | None = None) -> list[dict]:
    """The per-epoch records of metrics.jsonl (none when it does not exist), up to `up_to_epoch` if given.

    Records past `up_to_epoch` belong to work being redone after a resume.
    """
    path = epath.Path(workdir) / METRICS
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if up_to_epoch is None or r["epoch"] <= up_to_epoch]


def write_metrics(workdir: str, records: list[dict]) -> None:
    """Rewrites metrics.jsonl atomically."""
    write_atomically(epath.Path(workdir) / METRICS, "".join(json.dumps(r) + "\n" for r in records))


def evaluation_path(workdir: str) -> epath.Path:
    """Where training writes the evaluation of the best checkpoint, with its training record (train's alone)."""
    return epath.Path(workdir) / EVALUATION


def evaluation_file_name(checkpoint: str, settings: dict | None = None) -> str:
    """The file `evaluate` writes in a workdir for a checkpoint evaluated with `settings` (flag -> value), e.g.
    eval_latest.json or eval_best_test_time_turns-4.json: never train's eval.json."""
    parts = [f"eval_{checkpoint}"]
    for name, value in sorted((settings or {}).items()):
        value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        if "/" in value:  # A path: its last part, and a digest of the whole to keep names apart.
            value = f"{value.rstrip('/').rsplit('/', 1)[-1]}-{zlib.crc32(value.encode()):08x}"
        parts.append(f"{name}-{re.sub(r'[^A-Za-z0-9.,=+-]', '-', value)}")
    return "_".join(parts) + ".json"


def evaluation_of(workdir: str, checkpoint: str) -> dict:
    """A plain evaluation of a workdir's checkpoint: train's eval.json when it evaluated that checkpoint, else
    what `evaluate` wrote for it without other settings (eval_CHECKPOINT.json); {} when neither exists."""
    for path in (evaluation_path(workdir), epath.Path(workdir) / evaluation_file_name(checkpoint)):
        report = read_json(path, default={})
        if report.get("checkpoint") == checkpoint:
            return report
    return {}


def finished(workdir: str) -> dict | None:
    """The record a training that ended left (finished.json), or None while it has not ended."""
    return read_json(epath.Path(workdir) / FINISHED)


def mark_finished(workdir: str, record: dict) -> None:
    """Leaves finished.json: written after everything else the training writes."""
    write_json(record, epath.Path(workdir) / FINISHED)


def clear_finished(workdir: str) -> None:
    """Removes finished.json: a training (re)starts, and its checkpoints are no longer a finished run's."""
    (epath.Path(workdir) / FINISHED).unlink(missing_ok=True)


def read_json(path: epath.PathLike, default=None):
    """A JSON file's value; `default` when it does not exist or is not JSON."""
    try:
        return json.loads(epath.Path(path).read_text())
    except (OSError, ValueError):
        return default


def write_json(result: dict, path: epath.PathLike) -> None:
    """Writes a result atomically, creating its folder."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(result, indent=2) + "\n")


def restore_model(workdir: str, config, which: str, mesh: Mesh | None = None):
    """The model of a workdir and its 'best' or 'latest' variables, replicated over `mesh` (default: all devices);
    for an ensemble's workdir, its members' SiameseEnsemble, under the ensemble config's model settings.

    Checkpoints written with any device count restore onto any other.
    """
    from siamese_jax.checkpointing import Checkpoints  # Deferred: orbax is slow to import.

    if config.get("ensemble_seeds"):  # An ensemble's workdir (siamese_jax.ensemble): its members', as one model.
        return restore_ensemble(member_workdirs(workdir, config.ensemble_seeds), which,
                                {key: config.model[key] for key in NOT_SHAPE_KEYS}, mesh)
    model = build_model(config.model)
    like = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), input_shape(config)))
    where = distributed.replicated(mesh or distributed.data_mesh())
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), like)
    if (epath.Path(workdir) / PACKED_VARIABLES).exists():
        if has_checkpoints(workdir):
            raise DataError(f"{workdir} holds both checkpoints/ and a packed model's {PACKED_VARIABLES}: move the "
                            "packed model to a folder of its own")
        if which != "best":
            raise UserError(f"{workdir} is a packed model: it holds its best parameters alone, not the 'latest' state")
        return model, read_packed_variables(workdir, like)
    checkpoints = Checkpoints(workdir)
    variables = checkpoints.restore_variables(which, like)
    checkpoints.close()
    if variables is None:
        raise DataError(f"no {which} checkpoint in {workdir}/checkpoints: train first, or pass --checkpoint=latest")
    return model, variables


def member_workdirs(workdir: str, seeds) -> list[str]:
    """The workdirs of an ensemble's members (config.ensemble_seeds) inside its workdir: WORKDIR/seed_S."""
    return [str(epath.Path(workdir) / f"seed_{seed}") for seed in seeds]


def restore_ensemble(workdirs: list[str], which: str, model_overrides: dict | None = None,
                     mesh: Mesh | None = None):
    """The SiameseEnsemble of trained workdirs (or packed models), in their order, and its variables; each member's
    model with `model_overrides` (NOT_SHAPE_KEYS); a clear error where a member is missing or the members differ
    in ENSEMBLE_KEYS."""
    for workdir in workdirs:
        if not (epath.Path(workdir) / CONFIG).exists():
            raise DataError(f"ensemble member {workdir} has not trained yet: run the ensemble's training command again")
    configs = [load_config(workdir, model_overrides) for workdir in workdirs]
    shared = [{key: config.get(key) for key in ENSEMBLE_KEYS} for config in configs]
    for workdir, entries in zip(workdirs[1:], shared[1:]):
        differ = changed_keys(shared[0], entries)
        if differ:
            raise DataError(f"{workdir} cannot join an ensemble with {workdirs[0]}: its members must share "
                            f"{', '.join(ENSEMBLE_KEYS)}; these differ: {'; '.join(differ)}")
    members = [restore_model(workdir, config, which, mesh) for workdir, config in zip(workdirs, configs)]
    return SiameseEnsemble.of([model for model, _ in members]), ensemble_variables([v for _, v in members])


def read_packed_variables(workdir: str, like: dict) -> dict:
    """A packed model's variables (PACKED_VARIABLES), cast to the dtypes of `like` and placed on its shardings;
    one line if they do not fit the config's model."""
    from flax import serialization

    path = epath.Path(workdir) / PACKED_VARIABLES
    try:
        stored = serialization.msgpack_restore(path.read_bytes())
    except ValueError as error:
        raise DataError(f"{path} is not a packed model's variables ({error})") from None
    expected = jax.tree.map(lambda x: tuple(x.shape), like)
    found = jax.tree.map(lambda x: tuple(x.shape), stored)
    if found != expected:
        raise DataError(f"{path} does not fit the model of {workdir}/{CONFIG}: its variables differ in names or shapes")
    return jax.tree.map(lambda x, to: jax.device_put(x.astype(to.dtype), to.sharding), stored, like)


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch wherever it is installed, only to accept torch tensors, which adds a second or more
    to the start of every training; scalars need none of it. While torch is not yet imported, it is hidden for the
    import (None in sys.modules makes `import torch` raise ImportError, which tensorboardX handles); a process that
    has imported torch, or tensorboardX, keeps what it has. Call it from the main thread, as a training does: another
    thread's `import torch` would fail while it is hidden.
    """
    hide = "torch" not in sys.modules and "tensorboardX" not in sys.modules
    if hide:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide and sys.modules.get("torch", 0) is None:  # Unless another thread imported torch meanwhile.
            del sys.modules["torch"]
    return SummaryWriter


class TensorBoard:
    """Scalars of each epoch as TensorBoard event files in WORKDIR/tensorboard (tensorboardX: no TensorFlow).

    `tensorboard --logdir=WORKDIR` shows a run while it trains; metrics.jsonl stays the record.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.writer = None
        if enabled:
            self.writer = summary_writer_class()(str(epath.Path(workdir) / TENSORBOARD))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Writes one point of each scalar, at `step`, and flushes."""
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Closes the event file; again is a no-op."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# flock(2) errors of a file system without file locks (Lustre without -o flock, NFSv3 without lockd).
NO_FILE_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)


class TrainingLock:
    """WORKDIR/train.lock, held while a training runs, so that a second training of the same workdir refuses.

    The holder keeps an exclusive flock(2) on the file, which the kernel drops when the process ends however it
    ends, so a lock left by a killed process is free to take, and of two processes racing for it one alone wins.
    The file names the host and process that hold it; taking over one a dead process left says so in a line.
    Evaluation and reports do not lock: they may read while training runs. Bucket workdirs (gs://) have no file
    locks and are not locked.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir, self.path = workdir, epath.Path(workdir) / LOCK
        self.enabled = enabled and "://" not in str(workdir)
        self.held = False
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises UserError naming its holder."""
        if not self.enabled:
            return
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            epath.Path(self.workdir).mkdir(parents=True, exist_ok=True)
            while True:
                descriptor = os.open(str(self.path), os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(descriptor)
                    raise self._in_use(_current_holder(self.path)) from None
                except OSError as error:
                    os.close(descriptor)
                    if error.errno not in NO_FILE_LOCKS:
                        raise
                    print(f"warning: the file system of {self.workdir} has no file locks ({error.strerror}): "
                          "training without the lock; start one training of it at a time", file=sys.stderr, flush=True)
                    return
                # The file may have been released and removed between open and flock: lock the one at the path.
                if _same_file(descriptor, self.path):
                    break
                os.close(descriptor)
            try:
                previous = _parse_holder(os.pread(descriptor, 4096, 0))
                if previous.get("host") == mine["host"] and _running(previous.get("pid")):
                    # A training that holds the file without a lock (started by an earlier version): still running.
                    raise self._in_use(previous)
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, json.dumps(mine).encode(), 0)
            except BaseException:
                os.close(descriptor)
                raise
        except OSError as error:
            raise UserError(f"cannot write to workdir {self.workdir}: {error.strerror or error}") from None
        if previous:
            print(f"taking over {self.path}: its process {previous.get('pid')} on {previous.get('host')} is no "
                  "longer running", flush=True)
        self._descriptor, self.held = descriptor, True

    def _in_use(self, holder: dict) -> UserError:
        """The one-line refusal naming the lock's holder."""
        return UserError(f"{self.workdir} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                         f"(since {holder.get('since', '?')}; {self.path}): wait for it to end or stop it, or pass "
                         "another --workdir")

    def release(self) -> None:
        """Removes the lock file and drops the lock, if this process holds it."""
        if self.held:
            if _same_file(self._descriptor, self.path):  # Not a file someone put in its place.
                self.path.unlink(missing_ok=True)  # Before unlocking: a waiter then finds the file gone and retries.
            os.close(self._descriptor)
        self._descriptor, self.held = None, False

    def __enter__(self) -> "TrainingLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_for_training(workdir: str) -> TrainingLock:
    """WORKDIR's training lock, taken by process 0 alone; every process learns the outcome and raises the same
    UserError when it was refused, so that none waits for a peer that left."""
    lock = TrainingLock(workdir, enabled=distributed.is_primary())
    try:
        lock.acquire()
        refused = None
    except UserError as error:
        refused = error
    if not distributed.on_every_process(refused is None):
        raise refused or UserError(f"process 0 could not take the lock of {workdir} (its message says why): "
                                   "every process stops")
    return lock


def _same_file(descriptor: int, path: epath.Path) -> bool:
    """Whether an open file is the one at `path` now."""
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(str(path)))
    except FileNotFoundError:
        return False


def _parse_holder(text: bytes | str) -> dict:
    """What a lock file's text says of its holder ({} when it says nothing readable, e.g. half written)."""
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {}
    except ValueError:
        return {}


def _current_holder(path: epath.Path, wait_s: float = 1.0) -> dict:
    """The holder a held lock file names. A holder that has just won the lock writes its name a moment after
    taking it: until then the file is empty or names the process that left it, which is waited out."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            holder = _parse_holder(path.read_bytes())
        except OSError:
            holder = {}
        alive = holder and (holder.get("host") != socket.gethostname() or _running(holder.get("pid")))
        if alive or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)


def _running(pid) -> bool:
    """Whether a process of this host with that id is running (True when unsure)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
