"""One command for a GPU check: the throughput benchmark, then training variants sharing the device, then their results.

    python benchmarks/gpu_suite.py --data_dir=DIR --output_dir=OUT [--budget_s=510]
        [--variants=fast] [--parallel=N] [--benchmark=true] [--overrides=...]

In one process tree and within --budget_s seconds of wall time:

1. checks everything that needs no device (the data, the output folder, the variant names, that
   the budget fits one epoch of each variant) and stops with one line if something is wrong;
2. decodes the dataset cache once, for every run to share;
3. runs benchmarks/train_throughput.py (JAX against PyTorch on the same device) unless
   --benchmark=false;
4. trains the variants, --parallel at a time on the one device, each in its own process with its
   own workdir and XLA_PYTHON_CLIENT_MEM_FRACTION, under a time limit
   (config.max_train_seconds) that leaves room for its evaluation (official runs, random tasks,
   validation), which train.py runs at the end;
5. writes at most 4 + len(variants) files to --output_dir: summary.json (every variant's
   result, validation curve and command), benchmark.json, profile.json.gz (the benchmark's trace
   of a few steps, for https://ui.perfetto.dev, when it profiles), suite.log (the suite's and the
   benchmark's lines), and one log per variant.

--variants names entries of VARIANTS below; --variant=NAME=CONFIG[;OVERRIDE...] (repeatable) adds
any other, e.g. --variant='cosine=configs/omniglot_cpu.py;--config.lr_schedule=cosine'.
--overrides are added to every variant. BUILD.md ("The GPU suite") shows how to run it on a lent or rented GPU machine.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAPER_LAYERS = ("conv_0", "conv_1", "conv_2", "conv_3", "embed", "alpha")


def every_layer(section: str, value: float) -> list[str]:
    """Overrides that set one per-layer value (learning_rates, momenta, l2) for every layer of the paper's network."""
    return [f"--config.{section}.{layer}={value}" for layer in PAPER_LAYERS]


