"""End to end: train, crash, resume, evaluate on a synthetic Omniglot; bad input ends in one clear line."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import jax
import numpy as np
import pytest

from siamese_jax import progress, train, train_step
from siamese_jax.errors import ConfigError, DataError, UserError
from tests.conftest import NUM_TEST_DEVICES, REPO, latest_steps, load_config, tiny_config, tiny_config_file
from tests.conftest import latest_params as _latest_params
from tests.conftest import metrics as _metrics


@pytest.fixture
def trained(trained_omniglot):
    """The session's uninterrupted tiny run (conftest.trained_omniglot)."""
    return trained_omniglot


def test_training_writes_metrics_checkpoints_and_eval(trained):
    config, workdir, result = trained
    records = _metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "val_verification_accuracy", "val_one_shot_accuracy", "hyperparameters", "wall_time"} <= set(records[0])
    assert set(records[0]["hyperparameters"]) == {"conv_0", "norm_0", "conv_1", "norm_1", "embed", "alpha"}
    assert records[1]["step"] == 6
    saved = json.loads((workdir / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    finished = json.loads((workdir / "finished.json").read_text())  # Written last: the run ended.
    assert finished["training"] == saved["training"] and finished["evaluation"] == "eval.json"
    assert finished["best_score"] == max(r["val_one_shot_accuracy"] for r in records)
    runs = saved["runs"]
    assert runs["trials"] == 8 and 0 <= runs["accuracy"] <= 1
    assert runs["correct"] == round(runs["accuracy"] * 8)
    assert set(runs["per_run"]) == {"run01", "run02"}
    assert saved["random_tasks"]["trials"] == config.test.tasks
    assert (workdir / "checkpoints" / "best").is_dir() and (workdir / "checkpoints" / "latest").is_dir()


@pytest.mark.slow
def test_crash_and_resume_matches_uninterrupted_run(trained, monkeypatch, tmp_path):
    config, reference_dir, _ = trained
    config = config.copy_and_resolve_references()
    config.checkpoint_every_steps = 2  # The crash at step 5 then resumes within an epoch, from step 4.
    real_make_dispatch = train_step.make_dispatch

    def crashing_make_dispatch(*args):
        dispatch = real_make_dispatch(*args)
        calls = {"n": 0}

        def crash_on_fifth(*args):
            calls["n"] += 1
            if calls["n"] == 5:
                raise RuntimeError("simulated crash")
            return dispatch(*args)

        return crash_on_fifth

    monkeypatch.setattr(train_step, "make_dispatch", crashing_make_dispatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train_and_evaluate(config, str(tmp_path))
    assert [r["epoch"] for r in _metrics(tmp_path)] == [1]
    assert latest_steps(tmp_path)[-1] == 4
    monkeypatch.setattr(train_step, "make_dispatch", real_make_dispatch)
    train.train_and_evaluate(config, str(tmp_path))

    reference, resumed = _metrics(reference_dir), _metrics(tmp_path)
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(reference, resumed):
        for key in ("train_loss", "val_one_shot_accuracy", "val_verification_accuracy", "step"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    for x, y in zip(jax.tree.leaves(_latest_params(reference_dir, config)), jax.tree.leaves(_latest_params(tmp_path, config))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_training_learns_the_task(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=4)
    result = train.train_and_evaluate(config, str(tmp_path))
    epochs = _metrics(tmp_path)
    losses = [r["train_loss"] for r in epochs]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses  # Every epoch lowers it.
    assert losses[-1] < 0.95 * losses[0]
    # 4-way validation trials: chance is 25%; the trained model picks the right class at least twice as often.
    assert epochs[-1]["val_one_shot_accuracy"] >= 0.5 > epochs[0]["val_one_shot_accuracy"]
    assert result["random_tasks"]["accuracy"] >= 0.5


@pytest.mark.slow
def test_bfloat16_training_follows_float32(synthetic_data_dir, cache_dir, tmp_path):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3)
        config.model.dtype = dtype
        train.train_and_evaluate(config, str(tmp_path / dtype))
        losses[dtype] = [r["train_loss"] for r in _metrics(tmp_path / dtype)]
    # bfloat16 keeps 8 significant bits: the losses agree to a few parts in a thousand.
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=1e-2)
    assert losses["bfloat16"] != losses["float32"]  # The compute dtype really changed.


@pytest.mark.slow
def test_paper_sampling_and_sgd_run_with_turned_classes(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, cache_dir, sampling="pairs", optimizer="sgd_paper", num_epochs=1,
                         orientations=4)
    config.learning_rates = {"*": 0.01}
    config.momenta = {"*": 0.9}
    config.l2 = {"*": 1e-4}
    # One device: on two forced CPU devices this step's all-reduce deadlocks under the project's XLA:CPU default
    # (YNNPACK fusions off, jaxlib 0.10) on some processors; left to the XLA:CPU flags issue.
    result = train.train_and_evaluate(config, str(tmp_path), jax.devices()[:1])
    assert result["runs"]["trials"] == 8
    assert np.isfinite(_metrics(tmp_path)[0]["train_loss"])


@pytest.mark.slow
def test_workdir_of_a_different_model_is_refused_and_kept(trained, synthetic_data_dir, cache_dir):
    _, workdir, _ = trained
    before = sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir())
    config = tiny_config(synthetic_data_dir, cache_dir)
    config.model.embedding_dim = 32
    with pytest.raises(UserError, match=r"different model \(model.embedding_dim: 16 -> 32 differ"):
        train.train_and_evaluate(config, str(workdir))
    assert sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir()) == before


@pytest.mark.slow
def test_unwritable_workdir(synthetic_data_dir, cache_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write to workdir"):
        train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir), str(blocker / "run"))


