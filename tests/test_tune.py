"""siamese_jax.tune: a study of tiny training runs completes, continues, prunes, records failures, shares a
study between workers, and refuses bad input in one line."""

import json
import os
import subprocess
import sys

import ml_collections
import optuna
import pytest

from siamese_jax import train, tune
from siamese_jax.config_files import load_config_file, tune_block
from siamese_jax.errors import ConfigError, DataError, UserError
from tests.conftest import REPO, devices_env, load_config, tiny_config, tiny_config_file

LR = "learning_rate"


def tiny_study_config(data_dir, cache_dir, space=((LR, "log_float", 1e-4, 1e-2),), **settings):
    """The tiny config with a tune block: 1-epoch trials unless `settings` say otherwise."""
    config = tiny_config(data_dir, cache_dir)
    config.tune = tune_block(space, **{"epochs": 1, "trials": 3, "startup_trials": 1, "warmup_epochs": 0, **settings})
    return config


def search(config, tmp_path, trials, storage=None):
    base = tiny_config_file(tmp_path / "base_config.py", config.data_dir, config.cache_dir)
    return tune.Search(config, str(tmp_path / "study"), storage or f"sqlite:///{tmp_path / 'study.db'}", trials, str(base))


def states(study):
    return [t.state.name for t in sorted(study.get_trials(), key=lambda t: t.number)]