# name -> (config file relative to the repository, overrides).
VARIANTS = {
    # The recipe to reach the paper's 92% in minutes (configs/omniglot_fast.py explains each choice).
    "fast": ("configs/omniglot_fast.py", []),
    # The same with the paper's 12 training drawers: what the other 8 drawers are worth.
    "fast_12_drawers": ("configs/omniglot_fast.py", ["--config.train.drawers=(9,10,11,12,13,14,15,16,17,18,19,20)"]),
    # The same with independent pairs instead of every within-alphabet pair of a group (as many
    # images encoded per step and per epoch).
    "fast_pairs": ("configs/omniglot_fast.py", ["--config.sampling=pairs", "--config.batch_size=128",
                                                "--config.pairs_per_epoch=62976", "--config.balanced_loss=False"]),
    # Its learning rate, and dropout against overfitting: what the CPU proxy could not settle.
    "fast_lr_2e-3": ("configs/omniglot_fast.py", ["--config.learning_rate=2e-3"]),
    "fast_lr_5e-4": ("configs/omniglot_fast.py", ["--config.learning_rate=5e-4"]),
    "fast_dropout": ("configs/omniglot_fast.py", ["--config.model.dropout=0.3"]),
    # On one H100 the fast recipe's validation one-shot stopped rising after about 4 of its 40
    # epochs while the training loss kept falling (results/omniglot_fast_h100.json): shorter
    # schedules and the regularisers against that overfitting, at 20 epochs so three fit at once.
    "fast_20": ("configs/omniglot_fast.py", ["--config.num_epochs=20"]),
    "fast_20_dropout": ("configs/omniglot_fast.py", ["--config.num_epochs=20", "--config.model.dropout=0.5"]),
    "fast_20_strong_aug": ("configs/omniglot_fast.py", ["--config.num_epochs=20", "--config.augment.probability=1.0",
                                                        "--config.augment.translation=4.0"]),
    "fast_20_adamw": ("configs/omniglot_fast.py", ["--config.num_epochs=20", "--config.weight_decay=0.05"]),
    # Every alphabet also turned by 90, 180 and 270 degrees, each turn an alphabet of new characters:
    # on the CPU config it raised the official runs from 81.00% to 84.75% at 24 epochs
    # (results/omniglot_cpu_turned.json). The whole 8 minutes, and 20 epochs beside fast_20 (job turned_20).
    "fast_turned": ("configs/omniglot_fast.py", ["--config.orientations=4"]),
    "fast_20_turned": ("configs/omniglot_fast.py", ["--config.num_epochs=20", "--config.orientations=4"]),
    # The paper's own recipe, and the sweep of its per-layer SGD that chooses its defaults.
    "paper": ("configs/omniglot.py", []),
    "paper_eta_1e-2": ("configs/omniglot.py", every_layer("learning_rates", 1e-2)),
    "paper_eta_3e-2": ("configs/omniglot.py", every_layer("learning_rates", 3e-2)),
    "paper_eta_1e-2_l2_0": ("configs/omniglot.py", every_layer("learning_rates", 1e-2) + every_layer("l2", 0.0)),
    "paper_eta_1e-2_mu_0.5": ("configs/omniglot.py", every_layer("learning_rates", 1e-2) + every_layer("momenta", 0.5)),
    # The paper's pipeline (network, initialisation, pairs, L2) with Adam 1e-4 and all 20 drawers: on a
    # shared H200 it reached 74.0% after 6 epochs with validation still rising, where the SGD defaults
    # gave 52.5% after 12.
    # The CPU recipes as they are, for their time to the paper's 92% on one GPU (job cpu_recipes).
    "cpu": ("configs/omniglot_cpu.py", []),
    "cpu_hour": ("configs/omniglot_cpu_hour.py", []),
    "cpu_sgd": ("configs/omniglot_cpu_sgd.py", []),
    "cpu_adam": ("configs/omniglot_cpu_adam.py", []),
    # The CPU config's three-seed ensemble, its members one after another in one process.
    "cpu_ensemble": ("configs/omniglot_cpu_ensemble.py", []),
    # A second seed of the hour config, as its record has on 2 cores (results/omniglot_cpu_hour_35.json).
    "cpu_hour_seed_1": ("configs/omniglot_cpu_hour.py", ["--config.seed=1"]),
    "paper_adam": ("configs/omniglot.py", ["--config.optimizer=adam", "--config.learning_rate=1e-4",
                                           f"--config.train.drawers={tuple(range(1, 21))}".replace(" ", ""),
                                           "--config.num_epochs=20", "--config.patience=20"]),
}

# One lent GPU job each (at most 10 minutes): name -> the flags it sets, unless given on the command line.
JOBS = {
    # The CPU recipes side by side, each its whole length if the budget allows: the first job of a lent GPU.
    "cpu_recipes": {"variants": ["cpu", "cpu_hour", "cpu_hour_seed_1", "cpu_sgd", "cpu_adam", "cpu_ensemble"],
                    "benchmark": False, "budget_s": 570},
    # Regularisers against the fast recipe's overfitting, and the paper's pipeline with Adam: 4 at once.
    "regularise": {"variants": ["fast_20_dropout", "fast_20_strong_aug", "fast_20_adamw", "paper_adam"],
                   "benchmark": False, "budget_s": 570},
    # The fast recipe alone for its whole 8 minutes: the headline number.
    "headline": {"variants": ["fast"], "benchmark": False, "budget_s": 570},
    # The same with turned alphabets as new characters, and 20 epochs of it beside 20 of the plain recipe.
    "turned": {"variants": ["fast_turned"], "benchmark": False, "budget_s": 570},
    "turned_20": {"variants": ["fast_20_turned", "fast_20"], "benchmark": False, "budget_s": 570},
    # Speed: JAX (and the first layer as a matrix product) against PyTorch eager and compiled, with a profile.
    "speed": {"variants": [], "benchmark": True, "budget_s": 570, "benchmark_s": 560,
              "benchmark_flags": "--batch_sizes=128 --steps=30 --repeats=3 --breakdown --profile_steps=5 "
                                 "--model_variants=first_layer_as_matmul=True"},
    # The sweep that chooses configs/omniglot.py's per-layer SGD defaults: 4 at once.
    "paper_sgd": {"variants": ["paper", "paper_eta_1e-2", "paper_eta_3e-2", "paper_eta_1e-2_l2_0"],
                  "benchmark": False, "budget_s": 570},
    # The paper's search for those values (siamese_jax.tune): 4 workers of one study, trials side by side.
    "tune": {"variants": [], "benchmark": False, "budget_s": 570, "tune_workers": 4},
}

