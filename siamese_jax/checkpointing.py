"""Checkpoints with orbax: the latest training state, and the best model variables by validation."""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


def _manager(directory: epath.Path, tree_items: tuple[str, ...]) -> ocp.CheckpointManager:
    """A manager of one checkpoint holding pytree items and a JSON "meta" item.

    Orbax writes to a temporary folder and renames it when complete. The handlers are named up
    front so that metadata can be read before anything is restored.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
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
        self.latest = _manager(root / "latest", ("state",))
        self.best = _manager(root / "best", COLLECTIONS)

    @staticmethod
    def _save(manager: ocp.CheckpointManager, step: int, trees: dict, meta: dict) -> None:
        if step in manager.all_steps():
            manager.delete(step)  # The same step saved again carries newer metadata (end of epoch).
        items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
        manager.save(step, args=ocp.args.Composite(**items, meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()

    def save_latest(self, step: int, state, meta: dict) -> None:
        """Saves the whole training state."""
        self._save(self.latest, step, {"state": state}, meta)

    def save_best(self, step: int, variables: dict, meta: dict) -> None:
        """Saves the variables of a new best model: some of COLLECTIONS ('params', and 'batch_stats' if any)."""
        self._save(self.best, step, variables, meta)

    def restore_latest(self, like) -> tuple[Any, dict] | None:
        """The latest state (shaped like `like`) and its metadata, or None."""
        step = self.latest.latest_step()
        if step is None:
            return None
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()),
        )
        return restored["state"], restored["meta"]

    def restore_variables(self, which: str, like: dict):
        """Model variables from the 'best' checkpoint or the 'latest' state, laid out like `like`, or None.

        `like` maps collections ('params', maybe 'batch_stats') to arrays or ShapeDtypeStructs
        with shardings: the devices to restore onto.
        """
        if which == "best":
            step = self.best.latest_step()
            if step is None:
                return None
            items = {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in like.items()}
            restored = self.best.restore(step, args=ocp.args.Composite(**items))
            return {name: restored[name] for name in like}
        step = self.latest.latest_step()
        if step is None:
            return None
        # The whole state is read (orbax restores whole items), laid out like `like`, whatever
        # device count wrote it.
        metadata = self.latest.item_metadata(step)["state"]
        sharding = jax.tree.leaves(like)[0].sharding
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
            getattr(metadata, "tree", metadata),
            is_leaf=lambda node: isinstance(node, ocp.metadata.ArrayMetadata),
        )
        state = self.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        return {name: jax.tree.map(lambda _, x: x, tree, state[name]) for name, tree in like.items()}

    def close(self) -> None:
        """Waits for pending writes and releases the managers."""
        self.latest.close()
        self.best.close()
