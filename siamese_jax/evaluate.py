"""Evaluates a trained workdir with its dataset's evaluation (the experiment config.dataset names).

    python -m siamese_jax.evaluate --workdir=DIR [--checkpoint=best|latest] [--output=FILE]
        Omniglot: [--runs=PATH] [--mnist] [--way=N --shots=K --tasks=T --seed=S] [--test_time_turns=1|2|4|8]
        LFW:      [--protocol=view1|view2] [--test_time_flip] [--test_crops=C1,C2,...] [--cohort_norm_images=N]
        folders:  [--way=N --shots=K --tasks=T --seed=S]
    python -m siamese_jax.evaluate --fold_workdirs=F0,...,F9 --output=view2.json   # LFW View 2, strict
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from etils import epath

from siamese_jax import experiments
from siamese_jax import workdir as workdir_files
from siamese_jax.errors import UserError
from siamese_jax.provenance import provenance

FLAGS = flags.FLAGS
# Flags that override the config's random test tasks (config.test), for datasets that have them.
TEST_OVERRIDES = ("way", "shots", "tasks", "seed")
# Dataset-specific flags, passed to the experiment's evaluate() when given.
OPTIONS = ("runs", "mnist", "mnist_tasks", "mnist_seed", "protocol")
# Flags that change how the saved model computes, not its parameters (config.model).
MODEL_OVERRIDES = ("test_time_flip", "test_time_turns")


def pixel_sides(values: list[str]) -> tuple[int, ...]:
    """--test_crops' values as integers; a clear error for anything else."""
    try:
        return tuple(int(value) for value in values)
    except ValueError:
        raise UserError(f"--test_crops takes crop sides in pixels, e.g. --test_crops=118,143; "
                        f"got {','.join(values)}") from None


# Flags that change how a trained run is evaluated: flag -> (the config entry (workdir.EVALUATION_KEYS), the
# flag's value as that entry takes it).
EVALUATION_OVERRIDES = {"cohort_norm_images": ("lfw.cohort_norm.images", int),
                        "test_crops": ("lfw.test_crops", pixel_sides)}


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    flags.DEFINE_string("workdir", None, "Directory of a training run (holds config.json and checkpoints/).")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters to evaluate.")
    flags.DEFINE_string("output", None, "Where to write the JSON result (default: WORKDIR/eval_CHECKPOINT[_SETTINGS].json, "
                        "named after what was evaluated; WORKDIR/eval.json stays the training's record).")
    flags.DEFINE_string("data_dir", None, "Data directory (default: the training config's, else $SIAMESE_JAX_DATA_DIR).")
    flags.DEFINE_integer("way", None, "N of the random N-way test tasks (default: the config's test.way).")
    flags.DEFINE_integer("shots", None, "K of the random K-shot tasks (default: the config's test.shots).")
    flags.DEFINE_integer("tasks", None, "How many random tasks (default: the config's test.tasks).")
    flags.DEFINE_integer("seed", None, "Seed of the random tasks (default: the config's test.seed).")
    flags.DEFINE_string("runs", None, "Omniglot: runs archive or folder in the all_runs layout (default: the official runs).")
    flags.DEFINE_bool("mnist", None, "Omniglot: also run the paper's transfer experiment, 10-way one-shot MNIST "
                      "(DATA_DIR/mnist/t10k-*-ubyte.gz), with a 1-nearest-neighbour baseline on the same tasks.")
    flags.DEFINE_integer("mnist_tasks", None, "Omniglot: how many MNIST tasks (default: the config's test.mnist_tasks, else 2,000).")
    flags.DEFINE_integer("mnist_seed", None, "Omniglot: seed of the MNIST tasks (default 0).")
    flags.DEFINE_enum("protocol", None, ["view1", "view2"], "LFW: 'view1', or 'view2' with this one model for every "
                      "fold (thresholds-only setting). Default: what the workdir was trained for.")
    flags.DEFINE_bool("test_time_flip", None, "Embed each image and its mirror image and average (faces); default: "
                      "the run's model.test_time_flip.")
    flags.DEFINE_integer("test_time_turns", None, "Score every task under 1, 2 or 4 quarter turns of all its "
                         "images, or 8 (the quarter turns of them and of their mirror images), and average (Omniglot: "
                         "a turned alphabet is one the network has seen trained in turns, config.orientations); "
                         "default: the run's model.test_time_turns.")
    flags.DEFINE_integer("cohort_norm_images", None, "LFW: AS-normalise verification scores against this many photos "
                         "of the run's training people (0: off); default: the run's config.lfw.cohort_norm.")
    flags.DEFINE_list("test_crops", None, "LFW: other centred crops (sides in pixels, e.g. 118,143) whose embeddings "
                      "verification averages with the run's crop; an empty value: none; default: the run's "
                      "config.lfw.test_crops.")
    flags.DEFINE_list("fold_workdirs", None, "Cross-validated datasets (LFW View 2, strict): the workdirs of the fold "
                      "runs, in fold order; needs --output.")


