"""Searches a config's hyperparameters with Optuna, as Koch et al. chose theirs: Bayesian optimisation of
one-shot accuracy on the validation alphabets.

    python -m siamese_jax.tune --config=configs/omniglot_cpu_sgd.py --workdir=DIR [--trials=N] [--storage=URL]

The search space, metric and pruner are the config's `tune` block (docs/tuning.md). Each trial is an
ordinary training run of the config with the trial's values, in DIR/trials/NNNN: locked, resumable, with
its own metrics.jsonl and TensorBoard, validated after each epoch and never evaluated on the test set. The
training loop reports each epoch's validation metrics through its epoch callback; a trial the pruner stops,
or one that fails for its own values (it diverges, they make the config invalid, its model runs out of memory),
is recorded with its reason and the study goes on. Any other failure (data missing, the storage, a full disk)
would fail every trial alike: it marks its trial failed and stops the study at once, with a non-zero exit. The study lives in
DIR/study.db (SQLite) unless --storage names another: any storage URL Optuna takes (an RDB server for
several machines), or a file ending in .log for Optuna's journal file, its choice for several worker
processes on one machine or a shared file system. Running the same command again continues the study;
--trials counts the study's trials in all, whichever worker ran them. Ctrl-C loses no finished trial: the
interrupted one resumes from its checkpoint next time. After every trial DIR holds trials.md (the trials,
ranked), best_config.py (a config file train takes: the base config with the best trial's values) and
Optuna's plots.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import signal
import sys
import time
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from siamese_jax import experiments, optim, train
from siamese_jax import workdir as workdir_files
from siamese_jax.config_files import upgrade_config
from siamese_jax.errors import ConfigError, TrainingDiverged, TrainingInterrupted, UserError, is_out_of_memory
from siamese_jax.evaluation import evaluators

STUDY_NAME = "siamese_jax"
KINDS = ("float", "log_float", "int", "categorical")
PRUNERS = ("median", "successive_halving", "none")
INTERRUPTED = "interrupted"


# The search space: config.tune.space holds entries (key, kind, *arguments), key a dotted config path
# (an integer part picks a tuple's element, e.g. model.features.0):
#   (key, "float", low, high)      uniform
#   (key, "log_float", low, high)  uniform in log(value)
#   (key, "int", low, high, step)  low, low + step, ..., high
#   (key, "categorical", a, b, ...)
def parse_space(config) -> dict[str, tuple]:
    """config.tune.space checked against the config: key -> (kind, *arguments)."""
    space = {}
    for entry in tuple(config.tune.space):
        entry = tuple(entry)
        if len(entry) < 2 or not isinstance(entry[0], str) or entry[1] not in KINDS:
            raise ConfigError(f"config.tune.space entry {entry!r} must be (key, kind, ...) with kind one of {KINDS}")
        key, kind, args = entry[0], entry[1], entry[2:]
        read_key(config, key)
        numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if kind in ("float", "log_float") and not (len(args) == 2 and numbers and args[0] < args[1]
                                                    and (kind == "float" or args[0] > 0)):
            raise ConfigError(f"config.tune.space entry {entry!r}: {kind} takes low < high"
                              + (" with low > 0" if kind == "log_float" else ""))
        if kind == "int" and not (len(args) == 3 and all(isinstance(a, int) and not isinstance(a, bool) for a in args)
                                  and args[0] < args[1] and args[2] >= 1):
            raise ConfigError(f"config.tune.space entry {entry!r}: int takes integers low < high and step >= 1")
        if kind == "categorical" and len(args) < 2:
            raise ConfigError(f"config.tune.space entry {entry!r}: categorical takes two or more choices")
        if key in space:
            raise ConfigError(f"config.tune.space names {key} twice")
        space[key] = (kind, *args)
    if not space:
        raise ConfigError("config.tune.space is empty: give the entries to search (docs/tuning.md)")
    return space


def read_key(config, key: str):
    """The value at a dotted config key; ConfigError naming the key where it does not exist."""
    value = config
    for part in key.split("."):
        if isinstance(value, tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif hasattr(value, "keys") and part in value:
            value = value[part]
        else:
            raise ConfigError(f"config.tune.space names {key}, which the config does not have ({part!r} is not in it)")
    return value


def apply_params(config, params: dict):
    """A copy of `config` with each dotted key of `params` set to its value (tuple elements replaced)."""
    config = config.copy_and_resolve_references()
    for key, value in params.items():
        *path, name = key.split(".")
        if name.isdigit():  # An element of a tuple: replace the whole tuple.
            *path, name, index = key.split(".")
            parent = config
            for part in path:
                parent = parent[part]
            items = list(parent[name])
            items[int(index)] = value
            with parent.unlocked():
                parent[name] = type(parent[name])(items)
            continue
        parent = config
        for part in path:
            parent = parent[part]
        with parent.unlocked():
            parent[name] = value
    return config


def suggest(trial, key: str, spec: tuple):
    """The trial's value for one entry of the space."""
    kind, *args = spec
    if kind == "categorical":
        return trial.suggest_categorical(key, list(args))
    if kind == "int":
        return trial.suggest_int(key, args[0], args[1], step=args[2])
    return trial.suggest_float(key, args[0], args[1], log=kind == "log_float")


