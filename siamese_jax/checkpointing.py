"""Checkpoints with orbax: the latest training state, and the best parameters by validation."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _manager(directory: str, items: tuple[str, ...]) -> ocp.CheckpointManager:
    """A manager keeping one checkpoint; orbax writes to a temporary folder and renames it when complete."""
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=items)


def _abstract(tree):
    """Shapes and dtypes of a tree, the target orbax restores into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """WORKDIR/checkpoints/latest (state + meta) and WORKDIR/checkpoints/best (params + meta)."""

    def __init__(self, workdir: str):
        root = os.path.join(workdir, "checkpoints")
        self.latest = _manager(os.path.join(root, "latest"), ("state", "meta"))
        self.best = _manager(os.path.join(root, "best"), ("params", "meta"))

    @staticmethod
    def _save(manager: ocp.CheckpointManager, step: int, name: str, tree, meta: dict) -> None:
        if step in manager.all_steps():
            manager.delete(step)  # The same step saved again carries newer metadata (end of epoch).
        manager.save(
            step,
            args=ocp.args.Composite(**{name: ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}),
            force=True,
        )
        manager.wait_until_finished()

    def save_latest(self, step: int, state, meta: dict) -> None:
        """Saves the whole training state."""
        self._save(self.latest, step, "state", state, meta)

    def save_best(self, step: int, params, meta: dict) -> None:
        """Saves the parameters of a new best model."""
        self._save(self.best, step, "params", params, meta)

    def latest_meta(self) -> dict | None:
        """Metadata of the latest state, or None when there is none."""
        return self._meta(self.latest)

    def best_meta(self) -> dict | None:
        """Metadata of the best parameters, or None when there are none."""
        return self._meta(self.best)

    @staticmethod
    def _meta(manager: ocp.CheckpointManager) -> dict | None:
        step = manager.latest_step()
        if step is None:
            return None
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

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

    def restore_params(self, which: str, like):
        """Parameters from the 'best' checkpoint or the 'latest' state, shaped like `like`, or None."""
        if which == "best":
            step = self.best.latest_step()
            if step is None:
                return None
            return self.best.restore(
                step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(like)))
            )["params"]
        step = self.latest.latest_step()
        if step is None:
            return None
        state = self.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        return jax.tree.map(lambda _, x: x, like, state["params"])

    def close(self) -> None:
        """Waits for pending writes and releases the managers."""
        self.latest.close()
        self.best.close()
