#!/usr/bin/env bash
# Submits a multi-node GPU training job to Slurm; every process joins one data-parallel mesh.
#
#   launch/slurm_gpu.sh [--dry-run] --nodes=N [--gpus_per_node=8] [--per=gpu|node] [--partition=P]
#       [--account=A] [--time=24:00:00] [--python=python] [--config=configs/omniglot.py]
#       --workdir=SHARED_DIR [-- TRAIN_FLAGS]
#
# --per=gpu (default) starts one process per GPU; JAX reads SLURM_* itself (--distributed) and
# gives each process the GPU of its SLURM_LOCALID. --per=node starts one process per node that
# drives all its GPUs; the coordinator is the job's first node. The workdir must be on a file
# system every node sees. --dry-run prints the batch script instead of submitting it.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
NODES="" GPUS_PER_NODE=8 PER=gpu PARTITION="" ACCOUNT="" TIME=24:00:00 PORT=29500
while (( $# )); do
  case "$1" in
    --nodes=*) NODES="${1#*=}" ;;
    --gpus_per_node=*) GPUS_PER_NODE="${1#*=}" ;;
    --per=*) PER="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --account=*) ACCOUNT="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --port=*) PORT="${1#*=}" ;;
    --python=*) PYTHON="${1#*=}" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_flag "$1" || die "unknown flag $1 (see --help)" ;;
  esac
  shift
done
[[ -n "$WORKDIR" ]] || die "--workdir=SHARED_DIR is required (on a file system every node sees)"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$NODES'"
[[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node must be a positive integer, got '$GPUS_PER_NODE'"

case "$PER" in
  gpu) TASKS_PER_NODE=$GPUS_PER_NODE
       LAUNCH="srun $(train_command --distributed)" ;;
  node) TASKS_PER_NODE=1
        # Single quotes: the SLURM_* variables are expanded by each task, not here.
        LAUNCH="srun bash -c '$(train_command) --coordinator_address=\$COORDINATOR:$PORT --num_processes=\$SLURM_NTASKS --process_id=\$SLURM_PROCID'" ;;
  *) die "--per must be 'gpu' or 'node', got '$PER'" ;;
esac

SCRIPT="#!/bin/bash
#SBATCH --job-name=siamese_jax
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=$TASKS_PER_NODE
#SBATCH --gpus-per-node=$GPUS_PER_NODE
#SBATCH --time=$TIME
#SBATCH --output=$WORKDIR/slurm-%j.out
${PARTITION:+#SBATCH --partition=$PARTITION
}${ACCOUNT:+#SBATCH --account=$ACCOUNT
}set -euo pipefail
cd $(printf '%q' "$PWD")
export COORDINATOR=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n 1)
$LAUNCH"

if (( DRY_RUN )); then
  echo "mkdir -p $(printf '%q' "$WORKDIR")"
  echo "sbatch <<'SBATCH'"
  echo "$SCRIPT"
  echo "SBATCH"
else
  mkdir -p "$WORKDIR"
  sbatch <<<"$SCRIPT"
fi
