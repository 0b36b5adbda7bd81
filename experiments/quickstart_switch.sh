#!/usr/bin/env bash
# The quickstart's online-unlearning diagnostic (results/quickstart/README.md states it before it
# ran): tuning seed 100 pre-trained once with the demo's settings, then three online phases from that
# one checkpoint: the demo as is, UTD 1, and the paper's actor/temperature rates.
#   bash experiments/quickstart_switch.sh      (ARMS="control utd1" to run a part)
# Run state goes to $O2O_RUNS/quickstart_switch/<arm> (default ~/o2o_runs); rerunning resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${O2O_RUNS:-$HOME/o2o_runs}/quickstart_switch
quickstart=(.venv/bin/python -m rl.quickstart seeds=100 progress=false)
"${quickstart[@]}" steps.online=0 "out=$runs/pretrain"
checkpoint=$(ls "$runs"/pretrain/wsrl-hopper-*/checkpoints/agent_offline.pt)
for arm in ${ARMS:-control utd1 paper_rates}; do
  case $arm in
    control) change=() ;;
    utd1) change=(agent.utd=1) ;;
    paper_rates) change=(agent.actor_lr=1e-4 agent.temperature_lr=1e-4) ;;
    *) echo "quickstart_switch.sh: unknown arm '$arm' (control, utd1 or paper_rates)" >&2; exit 2 ;;
  esac
  "${quickstart[@]}" "checkpoint=$checkpoint" steps.offline=0 "${change[@]}" "out=$runs/$arm"
done
