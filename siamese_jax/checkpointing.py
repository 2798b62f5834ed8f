"""Checkpoints with orbax: the latest training state, and the best model variables by validation."""

from __future__ import annotations

import errno
import sys
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from siamese_jax import distributed
from siamese_jax.errors import DataError, UserError, is_out_of_memory

# Latest states kept: when the newest is damaged (a full disk, a killed copy), the one before it is there.
LATEST_TO_KEEP = 2


def _manager(directory: epath.Path, tree_items: tuple[str, ...], max_to_keep: int = 1) -> ocp.CheckpointManager:
    """A manager of checkpoints each holding pytree items and a JSON "meta" item.

    Orbax writes to a temporary folder and renames it when complete. The handlers are named up
    front so that metadata can be read before anything is restored.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    handlers = {item: ocp.StandardCheckpointHandler() for item in tree_items}
    handlers["meta"] = ocp.JsonCheckpointHandler()
    if "://" not in str(directory):  # Orbax wants absolute local paths; bucket URLs already are.
        directory = directory.absolute()
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def _abstract(tree):
    """Shapes, dtypes and shardings of a tree: the target orbax restores into, on today's devices."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# The model's variable collections, each an item of the best checkpoint ('batch_stats' only with
# batch normalisation).
COLLECTIONS = ("params", "batch_stats")


class Checkpoints:
    """WORKDIR/checkpoints/latest (state + meta) and WORKDIR/checkpoints/best (model variables + meta)."""

    def __init__(self, workdir: str):
        root = epath.Path(workdir) / "checkpoints"
        self.latest = _manager(root / "latest", ("state",), LATEST_TO_KEEP)
        self.best = _manager(root / "best", COLLECTIONS)

    def _save(self, manager: ocp.CheckpointManager, step: int, trees: dict, meta: dict) -> None:
        try:
            if step in manager.all_steps():
                manager.delete(step)  # The same step saved again carries newer metadata (end of epoch).
            items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
            manager.save(step, args=ocp.args.Composite(**items, meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
        except OSError as error:  # A full disk, a lost mount: say so, and what is still there.
            kept = [s for s in manager.all_steps() if s != step]
            raise UserError(
                f"cannot write checkpoint step {step} in {manager.directory}: {error.strerror or error}; "
                + (f"steps {kept} are kept there" if kept else "no earlier checkpoint is kept there")
                + ". Free space (or fix the folder), then run the same command to resume") from None

    def save_latest(self, step: int, state, meta: dict) -> None:
        """Saves the whole training state."""
        self._save(self.latest, step, {"state": state}, meta)

    def save_best(self, step: int, variables: dict, meta: dict) -> None:
        """Saves the variables of a new best model: some of COLLECTIONS ('params', and 'batch_stats' if any)."""
        self._save(self.best, step, variables, meta)

    def restore_latest(self, like) -> tuple[Any, dict] | None:
        """The newest readable state (shaped like `like`) and its metadata, or None when there is no checkpoint.

        A damaged or partial step is skipped with a warning naming it, and the one before it restored;
        when none is readable, a UserError says so (never a silent fresh start).
        """
        def restore(step):
            _check_same_state(self.latest.item_metadata(step)["state"], like)
            return self.latest.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))

        return _newest_readable(self.latest, restore, lambda restored: (restored["state"], restored["meta"]))

    def restore_variables(self, which: str, like: dict):
        """Model variables from the 'best' checkpoint or the 'latest' state, laid out like `like`, or None.

        `like` maps collections ('params', maybe 'batch_stats') to arrays or ShapeDtypeStructs
        with shardings: the devices to restore onto.
        """
        if which == "best":
            items = {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in like.items()}
            return _newest_readable(self.best, lambda step: self.best.restore(step, args=ocp.args.Composite(**items)),
                                    lambda restored: {name: restored[name] for name in like})

        def restore(step):
            # The whole state is read (orbax restores whole items), laid out like `like`, whatever
            # device count wrote it.
            metadata = self.latest.item_metadata(step)["state"]
            sharding = jax.tree.leaves(like)[0].sharding
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                getattr(metadata, "tree", metadata),
                is_leaf=lambda node: isinstance(node, ocp.metadata.ArrayMetadata),
            )
            return self.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]

        return _newest_readable(self.latest, restore, lambda state: {
            name: jax.tree.map(lambda _, x: x, tree, state[name]) for name, tree in like.items()})

    def close(self) -> None:
        """Waits for pending writes and releases the managers."""
        self.latest.close()
        self.best.close()