# The paper network's training step (bfloat16, batch 128) on one H100: 14,545 pairs/s
# (results/throughput_gpu_h100.json; an H200 gave 15,100). Used only to tell, before any device
# work, whether the budget fits an epoch.
REFERENCE_PAIRS_PER_S = 14_500.0

FLAGS = flags.FLAGS


def define_flags(values: flags.FlagValues = FLAGS) -> None:
    """The suite's flags, in `values`; defined only when run as a command."""
    flags.DEFINE_enum("job", None, sorted(JOBS), "A prepared job (JOBS): sets the flags it names that the command "
                      "line does not.", flag_values=values)
    flags.DEFINE_string("data_dir", None, "Folder holding omniglot/ (the three zips): the runs' config.data_dir.",
                        flag_values=values)
    flags.DEFINE_string("output_dir", None, "Where summary.json, benchmark.json and the logs go (at most 8 files).",
                        flag_values=values)
    flags.DEFINE_float("budget_s", 510.0, "Wall-clock seconds for everything: checks, benchmark, training, evaluation.",
                       flag_values=values)
    flags.DEFINE_list("variants", ["fast"], f"Variants to train, by name: {sorted(VARIANTS)}.", flag_values=values)
    flags.DEFINE_multi_string("variant", [], "More variants, each NAME=CONFIG;OVERRIDE;OVERRIDE... (repeatable).",
                              flag_values=values)
    flags.DEFINE_integer("parallel", 0, "Trainings at once on the device (0: all variants at once).",
                         flag_values=values)
    flags.DEFINE_bool("benchmark", True, "Run the throughput benchmark first.", flag_values=values)
    flags.DEFINE_string("benchmark_flags", "--batch_sizes=128,512,1024 --steps=30 --repeats=3 --breakdown "
                        "--profile_steps=5",
                        "Flags for benchmarks/train_throughput.py (shell words).", flag_values=values)
    flags.DEFINE_float("benchmark_s", 150.0, "Seconds the benchmark may take out of the budget.", flag_values=values)
    flags.DEFINE_string("overrides", "", "Config overrides added to every variant, as shell words, e.g. "
                        "'--config.num_epochs=2 --config.model.features=(8,8,8,8)'.", flag_values=values)
    flags.DEFINE_string("workdir_root", "/tmp/siamese_jax_suite", "Where the shared dataset cache goes, and each "
                        "suite run's workdirs, in a new folder of their own (suite_DATE_*).", flag_values=values)
    flags.DEFINE_float("startup_s", 60.0, "Seconds a run needs before its first step (imports, data, compilation).",
                       flag_values=values)
    flags.DEFINE_float("eval_s", 45.0, "Seconds kept after training for each run's evaluation.", flag_values=values)
    flags.DEFINE_integer("tune_workers", 0, "In place of the variants, this many siamese_jax.tune workers of one "
                         "study (a journal file) share the device until the budget ends (0: none).", flag_values=values)
    flags.DEFINE_string("tune_config", "configs/omniglot_sgd_search.py", "The config whose tune block they search.",
                        flag_values=values)
    flags.DEFINE_float("assumed_pairs_per_s", REFERENCE_PAIRS_PER_S,
                       "Training pairs/s (paper network's batch of 2 x 128 images) assumed for one run alone on the "
                       "device, to check that the budget fits one epoch before starting.", flag_values=values)


class SuiteError(Exception):
    """A problem found before any device work: one line for the user."""


