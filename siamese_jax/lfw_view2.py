"""LFW View 2 in the strict setting, with one command: ten fold trainings, then the cross-validated result.

    python -m siamese_jax.lfw_view2 --config=configs/lfw_cpu.py --workdir=runs/lfw_view2

Fold K trains in WORKDIR/fold_K on the people of the other nine folds (the config with
lfw.protocol='view2' and lfw.fold=K). Running the same command again continues where it stopped:
a fold whose training ended and evaluated its best checkpoint (its finished.json says so) is done, any
other resumes from its checkpoint. When
all ten are done, each fold's model scores its own fold's pairs with the threshold chosen on the
other nine folds' pairs, and WORKDIR/view2.json gets the mean accuracy with its standard error.
How the folds are evaluated (config.lfw.threshold, test_crops and cohort_norm) comes from this command's config,
so running it again with other settings re-evaluates finished folds without training them again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from siamese_jax import distributed, evaluate, train
from siamese_jax import workdir as workdir_files
from siamese_jax.config_files import upgrade_config
from siamese_jax.errors import ConfigError, UserError
from siamese_jax.experiments import base
from siamese_jax.experiments import lfw as lfw_experiment
from siamese_jax.experiments.lfw import NUM_FOLDS

FLAGS = flags.FLAGS


def fold_config(config, fold: int):
    """A copy of `config` for View 2 fold `fold`."""
    copy = config.copy_and_resolve_references()
    copy.unlock()
    copy.lfw.protocol, copy.lfw.fold = "view2", fold
    return copy


def run_view2(config, workdir: str, devices=None, checkpoint: str = "best") -> dict:
    """Trains the folds not yet done (resuming a half-done one), then writes WORKDIR/view2.json."""
    config = upgrade_config(config)
    if base.dataset_name(config) != "lfw":
        raise ConfigError(f"lfw_view2 needs an LFW config (config.dataset='lfw'), got {base.dataset_name(config)!r}")
    primary = distributed.is_primary()
    fold_dirs = [str(Path(workdir) / f"fold_{k}") for k in range(NUM_FOLDS)]
    started, trained = time.time(), 0
    for k, fold_dir in enumerate(fold_dirs):
        done = workdir_files.finished(fold_dir)
        if done is not None and done.get("evaluation"):
            if primary:
                print(f"fold {k}: done ({fold_dir}/{workdir_files.FINISHED})", flush=True)
            continue
        if primary:
            left = "" if not trained else (f"; about {(time.time() - started) / trained * (NUM_FOLDS - k) / 60:.0f} "
                                           "min left")
            print(f"fold {k} of {NUM_FOLDS - 1}: training in {fold_dir}{left}", flush=True)
        train.train_and_evaluate(fold_config(config, k), fold_dir, devices)
        trained += 1
    result, summary = evaluate.evaluate_folds(fold_dirs, checkpoint, evaluation_overrides={
        "lfw.cohort_norm.images": int(config.lfw.cohort_norm.images),
        "lfw.threshold": config.lfw.threshold,
        "lfw.test_crops": lfw_experiment.test_crops(config.lfw)})
    if primary:
        workdir_files.write_json(result, Path(workdir) / "view2.json")
        print(summary, flush=True)
        print(f"wrote {Path(workdir) / 'view2.json'}", flush=True)
    return result


def define_flags() -> None:
    """The command's flags; defined only when run as a command."""
    config_flags.DEFINE_config_file("config", None, "An LFW config file, e.g. configs/lfw_cpu.py.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Folder for the ten fold workdirs (fold_0 ... fold_9) and view2.json; "
                        "reused to continue.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters of each fold to evaluate.")


def main(argv):
    """Command-line entry point."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
    if FLAGS.config is None or not FLAGS.workdir:
        sys.exit("error: --config=FILE and --workdir=DIR are both required")
    try:
        run_view2(FLAGS.config, FLAGS.workdir, checkpoint=FLAGS.checkpoint)
    except UserError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted; run the same command to continue")


if __name__ == "__main__":
    define_flags()
    app.run(main)
