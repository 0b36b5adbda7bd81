#!/usr/bin/env bash
# ReinFlow's results grids (results/reinflow/README.md states each one's budget before it ran): BC on
# the task's data, then fine-tuning, seeds 0-2, one torch thread per run.
#   bash experiments/reinflow_grid.sh can      K = 4 and K = 1 on the mixed Can demos, reinflow_lift preset
#   bash experiments/reinflow_grid.sh lift     the same on the mixed Lift demos
#   bash experiments/reinflow_grid.sh lift-pixels   K = 1, then K = 4, from Lift's cameras + proprio
#   bash experiments/reinflow_grid.sh hopper   K = 4 on hopper-medium, reinflow_hopper preset
#   AGENTS="reinflow" SEEDS="0" bash experiments/reinflow_grid.sh can     (a part of a grid)
# Generates the task's dataset first if this machine does not have it. Run state goes to
# $O2O_RUNS/reinflow/<agent>-<dataset>-s<seed> (default ~/o2o_runs); rerunning resumes each run.
set -euo pipefail
cd "$(dirname "$0")/.."
task=${1:?usage: bash experiments/reinflow_grid.sh <can|lift|hopper>}
data=$task  # the dataset's env: lift-pixels trains on Lift's demos, which carry the frames
case $task in
  can | lift) preset=reinflow_lift level=mixed agents="reinflow reinflow_k1" ;;
  lift-pixels) preset=reinflow_lift_pixels data=lift level=mixed agents="reinflow_k1 reinflow" ;;
  hopper) preset=reinflow_hopper level=medium agents="reinflow" ;;
  *) echo "reinflow_grid.sh: unknown task '$task' (can, lift, lift-pixels or hopper)" >&2; exit 2 ;;
esac
runs=${O2O_RUNS:-$HOME/o2o_runs}/reinflow
store=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
[ -d "$store/o2o/$data/$level-v0" ] || .venv/bin/python -m rl.data generate env="$data" level="$level"
for agent in ${AGENTS:-$agents}; do
  for seed in ${SEEDS:-0 1 2}; do
    .venv/bin/python -m rl.train +experiment="$preset" agent="$agent" dataset="$data-$level" seed="$seed" \
      threads=1 progress=false "hydra.run.dir=$runs/$agent-$task-$level-s$seed"
  done
done