def open_storage(storage: str):
    """An Optuna storage from a URL, or a journal file for a path ending in .log; one-line errors."""
    import optuna

    try:
        if storage.endswith(".log") and "://" not in storage:
            Path(storage).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        return optuna.storages.RDBStorage(storage)
    except Exception as error:  # SQLAlchemy's and the journal's errors, ValueError for a malformed URL.
        raise UserError(f"cannot open the study storage {storage}: {str(error).splitlines()[0]}") from None


def make_pruner(section):
    """The pruner config.tune.pruner names."""
    import optuna

    if section.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=section.startup_trials, n_warmup_steps=section.warmup_epochs)
    if section.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(section.warmup_epochs, 1))
    if section.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"config.tune.pruner must be one of {PRUNERS}, got {section.pruner!r}")


def make_sampler(section, worker: int = 0):
    """The TPE sampler of the study's `worker`-th worker process: seeded config.tune.seed + worker, since workers
    of one seed would draw the same values for the trials they start together."""
    import optuna

    return optuna.samplers.TPESampler(seed=section.seed + worker, n_startup_trials=section.startup_trials)


def load_study(config, storage: str):
    """The study in `storage`, created on first use; refuses one whose space is not the config's."""
    import optuna

    space, section = parse_space(config), config.tune
    study = optuna.create_study(storage=open_storage(storage), study_name=STUDY_NAME, direction="maximize",
                                sampler=make_sampler(section), pruner=make_pruner(section), load_if_exists=True)
    mine = json.loads(json.dumps({"space": space, "metric": metric_name(config)}))
    recorded = study.user_attrs.get("search")
    if recorded is None:
        study.set_user_attr("search", mine)
    elif recorded != mine:
        changed = sorted(k for k in set(recorded["space"]) | set(mine["space"])
                         if recorded["space"].get(k) != mine["space"].get(k))
        raise UserError(f"the study in {storage} searched another space ({', '.join(changed) or 'the metric'} "
                        "differ from this config's): use another --workdir or --storage, or the config it was started with")
    return study


def check_space_acts(space: dict[str, tuple], config) -> None:
    """Refuses a dimension that cannot act in the study's trials: a config entry the optimiser or schedule does not
    read, or momenta below the momentum_start they rise from."""
    unread = optim.unread_keys(config)
    for key, (kind, *args) in space.items():
        hit = next((name for name in unread if key == name or key.startswith(name + ".")), None)
        if hit:
            raise ConfigError(f"config.tune.space searches {key}, which cannot act: config.optimizer="
                              f"{config.optimizer!r} with config.lr_schedule={config.lr_schedule!r} does not read "
                              f"config.{hit}")
        if key.startswith("momenta.") and kind in ("float", "log_float") and config.optimizer == "sgd_paper" and (
                args[0] < config.momentum_start or args[1] >= 1):
            raise ConfigError(f"config.tune.space searches {key} in [{args[0]:g}, {args[1]:g}], outside "
                              f"[config.momentum_start={config.momentum_start:g}, 1): momentum rises from "
                              "momentum_start to mu_j and never falls")


def metric_name(config) -> str:
    """The validation metric trials are ranked by: config.tune.metric, or the run's own."""
    return config.tune.metric or config.validation.metric


def trial_fault(error: BaseException) -> bool:
    """Whether a trial failed for its own values, so that the study goes on: it diverged, its values make the
    config invalid, or its model does not fit in memory. Anything else (data missing, the storage, a full disk, a
    bug) would fail every trial alike."""
    return isinstance(error, (TrainingDiverged, ConfigError)) or is_out_of_memory(error)


def counted(trial) -> bool:
    """Whether a trial takes one of the study's --trials: every trial but one interrupted (it runs again)."""
    import optuna

    waiting = trial.state == optuna.trial.TrialState.WAITING
    return not waiting and trial.user_attrs.get("reason") != INTERRUPTED


