"""Faults injected for real: divergence, two writers on one workdir, damaged checkpoints, a full disk, hostile files.

Each test asserts the exact outcome: the line printed, the exit status, and the files left; nothing
saved before the fault is lost. docs/faults.md lists each fault with its test.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from siamese_jax import train
from siamese_jax import workdir as workdir_files
from siamese_jax.data import images, sources
from siamese_jax.errors import DataError, TrainingDiverged, UserError
from tests.conftest import REPO, latest_params, latest_steps, metrics, tiny_config, tiny_config_file

pytestmark = pytest.mark.slow  # Most tests here train or start processes.


def _all_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree))


# Divergence.

def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_finite_checkpoint(synthetic_data_dir, cache_dir,
                                                                                tmp_path):
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3)
    train.train_and_evaluate(config, str(tmp_path))  # Three good epochs: steps 3, 6, 9.
    good_steps, good_params = latest_steps(tmp_path), latest_params(tmp_path, config)
    good_metrics = metrics(tmp_path)
    # Within an epoch (no periodic save in between), as a real run diverges between two checkpoints.
    diverging = tiny_config(synthetic_data_dir, cache_dir, num_epochs=5, learning_rate=1e30,
                            checkpoint_every_steps=1000)
    with pytest.raises(UserError) as raised:
        train.train_and_evaluate(diverging, str(tmp_path), allow_config_change=True)
    kept = latest_steps(tmp_path)
    assert re.fullmatch(
        rf"training diverged at step (\d+): loss nan, learning rate \d\.\d+e\+(29|30)\. Nothing after step {kept[-1]} was "
        r"saved \(its checkpoint is kept\): to resume from it, run again with --allow_config_change and a lower "
        r"learning rate; or train anew \(another --workdir\) with --config.on_nonfinite=skip to skip such steps",
        str(raised.value))
    assert kept == good_steps
    # Nothing non-finite was written: every kept state and the best parameters are finite; the metrics and the
    # good run's checkpoint are as they were.
    for step in kept:
        assert _all_finite(_restore_latest_step(tmp_path, config, step))
    for before, after in zip(jax.tree.leaves(good_params),
                             jax.tree.leaves(_restore_latest_step(tmp_path, config, good_steps[-1]))):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    assert metrics(tmp_path) == good_metrics
    _, best = workdir_files.restore_model(str(tmp_path), config, "best")
    assert _all_finite(best)
    assert not (tmp_path / workdir_files.LOCK).exists()
    # And the workdir resumes from the last good checkpoint with a sane learning rate.
    result = train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=4), str(tmp_path),
                                      allow_config_change=True)
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3, 4] and result["training"]["steps"] == 12


def test_a_stop_request_while_diverging_saves_nothing_and_says_so(synthetic_data_dir, cache_dir, tmp_path,
                                                                  monkeypatch):
    """SIGTERM arriving after the parameters went non-finite, before any check saw it: the save it asks for is
    refused, and the divergence is the one line (it was a traceback)."""
    from siamese_jax import train_step

    real_make_dispatch = train_step.make_dispatch

    def terminated_after_four_steps(*args):
        dispatch, calls = real_make_dispatch(*args), {"n": 0}

        def counted(*inputs):
            calls["n"] += 1
            out = dispatch(*inputs)
            if calls["n"] == 4:
                os.kill(os.getpid(), signal.SIGTERM)  # As a cluster's scheduler would.
            return out

        return counted

    monkeypatch.setattr(train_step, "make_dispatch", terminated_after_four_steps)
    # No logging point or periodic save in the way: 9 steps an epoch, the stop after the 4th.
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2, learning_rate=1e30, log_every_steps=1000,
                         checkpoint_every_steps=1000, pairs_per_epoch=504)
    with pytest.raises(UserError, match=r"^training diverged at step 4: loss nan, .* Nothing after step 0 was saved "
                                        r"\(no checkpoint yet\)"):
        train.train_and_evaluate(config, str(tmp_path))
    assert latest_steps(tmp_path) == [] and not (tmp_path / workdir_files.LOCK).exists()


def test_nan_validation_scores_are_divergence_even_with_finite_parameters(synthetic_data_dir, cache_dir, tmp_path,
                                                                         monkeypatch):
    """Huge but finite parameters can score NaN (the CPU config at Adam 1e12): the run stops as diverged, keeping
    the last epoch whose validation was finite, and never evaluates or reports the broken one as a result."""
    from siamese_jax.evaluation import evaluators

    calls = {"n": 0}
    real = evaluators.pair_logits

    def nan_from_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        logits = real(*args, **kwargs)
        return np.where(np.arange(len(logits)) == 0, np.nan, logits) if calls["n"] > 2 else logits  # 2 evaluators.

    monkeypatch.setattr(evaluators, "pair_logits", nan_from_the_second_epoch)
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3, checkpoint_every_steps=1000)
    config.validation.evals = ("verification", "verification_any_group", "one_shot")
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 6: validation verification_accuracy, "
                                                r"verification_auc, verification_any_group_accuracy, "
                                                r"verification_any_group_auc not finite \(train loss [\d.]+\), "
                                                r"learning rate .* Nothing after step 3 was saved"):
        train.train_and_evaluate(config, str(tmp_path))
    assert [r["epoch"] for r in metrics(tmp_path)] == [1]
    assert latest_steps(tmp_path) == [3] and not (tmp_path / "eval.json").exists()


def test_the_epoch_callback_sees_each_epochs_metrics_and_can_stop_training(synthetic_data_dir, cache_dir, tmp_path):
    seen = []

    def stop_after_two(epoch, scores):
        seen.append((epoch, sorted(scores)))
        return "enough" if epoch == 2 else None

    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=4)
    result = train.Trainer(train.upgrade_config(config), str(tmp_path), epoch_callback=stop_after_two).run(evaluate=False)
    names = sorted(key[len("val_"):] for key in metrics(tmp_path)[0] if key.startswith("val_"))
    assert seen == [(1, names), (2, names)] and "one_shot_accuracy" in names
    assert result["training"]["stopped_by"] == "enough" and result["training"]["epochs"] == 2
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / workdir_files.LOCK).exists()


def _restore_latest_step(workdir: Path, config, step: int):
    """The parameters of one step of WORKDIR/checkpoints/latest."""
    from siamese_jax.checkpointing import Checkpoints

    checkpoints = Checkpoints(str(workdir))
    metadata = checkpoints.latest.item_metadata(step)["state"]
    tree = getattr(metadata, "tree", metadata)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree,
                          is_leaf=lambda node: isinstance(node, ocp.metadata.ArrayMetadata))
    state = checkpoints.latest.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    checkpoints.close()
    return state["params"]


def test_skipping_non_finite_steps_keeps_training(synthetic_data_dir, cache_dir, tmp_path, monkeypatch, capsys):
    """on_nonfinite='skip' drops the update of a step whose loss is not finite, and says how many it dropped."""
    import jax.numpy as jnp

    from siamese_jax import losses

    real_call = losses.Objective.__call__

    def poisoned(self, model, variables, embeddings, left, right, same):
        # NaN on about half the steps, decided by the step's random batch, in the loss and its gradients alike.
        loss = real_call(self, model, variables, embeddings, left, right, same)
        return loss * jnp.where(jnp.argmax(embeddings[:, 0]) % 2 == 0, jnp.nan, 1.0)

    monkeypatch.setattr(losses.Objective, "__call__", poisoned)
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2, on_nonfinite="skip")
    result = train.train_and_evaluate(config, str(tmp_path))
    skipped = [r.get("skipped_steps", 0) for r in metrics(tmp_path)]
    assert result["training"]["epochs"] == 2 and 0 < sum(skipped) < 6
    assert all(np.isfinite(r["train_loss"]) for r in metrics(tmp_path))  # The mean of the finite steps.
    assert _all_finite(latest_params(tmp_path, config))
    out = capsys.readouterr().out
    assert any(f"({n} steps skipped: loss not finite)" in out for n in skipped if n)
    # Each epoch logs the learning rate the optimiser applied at its first step: skipped updates do not advance
    # its schedule.
    from siamese_jax import optim

    _, schedules = optim.create_optimizer(config, latest_params(tmp_path, config), steps_per_epoch=3)
    assert skipped[0] > 0  # So that the applied and the nominal learning rates of epoch 2 differ.
    for epoch, record in enumerate(metrics(tmp_path)):
        assert record["hyperparameters"] == schedules.at(3 * epoch - sum(skipped[:epoch]))


# Two writers.

def _start_training(config_file: Path, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "siamese_jax.train", f"--config={config_file}",
                             f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_a_second_training_of_a_running_workdir_refuses_and_a_killed_ones_lock_is_taken_over(
        synthetic_data_dir, cache_dir, tmp_path):
    # Saves within the epoch, so that a checkpoint is there to resume when the kill comes before the epoch's save.
    config_file = tiny_config_file(tmp_path / "long.py", synthetic_data_dir, cache_dir, num_epochs=200,
                                   patience=1000, checkpoint_every_steps=2)
    workdir = tmp_path / "run"
    first = _start_training(config_file, workdir)
    try:
        lock = workdir / workdir_files.LOCK
        deadline = time.time() + 120
        while not lock.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert lock.exists(), first.stderr.read() if first.poll() is not None else "no lock after 120 s"
        second = subprocess.run([sys.executable, "-m", "siamese_jax.train", f"--config={config_file}",
                                 f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert second.returncode == 1 and "Traceback" not in second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line == (f"error: {workdir} is in use by process {first.pid} on {socket.gethostname()} (since "
                        f"{json.loads(lock.read_text())['since']}; {lock}): wait for it to end or stop it, or pass "
                        "another --workdir")
        # The first run goes on, its files untouched by the second: it finishes an epoch.
        while not (workdir / "metrics.jsonl").exists() or not metrics(workdir):
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock.exists()  # A killed process cannot clean up.
    epochs_before = len(metrics(workdir))
    third = subprocess.run([sys.executable, "-m", "siamese_jax.train", f"--config={config_file}",
                            f"--workdir={workdir}", "--config.num_epochs=" + str(epochs_before + 1)], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines()[0] == (f"taking over {lock}: its process {first.pid} on {socket.gethostname()} "
                                            "is no longer running")
    assert "resuming from step" in third.stdout and not lock.exists()
    assert [r["epoch"] for r in metrics(workdir)] == list(range(1, epochs_before + 2))


def _race_for_the_lock(workdir: str, pause_s: float, start, results) -> None:
    """In a forked process: waits for `start`, then takes the workdir's lock, pausing `pause_s` after each read of
    the lock file (as a busy machine may, between reading the file and acting on it), and holds it for a second;
    puts ('held', pid) or ('refused', pid, message) on `results`."""
    from etils import epath

    path_type = type(epath.Path(workdir))
    for name in ("read_text", "read_bytes"):
        real = getattr(path_type, name)
        setattr(path_type, name, lambda self, *a, _real=real, **k: (_real(self, *a, **k), time.sleep(pause_s))[0])
    start.wait()
    try:
        with workdir_files.TrainingLock(workdir):
            results.put(("held", os.getpid()))
            time.sleep(1.0)
    except UserError as error:
        results.put(("refused", os.getpid(), str(error)))


def test_two_processes_racing_for_a_dead_processs_lock_cannot_both_take_it(tmp_path):
    import multiprocessing

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / workdir_files.LOCK).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead.stdout), "since": "then"}))
    context = multiprocessing.get_context("fork")  # The children touch files only, never JAX.
    start, results = context.Event(), context.Queue()
    racers = [context.Process(target=_race_for_the_lock, args=(str(tmp_path), pause_s, start, results))
              for pause_s in (0.2, 0.5)]
    for racer in racers:
        racer.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    held = [o for o in outcomes if o[0] == "held"]
    refused = [o for o in outcomes if o[0] == "refused"]
    assert len(held) == 1 and len(refused) == 1, outcomes
    assert f"is in use by process {held[0][1]} on {socket.gethostname()}" in refused[0][2]
    assert not (tmp_path / workdir_files.LOCK).exists()  # The winner removed it when it let go.


def test_a_lock_file_of_a_running_process_without_the_flock_is_not_taken_over(tmp_path):
    # As a training started by a version that locked by the file alone leaves it while it runs.
    (tmp_path / workdir_files.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                           "since": "then"}))
    with pytest.raises(UserError, match=rf"is in use by process {os.getpid()} on "):
        workdir_files.TrainingLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / workdir_files.LOCK).read_text())["since"] == "then"  # Left as it was.


def test_evaluation_reads_a_workdir_while_it_is_locked(trained_omniglot):
    _, workdir, _ = trained_omniglot
    with workdir_files.TrainingLock(str(workdir)):
        from siamese_jax import evaluate

        result, _ = evaluate.evaluate_workdir(str(workdir))
    assert result["runs"]["trials"] > 0


# Damaged checkpoints and a full disk.

def _truncate_newest_state(workdir: Path) -> int:
    """Cuts the largest file of the newest latest step in half, as a killed copy would; returns that step."""
    step = latest_steps(workdir)[-1]
    files = [p for p in (workdir / "checkpoints" / "latest" / str(step)).rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    return step


def test_a_truncated_checkpoint_is_skipped_and_the_one_before_it_resumes(synthetic_data_dir, cache_dir, tmp_path,
                                                                         capsys):
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2)
    train.train_and_evaluate(config, str(tmp_path))
    steps = latest_steps(tmp_path)
    assert len(steps) == 2  # The last two are kept.
    damaged = _truncate_newest_state(tmp_path)
    capsys.readouterr()
    result = train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=3), str(tmp_path))
    err = capsys.readouterr().err
    assert f"warning: checkpoint step {damaged} in " in err and "cannot be read" in err and "skipping it" in err
    assert result["training"]["epochs"] == 3 and result["training"]["steps"] == 9
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3]


def test_a_step_missing_a_file_is_skipped_as_damaged(synthetic_data_dir, cache_dir, tmp_path, capsys):
    train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=2), str(tmp_path))
    newest, older = sorted(latest_steps(tmp_path), reverse=True)
    files = [p for p in (tmp_path / "checkpoints" / "latest" / str(newest)).rglob("*") if p.is_file()]
    max(files, key=lambda p: p.stat().st_size).unlink()  # As a copy killed halfway leaves a step.
    capsys.readouterr()
    result = train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=3), str(tmp_path))
    out, err = capsys.readouterr()
    assert f"warning: checkpoint step {newest} in " in err and "skipping it" in err
    assert f"resuming from step {older} " in out and result["training"]["epochs"] == 3


def test_no_readable_checkpoint_is_one_clear_line_not_a_fresh_start(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=1, checkpoint_every_steps=2)  # Two steps kept.
    train.train_and_evaluate(config, str(tmp_path))
    for step in latest_steps(tmp_path):
        for file in (tmp_path / "checkpoints" / "latest" / str(step)).rglob("*"):
            if file.is_file() and file.stat().st_size > 100:
                file.write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable checkpoint in .*checkpoints/latest: steps \[\d+, \d+\] are all "
                                        r"damaged.*delete that folder or pass a new --workdir"):
        train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=2), str(tmp_path))
    assert [r["epoch"] for r in metrics(tmp_path)] == [1]


def test_a_full_disk_stops_with_one_line_and_keeps_what_was_saved(synthetic_data_dir, cache_dir, tmp_path,
                                                                  monkeypatch):
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=1, checkpoint_every_steps=2)
    train.train_and_evaluate(config, str(tmp_path))
    saved = latest_steps(tmp_path)
    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        if step > saved[-1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    two_epochs = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2, checkpoint_every_steps=2)
    with pytest.raises(UserError) as raised:
        train.train_and_evaluate(two_epochs, str(tmp_path))
    assert str(raised.value) == (  # The first periodic save after the resume.
        f"cannot write checkpoint step {saved[-1] + 1} in {tmp_path}/checkpoints/latest: No space left on device; "
        f"steps {saved} are kept there. Free space (or fix the folder), then run the same command to resume")
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    assert latest_steps(tmp_path) == saved and not (tmp_path / workdir_files.LOCK).exists()
    result = train.train_and_evaluate(two_epochs, str(tmp_path))
    assert result["training"]["epochs"] == 2


def test_resuming_with_other_parameter_shapes_names_the_keys(synthetic_data_dir, cache_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=1), str(tmp_path))
    wider = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2)
    wider.model.features = (8, 12)
    wider.image_size = 20
    with pytest.raises(UserError, match=r"different model \(image_size: 16 -> 20, model.features: \(8, 8\) -> "
                                        r"\(8, 12\) differ from this config\)"):
        train.train_and_evaluate(wider, str(tmp_path))


def test_resuming_with_another_recipe_is_refused_naming_the_keys_unless_allowed(synthetic_data_dir, cache_dir,
                                                                               tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=1), str(tmp_path))
    faster = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2, learning_rate=0.01, on_nonfinite="skip")
    with pytest.raises(UserError) as raised:
        train.train_and_evaluate(faster, str(tmp_path))
    assert str(raised.value) == (
        f"{tmp_path} trained under another config (learning_rate: 0.003 -> 0.01, on_nonfinite: 'stop' -> 'skip'): "
        "resuming would mix two recipes in one run. Pass a new --workdir, or resume anyway with train "
        "--allow_config_change (configs.jsonl keeps each config the run trained under)")
    assert [r["epoch"] for r in metrics(tmp_path)] == [1]
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.003  # Not replaced either.
    # Allowed, a checkpoint whose optimiser state is not the new optimiser's is named so, not called damaged.
    sgd = tiny_config(synthetic_data_dir, cache_dir, num_epochs=2, optimizer="sgd_paper")
    sgd.learning_rates = ml_collections.ConfigDict({"*": 0.01})
    sgd.momenta = ml_collections.ConfigDict({"*": 0.9})
    with pytest.raises(DataError, match=r"checkpoint step 3 in .* holds another training state \(\d+ arrays where "
                                        r"this config's training state has \d+\): the run was trained under another "
                                        r"config"):
        train.train_and_evaluate(sgd, str(tmp_path), allow_config_change=True)
    # Another learning rate, allowed, resumes; configs.jsonl holds each config in order.
    faster.on_nonfinite = "stop"
    assert train.train_and_evaluate(faster, str(tmp_path), allow_config_change=True)["training"]["epochs"] == 2
    history = [json.loads(line) for line in (tmp_path / workdir_files.CONFIG_HISTORY).read_text().splitlines()]
    # The refused resume and the one that failed to restore left no record.
    assert [(h["config"]["learning_rate"], h["config"]["optimizer"], h["after_epoch"]) for h in history] == [
        (0.003, "adam", 0), (0.01, "adam", 1)]
    # Its length and evaluation alone may change without the flag.
    longer = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3, learning_rate=0.01)
    longer.test.tasks, longer.model.test_time_turns = 8, 2
    assert train.train_and_evaluate(longer, str(tmp_path))["training"]["epochs"] == 3


def test_a_read_error_on_the_newest_step_is_raised_not_taken_for_damage(synthetic_data_dir, cache_dir, tmp_path,
                                                                          monkeypatch, capsys):
    train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=2), str(tmp_path))
    newest = latest_steps(tmp_path)[-1]
    real_restore = ocp.CheckpointManager.restore

    def failing_read(self, step, *args, **kwargs):
        if step == newest:  # A mount that fails for a while: the step's files are whole.
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_restore(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing_read)
    capsys.readouterr()
    with pytest.raises(UserError, match=rf"cannot read checkpoint step {newest} in .*checkpoints/latest \(OSError: "
                                        r".*Input/output error\); it was not skipped, and nothing is lost"):
        train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=3), str(tmp_path))
    assert "skipping it" not in capsys.readouterr().err
    monkeypatch.setattr(ocp.CheckpointManager, "restore", real_restore)
    result = train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=3), str(tmp_path))
    assert f"resuming from step {newest} " in capsys.readouterr().out and result["training"]["epochs"] == 3


def test_the_time_limit_counts_each_epochs_validation(synthetic_data_dir, cache_dir, tmp_path, monkeypatch):
    from siamese_jax.evaluation import evaluators

    real_validation = evaluators.Validation.__call__

    def slow_validation(self, *args, **kwargs):
        time.sleep(2.0)  # Validation that takes far longer than the epoch's steps.
        return real_validation(self, *args, **kwargs)

    monkeypatch.setattr(evaluators.Validation, "__call__", slow_validation)
    train.Trainer(train.upgrade_config(tiny_config(synthetic_data_dir, cache_dir, num_epochs=2)),
                  str(tmp_path)).run(evaluate=False)
    wall_time = metrics(tmp_path)[-1]["wall_time"]
    # 1.5 s left: enough for epoch 3's steps, not for its validation too.
    limited = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3, max_train_seconds=wall_time + 1.5)
    record = train.Trainer(train.upgrade_config(limited), str(tmp_path)).run(evaluate=False)["training"]
    assert (record["stopped_by"], record["epochs"]) == ("time_limit", 2)
    assert record["wall_time_s"] <= wall_time + 1.5


# Hostile and odd files.

def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_odd_image_modes_convert_to_grayscale_or_rgb():
    ink = np.zeros((20, 20), np.uint8)
    ink[5:15, 9:11] = 255  # A white bar on black.
    palette = Image.fromarray(ink, "L").convert("P")
    transparent = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    transparent.paste((0, 0, 0, 255), (9, 5, 11, 15))  # Black strokes on a transparent page.
    sixteen = Image.fromarray(ink.astype(np.uint16) * 257)  # Mode I;16.
    assert sixteen.mode == "I;16"
    cmyk = Image.fromarray(np.stack([ink] * 3, -1), "RGB").convert("CMYK")
    for name, image in (("palette", palette), ("alpha", transparent), ("16-bit", sixteen), ("cmyk", cmyk)):
        data = _png(image) if name != "cmyk" else _jpeg(image)
        opened = images.open_image(data, name)
        assert opened.mode in ("L", "RGB"), name
        strokes = images.strokes_input(data, name, 20)
        assert strokes[10, 10] > 200 and strokes[2, 2] < 50, name  # The bar is ink, the page background.


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("make, message", [
    (lambda: b"", "x.png is an empty file (0 bytes), not an image"),
    (lambda: _png(Image.new("L", (50, 50), 255))[:60], "cannot decode image x.png"),
    (lambda: b"GIF89a not really", "x.png is not an image file"),
    (lambda: _png(Image.new("1", (20_000, 20_000))), "x.png is 20,000 x 20,000 pixels, more than the 40,000,000 an "
                                                     "image may have here"),
])
def test_empty_truncated_fake_and_bomb_images_are_one_clear_error(make, message):
    with pytest.raises(DataError) as raised:
        images.strokes_input(make(), "x.png", 28)
    assert str(raised.value).startswith(message)


def test_predict_refuses_a_decompression_bomb_in_one_line(trained_omniglot, tmp_path):
    _, workdir, _ = trained_omniglot
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(Image.new("1", (20_000, 20_000))))
    done = subprocess.run([sys.executable, "-m", "siamese_jax.predict", "compare", str(bomb), str(bomb),
                           f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {bomb} is 20,000 x 20,000 pixels")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../escape.png", "/etc/escape.png", "runs/../../escape.png", "C:/escape.png"])
def test_zip_and_tar_members_that_escape_are_refused_by_name(name, tmp_path):
    archive = _zip(tmp_path / "runs.zip", {"run01/ok.png": b"x", name: b"x"})
    with pytest.raises(DataError, match=f"holds a member whose path leaves the archive's folder: {name!r}"):
        sources.FileTree(archive)
    tar_path = tmp_path / "lfw.tgz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match=f"holds a member whose path leaves the archive's folder: {name!r}"):
        sources.FileTree(tar_path)


def test_a_zip_member_claiming_more_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 1_000_000)
    archive = _zip(tmp_path / "bomb.zip", {"run01/bomb.png": bytes(2_000_000)})  # 2 MB of zeros, 2 kB packed.
    assert archive.stat().st_size < 10_000
    with pytest.raises(DataError, match=r"member 'run01/bomb.png' claims 2,000,000 bytes unpacked, more than the "
                                        r"1,000,000 a file here may hold"):
        sources.FileTree(archive)


def test_evaluate_with_a_hostile_runs_zip_is_one_line(trained_omniglot, tmp_path):
    _, workdir, _ = trained_omniglot
    archive = _zip(tmp_path / "evil.zip", {"../../outside/run01/class_labels.txt": b"x"})
    done = subprocess.run([sys.executable, "-m", "siamese_jax.evaluate", f"--workdir={workdir}", f"--runs={archive}",
                           f"--output={tmp_path / 'eval.json'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {archive} holds a member whose path leaves the archive's folder")
    assert not (tmp_path / "eval.json").exists() and not (tmp_path.parent / "outside").exists()


def test_a_step_another_process_cannot_read_is_skipped_by_every_process(synthetic_data_dir, cache_dir, tmp_path,
                                                                        monkeypatch, capsys):
    import types

    from siamese_jax import checkpointing

    train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=2), str(tmp_path))
    newest, older = sorted(latest_steps(tmp_path), reverse=True)
    # This process reads both steps; another one (simulated) cannot read the newest: all must resume the older.
    votes = []  # Each step's outcome here; another process reports the newest step damaged (1).
    monkeypatch.setattr(checkpointing, "distributed", types.SimpleNamespace(
        worst_everywhere=lambda outcome: votes.append(outcome) or (max(outcome, 1) if len(votes) == 1 else outcome),
        from_primary=list))
    capsys.readouterr()
    result = train.train_and_evaluate(tiny_config(synthetic_data_dir, cache_dir, num_epochs=3), str(tmp_path))
    out, err = capsys.readouterr()
    assert votes[:2] == [0, 0]  # This process read the newest step, and then the older one.
    assert f"resuming from step {older} " in out
    assert f"warning: checkpoint step {newest} in " in err and "cannot be read on another process" in err
    assert result["training"]["steps"] == 9 and [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3]