def parse_variant(spec: str) -> tuple[str, str, list[str]]:
    """(name, config path, overrides) of a variant name or a NAME=CONFIG;OVERRIDE;... spec."""
    if "=" in spec.split(";")[0] and not spec.startswith("--"):
        name, rest = spec.split("=", 1)
        config, *overrides = rest.split(";")
        return name, config, [o for o in overrides if o]
    if spec not in VARIANTS:
        raise SuiteError(f"unknown variant {spec!r}: use one of {sorted(VARIANTS)} or NAME=CONFIG;OVERRIDE;...")
    config, overrides = VARIANTS[spec]
    return spec, config, list(overrides)


def load_variant_config(config_path: str, overrides: list[str]):
    """The config a run of this variant will see, parsed by the same flags code as train.py."""
    from ml_collections import config_flags

    argv = ["suite", f"--config={config_path}", *overrides]
    values = flags.FlagValues()
    # config_flags defines the override flags from the argv it is given.
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    try:
        values(argv)
    except Exception as error:  # noqa: BLE001 - flags and config files fail in many ways.
        raise SuiteError(f"variant config {config_path} with {overrides}: {error}") from None
    from siamese_jax.config_files import upgrade_config

    return upgrade_config(values.config)


def first_epoch_s(config, images_per_s: float) -> float:
    """Estimated seconds of one training epoch at `images_per_s`."""
    from siamese_jax.sampling import SamplerSettings
    from siamese_jax.train_step import steps_per_epoch

    settings = SamplerSettings.from_config(config)
    steps = steps_per_epoch(config.pairs_per_epoch, settings.pairs_per_step(), config.steps_per_dispatch)
    return steps * settings.images_per_step() / images_per_s


def check_output_dir(path: Path) -> None:
    """Creates the output folder and checks that it is writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise SuiteError(f"cannot write to --output_dir={path}: {error.strerror or error}") from None


def check_data(data_dir: str) -> None:
    """Raises SuiteError unless data_dir holds the Omniglot archives (nothing is downloaded)."""
    from siamese_jax.data import omniglot
    from siamese_jax.errors import DataError

    if not Path(data_dir).is_dir():
        raise SuiteError(f"--data_dir={data_dir} is not a folder")
    try:
        omniglot.locate_runs(data_dir)
        omniglot.locate(data_dir, "omniglot", omniglot.omniglot_urls(omniglot.IMAGE_ARCHIVES))
    except DataError as error:
        raise SuiteError(str(error)) from None


class Log:
    """Prints a line and appends it to suite.log, so the log survives a crash or a kill."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()

    def __call__(self, line: str) -> None:
        stamped = f"[{time.time() - self.start:6.0f} s] {line}"
        print(stamped, flush=True)
        with self.path.open("a") as f:
            f.write(stamped + "\n")


def run_with_deadline(processes: dict[str, subprocess.Popen], deadline: float, log: Log) -> dict[str, int]:
    """Waits for every process until `deadline`; then SIGTERMs the stragglers (train.py saves and exits)."""
    codes: dict[str, int] = {}
    while len(codes) < len(processes):
        for name, process in processes.items():
            if name not in codes and process.poll() is not None:
                codes[name] = process.returncode
                log(f"{name}: exited with {process.returncode}")
        if time.time() > deadline:
            for name, process in processes.items():
                if name not in codes:
                    log(f"{name}: past the budget, stopping it")
                    os.killpg(process.pid, signal.SIGTERM)
            for name, process in processes.items():
                if name not in codes:
                    try:
                        codes[name] = process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        codes[name] = process.wait()
            break
        time.sleep(1.0)
    return codes


