#!/usr/bin/env bash
# End to end through the bridge on the sim arm (a reach task), as one would on a real Franka or UR:
#   keys -> arm server -> SAC pre-training online -> fine-tuning from that checkpoint ->
#   the server's crash-safe log converted to a dataset -> IQL trained offline (then online) on it.
# Usage: bash experiments/bridge/sim_finetune.sh [workdir]   (about 2 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-runs/bridge_demo}
py=.venv/bin/python
port=${O2O_BRIDGE_PORT:-5599}
mkdir -p "$work"
[ -d "$work/keys" ] || $py -m real_robot.keygen --dir "$work/keys"
MUJOCO_GL=${MUJOCO_GL:-egl} $py -m real_robot.serve backend=sim lockstep=true keys="$work/keys" \
    log_dir="$work/log" address="tcp://127.0.0.1:$port" > "$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 5
bridge=(env=real "env.kwargs.address=tcp://127.0.0.1:$port" "env.kwargs.keys_dir=$work/keys" progress=false)
small=(agent.critic_hidden=[64,64] agent.actor_hidden=[64,64])
$py -m rl.train "${bridge[@]}" agent=sac "${small[@]}" steps.online=600 steps.warmup=200 hydra.run.dir="$work/pretrain"
$py -m rl.train "${bridge[@]}" agent=sac "${small[@]}" steps.online=600 steps.warmup=100 steps.warmup_actions=policy \
    checkpoint="$work/pretrain/checkpoints/agent_final.pt" hydra.run.dir="$work/finetune"
$py -m real_robot.convert "$(ls "$work"/log/*.o2olog | head -n 1)" "$work/recorded.hdf5"
$py -m rl.train "${bridge[@]}" agent=iql agent.hidden=[64,64] dataset=d4rl:"$work/recorded.hdf5" \
    dataset.name=recorded dataset.clip_actions=true steps.offline=300 steps.online=100 hydra.run.dir="$work/offline"
