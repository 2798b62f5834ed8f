#!/usr/bin/env bash
# Submits a multi-node GPU training job to Slurm; every process joins one data-parallel mesh.
#
#   launch/slurm_gpu.sh [--dry-run] --nodes=N [--gpus_per_node=8] [--per=gpu|node|cpu] [--partition=P]
#       [--account=A] [--time=24:00:00] [--port=P] [--cpu_devices=1] [--python=python]
#       [--config=configs/omniglot.py] --workdir=SHARED_DIR [-- TRAIN_FLAGS]
#
# Every process reads SLURM_* itself (train --distributed); the coordinator is the job's first node,
# on --port (default: a port JAX derives from the job id). --per=gpu (default) starts one process per GPU, the GPU of its SLURM_LOCALID;
# --per=node starts one process per node that drives all its GPUs (--local_device_ids). --per=cpu
# asks for no GPU: --gpus_per_node processes a node, each with --cpu_devices CPU devices, the same
# launch path on machines without GPUs (tests/test_slurm.py runs it under a real local Slurm). The
# workdir must be on a file system every node sees. --dry-run prints the batch script instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
NODES="" GPUS_PER_NODE=8 PER=gpu PARTITION="" ACCOUNT="" TIME=24:00:00 PORT="" CPU_DEVICES=1
while (( $# )); do
  case "$1" in
    --nodes=*) NODES="${1#*=}" ;;
    --gpus_per_node=*) GPUS_PER_NODE="${1#*=}" ;;
    --per=*) PER="${1#*=}" ;;
    --partition=*) PARTITION="${1#*=}" ;;
    --account=*) ACCOUNT="${1#*=}" ;;
    --time=*) TIME="${1#*=}" ;;
    --port=*) PORT="${1#*=}" ;;
    --cpu_devices=*) CPU_DEVICES="${1#*=}" ;;
    --python=*) PYTHON="${1#*=}" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_flag "$1" || die "unknown flag $1 (see --help)" ;;
  esac
  shift
done
[[ -n "$WORKDIR" ]] || die "--workdir=SHARED_DIR is required (on a file system every node sees)"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$NODES'"
[[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node must be a positive integer, got '$GPUS_PER_NODE'"
[[ "$CPU_DEVICES" =~ ^[1-9][0-9]*$ ]] || die "--cpu_devices must be a positive integer, got '$CPU_DEVICES'"

case "$PER" in
  gpu) TASKS_PER_NODE=$GPUS_PER_NODE
       LAUNCH="srun $(train_command --distributed)" ;;
  # Without --local_device_ids, JAX would give each node's one process only GPU SLURM_LOCALID=0.
  node) TASKS_PER_NODE=1
        LAUNCH="srun $(train_command --distributed "--local_device_ids=$(seq -s, 0 $((GPUS_PER_NODE - 1)))")" ;;
  cpu) TASKS_PER_NODE=$GPUS_PER_NODE
       LAUNCH="srun $(train_command --distributed)" ;;
  *) die "--per must be 'gpu', 'node' or 'cpu', got '$PER'" ;;
esac
GPUS_LINE="#SBATCH --gpus-per-node=$GPUS_PER_NODE
" PLATFORM=""
if [[ "$PER" == cpu ]]; then
  GPUS_LINE="" PLATFORM="export JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=$CPU_DEVICES
"
fi

SCRIPT="#!/bin/bash
#SBATCH --job-name=siamese_jax
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=$TASKS_PER_NODE
${GPUS_LINE}#SBATCH --time=$TIME
#SBATCH --output=$WORKDIR/slurm-%j.out
${PARTITION:+#SBATCH --partition=$PARTITION
}${ACCOUNT:+#SBATCH --account=$ACCOUNT
}set -euo pipefail
cd $(printf '%q' "$PWD")
${PLATFORM}${PORT:+export JAX_COORDINATOR_PORT=$PORT
}$LAUNCH"

if (( DRY_RUN )); then
  echo "mkdir -p $(printf '%q' "$WORKDIR")"
  echo "sbatch <<'SBATCH'"
  echo "$SCRIPT"
  echo "SBATCH"
else
  mkdir -p "$WORKDIR"
  sbatch <<<"$SCRIPT"
fi