def summarize_run(name: str, config_path: str, overrides: list[str], command: list[str], workdir: Path,
                  returncode: int) -> dict:
    """A variant's record: command, training, official runs, random tasks, the validation curve."""
    record = {"name": name, "config": config_path, "overrides": overrides, "command": shlex.join(command),
              "returncode": returncode}
    from siamese_jax import workdir as workdir_files

    epochs = workdir_files.read_metrics(str(workdir))
    record["curve"] = [{key: value for key, value in e.items() if key != "hyperparameters"} for e in epochs]
    metric = workdir_files.load_config(str(workdir)).validation.metric if epochs else None
    if epochs and f"val_{metric}" in epochs[0]:  # Also for a run the budget stopped: the config's own metric.
        record["best_validation"] = {metric: max(e[f"val_{metric}"] for e in epochs)}
    eval_path = workdir_files.evaluation_path(str(workdir))
    if eval_path.exists():
        result = json.loads(eval_path.read_text())
        record["training"] = result.get("training")
        record["provenance"] = result.get("provenance")
        for key in ("runs", "random_tasks", "validation", "mnist"):
            if key in result:
                record[key] = {k: v for k, v in result[key].items() if k != "per_run"}
    return record


def runs_in(config) -> int:
    """How many runs a variant's process trains one after another: an ensemble's members, else 1."""
    return max(1, len(config.get("ensemble_seeds", ())))


def reserved_seconds(config, startup_s: float, eval_s: float) -> float:
    """The seconds of a variant's process that are not training: `startup_s` and `eval_s` for each run, and one
    more evaluation for an ensemble (a config with ensemble_seeds trains and evaluates each member, then them)."""
    runs = runs_in(config)
    return runs * (startup_s + eval_s) + (eval_s if runs > 1 else 0)


def run_tune_workers(overrides: list[str], root: Path, cache_dir: Path, output: Path, deadline: float,
                     env: dict, log: Log, values: flags.FlagValues = FLAGS) -> dict:
    """--tune_workers siamese_jax.tune processes of one study until `deadline`; the study's record.

    Their lines go to OUTPUT/tune.log; trials.md and best_config.py are copied beside it. A worker stopped
    at the deadline keeps its finished trials (tune's Ctrl-C handling); the unfinished one is marked so.
    """
    study_dir = root / "tune"
    storage = study_dir / "study.log"  # A journal file: Optuna's storage for several processes on one machine.
    command = [sys.executable, "-m", "siamese_jax.tune", f"--config={REPO / values.tune_config}",
               f"--workdir={study_dir}", f"--storage={storage}", f"--config.data_dir={values.data_dir}",
               f"--config.cache_dir={cache_dir}", *overrides]
    log(f"tune: {values.tune_workers} workers of {shlex.join(command)}")
    # Trials compile the same programs: each after the first reads them from JAX's persistent cache.
    worker_env = dict(env, PYTHONUNBUFFERED="1",
                      JAX_COMPILATION_CACHE_DIR=env.get("JAX_COMPILATION_CACHE_DIR", str(root / "jax_cache")),
                      XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get(
                          "XLA_PYTHON_CLIENT_MEM_FRACTION", f"{min(0.45, 0.9 / values.tune_workers):.2f}"))
    with (output / "tune.log").open("a") as out:
        workers = {f"tune worker {i}": subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=worker_env,
                                                        cwd=REPO, start_new_session=True)
                   for i in range(values.tune_workers)}
        codes = run_with_deadline(workers, deadline - 30.0, log)  # 30 s for the workers to save and stop.
    record = {"command": shlex.join(command), "workers": values.tune_workers, "returncodes": list(codes.values()),
              "trials": study_trials(str(storage))}
    for name in ("trials.md", "best_config.py"):
        if (study_dir / name).exists():
            (output / name).write_text((study_dir / name).read_text())
    complete = [t for t in record["trials"] if t["state"] == "complete"]
    record["best"] = max(complete, key=lambda t: t["value"]) if complete else None
    log(f"tune: {len(record['trials'])} trials, {len(complete)} complete" + (
        f", best validation {100 * record['best']['value']:.1f}% (trial {record['best']['number']})"
        if complete else ""))
    return record


def study_trials(storage: str) -> list[dict]:
    """Every trial of the study in `storage`: number, state, value, epochs, seconds, values and reason."""
    import optuna

    from siamese_jax import tune
    from siamese_jax.errors import UserError

    try:
        study = optuna.load_study(study_name=tune.STUDY_NAME, storage=tune.open_storage(storage))
    except (KeyError, UserError) as error:  # No worker got as far as creating the study.
        return [{"error": str(error)}]
    return [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             **{key: t.user_attrs[key] for key in ("best", "epochs", "best_epoch", "seconds", "reason")
                if key in t.user_attrs},
             "curve": [t.intermediate_values[step] for step in sorted(t.intermediate_values)]}
            for t in study.get_trials(deepcopy=False)]


