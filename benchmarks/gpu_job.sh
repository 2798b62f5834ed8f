#!/usr/bin/env bash
# The GPU suite on a machine that has JAX (with CUDA), PyTorch and the rest of the stack but not
# the packages listed in BUILD.md ("The GPU suite"), which travel as wheels in .whl/.
#
#   benchmarks/gpu_job.sh DATA_DIR OUTPUT_DIR [gpu_suite.py flags...]
#
# Installs .whl/*.whl (if any) into a private folder, prints what the machine has, then runs
# benchmarks/gpu_suite.py with the flags given (which logs to OUTPUT_DIR/suite.log).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: benchmarks/gpu_job.sh DATA_DIR OUTPUT_DIR [gpu_suite.py flags...]" >&2
  exit 2
fi
data_dir=$1 output_dir=$2
shift 2
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "error: cannot install the wheels in .whl/" >&2; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
exec "$python" benchmarks/gpu_suite.py --data_dir="$data_dir" --output_dir="$output_dir" "$@"
