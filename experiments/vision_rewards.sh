#!/usr/bin/env bash
# The vision-rewards study (results/vision_rewards/README.md): one arm, seeds one after another.
#   bash experiments/vision_rewards.sh <env|classifier|kagi> [seeds...]
# Run state goes to $O2O_RUNS/vision_rewards (default ~/o2o_runs); rerunning resumes each run.
# The classifier and KAGI arms train on the demonstrations relabelled by their own reward model.
set -euo pipefail
cd "$(dirname "$0")/.."
arm=$1; shift
seeds=${*:-0 1 2}
runs=${O2O_RUNS:-$HOME/o2o_runs}/vision_rewards
classifier=${CLASSIFIER:-$runs/classifier_lift.pt}
common=(agent=calql env=lift agent.critic_hidden=[128,128] agent.actor_hidden=[128,128]
        agent.cql_samples=4 steps.offline=10000 steps.online=3000 steps.eval_every=1000
        steps.eval_episodes=5 offline_ratio=0.5 buffer_capacity=20000 env.terminate_on_success=false
        threads=1 progress=false)
case $arm in
  env) reward=(dataset=lift-expert) ;;
  classifier) reward=(reward=classifier "reward.path=$classifier") ;;
  kagi) reward=(reward=kagi_oracle reward.base=classifier "reward.path=$classifier") ;;
  *) echo "vision_rewards.sh: unknown arm '$arm' (env, classifier, kagi)" >&2; exit 2 ;;
esac
if [ "$arm" != env ]; then
  # Both model arms pre-train on the demonstrations relabelled by the classifier. KAGI's shaping is
  # online only: the demo datasets keep no named object state (cube_pos, eef_pos) to relabel it from.
  relabelled=o2o/lift/expert-classifier-v0
  [ -d "${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}/$relabelled" ] ||
    .venv/bin/python -m rl.rewards relabel dataset=o2o/lift/expert-v0 reward=classifier \
      "reward.path=$classifier" "out=$relabelled"
  reward+=("dataset=minari:$relabelled" dataset.name=lift-expert-classifier)
fi
for seed in $seeds; do
  .venv/bin/python -m rl.train "${common[@]}" "${reward[@]}" seed=$seed \
      "hydra.run.dir=$runs/calql-$arm-s$seed"
done
