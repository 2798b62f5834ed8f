"""Data parallelism: the device count is an execution detail, and checkpoints move between counts."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from siamese_jax import train
from siamese_jax.errors import ConfigError
from siamese_jax.workdir import TrainingLock
from tests.conftest import NUM_TEST_DEVICES, REPO, devices_env, free_port, tiny_config, tiny_config_file
from tests.conftest import latest_params as _latest_params
from tests.conftest import metrics as _metrics

pytestmark = pytest.mark.slow  # Every test here trains, some in several processes.


@pytest.fixture(scope="module")
def one_and_eight(synthetic_data_dir, cache_dir, tmp_path_factory):
    """The same tiny run in a process of 1 device and on 8 as one mesh over two processes of 4 forced CPU devices
    each, all compiled with XLA's MLIR fusion emitters: (config, workdir on 1, workdir on 8, the two 4-device
    processes' stdout)."""
    assert jax.device_count() == NUM_TEST_DEVICES
    config = tiny_config(synthetic_data_dir, cache_dir, num_epochs=3)
    one, eight = tmp_path_factory.mktemp("one_device"), tmp_path_factory.mktemp("eight_devices")
    config_file = tiny_config_file(eight.parent / "eight.py", synthetic_data_dir, cache_dir, num_epochs=3)
    port = free_port()
    processes = [_train_process(config_file, eight, i, 2, port, mlir_emitters=True) for i in range(2)]
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "siamese_jax.train", f"--config={config_file}", f"--workdir={one}"], cwd=REPO,
        env={**os.environ, **devices_env(1, mlir_emitters=True)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for process in processes:  # Left waiting for a peer that failed, or past the timeout.
            process.kill()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    return config, one, eight, [stdout for stdout, _ in outputs[:2]]


def test_eight_devices_in_two_processes_follow_the_one_device_trajectory(one_and_eight):
    config, one, eight, outputs = one_and_eight
    on_one, on_eight = _metrics(one), _metrics(eight)
    # Written once, by process 0 alone; one run's steps whatever the device count.
    assert [r["step"] for r in on_one] == [r["step"] for r in on_eight] == [3, 6, 9]
    for a, b in zip(on_one, on_eight):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_one_shot_accuracy"] == pytest.approx(b["val_one_shot_accuracy"], abs=1 / 40)
    params_one = _latest_params(one, config, jax.devices()[:1])
    params_eight = _latest_params(eight, config, jax.devices())
    for x, y in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_eight)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-5)
    assert "data parallel over 8 cpu devices" in outputs[0]
    assert "official runs" in outputs[0] and "official runs" not in outputs[1]
    result = json.loads((eight / "eval.json").read_text())
    assert result["provenance"]["device"].startswith("cpu:cpu x8 in 2 processes")


def test_checkpoints_restore_on_another_device_count(one_and_eight):
    config, one, eight, _ = one_and_eight
    from_eight_on_one = _latest_params(eight, config, jax.devices()[:1])
    from_one_on_eight = _latest_params(one, config, jax.devices())
    leaf = jax.tree.leaves(from_eight_on_one)[0]
    assert len(leaf.sharding.device_set) == 1
    assert len(jax.tree.leaves(from_one_on_eight)[0].sharding.device_set) == NUM_TEST_DEVICES
    for x, y in zip(jax.tree.leaves(from_eight_on_one), jax.tree.leaves(_latest_params(eight, config, jax.devices()))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_begun_on_eight_devices_resumes_on_two(one_and_eight, synthetic_data_dir, cache_dir, tmp_path):
    _, _, eight, _ = one_and_eight
    workdir = tmp_path / "moved"
    shutil.copytree(eight, workdir)
    longer = tiny_config(synthetic_data_dir, cache_dir, num_epochs=4)
    train.train_and_evaluate(longer, str(workdir), devices=jax.devices()[:2])
    records = _metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[:3] == _metrics(eight)


def test_batch_that_the_devices_do_not_divide(synthetic_data_dir, cache_dir, tmp_path):
    config = tiny_config(synthetic_data_dir, cache_dir, batch_size=9, classes_per_group=3, images_per_class=3)
    with pytest.raises(ConfigError, match=f"not divisible by the {NUM_TEST_DEVICES} devices"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def _train_process(config_file, workdir, process_id, num_processes, port, *extra, timeout_s=60, devices=4,
                   mlir_emitters=False):
    """A `siamese_jax.train` process of a localhost multi-process run with `devices` CPU devices (conftest's
    devices_env)."""
    command = [sys.executable, "-m", "siamese_jax.train", f"--config={config_file}", f"--workdir={workdir}",
               f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
               f"--process_id={process_id}", f"--distributed_timeout={timeout_s}", *extra]
    env = {**os.environ, **devices_env(devices, mlir_emitters=mlir_emitters)}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_unreachable_coordinator_gives_up_with_a_clear_message(synthetic_data_dir, cache_dir, tmp_path):
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir)
    started = time.time()
    process = _train_process(config_file, tmp_path / "run", 1, 2, free_port(), timeout_s=3)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "did not form within 3s" in stderr and "--coordinator_address" in stderr
    assert "Traceback" not in stderr and "Check failure" not in stderr
    assert time.time() - started < 60


def test_process_count_mismatch_is_refused(synthetic_data_dir, cache_dir, tmp_path):
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir)
    port = free_port()
    coordinator = _train_process(config_file, tmp_path / "run", 0, 2, port)
    stray = _train_process(config_file, tmp_path / "run", 1, 3, port)
    try:
        _, stderr = stray.communicate(timeout=120)
    finally:
        coordinator.kill()  # Left waiting for its peer at the first collective.
        coordinator.communicate()
    assert stray.returncode == 1
    assert "--num_processes=3 but the run at localhost" in stderr and "has 2 processes" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("flags, message", [
    (["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=2"], "must lie in [0, --num_processes=2)"),
    (["--coordinator_address=localhost:1234"], "go together"),
])
def test_bad_process_flags(flags, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "siamese_jax.train", "--config=configs/omniglot_cpu.py", f"--workdir={tmp_path}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_local_device_ids_reach_jax_and_bad_ones_are_one_line(monkeypatch):
    from siamese_jax import distributed, train

    seen = {}
    monkeypatch.setattr(jax.distributed, "initialize", lambda *args, **kwargs: seen.update(kwargs))
    distributed.initialize(auto=True, local_device_ids=train.local_device_ids(["0", "1", "2", "3"]))
    assert seen["local_device_ids"] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="--local_device_ids must be comma-separated device numbers, got 'a,1'"):
        train.local_device_ids(["a", "1"])
    with pytest.raises(ConfigError, match=r"--local_device_ids must be device numbers >= 0, got \[-1\]"):
        distributed.initialize(auto=True, local_device_ids=[-1])