@pytest.mark.slow
def test_unknown_alphabet(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, cache_dir)
    config.train.alphabets = ("Alpha", "Klingon")
    with pytest.raises(DataError, match="Klingon"):
        train.train_and_evaluate(config, str(tmp_path))


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_bad_override_is_one_clear_line(tmp_path):
    done = _run_cli("siamese_jax.train", "--config=configs/omniglot_cpu.py", "--config.batch_size=abc", f"--workdir={tmp_path}")
    assert done.returncode != 0
    assert "batch_size" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_batch_size_not_divisible_by_devices(tmp_path):
    done = _run_cli(
        "siamese_jax.train", "--config=configs/omniglot_cpu.py", "--config.batch_size=127", f"--workdir={tmp_path}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode != 0
    assert "not divisible by the 2 devices" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_evaluate_command_with_custom_runs_keeps_the_training_record(trained, synthetic_data_dir, tmp_path):
    import shutil

    from siamese_jax import evaluate

    workdir = tmp_path / "run"
    shutil.copytree(trained[1], workdir)
    record = (workdir / "eval.json").read_bytes()
    with zipfile.ZipFile(synthetic_data_dir / "omniglot" / "all_runs.zip") as archive:
        archive.extractall(tmp_path / "runs", members=[n for n in archive.namelist() if n.startswith("run02/")])
    done = _run_cli("siamese_jax.evaluate", f"--workdir={workdir}", f"--runs={tmp_path / 'runs'}", "--checkpoint=latest",
                    "--tasks=10")
    assert done.returncode == 0, done.stderr
    # Written beside the training's record, under a name that says what was evaluated; the record is untouched.
    (output,) = [p for p in workdir.glob("eval_*.json")]
    assert output.name.startswith("eval_latest_runs-runs-") and output.name.endswith("_tasks-10.json")
    assert done.stdout.strip().endswith(f"wrote {output}") and (workdir / "eval.json").read_bytes() == record
    result = json.loads(output.read_text())
    assert result["runs"]["trials"] == 4 and list(result["runs"]["per_run"]) == ["run02"]
    assert result["random_tasks"]["trials"] == 10 and result["checkpoint"] == "latest"
    assert "run02" in done.stdout
    assert evaluate.evaluation_output(None, str(workdir), "latest", {}) == workdir / "eval_latest.json"
    with pytest.raises(UserError, match=r"--output=.*run/eval.json would replace the training's record of"):
        evaluate.evaluation_output(str(workdir / "eval.json"), str(workdir), "best", {})


def test_an_lfw_evaluation_setting_on_an_omniglot_run_is_refused(trained):
    from siamese_jax import evaluate
    from siamese_jax.errors import UserError

    _, workdir, _ = trained
    with pytest.raises(UserError, match="lfw.cohort_norm.images does not apply to .*no lfw section"):
        evaluate.evaluate_workdir(str(workdir), evaluation_overrides={"lfw.cohort_norm.images": 0})


@pytest.mark.slow
def test_evaluate_without_checkpoint_is_one_clear_line(tmp_path):
    done = _run_cli("siamese_jax.evaluate", f"--workdir={tmp_path}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "config.json" in done.stderr


@pytest.mark.slow
def test_tiny_run_on_real_omniglot(real_data_dir, cache_dir, tmp_path):
    config = tiny_config(real_data_dir, cache_dir, num_epochs=1)
    config.train.alphabets = ()
    config.validation.alphabets = load_config("omniglot").validation.alphabets
    config.test.alphabets = load_config("omniglot").test.alphabets
    config.validation.way = config.test.way = 20
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["runs"]["trials"] == 400 and len(result["runs"]["per_run"]) == 20
    assert result["validation"]["one_shot_trials"] == 40


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes(synthetic_data_dir, cache_dir, tmp_path):
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=3)
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "siamese_jax.train", f"--config={config_file}", f"--workdir={workdir}",
               "--config.num_epochs=400", "--config.patience=1000"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    done_epochs = len(_metrics(workdir))
    assert done_epochs >= 1
    resumed = _run_cli(*command[2:4], f"--workdir={workdir}", f"--config.num_epochs={done_epochs + 1}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step" in resumed.stdout
    assert [r["epoch"] for r in _metrics(workdir)] == list(range(1, done_epochs + 2))


@pytest.mark.slow
def test_resuming_with_another_dtype_or_dropout_is_asked_for_and_then_resumes(trained, synthetic_data_dir, cache_dir,
                                                                             tmp_path):
    import shutil

    _, workdir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3)
    config.model.dtype = "bfloat16"
    config.model.dropout = 0.1
    with pytest.raises(UserError, match=r"trained under another config \(model.dropout: 0.0 -> 0.1, model.dtype: "
                                        r"'auto' -> 'bfloat16'\)"):
        train.train_and_evaluate(config, str(copy))
    # The parameters fit (no 'different model' refusal): asked for, it resumes.
    result = train.train_and_evaluate(config, str(copy), allow_config_change=True)
    assert result["training"]["epochs"] == 3 and [r["epoch"] for r in _metrics(copy)] == [1, 2, 3]


@pytest.mark.slow
def test_dropout_changes_training_but_not_evaluation(synthetic_data_dir, cache_dir, tmp_path):
    from siamese_jax.models import SiameseNet, build_model, init_variables

    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=1)
    config.model.dropout = 0.5
    model = build_model(config.model)
    variables = init_variables(model, jax.random.PRNGKey(0), (16, 16))
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, 16, 16))
    evaluated = model.apply(variables, images, method=SiameseNet.embed)
    np.testing.assert_array_equal(evaluated, model.apply(variables, images, method=SiameseNet.embed))
    dropped = [model.apply(variables, images, True, method=SiameseNet.embed, rngs={"dropout": jax.random.PRNGKey(k)},
                           mutable=["batch_stats"])[0] for k in (2, 3)]
    assert not np.allclose(dropped[0], evaluated) and not np.allclose(dropped[0], dropped[1])
    train.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(_metrics(tmp_path)[0]["train_loss"])