@contextlib.contextmanager
def exclusive(path: Path):
    """Holds an exclusive lock on `path` (workers sharing DIR take turns at starting a trial)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Search:
    """One worker of a study: starts trials until the study has `trials` of them, each a training run."""

    def __init__(self, config, workdir: str, storage: str, trials: int, base_file: str):
        """`base_file` is the config's file, which best_config.py loads."""
        self.config, self.workdir, self.storage, self.trials = config, Path(workdir), storage, trials
        self.base_file = base_file
        self.metric = metric_name(config)
        if self.metric not in evaluators.metric_names(config.validation):
            raise ConfigError(f"config.tune.metric={self.metric!r} is none of the validation metrics "
                              f"{evaluators.metric_names(config.validation)}")
        if config.get("ensemble_seeds"):
            raise ConfigError("a tuning study trains single runs: set config.ensemble_seeds=() (an ensemble's members "
                              "share the values the study finds)")
        self.space = parse_space(config)
        make_pruner(config.tune)
        # The base config must work for a trial's length: a ConfigError in a trial is then one its values caused
        # (trial_fault); and every dimension of the space must be able to act.
        base = config.copy_and_resolve_references()
        base.num_epochs = config.tune.epochs or config.num_epochs
        try:
            train.validate_config(base, len(jax.devices()))
        except ConfigError as error:
            raise ConfigError(f"the study's trials of {base.num_epochs} epochs: {error}") from None
        experiments.build(base)
        check_space_acts(self.space, base)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with exclusive(self.workdir / "start.lock"):
            self.study = load_study(config, storage)
            worker = self.study.user_attrs.get("workers", 0)  # Every run of the command counts as one more.
            self.study.set_user_attr("workers", worker + 1)
        self.study.sampler = make_sampler(config.tune, worker)

    def run(self) -> None:
        """Runs trials until the study has enough; writes the tables and plots after each."""
        while True:
            with exclusive(self.workdir / "start.lock"):
                if sum(counted(t) for t in self.study.get_trials(deepcopy=False)) >= self.trials:
                    break
                trial = self.study.ask()
            self.run_trial(trial)
            write_summary(self.study, self.base_file, self.workdir, self.metric)
        write_summary(self.study, self.base_file, self.workdir, self.metric)

    def run_trial(self, trial) -> None:
        """Trains the trial's config and tells the study how it ended."""
        import optuna

        params = {key: suggest(trial, key, spec) for key, spec in self.space.items()}
        workdir = trial.user_attrs.get("workdir") or str(self.workdir / "trials" / f"{trial.number:04d}")
        trial.set_user_attr("workdir", workdir)
        config = apply_params(self.config, params)
        if self.config.tune.epochs:
            config.num_epochs = self.config.tune.epochs
        print(f"trial {trial.number}: {json.dumps(params)} in {workdir}", flush=True)
        # A trial resumed after an interrupt reports its finished epochs again, so that the pruner sees them.
        reported = {r["epoch"]: r[f"val_{self.metric}"] for r in workdir_files.read_metrics(workdir)
                    if f"val_{self.metric}" in r}
        for epoch, value in reported.items():
            trial.report(value, epoch)

        def report(epoch: int, scores: dict):
            trial.report(scores[self.metric], epoch)
            # A trial that has trained all its epochs completes: pruned there, its value would not count.
            return "pruned" if epoch < config.num_epochs and trial.should_prune() else None

        started = time.time()
        try:
            finished = workdir_files.finished(workdir)  # Trained to its end before an interrupt: not again.
            if finished is None:
                trainer = train.Trainer(upgrade_config(config), workdir, epoch_callback=report)
                record, best = trainer.run(evaluate=False)["training"], trainer.meta["best_score"]
            else:
                record, best = finished["training"], finished["best_score"]
        except (TrainingInterrupted, KeyboardInterrupt):  # In training, or outside its loop (setting up, say).
            # Its checkpoint is kept: the next run of the command gives its values to a new trial in the same workdir.
            self.study.enqueue_trial(params, user_attrs={"workdir": workdir})
            trial.set_user_attr("reason", INTERRUPTED)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise TrainingInterrupted(f"trial {trial.number} interrupted") from None
        except BaseException as error:
            trial.set_user_attr("reason", f"{type(error).__name__}: {error}" if not isinstance(error, UserError)
                                else str(error))
            trial.set_user_attr("seconds", time.time() - started)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)  # Never left RUNNING, however it failed.
            if not trial_fault(error):  # No trial could escape it: the study stops at once.
                raise
            print(f"trial {trial.number} failed: {error}", flush=True)
            return
        trial.set_user_attr("seconds", time.time() - started)
        trial.set_user_attr("epochs", record["epochs"])
        trial.set_user_attr("best_epoch", record["best_epoch"])
        trial.set_user_attr("best", best)
        if record["stopped_by"] == "pruned":
            trial.set_user_attr("reason", f"pruned after epoch {record['epochs']}")
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {trial.number} pruned after epoch {record['epochs']} (best {self.metric} {best:.4f})", flush=True)
        else:
            self.study.tell(trial, best)
            print(f"trial {trial.number}: best {self.metric} {best:.4f} at epoch {record['best_epoch']}", flush=True)


