#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: every worker runs the same command and JAX finds its peers.
#
#   launch/tpu_pod.sh [--dry-run] --tpu=NAME --zone=ZONE [--project=ID] [--repo_dir=~/siamese_jax]
#       [--install] [--config=configs/omniglot.py] --workdir=gs://BUCKET/RUN [-- TRAIN_FLAGS]
#
# The checkout must be at --repo_dir on every worker (gcloud compute tpus tpu-vm scp --worker=all,
# or git clone). --install first installs it, gcsfs (for gs:// workdirs) and the TPU build of JAX
# on every worker. The workdir must be shared by all workers: a gs:// bucket, or an NFS mount.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
TPU="" ZONE="" PROJECT="" REPO_DIR="~/siamese_jax" INSTALL=0
while (( $# )); do
  case "$1" in
    --tpu=*) TPU="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --repo_dir=*) REPO_DIR="${1#*=}" ;;
    --install) INSTALL=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) common_flag "$1" || die "unknown flag $1 (see --help)" ;;
  esac
  shift
done
[[ -n "$TPU" ]] || die "--tpu=NAME is required"
[[ -n "$ZONE" ]] || die "--zone=ZONE is required"
[[ -n "$WORKDIR" ]] || die "--workdir is required: a gs:// path or a mount every worker shares"

SSH=(gcloud compute tpus tpu-vm ssh "$TPU" "--zone=$ZONE" ${PROJECT:+"--project=$PROJECT"} --worker=all)
# The remote shell expands REPO_DIR (it may start with ~).
REMOTE="cd $REPO_DIR"
if (( INSTALL )); then
  REMOTE+=" && python3 -m venv .venv && .venv/bin/pip install -q -e . gcsfs && .venv/bin/pip install -q -U \"jax[tpu]\""
fi
PYTHON=.venv/bin/python
REMOTE+=" && $(train_command --distributed)"
run "${SSH[@]}" "--command=$REMOTE"
