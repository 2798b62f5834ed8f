"""A training run's workdir: config.json, metrics.jsonl, eval.json, tensorboard/ and checkpoints/.

Every command reads and writes workdirs through this module; paths may be local or gs://
(etils.epath), and every file is written atomically, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import socket
import time

import jax
import ml_collections
from etils import epath
from jax.sharding import Mesh

from siamese_jax import distributed
from siamese_jax.config_files import upgrade_config
from siamese_jax.errors import DataError, UserError
from siamese_jax.files import write_atomically
from siamese_jax.models import build_model, init_variables, input_shape

CONFIG = "config.json"
LOCK = "train.lock"
METRICS = "metrics.jsonl"
EVALUATION = "eval.json"
TENSORBOARD = "tensorboard"
# Config entries that fix the parameters' shapes: a workdir's checkpoints only fit these.
MODEL_KEYS = ("model", "image_size", "channels")
# Entries of config.model that change how the network computes, not its parameters: a run may
# resume with another compute dtype or dropout rate, or be evaluated with test-time flipping.
NOT_SHAPE_KEYS = ("dtype", "dropout", "first_layer_as_matmul", "test_time_flip", "test_time_turns")
# Config entries (dotted paths) that only change how a trained run is evaluated.
EVALUATION_KEYS = ("lfw.cohort_norm.images", "lfw.threshold", "lfw.test_crops")


def prepare(workdir: str, config, save_config: bool = True) -> None:
    """Creates the workdir, checks it is writable and that its checkpoints fit this model; saves the config."""
    path = epath.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to workdir {workdir}: {error.strerror or error}") from None
    saved_path = path / CONFIG
    if saved_path.exists():
        saved = upgrade_config(ml_collections.ConfigDict(json.loads(saved_path.read_text())))
        changed = changed_model_keys(json.loads(saved.to_json()), json.loads(config.to_json()))
        if changed:
            raise UserError(
                f"{workdir} holds checkpoints of a different model ({', '.join(changed)} differ from this "
                "config): pass a new --workdir, or delete that one to start over"
            )
    if save_config:
        write_atomically(saved_path, config.to_json(indent=2) + "\n")


def changed_model_keys(saved: dict, current: dict) -> list[str]:
    """The entries under MODEL_KEYS whose values differ between two configs (as dicts), as dotted keys with both
    values (e.g. "model.features: (8, 8) -> (16, 16)"), ignoring NOT_SHAPE_KEYS."""

    def shape_entries(entries: dict) -> dict:
        flat = {}
        for key in MODEL_KEYS:
            value = entries.get(key)
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items() if k not in NOT_SHAPE_KEYS})
            else:
                flat[key] = value
        return flat

    saved, current = shape_entries(saved), shape_entries(current)
    fmt = lambda v: str(tuple(v)) if isinstance(v, list) else repr(v)  # noqa: E731
    return [f"{key}: {fmt(saved.get(key))} -> {fmt(current.get(key))}" for key in sorted(set(saved) | set(current))
            if saved.get(key) != current.get(key)]


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
    """Where training writes the evaluation of the best checkpoint, and `evaluate` by default."""
    return epath.Path(workdir) / EVALUATION


def write_json(result: dict, path: epath.PathLike) -> None:
    """Writes a result atomically, creating its folder."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(result, indent=2) + "\n")


def restore_model(workdir: str, config, which: str, mesh: Mesh | None = None):
    """The model of a workdir and its 'best' or 'latest' variables, replicated over `mesh` (default: all devices).

    Checkpoints written with any device count restore onto any other.
    """
    from siamese_jax.checkpointing import Checkpoints  # Deferred: orbax is slow to import.

    model = build_model(config.model)
    like = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), input_shape(config)))
    where = distributed.replicated(mesh or distributed.data_mesh())
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), like)
    checkpoints = Checkpoints(workdir)
    variables = checkpoints.restore_variables(which, like)
    checkpoints.close()
    if variables is None:
        raise DataError(f"no {which} checkpoint in {workdir}/checkpoints: train first, or pass --checkpoint=latest")
    return model, variables


class TensorBoard:
    """Scalars of each epoch as TensorBoard event files in WORKDIR/tensorboard (tensorboardX: no TensorFlow).

    `tensorboard --logdir=WORKDIR` shows a run while it trains; metrics.jsonl stays the record.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(epath.Path(workdir) / TENSORBOARD))

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


class TrainingLock:
    """WORKDIR/train.lock, held while a training runs, so that a second training of the same workdir refuses.

    The lock names the host and process that hold it. A lock whose process is gone (killed on this
    host) is taken over, with a line saying so. Evaluation and reports do not lock: they may read while
    training runs. Bucket workdirs (gs://) have no exclusive create and are not locked.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir, self.path = workdir, epath.Path(workdir) / LOCK
        self.enabled = enabled and "://" not in str(workdir)
        self.held = False

    def acquire(self) -> None:
        """Takes the lock, or raises UserError naming its holder."""
        if not self.enabled:
            return
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            epath.Path(self.workdir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot write to workdir {self.workdir}: {error.strerror or error}") from None
        for _ in range(2):
            try:
                descriptor = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.path)
                if holder.get("host") == mine["host"] and not _running(holder.get("pid")):
                    print(f"taking over {self.path}: its process {holder.get('pid')} on {holder.get('host')} is no "
                          "longer running", flush=True)
                    self.path.unlink(missing_ok=True)
                    continue
                raise UserError(
                    f"{self.workdir} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                    f"(since {holder.get('since', '?')}; {self.path}): wait for it to end or stop it, or pass another "
                    "--workdir. If that process is gone, delete the lock file") from None
            except OSError as error:
                raise UserError(f"cannot write to workdir {self.workdir}: {error.strerror or error}") from None
            with os.fdopen(descriptor, "w") as f:
                f.write(json.dumps(mine))
            self.held = True
            return
        raise UserError(f"cannot take {self.path}: another training took it first")

    def release(self) -> None:
        """Removes the lock file if this process holds it."""
        if self.held and _lock_holder(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "TrainingLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_holder(path: epath.Path) -> dict:
    """What a lock file says of its holder ({} when it is unreadable, e.g. half written)."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


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
