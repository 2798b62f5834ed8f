"""The trained model that ships with the package, and the command that packs a workdir's best parameters.

    python -m siamese_jax.pretrained --workdir=runs/omniglot_cpu --output=DIR   # pack a trained workdir
    python -m siamese_jax.pretrained                                            # describe the shipped model

`predict` and `demo` use the shipped model (SHIPPED) when no --workdir is given. A packed model is a folder
that --workdir takes like a workdir: config.json (the training's config, without its machine's paths), eval.json
(the training's evaluation of its best checkpoint) and variables.msgpack (that checkpoint's variables in float16,
flax.serialization: half the size, and the evaluation's accuracy holds; results/pretrained_omniglot_cpu.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from etils import epath

from siamese_jax import experiments
from siamese_jax import workdir as workdir_files
from siamese_jax.errors import DataError, UserError
from siamese_jax.files import write_atomically

# The model `predict` and `demo` use without --workdir: configs/omniglot_cpu.py's best checkpoint, packed.
SHIPPED = Path(__file__).resolve().parent / "pretrained_models" / "omniglot_cpu"
STORED_DTYPE = np.float16
# Paths of the machine that trained: a user's data is found by $SIAMESE_JAX_DATA_DIR or a flag instead.
MACHINE_KEYS = ("data_dir", "cache_dir")


def pack(workdir: str, output: str) -> str:
    """Writes the best checkpoint of a finished, evaluated training as a packed model in `output` (a new folder, or
    one that holds no training); returns its description."""
    config = workdir_files.load_config(workdir)
    if config.ensemble_seeds:
        raise UserError(f"{workdir} is an ensemble's workdir: pack one of its members (--workdir={workdir}/seed_S)")
    finished = workdir_files.finished(workdir)
    report = workdir_files.evaluation_of(workdir, "best")
    if not finished or not finished.get("evaluation") or not report:
        raise DataError(f"{workdir} holds no finished, evaluated training ({workdir_files.FINISHED} and "
                        f"{workdir_files.EVALUATION}): pack a training that ran to its end")
    folder = epath.Path(output)
    if workdir_files.has_checkpoints(output) or (folder / workdir_files.FINISHED).exists():
        raise UserError(f"--output={output} holds a training: pack into a folder of its own")
    _, variables = workdir_files.restore_model(workdir, config, "best")
    stored = jax.tree.map(lambda x: np.asarray(x).astype(STORED_DTYPE), variables)
    overflowed = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(stored)
                  if not np.all(np.isfinite(x))]
    if overflowed:
        raise DataError(f"{workdir}'s best parameters do not fit in {np.dtype(STORED_DTYPE).name}: "
                        f"{', '.join(overflowed)}")
    from flax import serialization

    saved = json.loads(config.to_json())
    for key in MACHINE_KEYS:
        saved[key] = ""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / workdir_files.PACKED_VARIABLES, serialization.msgpack_serialize(stored))
    workdir_files.write_json(saved, folder / workdir_files.CONFIG)
    workdir_files.write_json(report, folder / workdir_files.EVALUATION)
    return describe(output)


def describe(workdir: str) -> str:
    """One line: what a trained workdir or packed model is and how its best checkpoint scored, from its training's
    evaluation (eval.json)."""
    report = workdir_files.evaluation_of(workdir, "best")
    if not report:
        return f"{workdir} (not evaluated)"
    config = workdir_files.load_config(workdir)
    training, origin = report.get("training", {}), report.get("provenance", {})
    config_file = next((part.split("=", 1)[1] for part in origin.get("command", "").split()
                        if part.startswith("--config=")), config.dataset)
    minutes = training.get("wall_time_s", 0) / 60
    commit, date = str(origin.get("commit") or "?")[:7], str(origin.get("date") or "?")[:10]
    return (f"{config_file}, best checkpoint: {experiments.build(config).headline(report)}; trained "
            f"{training.get('epochs', '?')} epochs in {minutes:.0f} min on {origin.get('device', '?')} (commit {commit}, "
            f"{date})")


def shipped_description() -> str:
    """describe() of the shipped model, or a line saying why there is none: for flag help, so it never raises."""
    if not (SHIPPED / workdir_files.PACKED_VARIABLES).exists():
        return "none in this installation"
    try:
        return describe(str(SHIPPED))
    except (UserError, KeyError, TypeError, ValueError) as error:
        return f"unreadable here ({type(error).__name__}: {error})"


def default_workdir(workdir: str | None) -> str:
    """`workdir`, or the shipped model when it is None or empty."""
    if workdir:
        return workdir
    if not (SHIPPED / workdir_files.PACKED_VARIABLES).exists():
        raise UserError(f"no --workdir given and no shipped model at {SHIPPED}: pass --workdir=DIR of a training run")
    return str(SHIPPED)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    flags.DEFINE_string("workdir", None, "A finished training run to pack (its best checkpoint and eval.json). "
                        "Without it, the command describes the shipped model.")
    flags.DEFINE_string("output", None, "Folder to write the packed model to (required with --workdir).")


def main(argv):
    """Packs a workdir, or describes the shipped model."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO.
    try:
        if not FLAGS.workdir:
            print(f"{SHIPPED}: {describe(default_workdir(None))}")
            return
        if not FLAGS.output:
            raise UserError("--output=FOLDER is required with --workdir")
        print(f"packed {FLAGS.workdir} into {FLAGS.output}: {pack(FLAGS.workdir, FLAGS.output)}")
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
