"""Evaluates a trained workdir on the official runs, random test tasks and validation.

    python -m siamese_jax.evaluate --workdir=DIR [--checkpoint=best|latest] [--runs=PATH] [--output=FILE]
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from siamese_jax.data.omniglot import load_omniglot, locate_runs
from siamese_jax.errors import UserError
from siamese_jax.provenance import provenance
from siamese_jax.evaluation import evaluate_all, format_table, load_workdir_config, restore_model, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory of a training run (holds config.json and checkpoints/).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters to evaluate.")
flags.DEFINE_string("runs", None, "Runs archive or folder in the all_runs layout (default: the official runs).")
flags.DEFINE_string("output", None, "Where to write the JSON result (default: WORKDIR/eval.json).")
flags.DEFINE_string("data_dir", None, "Data directory (default: the training config's, else $SIAMESE_JAX_DATA_DIR).")
flags.DEFINE_integer("way", None, "N of the random N-way tasks (default: the config's test.way).")
flags.DEFINE_integer("shots", None, "K of the random K-shot tasks (default: the config's test.shots).")
flags.DEFINE_integer("tasks", None, "How many random tasks (default: the config's test.tasks).")
flags.DEFINE_integer("seed", None, "Seed of the random tasks (default: the config's test.seed).")


def main(argv):
    """Evaluates a workdir's checkpoint and writes the JSON report."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
    if not FLAGS.workdir:
        sys.exit("error: --workdir is required")
    try:
        config = load_workdir_config(FLAGS.workdir)
        for name in ("way", "shots", "tasks", "seed"):
            if getattr(FLAGS, name) is not None:
                config.test[name] = getattr(FLAGS, name)
        if FLAGS.data_dir:
            config.data_dir = FLAGS.data_dir
        model, params = restore_model(FLAGS.workdir, config, FLAGS.checkpoint)
        runs_path = FLAGS.runs or locate_runs(config.data_dir or None)
        dataset = load_omniglot(config.data_dir or None, config.cache_dir or None)
        result = {
            "checkpoint": FLAGS.checkpoint,
            **evaluate_all(model, params, config, dataset, runs_path),
            "provenance": provenance(),
        }
        output = FLAGS.output or os.path.join(FLAGS.workdir, "eval.json")
        write_json(result, output)
    except (UserError, OSError) as error:
        sys.exit(f"error: {error}")
    print(format_table(result))
    print(f"wrote {output}")


if __name__ == "__main__":
    app.run(main)
