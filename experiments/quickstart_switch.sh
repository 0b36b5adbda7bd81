#!/usr/bin/env bash
# The Hopper quickstart's online-unlearning diagnostics (results/quickstart/README.md states each
# before it ran): tuning seed 100 pre-trained once with the demo's settings, then online phases from
# that one checkpoint. First round: the demo as is, UTD 1, the paper's actor/temperature rates.
# Second round: half of each online batch from the dataset, a warm-up acting with the policy's mean,
# and the paper's 10-critic ensemble (which needs its own pre-training, so it runs the whole demo).
#   bash experiments/quickstart_switch.sh      (ARMS="control utd1" to run a part)
# Extra arguments go to every rl.quickstart call, e.g. threads=1.
# Run state goes to $O2O_RUNS/quickstart_switch/<arm> (default ~/o2o_runs); rerunning resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${O2O_RUNS:-$HOME/o2o_runs}/quickstart_switch
quickstart=(.venv/bin/python -m rl.quickstart env=hopper seeds=100 progress=false "$@")
"${quickstart[@]}" steps.online=0 "out=$runs/pretrain"
checkpoint=$(ls "$runs"/pretrain/wsrl-hopper-*/checkpoints/agent_offline.pt)
for arm in ${ARMS:-control utd1 paper_rates}; do
  case $arm in
    control) change=() ;;
    utd1) change=(agent.utd=1) ;;
    paper_rates) change=(agent.actor_lr=1e-4 agent.temperature_lr=1e-4) ;;
    offline_half) change=(offline_ratio=0.5) ;;
    mean_warmup) change=(steps.warmup_actions=policy_mean) ;;
    critics10)
      "${quickstart[@]}" agent.num_critics=10 "out=$runs/$arm"
      continue
      ;;
    *)
      echo "quickstart_switch.sh: unknown arm '$arm'" \
        "(control, utd1, paper_rates, offline_half, mean_warmup or critics10)" >&2
      exit 2
      ;;
  esac
  "${quickstart[@]}" "checkpoint=$checkpoint" steps.offline=0 "${change[@]}" "out=$runs/$arm"
done
