"""Figures and an interactive page of a training run.

    python -m siamese_jax.report --workdir=DIR [--output_dir=DIR/report] [--checkpoint=best] [--runs=PATH]

Writes to the output folder:
  curves.png          training loss and validation accuracy against epoch
  schedules.png       each layer's learning rate and momentum against epoch
  official_runs.png   one-shot accuracy of each official run (Omniglot)
  errors.png          the trials the model got wrong: query, its true match, its chosen match (Omniglot)
  trials.html         a self-contained page to browse every official trial: pick a run, see the
                      query and the 20 candidates with their scores, filter to errors (Omniglot)
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging

from siamese_jax import experiments, figures
from siamese_jax import workdir as workdir_files
from siamese_jax.errors import DataError, UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    flags.DEFINE_string("workdir", None, "Directory of a training run (config.json, metrics.jsonl, checkpoints/).")
    flags.DEFINE_string("output_dir", None, "Where to write the figures and the page (default: WORKDIR/report).")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters score the trials.")
    flags.DEFINE_string("runs", None, "Runs archive or folder in the all_runs layout (default: the official runs).")
    flags.DEFINE_integer("max_errors", 24, "How many wrong trials errors.png shows.")


def write_report(workdir: str, output_dir: str | None = None, checkpoint: str = "best", runs_path: str | None = None,
                 max_errors: int = 24) -> list[Path]:
    """Writes the curves, the schedules and the experiment's own figures; returns their paths."""
    config = workdir_files.load_config(workdir)
    records = workdir_files.read_metrics(workdir)
    if not records and not config.ensemble_seeds:  # An ensemble's curves are its members' (WORKDIR/seed_S).
        raise DataError(f"{Path(workdir) / workdir_files.METRICS} holds no epochs yet: train for at least one epoch")
    out = Path(output_dir) if output_dir else Path(workdir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = ([figures.plot_curves(records, out / "curves.png"), figures.plot_schedules(records, out / "schedules.png")]
               if records else [])
    experiment = experiments.build(config)
    options = {"runs": runs_path, "max_errors": max_errors, "checkpoint": checkpoint}
    written += experiment.report_figures(workdir, lambda: workdir_files.restore_model(workdir, config, checkpoint),
                                         out, **options)
    return written


def main(argv):
    """Writes the report of --workdir."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO.
    if not FLAGS.workdir:
        sys.exit("error: --workdir is required: the directory of a training run")
    try:
        written = write_report(FLAGS.workdir, FLAGS.output_dir, FLAGS.checkpoint, FLAGS.runs, FLAGS.max_errors)
    except (UserError, OSError) as error:
        sys.exit(f"error: {error}")
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
