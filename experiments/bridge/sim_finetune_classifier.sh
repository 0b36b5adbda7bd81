#!/usr/bin/env bash
# sim_finetune.sh once more, with a learned success reward instead of the task's: the learner labels
# the server camera's frames with a success classifier; the arm server stays free of learning code
# (it still scores its reach task, which only the classifier's training data and a check use).
#   keys -> arm server with a camera -> SAC pre-trained with the task's reward (the log keeps the
#   frames) -> that log converted -> a success classifier trained on its frames (positives: the
#   frames where the reach task succeeded) -> SAC fine-tuned with reward=classifier, the learner
#   appending every label to a label log -> the server's log joined with the label log
#   (real_robot.convert --labels: labelled rewards and successes) -> IQL trained offline on it.
# Usage: bash experiments/bridge/sim_finetune_classifier.sh [workdir]
#
# NOT RUN YET. Written against the issue-16 contract; three pieces it calls are not in main:
#  1. the bridge env's reward view: BridgeEnv(reward_camera=<name>) puts the server frame of that
#     camera in info["reward_view"]["frames/<name>"] and the server's (episode, step, obs_id) of the
#     observation beside it, so the labeller can key its labels (real_robot/client_env.py);
#  2. the labeller appending each label to rl.data.label_log (reward.label_log=<file>, rl/loops/labelling.py);
#  3. train-classifier reading a converted bridge log (dataset=d4rl:<file.hdf5>: observations/pixels,
#     success = the episode's terminal), rl/rewards/__main__.py and classifier.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-runs/bridge_classifier_demo}
py=.venv/bin/python
port=${O2O_BRIDGE_PORT:-5597}
mkdir -p "$work"
[ -d "$work/keys" ] || $py -m real_robot.keygen --dir "$work/keys"
server=
serve() {  # one server process per stage: its log holds that stage's episodes only
    [ -z "$server" ] || { kill "$server"; wait "$server" 2>/dev/null || true; }
    MUJOCO_GL=${MUJOCO_GL:-egl} $py -m real_robot.serve backend=sim lockstep=true camera=true keys="$work/keys" \
        log_dir="$work/$1" address="tcp://127.0.0.1:$port" > "$work/$1.serve.log" 2>&1 &
    server=$!
    sleep 5
}
trap '[ -z "$server" ] || kill $server 2>/dev/null' EXIT
serve log_pretrain
bridge=(env=real "env.kwargs.address=tcp://127.0.0.1:$port" "env.kwargs.keys_dir=$work/keys" progress=false)
small=(agent.critic_hidden=[64,64] agent.actor_hidden=[64,64])
# 1. Pre-training with the task's reward: the policy sees state only; the server logs the camera.
$py -m rl.train "${bridge[@]}" agent=sac "${small[@]}" steps.online=600 steps.warmup=200 hydra.run.dir="$work/pretrain"
pretrain_log=$(ls "$work"/log_pretrain/*.o2olog | head -n 1)
$py -m real_robot.convert "$pretrain_log" "$work/pretrain.hdf5"
# 2. The success classifier on the server camera's frames (64x64 "front").
$py -m rl.rewards train-classifier dataset=d4rl:"$work/pretrain.hdf5" cameras=front out="$work/classifier.pt" \
    steps=300 precision_target=0.95
# 3. Fine-tuning with the classifier's reward; the learner labels the frames and logs every label.
serve log_finetune
$py -m rl.train "${bridge[@]}" +env.kwargs.reward_camera=front agent=sac "${small[@]}" \
    reward=classifier reward.cameras=[front] reward.image_size=64 reward.path="$work/classifier.pt" \
    +reward.label_log="$work/labels.jsonl" steps.online=600 steps.warmup=100 steps.warmup_actions=policy \
    checkpoint="$work/pretrain/checkpoints/agent_final.pt" hydra.run.dir="$work/finetune"
# 4. The fine-tuning's server log with the learner's labels, then IQL offline (and online) on it.
finetune_log=$(ls "$work"/log_finetune/*.o2olog | head -n 1)
$py -m real_robot.convert "$finetune_log" "$work/labelled.hdf5" --labels "$work/labels.jsonl"
$py -m rl.train "${bridge[@]}" agent=iql agent.hidden=[64,64] dataset=d4rl:"$work/labelled.hdf5" \
    dataset.name=labelled dataset.clip_actions=true reward=classifier reward.cameras=[front] reward.image_size=64 \
    reward.path="$work/classifier.pt" +env.kwargs.reward_camera=front steps.offline=300 steps.online=100 \
    hydra.run.dir="$work/offline"