def trials_table(study, metric: str) -> str:
    """The trials as a Markdown table, best first: state, best validation metric, epochs, time, values."""
    rows = sorted(study.get_trials(deepcopy=False),
                  key=lambda t: -(t.user_attrs.get("best", -math.inf) if math.isfinite(t.user_attrs.get("best", -math.inf))
                                  else -math.inf))
    keys = sorted({k for t in rows for k in t.params})
    lines = [f"| trial | state | best {metric} | epochs | minutes | {' | '.join(keys)} | note |",
             "|" + " --- |" * (6 + len(keys))]
    for t in rows:
        best = t.user_attrs.get("best")
        values = [f"{t.params[k]:.3g}" if isinstance(t.params.get(k), float) else str(t.params.get(k, "")) for k in keys]
        lines.append(f"| {t.number} | {t.state.name.lower()} | {'' if best is None else f'{best:.4f}'} | "
                     f"{t.user_attrs.get('epochs', '')} | {t.user_attrs.get('seconds', 0) / 60:.1f} | "
                     f"{' | '.join(values)} | {t.user_attrs.get('reason', '').replace('|', '/')[:160]} |")
    return "\n".join(lines) + "\n"


def best_config_file(study, base_file: str, metric: str) -> str | None:
    """A config file for train: the base config with the best complete trial's values; None before one completes."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    return (f'"""Trial {best.number} of the study in {Path(base_file).name}\'s tune run: validation {metric} '
            f'{best.value:.4f}."""\n\n'
            "from siamese_jax.config_files import load_config_file\nfrom siamese_jax.tune import apply_params\n\n"
            f"PARAMS = {json.dumps(best.params, indent=4)}\n\n\n"
            "def get_config():\n    \"\"\"The base config with the best trial's values.\"\"\"\n"
            f"    return apply_params(load_config_file({str(Path(base_file).resolve())!r}), PARAMS)\n")


def write_summary(study, base_file: str, workdir: Path, metric: str) -> None:
    """DIR/trials.md, DIR/best_config.py and Optuna's plots (history; importances once they can be computed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    (workdir / "trials.md").write_text(trials_table(study, metric))
    best = best_config_file(study, base_file, metric)
    if best:
        (workdir / "best_config.py").write_text(best)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    figures = {"history.png": plots.plot_optimization_history}
    if len(complete) >= 2:
        figures["importances.png"] = plots.plot_param_importances
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # The plots are 'experimental' and say so each time.
    for name, plot in figures.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError):  # Too few distinct trials for importances yet.
            continue
        axes.figure.savefig(workdir / name, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when run as a command."""
    config_flags.DEFINE_config_file("config", None, "Config file with a tune block, e.g. configs/omniglot_cpu_sgd.py.")
    flags.DEFINE_string("workdir", None, "Study folder: trials/, study.db, trials.md, best_config.py, plots.")
    flags.DEFINE_integer("trials", None, "Trials in the study in all, across runs and workers (default: config.tune.trials).")
    flags.DEFINE_string("storage", None, "Optuna storage URL (default: sqlite:///WORKDIR/study.db), or a path "
                        "ending in .log for a journal file shared by several worker processes.")


def main(argv):
    """Command-line entry point."""
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.config is None or not FLAGS.workdir:
        sys.exit("error: --config=FILE and --workdir=DIR are both required")
    workdir = Path(FLAGS.workdir)
    # SIGTERM (a scheduler's time limit, the GPU suite's deadline) stops a worker as Ctrl-C does, wherever it
    # lands: in training, the trial saves its state; elsewhere the trial is marked interrupted, never left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        config = upgrade_config(FLAGS.config)
        if "tune" not in config:
            raise ConfigError("the config has no tune block: add config.tune (docs/tuning.md)")
        storage = FLAGS.storage or f"sqlite:///{(workdir / 'study.db').resolve()}"
        trials = FLAGS.trials or config.tune.trials
        if trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {trials}")
        search = Search(config, str(workdir), storage, trials, config_flags.get_config_filename(FLAGS["config"]))
        search.run()
    except TrainingInterrupted:
        sys.exit(f"error: interrupted; every finished trial is kept in {workdir}: run the same command to continue "
                 "(the interrupted trial resumes from its checkpoint)")
    except KeyboardInterrupt:
        sys.exit(f"error: interrupted; every finished trial is kept in {workdir}: run the same command to continue")
    except (UserError, OSError) as error:
        sys.exit(f"error: {error}")
    print(trials_table(search.study, search.metric))
    print(f"wrote {workdir / 'trials.md'}" + (f" and {workdir / 'best_config.py'}" if (workdir / "best_config.py").exists() else ""))


if __name__ == "__main__":
    define_flags()
    app.run(main)