def _ended_together(processes, timeout_s=90):
    """Each process's (returncode, last stderr line); fails if any is still waiting after `timeout_s`."""
    outputs = [p.communicate(timeout=timeout_s) for p in processes]
    return [(p.returncode, err.strip().splitlines()[-1] if err.strip() else "") for p, (_, err) in zip(processes, outputs)]


def test_a_refused_lock_stops_every_process_not_only_process_0(synthetic_data_dir, cache_dir, tmp_path):
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=1)
    workdir, port = tmp_path / "run", free_port()
    # Held by this (live) test process, as by a training that is running. Process 1 must stop with process 0, not
    # wait at its first collective for the heartbeat timeout (100 s).
    with TrainingLock(str(workdir)):
        (zero, zero_line), (one, one_line) = _ended_together([_train_process(config_file, workdir, i, 2, port)
                                                              for i in range(2)])
    assert zero == one == 1
    assert zero_line.startswith("error: ") and f"is in use by process {os.getpid()}" in zero_line
    assert one_line == f"error: process 0 could not take the lock of {workdir} (its message says why): every process stops"


def test_processes_that_read_different_data_stop_with_one_line(synthetic_data_dir, cache_dir, tmp_path):
    same = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=1)
    workdir, port = tmp_path / "run", free_port()
    # Process 1 trains on fewer drawers: other images, as a stale copy of the data folder would give.
    processes = [_train_process(same, workdir, 0, 2, port),
                 _train_process(same, workdir, 1, 2, port, "--config.train.drawers=(1,2,3,4,5,6,7,8,9,10,11)")]
    for code, line in _ended_together(processes):
        assert code == 1
        assert line == ("error: processes [1] read other training data than process 0: give every process the same "
                        "config and data folder (on a file system all hosts see, or identical copies)")


def test_sigterm_to_one_process_stops_every_process_at_one_step(synthetic_data_dir, cache_dir, tmp_path):
    # 2 steps a dispatch, whose step numbers skip (JAX's agreed point is one past the fastest process's last
    # number). The signal lands in epoch 2; the agreed step is in it, or the first dispatch of epoch 3: JAX's
    # listener looks for SIGTERM once a second, and in these runs the agreement came at times only once the
    # loop paused for epoch 2's validation.
    epoch = 120
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=20,
                                   pairs_per_epoch=epoch * 56, checkpoint_every_steps=1000, steps_per_dispatch=2)
    workdir, port = tmp_path / "run", free_port()
    processes = [_train_process(config_file, workdir, i, 2, port, devices=1) for i in range(2)]
    while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").read_text():
        assert all(p.poll() is None for p in processes), processes[0].communicate()[1][-3000:]
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)  # Process 1 alone, as a scheduler preempting one task first would.
    # Both stop and save at one agreed step: a process that saved at its own step would run a collective that
    # its peer, still stepping, never joins.
    ended = _ended_together(processes, timeout_s=60)
    steps = set()
    for code, line in ended:
        assert code == 1, ended
        assert line.startswith("error: interrupted (SIGTERM); saved step "), ended
        steps.add(int(line.split("saved step ")[1].split(".")[0]))
    assert len(steps) == 1, ended
    assert epoch <= steps.pop() <= 2 * epoch + 2, ended
