"""launch/slurm_gpu.sh under a real Slurm: a one-node cluster on localhost (munged, slurmctld, slurmd; no
systemd), whose CPUs stand in for GPUs through --per=cpu, and training through --distributed."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import pytest

from siamese_jax import train
from siamese_jax.config_files import upgrade_config
from tests.conftest import DEVICE_COUNT, REPO, free_port, tiny_config, tiny_config_file, xla_flags_less
from tests.conftest import metrics as _metrics

pytestmark = pytest.mark.slow  # Each test trains in two processes under the scheduler.

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


@pytest.fixture(scope="module")
def slurm():
    """The environment of a running one-node Slurm cluster on localhost; stopped after the module."""
    missing = [name for name in DAEMONS if not shutil.which(name) and not os.path.exists(f"/usr/sbin/{name}")]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): .ci/run installs slurm-wlm with apt")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("two Slurm tasks need two CPUs")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start tasks")
    # munged refuses a socket in a folder that not everyone may enter, as pytest's temporary folders are.
    root = Path(tempfile.mkdtemp(prefix="siamese_jax_slurm_"))
    root.chmod(0o755)
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    (root / "munge.key").write_bytes(os.urandom(1024))
    (root / "munge.key").chmod(0o600)
    host = socket.gethostname()
    (root / "slurm.conf").write_text("\n".join([
        "ClusterName=siamese_jax_test", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={root}/munge.sock", "CredType=cred/munge",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "MpiDefault=none", "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2", "KillWait=30",
        # slurmd refuses to offer more CPUs than the machine has: two tasks need two.
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    started = time.time()
    subprocess.run(["munged", f"--socket={root}/munge.sock", f"--key-file={root}/munge.key",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"],
                   check=True, env=env)
    subprocess.run(["slurmctld", "-c", "-f", str(root / "slurm.conf")], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(root / "slurm.conf"), "-N", host], check=True, env=env)
    while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout:
        assert time.time() - started < 60, (root / "slurmctld.log").read_text()[-2000:]
        time.sleep(0.2)
    env["SLURM_TEST_STARTUP_S"] = f"{time.time() - started:.2f}"
    yield env
    subprocess.run(["scancel", "--user=root"], env=env)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{name}.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()])
    shutil.rmtree(root, ignore_errors=True)


def _submit(slurm, workdir: Path, config_file: Path, *train_flags) -> str:
    """Submits launch/slurm_gpu.sh --per=cpu with 2 tasks of 1 CPU device; the job id."""
    # Each task's devices: --cpu_devices, which a device count in XLA_FLAGS would override.
    env = {**slurm, "XLA_FLAGS": xla_flags_less(DEVICE_COUNT)}
    done = subprocess.run(["bash", "launch/slurm_gpu.sh", "--nodes=1", "--per=cpu", "--gpus_per_node=2",
                           "--cpu_devices=1", "--time=10", f"--python={sys.executable}", f"--config={config_file}",
                           f"--workdir={workdir}", "--", *train_flags],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]  # "Submitted batch job N"


def _wait(slurm, job: str, until=lambda: False, timeout_s: float = 240) -> None:
    """Waits until the job has left the queue, or `until()` holds."""
    deadline = time.time() + timeout_s
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=slurm).stdout.strip():
        if until():
            return
        assert time.time() < deadline, f"job {job} still queued after {timeout_s} s"
        time.sleep(0.5)


def test_two_tasks_train_as_one_mesh_and_a_cancelled_job_resubmitted_resumes(slurm, synthetic_data_dir, cache_dir,
                                                                            tmp_path):
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=40)
    workdir = tmp_path / "run"
    started = time.time()
    job = _submit(slurm, workdir, config_file)
    _wait(slurm, job, until=lambda: (workdir / "metrics.jsonl").exists() and len(_metrics(workdir)) >= 2)
    subprocess.run(["scancel", job], env=slurm, check=True)  # SIGTERM to every task, as at a time limit.
    _wait(slurm, job)
    log = (workdir / f"slurm-{job}.out").read_text()
    assert "data parallel over 2 cpu devices" in log and "error: interrupted (SIGTERM); saved step" in log, log[-3000:]
    done = len(_metrics(workdir))
    again = _submit(slurm, workdir, config_file, "--config.num_epochs=" + str(done + 1))
    _wait(slurm, again)
    log = (workdir / f"slurm-{again}.out").read_text()
    assert "resuming from step" in log and "official runs" in log, log[-3000:]
    records = _metrics(workdir)
    assert [r["epoch"] for r in records] == list(range(1, done + 2))  # Nothing lost, nothing trained twice.
    assert json.loads((workdir / "eval.json").read_text())["provenance"]["device"].startswith("cpu:cpu x2 in 2 processes")
    # The two tasks' first epochs, before the cancel, are those of one process driving both devices.
    alone = tmp_path / "alone"
    train.Trainer(upgrade_config(tiny_config(synthetic_data_dir, cache_dir, num_epochs=40)), str(alone),
                  devices=jax.devices()[:2], epoch_callback=lambda epoch, _: "enough" if epoch == 2 else None
                  ).run(evaluate=False)
    for a, b in zip(records[:2], _metrics(alone), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    print(f"cluster start-up {slurm['SLURM_TEST_STARTUP_S']} s, two jobs {time.time() - started:.1f} s")


def _task_pids(slurm, job: str, task: int) -> list[int]:
    """The process ids of one task of the job's first step (scontrol listpids: PID JOBID STEPID LOCALID GLOBALID)."""
    rows = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, env=slurm).stdout.splitlines()
    return [int(row.split()[0]) for row in rows[1:] if row.split()[2:5:2] == ["0", str(task)]]


def test_a_killed_task_stops_the_other_within_seconds_with_one_line(slurm, synthetic_data_dir, cache_dir, tmp_path):
    config_file = tiny_config_file(tmp_path / "tiny.py", synthetic_data_dir, cache_dir, num_epochs=40)
    workdir = tmp_path / "run"
    job = _submit(slurm, workdir, config_file)
    _wait(slurm, job, until=lambda: (workdir / "metrics.jsonl").exists() and _task_pids(slurm, job, 1))
    for pid in _task_pids(slurm, job, 1):
        os.kill(pid, signal.SIGKILL)  # As the kernel's OOM killer or a dead node would.
    killed = time.time()
    _wait(slurm, job, timeout_s=120)
    ended_s = time.time() - killed
    log = (workdir / f"slurm-{job}.out").read_text()
    # Task 0 ends with its one line within seconds: no traceback from its next collective, no wait at JAX's
    # shutdown barrier for the heartbeat timeout (100 s), no C++ stack trace.
    ours = [line for line in log.splitlines() if line.startswith("error: ")]
    assert ours and ours[0].startswith("error: process 0 of 2 lost another process of the run ("), log[-3000:]
    assert len(ours) == 1 and "the same command resumes from the last checkpoint" in ours[0]
    assert "Traceback" not in log and "Check failure" not in log
    assert ended_s < 30, log[-3000:]
    print(f"task 0 ended {ended_s:.1f} s after task 1 was killed")