@pytest.mark.slow
def test_a_tiny_study_completes_and_a_second_run_continues_it(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_study_config(synthetic_data_dir, cache_dir, pruner="none")
    first = search(config, tmp_path, 2)
    first.run()
    assert states(first.study) == ["COMPLETE"] * 2
    trials = first.study.get_trials()
    for trial in trials:  # Each an ordinary training run in its own workdir, its value its best validation metric.
        records = [json.loads(line) for line in open(os.path.join(trial.user_attrs["workdir"], "metrics.jsonl"))]
        assert trial.value == max(r["val_one_shot_accuracy"] for r in records) and len(records) == 1
    assert len({t.params[LR] for t in trials}) == 2 and all(1e-4 <= t.params[LR] <= 1e-2 for t in trials)
    # The same command again, asking for 3 in all: one more trial, the first two untouched.
    again = search(config, tmp_path, 3)
    again.run()
    assert states(again.study) == ["COMPLETE"] * 3
    assert [t.params for t in again.study.get_trials()[:2]] == [t.params for t in trials]
    table = (tmp_path / "study" / "trials.md").read_text()
    assert table.count("| complete |") == 3 and LR in table.splitlines()[0]
    assert (tmp_path / "study" / "history.png").stat().st_size > 0
    assert (tmp_path / "study" / "importances.png").stat().st_size > 0
    # best_config.py is a config file train takes: the base config with the best trial's value.
    best = load_config_file(tmp_path / "study" / "best_config.py")
    assert best.learning_rate == again.study.best_params[LR]
    assert best.model.features == config.model.features


@pytest.mark.slow
@pytest.mark.parametrize("epochs, frozen_state", [(3, "PRUNED"), (2, "COMPLETE")])
def test_a_pruner_set_to_prune_prunes_but_not_after_the_last_epoch(synthetic_data_dir, cache_dir, tmp_path, epochs,
                                                                    frozen_state):
    # A learning rate of 0 never learns; after the trial that does, the median pruner stops it at its second epoch,
    # unless that is its last: pruned there, its value would not count (the CPU study's best trial was lost so).
    config = tiny_study_config(synthetic_data_dir, cache_dir, space=((LR, "categorical", 3e-3, 0.0),), epochs=epochs,
                               warmup_epochs=2)
    study = search(config, tmp_path, 2)
    study.study.enqueue_trial({LR: 3e-3})
    study.study.enqueue_trial({LR: 0.0})
    study.run()
    learned, frozen = sorted(study.study.get_trials(), key=lambda t: t.number)
    assert learned.state.name == "COMPLETE" and learned.user_attrs["epochs"] == epochs
    assert frozen.state.name == frozen_state and frozen.user_attrs["epochs"] == 2
    assert frozen.user_attrs.get("reason") == ("pruned after epoch 2" if frozen_state == "PRUNED" else None)


@pytest.mark.slow
def test_diverging_trials_are_recorded_and_the_study_goes_on(synthetic_data_dir, cache_dir, tmp_path, monkeypatch):
    from siamese_jax.evaluation import evaluators

    config = tiny_study_config(synthetic_data_dir, cache_dir, space=((LR, "categorical", 1e-3, 1e30, 2e-3),),
                               pruner="none")
    study = search(config, tmp_path, 3)
    for rate in (1e30, 2e-3, 1e-3):
        study.study.enqueue_trial({LR: rate})
    # The second trial's parameters stay finite but its validation scores NaN.
    current, real_apply, real_logits = {}, tune.apply_params, evaluators.pair_logits
    monkeypatch.setattr(tune, "apply_params", lambda config, params: current.update(params) or real_apply(config, params))
    monkeypatch.setattr(evaluators, "pair_logits", lambda *args, **kwargs: real_logits(*args, **kwargs) * (
        float("nan") if current.get(LR) == 2e-3 else 1.0))
    study.run()
    loss, nan_scores, good = sorted(study.study.get_trials(), key=lambda t: t.number)
    assert loss.state.name == "FAIL" and loss.user_attrs["reason"].startswith("training diverged at step")
    assert "loss nan" in loss.user_attrs["reason"]
    assert nan_scores.state.name == "FAIL" and "validation verification_accuracy" in nan_scores.user_attrs["reason"]
    assert good.state.name == "COMPLETE"
    table = (tmp_path / "study" / "trials.md").read_text()
    assert table.count("| fail |") == 2 and "training diverged" in table


@pytest.mark.slow
def test_an_interrupted_study_keeps_its_trials_and_resumes_the_interrupted_one(synthetic_data_dir, cache_dir, tmp_path,
                                                                             monkeypatch):
    import signal

    from siamese_jax import train_step
    from siamese_jax.errors import TrainingInterrupted

    real_make_dispatch, dispatches = train_step.make_dispatch, {"n": 0}

    def interrupted_in_the_second_trial(*args):
        dispatch = real_make_dispatch(*args)

        def counted(*inputs):
            dispatches["n"] += 1
            out = dispatch(*inputs)
            if dispatches["n"] == 3 * 2 + 4:  # Trial 0: two epochs of 3 steps; then 4 steps into trial 1.
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C.
            return out

        return counted

    monkeypatch.setattr(train_step, "make_dispatch", interrupted_in_the_second_trial)
    config = tiny_study_config(synthetic_data_dir, cache_dir, pruner="none", epochs=2)
    with pytest.raises(TrainingInterrupted):
        search(config, tmp_path, 2).run()
    again = search(config, tmp_path, 2)
    finished, interrupted, waiting = sorted(again.study.get_trials(), key=lambda t: t.number)
    assert finished.state.name == "COMPLETE" and interrupted.state.name == "FAIL" and waiting.state.name == "WAITING"
    assert interrupted.user_attrs["reason"] == "interrupted"
    assert waiting.system_attrs["fixed_params"] == interrupted.params and waiting.user_attrs["workdir"] == interrupted.user_attrs["workdir"]
    workdir = interrupted.user_attrs["workdir"]
    assert [json.loads(line)["epoch"] for line in open(os.path.join(workdir, "metrics.jsonl"))] == [1]
    again.run()  # The same command: the interrupted trial's values go on from its checkpoint in its workdir.
    resumed = sorted(again.study.get_trials(), key=lambda t: t.number)[2]
    assert resumed.state.name == "COMPLETE" and resumed.user_attrs["workdir"] == workdir
    assert [json.loads(line)["epoch"] for line in open(os.path.join(workdir, "metrics.jsonl"))] == [1, 2]
    assert [t.state.name for t in again.study.get_trials()].count("COMPLETE") == 2


def test_an_interrupt_while_a_trial_sets_up_marks_it_interrupted_not_running(synthetic_data_dir, cache_dir, tmp_path,
                                                                              monkeypatch):
    from siamese_jax.errors import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # SIGTERM and Ctrl-C raise it in a worker outside the training loop.

    monkeypatch.setattr(train, "Trainer", interrupted)
    config = tiny_study_config(synthetic_data_dir, cache_dir, pruner="none", epochs=1)
    worker = search(config, tmp_path, 2)
    with pytest.raises(TrainingInterrupted):
        worker.run()
    (trial, waiting) = sorted(worker.study.get_trials(), key=lambda t: t.number)
    # Never left RUNNING in the study for good: marked, and its values queued to run again.
    assert trial.state.name == "FAIL" and trial.user_attrs["reason"] == "interrupted"
    assert waiting.state.name == "WAITING" and waiting.system_attrs["fixed_params"] == trial.params


def test_missing_data_stops_the_study_at_once_with_its_one_trial_failed(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_study_config(synthetic_data_dir, cache_dir, pruner="none")
    config.data_dir = str(tmp_path / "empty")  # No archives there, and no network to download them.
    (tmp_path / "empty").mkdir()
    worker = search(config, tmp_path, 30)
    with pytest.raises(DataError):
        worker.run()
    (trial,) = worker.study.get_trials()  # Not 30 failed trials and a study that 'finished'.
    assert trial.state.name == "FAIL" and "empty" in trial.user_attrs["reason"]


def test_an_unexpected_error_marks_its_trial_failed_and_stops_the_study(synthetic_data_dir, cache_dir, tmp_path,
                                                                      monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the training code")

    monkeypatch.setattr(train, "Trainer", broken)
    worker = search(tiny_study_config(synthetic_data_dir, cache_dir, pruner="none"), tmp_path, 3)
    with pytest.raises(RuntimeError, match="a bug"):
        worker.run()
    (trial,) = worker.study.get_trials()
    assert trial.state.name == "FAIL" and trial.user_attrs["reason"] == "RuntimeError: a bug in the training code"


@pytest.mark.slow
def test_a_trial_out_of_memory_fails_alone_and_the_study_goes_on(synthetic_data_dir, cache_dir, tmp_path,
                                                                monkeypatch):
    real_trainer, calls = train.Trainer, []

    def first_too_big(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # What XLA raises when a trial's model does not fit on the device.
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.00GiB.")
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(train, "Trainer", first_too_big)
    worker = search(tiny_study_config(synthetic_data_dir, cache_dir, pruner="none"), tmp_path, 2)
    worker.run()
    assert states(worker.study) == ["FAIL", "COMPLETE"]
    assert worker.study.get_trials()[0].user_attrs["reason"].startswith("RuntimeError: RESOURCE_EXHAUSTED")


@pytest.mark.slow
def test_two_workers_finish_n_trials_between_them(synthetic_data_dir, cache_dir, tmp_path):
    config_file = tmp_path / "study_config.py"
    config_file.write_text(
        "import sys\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.test_tune import tiny_study_config\n\n\n"
        "def get_config():\n"
        f"    return tiny_study_config(Path({str(synthetic_data_dir)!r}), Path({str(cache_dir)!r}), pruner='none')\n")
    journal = tmp_path / "study" / "study.log"
    command = [sys.executable, "-m", "siamese_jax.tune", f"--config={config_file}", f"--workdir={tmp_path / 'study'}",
               "--trials=4", f"--storage={journal}"]
    env = {**os.environ, **devices_env(1)}
    workers = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]
    study = optuna.load_study(study_name=tune.STUDY_NAME, storage=tune.open_storage(str(journal)))
    trials = study.get_trials()
    assert states(study) == ["COMPLETE"] * 4
    assert len({t.user_attrs["workdir"] for t in trials}) == 4  # None ran twice.
    # Each worker's sampler has a seed of its own: with one seed, the trials they started together had equal values.
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    started = [line for out, _ in outputs for line in out.splitlines() if line.startswith("trial ") and " in " in line]
    assert len(started) == 4 and all(any(line.startswith("trial ") for line in out.splitlines()) for out, _ in outputs)


@pytest.mark.parametrize("space, message", [
    ((("learning_rat", "float", 0.0, 1.0),), "names learning_rat, which the config does not have"),
    ((("model.features.7", "int", 16, 64, 16),), "names model.features.7, which the config does not have"),
    (((LR, "float", 1.0, 0.5),), "float takes low < high"),
    (((LR, "log_float", 0.0, 1.0),), "log_float takes low < high with low > 0"),
    (((LR, "normal", 0.0, 1.0),), "must be (key, kind, ...) with kind one of"),
    ((("model.features.0", "int", 16, 64.5, 16),), "int takes integers low < high and step >= 1"),
    (((LR, "categorical", 1e-3),), "categorical takes two or more choices"),
    ((), "config.tune.space is empty"),
])
def test_a_bad_space_is_one_line(space, message, synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_study_config(synthetic_data_dir, cache_dir, space=space)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search(config, tmp_path, 1)


def test_a_storage_that_cannot_be_opened_is_one_line(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_study_config(synthetic_data_dir, cache_dir)
    for storage in ("nosuchdb://x/y", f"sqlite:///{tmp_path}/no/such/folder/study.db"):
        with pytest.raises(UserError, match=f"cannot open the study storage {storage}: "):
            search(config, tmp_path, 1, storage)


def test_a_study_of_another_space_is_refused(synthetic_data_dir, cache_dir, tmp_path):
    search(tiny_study_config(synthetic_data_dir, cache_dir), tmp_path, 1)  # Creates the study, runs nothing.
    other = tiny_study_config(synthetic_data_dir, cache_dir, space=((LR, "log_float", 1e-5, 1e-2),))
    with pytest.raises(UserError, match=r"searched another space \(learning_rate differ"):
        search(other, tmp_path, 1)


def test_apply_params_sets_dotted_keys_and_tuple_elements(synthetic_data_dir, cache_dir):
    config = tiny_config(synthetic_data_dir, cache_dir)
    changed = tune.apply_params(config, {"model.features.1": 32, "augment.rotation": 3.0, LR: 0.5})
    assert changed.model.features == (config.model.features[0], 32) and changed.augment.rotation == 3.0
    assert changed.learning_rate == 0.5 and config.learning_rate != 0.5  # A copy.


def test_the_shipped_spaces_fit_their_configs_and_every_dimension_acts():
    paper = tune.parse_space(load_config("omniglot"))
    assert paper["learning_rates.conv_0"] == ("log_float", 1e-4, 1e-1)
    assert paper["momenta.alpha"] == ("float", 0.5, 0.99) and paper["l2.embed"] == ("log_float", 1e-7, 0.1)
    assert paper["model.kernel_sizes.3"] == ("int", 3, 20, 1) and paper["model.features.0"] == ("int", 16, 256, 16)
    assert paper["model.embedding_dim"] == ("int", 128, 4096, 16) and len(paper) == 6 * 3 + 4 * 2 + 1
    # Groups of layers: what a study can tell apart.
    for name in ("omniglot_cpu", "omniglot_cpu_sgd", "omniglot_sgd_search", "omniglot_cpu_hour"):
        grouped = tune.parse_space(load_config(name))
        assert set(grouped) == {"learning_rates.*", "learning_rates.embed", "learning_rates.alpha", "momenta.*", "l2.*"}
    for name in ("omniglot_cpu_adam", "omniglot_fast", "folder", "omniglot_cpu_adam_hour"):  # Adam: a space of its own.
        assert "learning_rate" in tune.parse_space(load_config(name))
    # Each study can start: its trials' length fits the schedule, and no dimension is one its optimiser ignores.
    for path in sorted((REPO / "configs").glob("*.py")):
        config = load_config(path.stem)
        if "tune" not in config:
            continue
        config.num_epochs = config.tune.epochs or config.num_epochs
        train.validate_config(config, 1)
        tune.check_space_acts(tune.parse_space(config), config)


def _tiny_sgd_config(data_dir, cache_dir, **settings):
    config = tiny_study_config(data_dir, cache_dir, **settings)
    config.optimizer = "sgd_paper"
    config.learning_rates = ml_collections.ConfigDict({"*": 0.01})
    config.momenta = ml_collections.ConfigDict({"*": 0.9})
    config.momentum_ramp_epochs = 1
    return config


@pytest.mark.parametrize("space, settings, message", [
    (((LR, "log_float", 1e-4, 1e-2),), {},
     "config.tune.space searches learning_rate, which cannot act: config.optimizer='sgd_paper' with "
     "config.lr_schedule='cosine' does not read config.learning_rate"),
    ((("warmup_epochs", "float", 0.0, 2.0),), {"lr_schedule": "exponential"},
     "searches warmup_epochs, which cannot act: config.optimizer='sgd_paper' with config.lr_schedule='exponential'"),
    ((("momenta.*", "float", 0.0, 0.99),), {},
     r"searches momenta.\* in \[0, 0.99\], outside \[config.momentum_start=0.5, 1\): momentum rises"),
    ((("learning_rates.*", "log_float", 1e-3, 1e-1),), {"momentum_ramp_epochs": 4},
     "the study's trials of 2 epochs: config.momentum_ramp_epochs=4 outlasts the run's 2 epochs"),
])
def test_a_dimension_that_cannot_act_is_one_line_at_the_start(space, settings, message, synthetic_data_dir, cache_dir,
                                                              tmp_path):
    config = _tiny_sgd_config(synthetic_data_dir, cache_dir, space=space, epochs=2)
    config.update(settings)
    with pytest.raises(ConfigError, match=message):
        search(config, tmp_path, 2)
    assert not (tmp_path / "study").exists()  # Refused before any trial or storage.


def test_the_command_needs_a_tune_block(synthetic_data_dir, cache_dir, tmp_path):
    config_file = tmp_path / "no_tune.py"
    config_file.write_text(
        "import sys\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.conftest import tiny_config\n\n\n"
        "def get_config():\n"
        f"    config = tiny_config(Path({str(synthetic_data_dir)!r}), Path({str(cache_dir)!r}))\n"
        "    del config['tune']\n"
        "    return config\n")
    done = subprocess.run([sys.executable, "-m", "siamese_jax.tune", f"--config={config_file}",
                           f"--workdir={tmp_path / 's'}"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **devices_env(1)}, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: the config has no tune block: add config.tune (docs/tuning.md)"