def _overrides_entry(model_overrides: dict | None, evaluation_overrides: dict | None = None) -> dict:
    """The report's record of settings the evaluation changed from the runs' configs (none: nothing)."""
    return {**({"model_overrides": dict(model_overrides)} if model_overrides else {}),
            **({"evaluation_overrides": dict(evaluation_overrides)} if evaluation_overrides else {})}


def evaluate_workdir(workdir: str, checkpoint: str = "best", data_dir: str | None = None,
                     test_overrides: dict | None = None, options: dict | None = None,
                     model_overrides: dict | None = None, evaluation_overrides: dict | None = None) -> tuple[dict, str]:
    """The evaluation of a workdir's checkpoint and its text summary.

    `test_overrides` replace values of config.test (way, shots, tasks, seed); `options` are the
    dataset's own (e.g. runs, mnist for Omniglot; protocol for LFW), rejected by datasets without them;
    `model_overrides` set how the model computes, `evaluation_overrides` how it is evaluated (workdir.load_config).
    """
    config = workdir_files.load_config(workdir, model_overrides, evaluation_overrides)
    if data_dir:
        config.data_dir = data_dir
    for name, value in (test_overrides or {}).items():
        if "test" not in config:
            raise UserError(f"--{name} sets the random test tasks, which {experiments.dataset_name(config)} runs "
                            "do not have")
        config.test[name] = value
    experiment = experiments.build(config)
    experiment.check_options(options or {})
    model, variables = workdir_files.restore_model(workdir, config, checkpoint)
    result = {"checkpoint": checkpoint, **_overrides_entry(model_overrides, evaluation_overrides),
              **experiment.evaluate(model, variables, **(options or {})), "provenance": provenance()}
    return result, experiment.summarize(result)


def evaluate_folds(workdirs: list[str], checkpoint: str = "best", model_overrides: dict | None = None,
                   evaluation_overrides: dict | None = None) -> tuple[dict, str]:
    """The cross-validated evaluation of fold workdirs (LFW View 2, strict) and its text summary."""
    experiment = experiments.build(workdir_files.load_config(workdirs[0]))
    if not hasattr(experiment, "evaluate_folds"):
        raise UserError(f"--fold_workdirs: {workdirs[0]} is a run of a dataset without cross-validation folds")
    result = {"checkpoint": checkpoint, **_overrides_entry(model_overrides, evaluation_overrides),
              **experiment.evaluate_folds(workdirs, checkpoint, model_overrides=model_overrides,
                                          evaluation_overrides=evaluation_overrides),
              "provenance": provenance()}
    return result, experiment.summarize(result)


def evaluation_output(output: str | None, workdir: str | None, checkpoint: str, settings: dict) -> epath.Path:
    """Where the report goes: `output`, by default a file in the workdir named after the checkpoint and the
    settings given (workdir.evaluation_file_name). Never a training's record (a workdir's eval.json)."""
    path = epath.Path(output) if output else epath.Path(workdir) / workdir_files.evaluation_file_name(checkpoint, settings)
    if path.name == workdir_files.EVALUATION and "training" in workdir_files.read_json(path, default={}):
        raise UserError(f"--output={path} would replace the training's record of {path.parent}: leave --output "
                        "out (the report goes to a file of its own in the workdir) or name another file")
    return path


def main(argv):
    """Evaluates a workdir's checkpoint (or the fold runs of a cross-validation) and writes the JSON report."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
    if not FLAGS.workdir and not FLAGS.fold_workdirs:
        sys.exit("error: --workdir is required (or --fold_workdirs for LFW View 2 in the strict setting)")
    if FLAGS.fold_workdirs and not FLAGS.output:
        sys.exit("error: --fold_workdirs needs --output=FILE for the View 2 report")
    try:
        given = lambda names: {n: getattr(FLAGS, n) for n in names if getattr(FLAGS, n) is not None}
        evaluation_overrides = {EVALUATION_OVERRIDES[name][0]: EVALUATION_OVERRIDES[name][1](value)
                                for name, value in given(EVALUATION_OVERRIDES).items()}
        output = evaluation_output(FLAGS.output, FLAGS.workdir, FLAGS.checkpoint, {
            **given(TEST_OVERRIDES), **given(OPTIONS), **given(MODEL_OVERRIDES), **given(EVALUATION_OVERRIDES),
            **given(("data_dir",))})
        if FLAGS.fold_workdirs:
            result, summary = evaluate_folds(FLAGS.fold_workdirs, FLAGS.checkpoint, given(MODEL_OVERRIDES),
                                             evaluation_overrides)
        else:
            result, summary = evaluate_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.data_dir,
                                               given(TEST_OVERRIDES), given(OPTIONS), given(MODEL_OVERRIDES),
                                               evaluation_overrides)
        workdir_files.write_json(result, output)
    except (UserError, OSError) as error:
        sys.exit(f"error: {error}")
    print(summary)
    print(f"wrote {output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
