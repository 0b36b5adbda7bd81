#!/usr/bin/env bash
# sim_finetune.sh from the camera: the same bridge run on the sim arm, with the server's 64x64 front
# camera beside the proprio state (env=real +env.kwargs.pixels=true, a Dict observation of state and
# front that SAC and IQL read through their image encoder; the server's cameras=front,wrist
# would add wrist, a second encoder's worth of work per update, not what the timing below measured):
#   keys -> arm server with camera -> pixel SAC trained online -> fine-tuned from that checkpoint ->
#   the server's log, frames included, converted to a dataset -> pixel IQL trained offline, then online.
# Usage: bash experiments/bridge/sim_finetune_pixels.sh [workdir]   (19 minutes at load 5-9 on a 2-core CPU, 9 of them CPU)
#
# The learner updates between env steps, in the same process: an update from pixels (here a small
# encoder, 16 filters, batch 64) takes longer than the 150 ms the server allows an action to answer
# an observation at 10 Hz, and far longer on a loaded machine. For this sim demonstration the server's
# staleness and watchdog limits are widened; on a real arm keep them, and keep the pixel learner's
# update within the control period (a GPU, or a learner outside the acting loop): see
# experiments/bench/pixels.py for what an update costs here.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-runs/bridge_pixels_demo}
py=.venv/bin/python
port=${O2O_BRIDGE_PORT:-5598}
mkdir -p "$work"
[ -d "$work/keys" ] || $py -m real_robot.keygen --dir "$work/keys"
MUJOCO_GL=${MUJOCO_GL:-egl} $py -m real_robot.serve backend=sim lockstep=true cameras=front keys="$work/keys" \
    log_dir="$work/log" address="tcp://127.0.0.1:$port" max_action_age_ms=5000 hold_after_ms=5000 \
    stop_after_ms=10000 > "$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 5
bridge=(env=real "env.kwargs.address=tcp://127.0.0.1:$port" "env.kwargs.keys_dir=$work/keys" +env.kwargs.pixels=true
        progress=false buffer_capacity=20000)
encoder=(agent.encoder.filters=16 agent.encoder.feature_dim=32 agent.batch_size=64)
small=(agent.critic_hidden=[64,64] agent.actor_hidden=[64,64])
$py -m rl.train "${bridge[@]}" agent=sac "${encoder[@]}" "${small[@]}" steps.online=400 steps.warmup=200 \
    hydra.run.dir="$work/pretrain"
$py -m rl.train "${bridge[@]}" agent=sac "${encoder[@]}" "${small[@]}" steps.online=300 steps.warmup=100 \
    steps.warmup_actions=policy checkpoint="$work/pretrain/checkpoints/agent_final.pt" hydra.run.dir="$work/finetune"
$py -m real_robot.convert "$(ls "$work"/log/*.o2olog | head -n 1)" "$work/recorded.hdf5"
$py -m rl.train "${bridge[@]}" agent=iql "${encoder[@]}" agent.hidden=[64,64] dataset=d4rl:"$work/recorded.hdf5" \
    dataset.name=recorded dataset.clip_actions=true steps.offline=200 steps.online=100 hydra.run.dir="$work/offline"
