# Shared by the launch scripts: argument helpers and running (or, with --dry-run, printing) a command.

DRY_RUN=0
CONFIG=configs/omniglot.py
WORKDIR=""
EXTRA=()

die() { echo "error: $*" >&2; exit 2; }

# Prints a command, shell-quoted so that it can be pasted as it is.
show() {
  local arg out=""
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+="$arg "; else out+="'${arg//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}

# Runs a command, or prints it under --dry-run.
run() { if (( DRY_RUN )); then show "$@"; else "$@"; fi; }

# The training command every process runs: python -m siamese_jax.train with the shared flags.
train_command() { show "${PYTHON:-python}" -m siamese_jax.train "--config=$CONFIG" "--workdir=$WORKDIR" "$@" "${EXTRA[@]}"; }

# Handles the flags every script takes; returns 1 for a flag it does not know.
common_flag() {
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    # The script's usage is its header comment, from line 2 to the first line that is not one.
    -h|--help) sed -n '2,/^[^#]/s/^#//p' "$0"; exit 0 ;;
    *) return 1 ;;
  esac
}