def main(argv, values: flags.FlagValues = FLAGS):
    """Runs the suite with the flags parsed into `values`; exits non-zero with one line when something is wrong
    before device work."""
    del argv
    try:
        run_suite(values)
    except SuiteError as error:
        sys.exit(f"error: {error}")


def run_suite(values: flags.FlagValues = FLAGS) -> None:
    """The checks, the benchmark, the trainings and the summary, under the flags in `values`."""
    if values.job:
        for name, value in JOBS[values.job].items():
            if not values[name].present:
                values[name].value = value
    started = time.time()
    deadline = started + values.budget_s
    if not values.data_dir or not values.output_dir:
        raise SuiteError("--data_dir=DIR and --output_dir=DIR are both required")
    output = Path(values.output_dir)
    check_output_dir(output)
    check_data(values.data_dir)
    variants = [parse_variant(spec) for spec in [*values.variants, *values.variant]]
    overrides_for_all = shlex.split(values.overrides)
    if (Path(values.data_dir) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        overrides_for_all.append("--config.test.mnist_tasks=2000")  # The paper's transfer test, in each evaluation.
    names = [name for name, _, _ in variants]
    if len(set(names)) != len(names) or (not names and not values.benchmark and not values.tune_workers):
        raise SuiteError(f"--variants must name distinct variants (or none, with the benchmark or tune workers), "
                         f"got {names}")
    if values.tune_workers < 0 or (values.tune_workers and names):
        raise SuiteError(f"--tune_workers={values.tune_workers} must be 0 or more, and runs in place of --variants "
                         f"(got {names}): give one or the other")
    tune_config = load_variant_config(str(REPO / values.tune_config), overrides_for_all) if values.tune_workers else None
    if tune_config is not None and "tune" not in tune_config:
        raise SuiteError(f"--tune_config={values.tune_config} has no tune block (docs/tuning.md)")
    parallel = values.parallel or max(1, len(variants))
    waves = -(-len(variants) // parallel)
    configs = {name: load_variant_config(str(REPO / path), overrides + overrides_for_all)
               for name, path, overrides in variants}
    from siamese_jax.errors import UserError

    after_benchmark_s = values.budget_s - (values.benchmark_s if values.benchmark else 0.0)
    if tune_config is None:
        at_once = parallel

        def training_s_of(config) -> float:  # A run's training seconds in its wave; an ensemble member's share.
            wave_s = after_benchmark_s / max(waves, 1)
            return (wave_s - reserved_seconds(config, values.startup_s, values.eval_s)) / runs_in(config)
    else:  # In place of the variants, one wave that evaluates nothing on the test set.
        at_once = values.tune_workers

        def training_s_of(config) -> float:
            return after_benchmark_s - values.startup_s

        configs = {"the tune workers' trials": tune_config}
    share = 2 * values.assumed_pairs_per_s / at_once
    for name, config in configs.items():
        try:
            needed = first_epoch_s(config, share)
        except UserError as error:
            raise SuiteError(f"variant {name}: {error}") from None
        training_s = training_s_of(config)
        if needed > training_s:
            raise SuiteError(
                f"--budget_s={values.budget_s:g} is too small: variant {name} needs about {needed:.0f} s for one epoch "
                f"({at_once} run(s) sharing {values.assumed_pairs_per_s:,.0f} pairs/s) but gets "
                f"{training_s:.0f} s of training after the benchmark, start-up and evaluation (for an ensemble, a "
                "member's share); raise "
                "--budget_s, or lower --parallel or the variants' pairs_per_epoch")

    log = Log(output / "suite.log")
    root = Path(values.workdir_root)
    cache_dir = root / "cache"  # Shared by every suite run: the decoded dataset.
    root.mkdir(parents=True, exist_ok=True)
    # Each suite run's workdirs are new: a fixed folder would resume (or re-evaluate) an earlier suite's runs.
    runs_root = Path(tempfile.mkdtemp(prefix=time.strftime("suite_%Y%m%d-%H%M%S_"), dir=root))
    log(f"workdirs in {runs_root}")
    log(f"suite: {len(variants)} variant(s) {names}, {parallel} at a time, budget {values.budget_s:.0f} s")
    from siamese_jax import progress
    from siamese_jax.data.omniglot import load_omniglot

    load_omniglot(values.data_dir, str(cache_dir))  # Decoded once here; every run reads the cache.
    log("dataset cache ready")

    summary = {"suite": "gpu_suite", "command": shlex.join([sys.executable, *sys.argv]), "budget_s": values.budget_s,
               "parallel": parallel, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    from siamese_jax.provenance import git_commit

    summary["commit"] = git_commit()
    summary_path = output / "summary.json"

    def write_summary():
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")

    write_summary()
    child_env = dict(os.environ)  # This process never starts a JAX backend: the device is the runs'.
    if values.benchmark:
        command = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"),
                   f"--output={output / 'benchmark.json'}", f"--profile_output={output / 'profile.json.gz'}",
                   *shlex.split(values.benchmark_flags)]
        log(f"benchmark: {shlex.join(command)}")
        with (output / "suite.log").open("a") as out:  # The benchmark's lines go into the suite's log.
            # JAX would take 75% of the GPU's memory, leaving PyTorch too little at batch 1024.
            env = dict(child_env, XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.4"))
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                       start_new_session=True)
            code = run_with_deadline({"benchmark": process}, time.time() + values.benchmark_s, log)["benchmark"]
        summary["benchmark"] = (json.loads((output / "benchmark.json").read_text())
                                if (output / "benchmark.json").exists() else {"returncode": code})
        write_summary()

    memory_fraction = f"{min(0.45, 0.9 / parallel):.2f}"
    for wave in range(waves):
        batch = variants[wave * parallel:(wave + 1) * parallel]
        remaining = deadline - time.time()
        wave_end = time.time() + remaining / (waves - wave)
        processes, commands = {}, {}
        for name, path, overrides in batch:
            reserved = reserved_seconds(configs[name], values.startup_s, values.eval_s)
            train_limit = max(1.0, wave_end - time.time() - reserved)
            workdir = runs_root / name
            command = [sys.executable, "-m", "siamese_jax.train", f"--config={REPO / path}", f"--workdir={workdir}",
                       f"--config.data_dir={values.data_dir}", f"--config.cache_dir={cache_dir}",
                       f"--config.max_train_seconds={train_limit:.0f}", *overrides, *overrides_for_all]
            env = dict(child_env, XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get(
                "XLA_PYTHON_CLIENT_MEM_FRACTION", memory_fraction), PYTHONUNBUFFERED="1")
            log(f"{name}: {shlex.join(command)}")
            out = (output / f"{name}.log").open("w")
            processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                               start_new_session=True)
            commands[name] = command
        codes = run_with_deadline(processes, wave_end, log)
        for name, path, overrides in batch:
            record = summarize_run(name, path, overrides + overrides_for_all, commands[name], runs_root / name,
                                   codes[name])
            summary["runs"].append(record)
            runs = record.get("runs")
            best_val = record.get("best_validation")
            log(f"{name}: " + (f"official runs {100 * runs['accuracy']:.2f}% ({runs['correct']}/{runs['trials']}), "
                               + (f"best validation {progress.format_scores(best_val)}, " if best_val else "")
                               + f"{record['training']['epochs']} epochs in {record['training']['wall_time_s']:.0f} s"
                               if runs else "no evaluation (see its log)"))
            write_summary()
    if tune_config is not None:
        summary["tune"] = run_tune_workers(shlex.split(values.overrides), runs_root, cache_dir, output,
                                           deadline, child_env, log, values)
        write_summary()
    summary["wall_s"] = time.time() - started
    write_summary()
    log(f"done in {summary['wall_s']:.0f} s: {summary_path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