@pytest.mark.slow
def test_time_limit_stops_before_an_epoch_that_would_not_fit(synthetic_data_dir, cache_dir, tmp_path, capsys):
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=50, patience=100, max_train_seconds=1e-3)
    result = train.train_and_evaluate(config, str(tmp_path))
    # The first epoch always runs (its length is unknown until then); it took longer than the limit.
    assert result["training"]["epochs"] == 1 and result["training"]["stopped_by"] == "time_limit"
    assert "would pass config.max_train_seconds" in capsys.readouterr().out
    assert not train.out_of_time(0, 1e9, 1e9)
    assert train.out_of_time(100, 60, 50) and not train.out_of_time(100, 60, 30)


@pytest.mark.slow
def test_first_line_names_the_mesh_and_a_speed_line_follows(synthetic_data_dir, cache_dir, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(progress.SpeedReport, "MIN_STEPS", 1)
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=1)
    train.train_and_evaluate(config, str(tmp_path))
    out = capsys.readouterr().out.splitlines()
    n = NUM_TEST_DEVICES
    assert out[0] == f"data parallel over {n} cpu devices (cpu), {16 // n} of 16 images each, float32 compute"
    assert any(line.startswith("measured ") and "pairs/s" in line for line in out)


@pytest.mark.slow
def test_the_cpu_config_trains_with_its_own_features_on_two_devices(synthetic_data_dir, cache_dir, tmp_path):
    """configs/omniglot_cpu.py shrunk in size only: the paper's optimiser with its momentum ramp, groups of
    within-alphabet pairs, turned alphabets and test-time turns, data parallel over the test devices."""
    config = tiny_config(synthetic_data_dir, cache_dir, base="omniglot_cpu", num_epochs=3, momentum_ramp_epochs=2)
    config.model.test_time_turns = 4
    assert (config.optimizer, config.sampling, config.orientations) == ("sgd_paper", "groups", 4)
    result = train.train_and_evaluate(config, str(tmp_path))
    records = _metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3] and all(np.isfinite(r["train_loss"]) for r in records)
    momenta = [r["hyperparameters"]["conv_0"]["momentum"] for r in records]
    assert momenta[0] == pytest.approx(0.5) and momenta[0] < momenta[1] < momenta[2] == pytest.approx(0.9)
    assert result["runs"]["trials"] == 8 and result["training"]["stopped_by"] == "num_epochs"


