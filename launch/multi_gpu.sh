#!/usr/bin/env bash
# Trains on one machine with several GPUs: one process drives all of them (data parallel).
#
#   launch/multi_gpu.sh [--dry-run] [--gpus=0,1,2,3] [--config=configs/omniglot.py] --workdir=DIR [-- TRAIN_FLAGS]
#
# --gpus sets CUDA_VISIBLE_DEVICES (default: every GPU). TRAIN_FLAGS go to siamese_jax.train,
# e.g. -- --config.batch_size=256. The batch size must be a multiple of the GPU count.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
GPUS=""
while (( $# )); do
  case "$1" in
    --gpus=*) GPUS="${1#*=}" ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_flag "$1" || die "unknown flag $1 (see --help)" ;;
  esac
  shift
done
[[ -n "$WORKDIR" ]] || die "--workdir=DIR is required"
[[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must be a comma-separated list of GPU indices, got '$GPUS'"

COMMAND=$(train_command)
if [[ -n "$GPUS" ]]; then COMMAND="CUDA_VISIBLE_DEVICES=$GPUS $COMMAND"; fi
if (( DRY_RUN )); then echo "$COMMAND"; else eval "exec $COMMAND"; fi
