"""The training step under XLA:CPU flag settings, each in a fresh process, each beside PyTorch.

    python benchmarks/xla_cpu_flags.py [--config=configs/omniglot.py] [--batch=32] [--rounds=1]
        [--settings='project;;xla;;XLA_FLAGS value;;...'] [--overrides='--config.model.dtype=bfloat16']
        [--output=results/xla_cpu_flags.json]

XLA reads XLA_FLAGS once, when the backend starts, so every setting runs benchmarks/train_throughput.py
in a subprocess of its own: the real training step at --batch pairs, alternated with PyTorch eager in
that process, so each setting's ratio to PyTorch comes from one run. A setting is 'project'
(siamese_jax's default flags, siamese_jax/xla_flags.py), 'xla' (XLA's own defaults:
SIAMESE_JAX_XLA_DEFAULTS=0) or any XLA_FLAGS value, which then replaces the project's defaults.
--rounds runs the whole list that many times, interleaved, so that a machine's slow minutes fall on
every setting alike. --overrides (config overrides, e.g. the compute dtype) apply to every setting; a setting
may add its own after '@@' ('XLA_FLAGS value@@--config.model.first_layer_as_matmul=True'), so that flags and
model choices compare in one list.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS

YNN = "--xla_cpu_experimental_ynn_fusion_type="
DEFAULT_SETTINGS = (
    "project",
    "xla",
    YNN,  # YNNPACK off.
    YNN + "-individual_dot",
    YNN + "-individual_convolution,-individual_dot",
)
SEPARATOR = ";;"
OVERRIDES = "@@"  # Between a setting's XLA flags and its own config overrides.


def define_flags() -> None:
    """The benchmark's flags; defined only when run as a script."""
    flags.DEFINE_string("config", str(REPO / "configs" / "omniglot.py"), "Experiment config file.")
    flags.DEFINE_integer("batch", 32, "Pairs per training step.")
    flags.DEFINE_integer("steps", 3, "Timed steps per repetition.")
    flags.DEFINE_integer("repeats", 2, "Alternating (JAX, PyTorch) repetitions per setting; the best counts.")
    flags.DEFINE_integer("rounds", 1, "Times to run the whole list of settings, interleaved.")
    flags.DEFINE_list("frameworks", ["jax", "torch"], "Passed to train_throughput.py (jax alone skips PyTorch).")
    flags.DEFINE_string("settings", SEPARATOR.join(DEFAULT_SETTINGS),
                        f"XLA flag settings to compare, separated by '{SEPARATOR}' (an XLA_FLAGS value may hold commas): "
                        "project, xla, or an XLA_FLAGS value.")
    flags.DEFINE_string("overrides", "", "Config overrides for every setting, space-separated, e.g. "
                        "'--config.model.dtype=bfloat16'.")
    flags.DEFINE_integer("timeout_s", 1800, "Seconds one setting may take.")
    flags.DEFINE_string("output", None, "Also write the JSON result to this file.")


def split_setting(setting: str) -> tuple[str, list[str]]:
    """A setting's XLA part ('project', 'xla' or an XLA_FLAGS value) and its own config overrides."""
    flags_part, _, overrides = setting.partition(OVERRIDES)
    return flags_part.strip(), shlex.split(overrides)


def setting_env(setting: str, environ=os.environ) -> dict[str, str]:
    """The environment that runs `setting`: 'project', 'xla' or an XLA_FLAGS value (its '@@' overrides aside)."""
    setting = split_setting(setting)[0]
    env = {key: value for key, value in environ.items() if key not in ("XLA_FLAGS", "SIAMESE_JAX_XLA_DEFAULTS")}
    env["JAX_PLATFORMS"] = "cpu"
    if setting == "xla":
        env["SIAMESE_JAX_XLA_DEFAULTS"] = "0"
    elif setting != "project":
        env["XLA_FLAGS"], env["SIAMESE_JAX_XLA_DEFAULTS"] = setting, "0"
    return env


def run_setting(setting: str, output: Path) -> dict:
    """One setting's train_throughput.py run: its pairs/s, PyTorch's and the flags in effect, or its error."""
    command = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), f"--config={FLAGS.config}",
               f"--batch_sizes={FLAGS.batch}", f"--steps={FLAGS.steps}", f"--repeats={FLAGS.repeats}",
               f"--frameworks={','.join(FLAGS.frameworks)}", "--eval_batch=-1", f"--output={output}",
               *shlex.split(FLAGS.overrides), *split_setting(setting)[1]]
    try:
        done = subprocess.run(command, env=setting_env(setting), capture_output=True, text=True,
                              timeout=FLAGS.timeout_s)
    except subprocess.TimeoutExpired:
        return {"setting": setting, "error": f"timed out after {FLAGS.timeout_s} s"}
    if done.returncode or not output.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"setting": setting, "error": lines[-1] if lines else f"exit code {done.returncode}"}
    result = json.loads(output.read_text())
    return {"setting": setting, "xla_flags": result.get("xla_flags", ""), "compute_dtype": result.get("compute_dtype"),
            "steps_per_dispatch": result["jax"][0].get("steps_per_dispatch") if result.get("jax") else None,
            **{key: result[key] for key in ("jax_pairs_per_s", "torch_pairs_per_s", "ratio_to_fastest_torch")
               if key in result}}


def summarize(rows: list[dict]) -> list[dict]:
    """Each setting's best round (its highest JAX pairs/s), in the order of --settings."""
    best = {}
    for row in rows:
        current = best.get(row["setting"])
        if current is None or row.get("jax_pairs_per_s", 0) > current.get("jax_pairs_per_s", 0):
            best[row["setting"]] = row
    return list(best.values())


def main(argv):
    """Runs every setting, --rounds times, and prints one JSON line."""
    del argv
    import tempfile

    from siamese_jax.provenance import provenance

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(FLAGS.rounds):
            for index, setting in enumerate(s for s in FLAGS.settings.split(SEPARATOR) if s):
                row = {"round": round_index, **run_setting(setting, Path(scratch) / f"{round_index}_{index}.json")}
                rows.append(row)
                print(row, flush=True)
    result = {"benchmark": "xla_cpu_flags", **provenance(), "config": FLAGS.config, "batch": FLAGS.batch,
              "overrides": FLAGS.overrides,
              "settings": summarize(rows), "runs": rows}
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
