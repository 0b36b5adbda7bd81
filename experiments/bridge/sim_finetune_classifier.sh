#!/usr/bin/env bash
# sim_finetune.sh once more, with a learned success reward instead of the task's: the learner labels
# the server camera's frames with a success classifier; the arm server stays free of learning code
# (it still scores its reach task, which only the classifier's training data and a check use).
#   keys -> arm server with a camera -> scripted reaches (some succeed, some stop short) and SAC
#   pre-trained with the task's reward, a state policy (the log keeps the frames) -> that log
#   converted -> a success classifier trained on its frames (positives: the frames where the reach
#   task succeeded) -> SAC fine-tuned with reward=classifier, the learner appending every label to
#   <run_dir>/labels.jsonl -> the server's log joined with it (real_robot.convert --labels: labelled
#   rewards and successes) -> IQL trained offline on that.
# Usage: bash experiments/bridge/sim_finetune_classifier.sh [workdir]   (about 10 minutes at load 3-5 on 2 cores)
#
# The learner updates and labels between env steps, in the same process; on this shared 2-core
# machine an update alone often took longer than the 150 ms the server allows an action to answer
# an observation at 10 Hz, so most pre-training episodes ended after one step as stale. As in
# sim_finetune_pixels.sh, the server's staleness and watchdog limits are widened for this sim
# demonstration; on a real arm keep them, and keep the update and the labelling within the period.
#
# What this demo shows and what it does not: the data path of a camera reward on the bridge, end to
# end. Not a useful reward: the reach task's success is the end effector within 3 cm of a goal drawn
# per episode, and the sim camera does not show the goal, so no classifier of its frames can tell
# success from the frames alone; its held-out metrics and the false-positive rate of the fine-tuning
# (label_false_positive in finetune/metrics.csv) say how far it gets. A camera reward needs a task
# the camera sees (a goal marker in the scene, or an object task).
#
# Stop-gap: `python -m rl.rewards train-classifier` reads Minari datasets only, so the converted log
# is rewritten as a Minari dataset (frames of camera `front`, infos/success = the task's terminal)
# by the short Python step below, until train-classifier reads a converted bridge file itself.
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
    MUJOCO_GL=${MUJOCO_GL:-egl} $py -m real_robot.serve backend=sim lockstep=true cameras=front keys="$work/keys" \
        log_dir="$work/$1" address="tcp://127.0.0.1:$port" max_action_age_ms=5000 hold_after_ms=5000 \
        stop_after_ms=10000 > "$work/$1.serve.log" 2>&1 &
    server=$!
    sleep 5
}
trap '[ -z "$server" ] || kill $server 2>/dev/null' EXIT
serve log_pretrain
bridge=(env=real "env.kwargs.address=tcp://127.0.0.1:$port" "env.kwargs.keys_dir=$work/keys" progress=false)
small=(agent.critic_hidden=[64,64] agent.actor_hidden=[64,64])
# 1. Scripted reaches towards the goal (gain 8: most arrive; gain 1: most stop short), then SAC
#    pre-trained with the task's reward; the policy sees state only, the server logs the camera.
$py - "$port" "$work/keys" <<'EOF'
import sys
import numpy as np
from real_robot.client_env import make_bridge_env

env = make_bridge_env(address=f"tcp://127.0.0.1:{sys.argv[1]}", keys_dir=sys.argv[2], max_episode_steps=40)
rng = np.random.default_rng(0)
for episode in range(12):
    obs, _ = env.reset(seed=episode)
    gain = 8.0 if episode % 3 else 1.0
    for _ in range(40):  # flat state: q dq ee_pos(14:17) ee_quat gripper goal(22:25)
        action = np.zeros(7, np.float32)
        action[:3] = np.clip((obs[22:25] - obs[14:17]) * gain + rng.normal(0, 0.1, 3), -1, 1)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    print(f"scripted reach {episode}: gain {gain}, {'success' if terminated else 'no success'}")
