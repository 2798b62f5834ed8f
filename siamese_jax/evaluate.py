"""Evaluates a trained workdir: Omniglot's official runs and random tasks, LFW's protocols, or your folders' test classes.

    python -m siamese_jax.evaluate --workdir=DIR [--checkpoint=best|latest] [--runs=PATH] [--output=FILE] [--mnist]
    python -m siamese_jax.evaluate --workdir=LFW_DIR [--protocol=view1|view2]
    python -m siamese_jax.evaluate --fold_workdirs=F0,...,F9 --output=view2.json   # LFW View 2, strict
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from siamese_jax import experiments, faces, transfer
from siamese_jax.data.omniglot import load_omniglot, locate_runs
from siamese_jax.errors import UserError
from siamese_jax.experiments import dataset_name
from siamese_jax.provenance import provenance
from siamese_jax.evaluation import evaluate_all, format_table, load_workdir_config, restore_model, write_json

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    flags.DEFINE_string("workdir", None, "Directory of a training run (holds config.json and checkpoints/).")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters to evaluate.")
    flags.DEFINE_string("runs", None, "Runs archive or folder in the all_runs layout (default: the official runs).")
    flags.DEFINE_string("output", None, "Where to write the JSON result (default: WORKDIR/eval.json).")
    flags.DEFINE_string("data_dir", None, "Data directory (default: the training config's, else $SIAMESE_JAX_DATA_DIR).")
    flags.DEFINE_integer("way", None, "N of the random N-way test tasks, Omniglot or folder (default: the config's test.way).")
    flags.DEFINE_integer("shots", None, "K of the random K-shot tasks (default: the config's test.shots).")
    flags.DEFINE_integer("tasks", None, "How many random tasks (default: the config's test.tasks).")
    flags.DEFINE_integer("seed", None, "Seed of the random tasks (default: the config's test.seed).")
    flags.DEFINE_bool("mnist", False, "Omniglot only: also run the paper's transfer experiment, 10-way one-shot MNIST "
                      "(DATA_DIR/mnist/t10k-*-ubyte.gz), with a 1-nearest-neighbour baseline on the same tasks.")
    flags.DEFINE_integer("mnist_tasks", 2000, "How many MNIST tasks.")
    flags.DEFINE_integer("mnist_seed", 0, "Seed of the MNIST tasks.")
    flags.DEFINE_enum("protocol", None, list(faces.PROTOCOLS), "LFW only: 'view1', or 'view2' with this one model "
                      "for every fold (thresholds-only setting). Default: what the workdir was trained for.")
    flags.DEFINE_list("fold_workdirs", None, "LFW View 2, strict setting: the 10 workdirs trained with "
                      "--config.lfw.protocol=view2 --config.lfw.fold=0..9, in fold order; needs --output.")


def evaluate_omniglot(config) -> dict:
    """The Omniglot report of --workdir."""
    model, variables = restore_model(FLAGS.workdir, config, FLAGS.checkpoint)
    runs_path = FLAGS.runs or locate_runs(config.data_dir or None)
    dataset = load_omniglot(config.data_dir or None, config.cache_dir or None)
    report = evaluate_all(model, variables, config, dataset, runs_path)
    if FLAGS.mnist:
        report["mnist"] = transfer.evaluate_mnist(model, variables, config, config.data_dir or None,
                                                  FLAGS.mnist_tasks, FLAGS.mnist_seed)
    return report


def format_omniglot(result: dict) -> str:
    """The Omniglot table, and the MNIST transfer lines when there are any."""
    return format_table(result) + ("\n" + transfer.format_mnist(result["mnist"]) if "mnist" in result else "")


def evaluate_folder(config) -> dict:
    """The report of --workdir trained on your own class folders: test-class tasks and validation."""
    dataset, splits = experiments.load_folder(config)
    model, variables = restore_model(FLAGS.workdir, config, FLAGS.checkpoint)
    return experiments.evaluate_folder(model, variables, config, dataset, splits)


def evaluate_faces(config) -> dict:
    """The LFW report of --workdir: its protocol, or the one --protocol names."""
    dataset = faces.load_dataset(config)
    model, variables = restore_model(FLAGS.workdir, config, FLAGS.checkpoint)
    if FLAGS.protocol is None or FLAGS.protocol == config.lfw.protocol:
        return faces.evaluate_lfw(model, variables, config, dataset)
    if FLAGS.protocol == "view1":
        raise UserError(f"{FLAGS.workdir} was trained for View 2 fold {config.lfw.fold}, whose training people "
                        "include View 1's test people: evaluate it with --protocol=view2")
    return {"lfw": faces.view2([(model, variables)], config, dataset, None)}


def evaluate_view2_strict(workdirs: list[str]) -> dict:
    """LFW View 2 in the strict setting from the ten fold workdirs."""
    if len(workdirs) != faces.NUM_FOLDS:
        raise UserError(f"--fold_workdirs needs {faces.NUM_FOLDS} workdirs (folds 0-9 in order), got {len(workdirs)}")
    configs = [load_workdir_config(w) for w in workdirs]
    for k, (workdir, config) in enumerate(zip(workdirs, configs)):
        if dataset_name(config) != "lfw" or config.lfw.protocol != "view2" or config.lfw.fold != k:
            raise UserError(f"{workdir} is not a View 2 fold {k} run (train it with --config.lfw.protocol=view2 "
                            f"--config.lfw.fold={k})")
        if (config.image_size, config.channels, config.lfw.crop) != (configs[0].image_size, configs[0].channels,
                                                                      configs[0].lfw.crop):
            raise UserError(f"{workdir} preprocesses images differently from {workdirs[0]}")
    dataset = faces.load_dataset(configs[0])
    models = [restore_model(w, c, FLAGS.checkpoint) for w, c in zip(workdirs, configs)]
    return {"lfw": faces.view2(models, configs[0], dataset, None), "fold_workdirs": list(workdirs)}


def main(argv):
    """Evaluates a workdir's checkpoint (or View 2's ten) and writes the JSON report."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
    if not FLAGS.workdir and not FLAGS.fold_workdirs:
        sys.exit("error: --workdir is required (or --fold_workdirs for LFW View 2 in the strict setting)")
    if FLAGS.fold_workdirs and not FLAGS.output:
        sys.exit("error: --fold_workdirs needs --output=FILE for the View 2 report")
    try:
        if FLAGS.fold_workdirs:
            report, summarize = evaluate_view2_strict(FLAGS.fold_workdirs), faces.format_lfw
        else:
            config = load_workdir_config(FLAGS.workdir)
            if FLAGS.data_dir:
                config.data_dir = FLAGS.data_dir
            for name in ("way", "shots", "tasks", "seed"):
                if getattr(FLAGS, name) is not None:
                    if "test" not in config:
                        raise UserError(f"--{name} sets the random test tasks, which {dataset_name(config)} runs do not have")
                    config.test[name] = getattr(FLAGS, name)
            if dataset_name(config) == "lfw":
                report, summarize = evaluate_faces(config), faces.format_lfw
            elif dataset_name(config) == "folder":
                report, summarize = evaluate_folder(config), experiments.format_folder
            else:
                report, summarize = evaluate_omniglot(config), format_omniglot
        result = {"checkpoint": FLAGS.checkpoint, **report, "provenance": provenance()}
        output = FLAGS.output or os.path.join(FLAGS.workdir, "eval.json")
        write_json(result, output)
    except (UserError, OSError) as error:
        sys.exit(f"error: {error}")
    print(summarize(result))
    print(f"wrote {output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
