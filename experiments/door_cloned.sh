#!/usr/bin/env bash
# Issue 17's door-cloned study (results/door_cloned/README.md states it before it ran): IQL and
# Cal-QL offline-to-online on door-cloned, offline data kept in half of each online batch, seeds 0-2,
# one torch thread per run, one run after another in the background across sessions, matmuls in
# bfloat16 as the warm-start study's (decided before any door run; PRECISION=fp32 for a CPU without
# native bfloat16, where bf16 is several times slower).
#   bash experiments/door_cloned.sh            (AGENTS="iql" SEEDS="0" to run a part)
# Generates the dataset first if this machine does not have it. Run state goes to
# $O2O_RUNS/door_cloned/<agent>-s<seed> (default ~/o2o_runs); rerunning resumes each run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${O2O_RUNS:-$HOME/o2o_runs}/door_cloned
store=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
[ -d "$store/o2o/door/cloned-v0" ] || .venv/bin/python -m rl.data generate env=door level=cloned
for agent in ${AGENTS:-iql calql}; do
  case $agent in
    iql) budget=(steps.offline=100000 steps.online=100000 steps.eval_every=10000) ;;
    calql) budget=(steps.offline=20000 steps.online=20000 steps.eval_every=2000) ;;
    *) echo "door_cloned.sh: unknown agent '$agent' (iql or calql)" >&2; exit 2 ;;
  esac
  for seed in ${SEEDS:-0 1 2}; do
    .venv/bin/python -m rl.train agent="$agent" dataset=door-cloned "${budget[@]}" offline_ratio=0.5 \
      steps.eval_episodes=10 steps.checkpoint_every=5000 threads=1 progress=false seed="$seed" \
      precision="${PRECISION:-bf16}" \
      "hydra.run.dir=$runs/$agent-s$seed"
  done
done
