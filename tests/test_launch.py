"""The launch scripts' dry runs print exactly the commands they would run."""

import shlex
import subprocess

import pytest

from tests.conftest import REPO


def _dry_run(script, *flags):
    done = subprocess.run(["bash", f"launch/{script}", "--dry-run", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_multi_gpu_runs_one_process_on_the_chosen_gpus():
    out = _dry_run("multi_gpu.sh", "--gpus=0,1,2,3", "--workdir=runs/gpu", "--", "--config.batch_size=256")
    assert shlex.split(out) == [
        "CUDA_VISIBLE_DEVICES=0,1,2,3", "python", "-m", "siamese_jax.train", "--config=configs/omniglot.py",
        "--workdir=runs/gpu", "--config.batch_size=256",
    ]


@pytest.mark.slow
def test_slurm_one_process_per_gpu_lets_jax_read_slurm():
    out = _dry_run("slurm_gpu.sh", "--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--workdir=/shared/run")
    lines = out.splitlines()
    assert lines[:2] == ["mkdir -p /shared/run", "sbatch <<'SBATCH'"] and lines[-1] == "SBATCH"
    for directive in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu"):
        assert f"#SBATCH {directive}" in lines
    assert lines[-2] == (
        "srun python -m siamese_jax.train --config=configs/omniglot.py --workdir=/shared/run --distributed"
    )


@pytest.mark.slow
def test_slurm_one_process_per_node_drives_every_gpu_of_its_node():
    out = _dry_run("slurm_gpu.sh", "--nodes=2", "--per=node", "--gpus_per_node=4", "--port=4321",
                   "--workdir=/shared/run", "--", "--config.batch_size=512")
    assert "#SBATCH --ntasks-per-node=1" in out and "export JAX_COORDINATOR_PORT=4321" in out.splitlines()
    # JAX's Slurm detection alone would give each node's one process GPU SLURM_LOCALID, which is 0.
    assert shlex.split(out.splitlines()[-2]) == [
        "srun", "python", "-m", "siamese_jax.train", "--config=configs/omniglot.py", "--workdir=/shared/run",
        "--distributed", "--local_device_ids=0,1,2,3", "--config.batch_size=512",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("per", ["gpu", "node"])
def test_slurm_passes_train_flags_with_spaces_and_quotes_through(per):
    flags = ["--config.validation.metric=a b", "--config.note=it's \"quoted\" $HOME"]
    out = _dry_run("slurm_gpu.sh", "--nodes=1", f"--per={per}", "--workdir=/shared/run", "--", *flags)
    assert shlex.split(out.splitlines()[-2])[-2:] == flags  # As srun's batch shell will read them.


@pytest.mark.slow
def test_slurm_cpu_tasks_ask_for_no_gpu_and_see_their_cpu_devices():
    out = _dry_run("slurm_gpu.sh", "--nodes=1", "--per=cpu", "--gpus_per_node=2", "--cpu_devices=4",
                   "--workdir=/shared/run")
    assert "--gpus-per-node" not in out and "#SBATCH --ntasks-per-node=2" in out.splitlines()
    assert "export JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=4" in out.splitlines()
    assert out.splitlines()[-2].endswith("--workdir=/shared/run --distributed")


@pytest.mark.slow
def test_tpu_pod_runs_the_same_command_on_every_worker():
    out = _dry_run("tpu_pod.sh", "--tpu=pod", "--zone=us-central2-b", "--project=p", "--workdir=gs://bucket/run")
    words = shlex.split(out)
    assert words[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=us-central2-b", "--project=p"]
    assert words[8] == "--worker=all"
    assert words[9] == ("--command=cd ~/siamese_jax && .venv/bin/python -m siamese_jax.train "
                        "--config=configs/omniglot.py --workdir=gs://bucket/run --distributed")


@pytest.mark.slow
@pytest.mark.parametrize("script, flags, message", [
    ("multi_gpu.sh", [], "--workdir=DIR is required"),
    ("multi_gpu.sh", ["--workdir=w", "--gpus=a,b"], "--gpus must be"),
    ("slurm_gpu.sh", ["--workdir=w", "--nodes=0"], "--nodes must be a positive integer"),
    ("slurm_gpu.sh", ["--workdir=w", "--nodes=1", "--per=socket"], "--per must be"),
    ("slurm_gpu.sh", ["--workdir=w", "--nodes=1", "--per=cpu", "--cpu_devices=0"], "--cpu_devices must be"),
    ("tpu_pod.sh", ["--zone=z", "--workdir=w"], "--tpu=NAME is required"),
    ("tpu_pod.sh", ["--tpu=t", "--zone=z", "--workdir=w", "--bogus"], "unknown flag --bogus"),
])
def test_bad_launch_flags(script, flags, message):
    done = subprocess.run(["bash", f"launch/{script}", "--dry-run", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", ["multi_gpu.sh", "slurm_gpu.sh", "tpu_pod.sh"])
def test_help_prints_the_usage(script):
    done = subprocess.run(["bash", f"launch/{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert f"launch/{script} [--dry-run]" in done.stdout and "set -euo" not in done.stdout
