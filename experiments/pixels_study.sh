#!/usr/bin/env bash
# Issue 20's study at ten times the first budget (results/pixels/README.md states it before it ran):
# Cal-QL on robosuite Lift pre-trained on the scripted demos, then fine-tuned online with half of each
# batch from them, from state (env=lift) and from the two cameras + proprio (env=lift-pixels), seeds
# 0-2, one torch thread per run, one run after another.
#   bash experiments/pixels_study.sh            (ARMS="pixels" SEEDS="0" to run a part)
# Generates the demos first if this machine does not have them. Run state goes to
# $O2O_RUNS/pixels/<arm>-s<seed> (default ~/o2o_runs); rerunning resumes each run from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${O2O_RUNS:-$HOME/o2o_runs}/pixels
store=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
[ -d "$store/o2o/lift/expert-v0" ] || .venv/bin/python -m rl.data generate env=lift level=expert
for arm in ${ARMS:-state pixels}; do
  case $arm in
    state) env=(env=lift) ;;
    pixels) env=(env=lift-pixels agent.encoder.filters=16) ;;
    *) echo "pixels_study.sh: unknown arm '$arm' (state or pixels)" >&2; exit 2 ;;
  esac
  for seed in ${SEEDS:-0 1 2}; do
    .venv/bin/python -m rl.train agent=calql dataset=lift-expert "${env[@]}" agent.batch_size=64 \
      steps.offline=5000 steps.online=5000 offline_ratio=0.5 env.max_episode_steps=100 \
      steps.eval_every=1000 steps.eval_episodes=5 steps.checkpoint_every=1000 buffer_capacity=6000 \
      env_mode=sync threads=1 progress=false seed="$seed" "hydra.run.dir=$runs/$arm-s$seed"
  done
done