class _OtherState(Exception):
    """A checkpoint step holds a training state of another structure than the one to restore (another optimiser,
    say): not damage, and no older step will differ."""


def _check_same_state(metadata, like) -> None:
    """Raises _OtherState unless a step's state metadata holds arrays of the shapes `like` holds."""
    tree = getattr(metadata, "tree", metadata)
    saved = jax.tree.leaves(tree, is_leaf=lambda node: isinstance(node, ocp.metadata.ArrayMetadata))
    expected = jax.tree.leaves(like)
    shapes = lambda leaves: sorted(tuple(getattr(leaf, "shape", ())) for leaf in leaves)  # noqa: E731
    if len(saved) != len(expected):
        raise _OtherState(f"{len(saved)} arrays where this config's training state has {len(expected)}")
    if shapes(saved) != shapes(expected):
        raise _OtherState("arrays of other shapes than this config's training state")


# What a read error says when it failed for the machine at the time (a mount, a network, permissions), not for
# the step's files: such an error is raised on every process, never taken for damage (which would fall back to an
# older step and lose work). A missing or malformed file is damage.
NOT_DAMAGE_ERRNOS = (errno.EIO, errno.ESTALE, errno.ENOMEM, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                     errno.EAGAIN, errno.EACCES, errno.EPERM)
NOT_DAMAGE_WORDS = ("Input/output error", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Stale file handle", "Permission denied")


def _not_damage(error: Exception) -> bool:
    """Whether a failed read of a checkpoint step is the machine's fault, not the step's (see NOT_DAMAGE_ERRNOS)."""
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return False  # Orbax raises these without an errno for a missing file: a partial step.
    if is_out_of_memory(error):
        return True
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in NOT_DAMAGE_ERRNOS
    return any(word in str(error) for word in NOT_DAMAGE_WORDS)


# A step's outcome on one process; the run follows the worst over its processes.
READ, DAMAGED, FAILED = 0, 1, 2


def _newest_readable(manager: ocp.CheckpointManager, restore: Callable[[int], Any], result: Callable[[Any], Any]):
    """result(restore(step)) for the newest step that restores, warning about each damaged one on the way;
    None without steps; a DataError when every step is damaged."""
    # One decision for all processes: process 0's steps, and a step only where every process read it
    # (processes that restored different steps would deadlock or silently diverge).
    steps = distributed.from_primary(sorted(manager.all_steps(), reverse=True))
    failures = []
    for step in steps:
        restored, reason, failure = None, None, None
        try:
            restored = result(restore(step))
        except _OtherState as error:  # Every process reads the same metadata, and so raises alike.
            raise DataError(
                f"checkpoint step {step} in {manager.directory} holds another training state ({error}): the run was "
                "trained under another config. Resume with that config (WORKDIR/configs.jsonl), or pass a new "
                "--workdir") from None
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint fails in orbax, tensorstore or JSON.
            message = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            if _not_damage(error):
                failure = error, message
            else:
                reason = message
        outcome = distributed.worst_everywhere(FAILED if failure else DAMAGED if reason is not None else READ)
        if outcome == FAILED:
            where = (f"({type(failure[0]).__name__}: {failure[1]})" if failure else
                     "on another process of the run (its message says why)")
            raise UserError(f"cannot read checkpoint step {step} in {manager.directory} {where}; it was not skipped, "
                            "and nothing is lost: run the same command again once that is mended") from (
                failure[0] if failure else None)
        if outcome == READ:
            return restored
        failures.append(step)
        if reason is not None:
            print(f"warning: checkpoint step {step} in {manager.directory} cannot be read"
                  f"{'' if jax.process_count() == 1 else f' on process {jax.process_index()}'} ({reason}): "
                  "skipping it", file=sys.stderr, flush=True)
        elif jax.process_index() == 0:
            print(f"warning: checkpoint step {step} in {manager.directory} cannot be read on another process: "
                  "skipping it", file=sys.stderr, flush=True)
    if failures:
        raise DataError(
            f"no readable checkpoint in {manager.directory}: steps {failures} are all damaged, or were written by a "
            "different model. To start over, delete that folder or pass a new --workdir")
    return None
