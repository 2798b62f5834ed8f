"""Compares two training workdirs epoch by epoch: e.g. one config on 1 device and on 8.

    python benchmarks/compare_runs.py --workdirs=W1,W8 --commands='CMD1;;CMD2' --output=results/FILE.json

Reads each workdir's metrics.jsonl and eval.json; writes the per-epoch training losses and
validation scores side by side, their largest relative differences, and both final results.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The tool's flags; defined only when run as a script."""
    flags.DEFINE_list("workdirs", None, "The two workdirs to compare.")
    flags.DEFINE_string("commands", "", "The commands that produced them, separated by ';;' (recorded as given).")
    flags.DEFINE_string("devices", "", "What each ran on, separated by ';;' (recorded as given).")
    flags.DEFINE_string("note", "", "Anything a reader needs to know about the runs.")
    flags.DEFINE_string("output", None, "Where to write the JSON comparison.")


def read_run(workdir: str) -> tuple[list[dict], dict]:
    """metrics.jsonl records and eval.json of a workdir."""
    from siamese_jax import workdir as workdir_files

    return workdir_files.read_metrics(workdir), json.loads(workdir_files.evaluation_path(workdir).read_text())


def compared_keys(a: list[dict], b: list[dict]) -> list[str]:
    """The training loss and every validation metric (val_*) both runs logged."""
    return ["train_loss"] + [k for k in a[0] if k.startswith("val_") and k in b[0]]


def main(argv):
    """Writes the comparison."""
    del argv
    if not FLAGS.workdirs or len(FLAGS.workdirs) != 2 or not FLAGS.output:
        raise app.UsageError("--workdirs=A,B and --output=FILE are required")
    (a, eval_a), (b, eval_b) = (read_run(w) for w in FLAGS.workdirs)
    epochs = []
    for x, y in zip(a, b):
        row = {"epoch": x["epoch"]}
        for key in compared_keys(a, b):
            row[key] = [x[key], y[key]]
        row["wall_time_s"] = [x["wall_time"], y["wall_time"]]
        epochs.append(row)

    def relative(key, row):
        first, second = row[key]
        return abs(first - second) / max(abs(first), 1e-12)

    def headline(result):
        """The evaluation without its per-run, per-fold detail."""
        return {key: ({k: v for k, v in value.items() if k not in ("per_run", "per_fold")}
                      if isinstance(value, dict) else value) for key, value in result.items()}

    report = {
        "benchmark": "compare_runs",
        "workdirs": FLAGS.workdirs,
        "commands": FLAGS.commands.split(";;") if FLAGS.commands else [],
        "devices": FLAGS.devices.split(";;") if FLAGS.devices else [],
        "note": FLAGS.note,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "epochs_compared": len(epochs),
        "train_loss_relative_difference": {
            "epoch_1": relative("train_loss", epochs[0]),
            "max": max(relative("train_loss", row) for row in epochs),
            "last": relative("train_loss", epochs[-1]),
        },
        "per_epoch": epochs,
        "final": [headline(eval_a), headline(eval_b)],
    }
    Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("epochs_compared", "train_loss_relative_difference")}, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
