#!/usr/bin/env bash
# ReinFlow's results grid on Can (results/reinflow/README.md, "Can grid"): BC on the mixed scripted
# demos, then fine-tuning, for K = 4 (agent=reinflow) and K = 1 (agent=reinflow_k1), seeds 0-2, at
# the reinflow_lift preset's budget. Generates the demos first if this machine does not have them.
#   bash experiments/reinflow_grid.sh            (AGENTS="reinflow" SEEDS="0" to run a part)
# Run state goes to $O2O_RUNS/reinflow (default ~/o2o_runs); rerunning resumes each run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${O2O_RUNS:-$HOME/o2o_runs}/reinflow
store=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
[ -d "$store/o2o/can/mixed-v0" ] || .venv/bin/python -m rl.data generate env=can level=mixed
for agent in ${AGENTS:-reinflow reinflow_k1}; do
  for seed in ${SEEDS:-0 1 2}; do
    .venv/bin/python -m rl.train +experiment=reinflow_lift agent="$agent" dataset=can-mixed seed="$seed" \
      threads=1 progress=false "hydra.run.dir=$runs/$agent-can-mixed-s$seed"
  done
done