env.close()
EOF
$py -m rl.train "${bridge[@]}" agent=sac "${small[@]}" steps.online=300 steps.warmup=100 hydra.run.dir="$work/pretrain"
pretrain_log=$(ls "$work"/log_pretrain/*.o2olog | head -n 1)
$py -m real_robot.convert "$pretrain_log" "$work/pretrain.hdf5"
# 2. The success classifier on the server camera's frames (64x64 "front"), trained on the log.
minari_dir=$(cd "$work" && pwd)/minari  # absolute: minari resolves its paths from this variable
rm -rf "$minari_dir"
MINARI_DATASETS_PATH="$minari_dir" $py - "$work/pretrain.hdf5" <<'EOF'
import sys
import warnings
import gymnasium as gym
import h5py
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer

with h5py.File(sys.argv[1]) as f:
    obs, nxt = f["observations/front"][:], f["next_observations/front"][:]
    state, next_state = f["observations/state"][:], f["next_observations/state"][:]
    actions, terminals, timeouts = f["actions"][:], f["terminals"][:], f["timeouts"][:]
ends = np.flatnonzero(terminals | timeouts) + 1
episodes = []
for i, (a, b) in enumerate(zip(np.r_[0, ends[:-1]], ends, strict=True)):
    episodes.append(EpisodeBuffer(
        id=i, observations={"front": np.concatenate([obs[a:a + 1], nxt[a:b]]),
                            "state": np.concatenate([state[a:a + 1], next_state[a:b]])},
        actions=actions[a:b], rewards=terminals[a:b].astype(float).tolist(),
        terminations=terminals[a:b].tolist(), truncations=timeouts[a:b].tolist(),
        infos={"success": np.r_[False, terminals[a:b]]},
    ))
space = gym.spaces.Dict({"front": gym.spaces.Box(0, 255, obs.shape[1:], np.uint8),
                         "state": gym.spaces.Box(-np.inf, np.inf, state.shape[1:], np.float32)})
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="`eval_env` is set to None|env_spec is None")
    minari.create_dataset_from_buffers(
        dataset_id="bridge/reach-frames-v0", buffer=episodes, observation_space=space,
        action_space=gym.spaces.Box(-1, 1, actions.shape[1:], np.float32), algorithm_name="bridge log",
        author="o2o", author_email="o2o@users.noreply.github.com",
        code_permalink="experiments/bridge/sim_finetune_classifier.sh", data_format="hdf5",
        description="a converted bridge log: frames of camera front, success = the reach task's terminal",
    )
print(f"{len(episodes)} episodes, {int(terminals.sum())} successes, {len(actions)} transitions -> Minari")
EOF
$py -m rl.rewards train-classifier dataset="$work/minari/bridge/reach-frames-v0" cameras=front \
    out="$work/classifier.pt" steps=300 filters=16 precision_target=0.9 threads=1 progress=false
# 3. Fine-tuning with the classifier's reward; the learner labels the frames and logs every label
#    in finetune/labels.jsonl (the reward view: env=real shows every server camera by default).
serve log_finetune
$py -m rl.train "${bridge[@]}" agent=sac "${small[@]}" \
    reward=classifier reward.cameras=[front] reward.image_size=64 reward.path="$work/classifier.pt" \
    steps.online=300 steps.warmup=100 steps.warmup_actions=policy \
    checkpoint="$work/pretrain/checkpoints/agent_final.pt" hydra.run.dir="$work/finetune"
# 4. The fine-tuning's server log with the learner's labels, then IQL offline (and online) on it,
#    with the classifier's 0/1 rewards as they are (agent.return_range_scale=null: IQL's locomotion
#    normalisation divides by the range of episode returns, which is 0 when no episode was a success).
finetune_log=$(ls "$work"/log_finetune/*.o2olog | head -n 1)
$py -m real_robot.convert "$finetune_log" "$work/labelled.hdf5" --labels "$work/finetune/labels.jsonl"
$py - "$work/labelled.hdf5" <<'EOF'
import sys
import h5py
with h5py.File(sys.argv[1]) as f:
    success, terminals, n = f["infos/success"][:], f["terminals"][:], len(f["rewards"])
    print(f"joined: {n} transitions, {int(f['infos/labelled'][:].sum())} labelled by {f.attrs['label_model']}, "
          f"{int(success.sum())} labelled successes, {int(terminals.sum())} terminals")
EOF
$py -m rl.train "${bridge[@]}" agent=iql agent.hidden=[64,64] agent.return_range_scale=null \
    dataset=d4rl:"$work/labelled.hdf5" dataset.name=labelled dataset.clip_actions=true reward=classifier reward.cameras=[front] reward.image_size=64 \
    reward.path="$work/classifier.pt" steps.offline=300 steps.online=100 hydra.run.dir="$work/offline"
