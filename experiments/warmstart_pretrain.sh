#!/usr/bin/env bash
# The warm-start study's pre-training (results/d4rl_o2o_warmstart/README.md): one (agent, dataset)
# at the paper's schedule, generating the dataset first if this machine does not have it.
#   [THREADS=2] [PRECISION=fp32] bash experiments/warmstart_pretrain.sh <wsrl|cql|calql|iql|famo2o_cql|famo2o_iql> <walker2d|hopper>
# Run state goes to $O2O_RUNS/warmstart/pretrain-<agent>-<env>-medium (default ~/o2o_runs); the same
# command resumes it after a lost session (checkpoints every 2,500 updates).
set -euo pipefail
cd "$(dirname "$0")/.."
agent=$1 env=$2
runs=${O2O_RUNS:-$HOME/o2o_runs}/warmstart
store=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
[ -d "$store/o2o/$env/medium-v0" ] || .venv/bin/python -m rl.data generate env="$env" level=medium
# IQL: CORL's schedule. The CQL family: matmuls in bfloat16 (float32 weights), 1.9-2.0x faster where
# the CPU multiplies bfloat16 natively (AMX or AVX-512-BF16; experiments/bench/README.md) and within
# the spread of float32 for CQL over three seeds (results/peer_d3rlpy); IQL has no such learning
# result, so it stays float32. Without native bf16 a run is several times slower (rl.train warns):
# start it there with PRECISION=fp32 (a run keeps the precision it started with).
case $agent in
  iql|famo2o_iql) extra=(steps.offline=1000000) ;;
  *) extra=(precision="${PRECISION:-bf16}") ;;
esac
exec .venv/bin/python -m rl.train +experiment=warmstart_pretrain agent="$agent" dataset="$env-medium" \
  threads="${THREADS:-1}" progress=false "${extra[@]}" "hydra.run.dir=$runs/pretrain-$agent-$env-medium"