def test_after_epoch_keeps_the_best_score_and_counts_the_epochs_since():
    meta = {"epoch": 0, "best_score": -float("inf"), "best_epoch": 0, "epochs_without_improvement": 0, "wall_time": 0.0}
    meta, improved = train.after_epoch(meta, 1, 0.5, wall_time=10.0)
    assert improved and meta == {"epoch": 1, "best_score": 0.5, "best_epoch": 1, "epochs_without_improvement": 0,
                                 "wall_time": 10.0}
    meta, improved = train.after_epoch(meta, 2, 0.5, wall_time=20.0)  # Equal is no improvement.
    assert not improved and (meta["best_score"], meta["best_epoch"], meta["epochs_without_improvement"]) == (0.5, 1, 1)
    meta, improved = train.after_epoch(meta, 3, 0.4, wall_time=30.0)
    assert not improved and meta["epochs_without_improvement"] == 2 and meta["wall_time"] == 30.0
    meta, improved = train.after_epoch(meta, 4, 0.7, wall_time=40.0)
    assert improved and (meta["best_score"], meta["best_epoch"], meta["epochs_without_improvement"]) == (0.7, 4, 0)


def test_a_stop_request_records_the_signal_until_its_block_ends():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with train._StopRequest.installed(agreed=False) as stop:
        assert stop.at(0) is None and signal.getsignal(signal.SIGTERM) is stop
        os.kill(os.getpid(), signal.SIGINT)  # Recorded, not raised.
        assert stop.at(1) == "SIGINT"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with train._StopRequest.installed(agreed=True) as stop:  # Several processes: SIGTERM is JAX's to agree on.
        assert signal.getsignal(signal.SIGTERM) is not stop and signal.getsignal(signal.SIGINT) is stop


def test_the_lagged_loss_is_the_previous_log_points():
    lagged = train._LaggedLoss()
    assert lagged.swap(jax.numpy.float32(0.5), 2) is None
    assert lagged.swap(jax.numpy.float32(np.nan), 4) == (0.5, 2)
    value, step = lagged.swap(jax.numpy.float32(0.25), 6)
    assert np.isnan(value) and step == 4


def test_training_progress_counts_pairs_and_says_the_speed_once(monkeypatch, capsys):
    monkeypatch.setattr(progress.SpeedReport, "MIN_STEPS", 1)
    clock = iter([0.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock, 10.0))  # 0 s, then 10 s.
    shown = progress.TrainingProgress(step=2, total_steps=100, pairs_per_step=8, enabled=True)
    assert shown.bar.n == 16
    shown.advance(jax.numpy.zeros(()), step=3, steps=1)  # The compiling step starts the clock.
    shown.advance(jax.numpy.zeros(()), step=5, steps=2)
    shown.show(epoch=1, loss=0.123456)
    assert shown.bar.n == 40 and shown.bar.postfix == "epoch=1, loss=0.1235"
    shown.close()
    assert capsys.readouterr().out.count("measured 1.6 pairs/s: the remaining 95 steps") == 1
    quiet = progress.TrainingProgress(step=0, total_steps=100, pairs_per_step=8, enabled=False)
    quiet.advance(jax.numpy.zeros(()), step=1, steps=1)
    quiet.write("not shown")
    quiet.close()
    assert capsys.readouterr() == ("", "") and not quiet.speed.pending


def test_lock_for_training_refuses_a_workdir_in_training_until_released(tmp_path):
    from siamese_jax import workdir as workdir_files

    lock = workdir_files.lock_for_training(str(tmp_path))
    with pytest.raises(UserError, match="is in use by process"):
        workdir_files.lock_for_training(str(tmp_path))
    lock.release()
    workdir_files.lock_for_training(str(tmp_path)).release()


