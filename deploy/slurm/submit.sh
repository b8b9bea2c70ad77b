#!/bin/bash
# Submit a sweep to Slurm: WORKERS array tasks, each an `expander-sweeps worker`, then the report
# once they have all ended. Extra arguments go to both (for example --set run_dir=/shared/...).
#   deploy/slurm/submit.sh sweeps/mnist_noise.yaml 16 [--set key=value ...]
# Options for sbatch itself (a partition, an account, GPUs): $SBATCH_OPTIONS, for example
#   SBATCH_OPTIONS="--partition=gpu --gpus-per-task=1" deploy/slurm/submit.sh SPEC 16
# Prints the two job ids. The study's storage: worker.sbatch says how to choose it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
spec=${1:?usage: submit.sh SPEC WORKERS [--set key=value ...]}
workers=${2:?usage: submit.sh SPEC WORKERS [--set key=value ...]}
shift 2
if [ -z "${EXPANDER_SWEEPS_STORAGE:-}" ] && ! grep -qE '^\s*storage:\s*\S' "$spec"; then
  echo "warning: no study.storage in $spec and no \$EXPANDER_SWEEPS_STORAGE: every task would use" \
       "SQLite in the run folder, which is not safe on a network filesystem; set a journal:// path" \
       "on the shared filesystem or a PostgreSQL URL" >&2
fi
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_OPTIONS:-} --array="0-$((workers - 1))" "$here/worker.sbatch" "$spec" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
report=$(sbatch --parsable ${SBATCH_OPTIONS:-} --dependency="afterany:$array" "$here/report.sbatch" "$spec" "$@")
echo "workers: job $array (array 0-$((workers - 1))); report: job ${report%%;*} after it"