def test_speed_report_points_to_the_cpu_config_when_a_run_would_take_days(monkeypatch):
    clock = iter([0.0, 100.0, 100.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    report = progress.SpeedReport("cpu", pairs_per_step=128, enabled=True)
    assert report.after_step(jax.numpy.zeros(()), 1, 10**6) is None  # The compiling step starts the clock.
    line = report.after_step(jax.numpy.zeros(()), 21, 10**6)  # 20 steps of 128 pairs in 100 s.
    assert line.startswith("measured 25.6 pairs/s: the remaining 999,979 steps take about 58 days")
    assert "configs/omniglot_cpu.py" in line and "BUILD.md" in line
    assert report.after_step(jax.numpy.zeros(()), 22, 10**6) is None  # Said once.
    gpu = progress.SpeedReport("gpu", pairs_per_step=128, enabled=True)
    gpu.start = (0.0, 1)
    monkeypatch.setattr(progress.time, "time", lambda: 100.0)
    assert "omniglot_cpu" not in gpu.after_step(jax.numpy.zeros(()), 21, 10**6)


@pytest.mark.slow
def test_one_device_training_compiles_its_step_once(synthetic_data_dir, cache_dir, tmp_path, monkeypatch):
    """The initial state must carry the sharding the step returns, or the second step compiles again."""
    compiled = []
    real_make_dispatch = train_step.make_dispatch

    def recording(*args):
        compiled.append(real_make_dispatch(*args))
        return compiled[-1]

    monkeypatch.setattr(train_step, "make_dispatch", recording)
    train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=1), str(tmp_path),
                             devices=jax.devices()[:1])
    assert compiled[0]._cache_size() == 1


@pytest.mark.slow
@pytest.mark.parametrize("dataset, change, message", [
    ("lfw", lambda c: setattr(c.lfw, "protocol", "view3"), "config.lfw.protocol must be one of"),
    ("lfw", lambda c: (setattr(c.lfw, "protocol", "view2"), setattr(c.lfw, "fold", 10)), "config.lfw.fold must be in 0..9"),
    ("lfw", lambda c: setattr(c.lfw, "threshold", "test"), "config.lfw.threshold must be one of"),
    ("omniglot", lambda c: setattr(c, "images_per_class", 3), "sampling='groups' needs batch_size"),
    ("omniglot", lambda c: setattr(c, "image_size", 1), r"config.image_size=1 is too small for the encoder: conv_1 "
                                                        r"would have a 0x0 output .* use config.image_size >= 2"),
    ("omniglot", lambda c: setattr(c.train, "drawers", (0, 21)), "config.train.drawers must be drawers among 1-20"),
    ("omniglot", lambda c: setattr(c.validation, "metric", "auc"), "config.validation.metric='auc' is none of"),
    ("omniglot", lambda c: setattr(c.validation, "evals", ("one_shot", "recall")), "config.validation.evals must name"),
])
def test_config_mistakes_are_reported_before_any_data_is_read(dataset, change, message, cache_dir, tmp_path):
    from tests.conftest import tiny_lfw_config

    nowhere = tmp_path / "no_data"  # Reading any data would fail with a DataError naming missing files.
    config = tiny_lfw_config(nowhere, cache_dir) if dataset == "lfw" else tiny_config(nowhere, cache_dir)
    change(config)
    with pytest.raises(ConfigError, match=message):
        train.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.slow
def test_missing_folder_dataset_is_reported_before_anything_is_built(cache_dir, tmp_path):
    config = load_config("folder")
    config.cache_dir = str(cache_dir)
    config.folder.path = str(tmp_path / "missing")
    with pytest.raises(DataError, match="does not exist"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_tensorboard_event_files_are_written(trained_omniglot):
    _, workdir, _ = trained_omniglot
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboardX.proto import event_pb2  # Read back: the scalars of both epochs are there.

    data, tags = events[0].read_bytes(), set()
    while data:
        length = int.from_bytes(data[:8], "little")
        event = event_pb2.Event.FromString(data[12:12 + length])
        tags |= {value.tag for value in event.summary.value}
        data = data[12 + length + 4:]
    assert {"train_loss", "val_one_shot_accuracy", "val_verification_auc", "learning_rate/conv_0"} <= tags


@pytest.mark.slow
def test_training_and_evaluation_leave_torch_and_scipy_stats_unimported_and_torch_importable(tmp_path):
    # Each would cost about a second at every training's start, which needs neither: tensorboardX imports torch where
    # it is installed (CI installs it), and scipy.stats holds ranks the ROC AUC could take.
    code = ("import importlib.util, sys\n"
            "import siamese_jax.evaluate, siamese_jax.train\n"
            "from siamese_jax.evaluation import metrics\n"
            "from siamese_jax.workdir import TensorBoard\n"
            "board = TensorBoard(sys.argv[1])\n"
            "board.write(1, {'loss': 0.5})\n"
            "board.close()\n"
            "assert metrics.roc_auc([0.2, 0.1, 0.3], [True, False, False]) == 0.5\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "assert 'scipy.stats' not in sys.modules, 'scipy.stats was imported'\n"
            "if importlib.util.find_spec('torch') is not None:\n"
            "    import torch\n"
            "    print('torch', torch.__version__)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
