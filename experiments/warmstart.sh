#!/usr/bin/env bash
# The warm-start study (results/d4rl_o2o_warmstart/README.md), one run per call:
#   [THREADS=2] [PRECISION=fp32] bash experiments/warmstart.sh pretrain <agent> <walker2d|hopper>
#   [THREADS=2] [PRECISION=fp32] bash experiments/warmstart.sh finetune <arm> <walker2d|hopper> <seed>
# agents: wsrl cql calql iql famo2o_cql famo2o_iql unio4
# arms: wsrl (no offline data), cql, cql_nodata, calql, calql_nodata, iql, famo2o_cql, famo2o_iql,
#   unio4 (no offline data online, as the paper)
# pretrain: the paper's schedule (conf/experiment/warmstart_pretrain.yaml), generating the dataset
# first if this machine does not have it. finetune: 50k online steps from the agent's committed
# pre-trained snapshot, results/d4rl_o2o_warmstart/checkpoints/<agent>-<env>-medium.pt
# (conf/experiment/warmstart_finetune.yaml). Run state goes to $O2O_RUNS/warmstart (default
# ~/o2o_runs); the same command resumes a run after a lost session.
# After a pre-training, python -m experiments.warmstart_publish <its run dir> copies its results and
# the snapshot fine-tuning starts from into results/d4rl_o2o_warmstart (to commit).
# A pre-training may be stopped (Ctrl-C, kill) once that rule finds it warm: the snapshot it publishes
# is the first warm one whether the run stopped there or went on (the study stopped IQL's and
# FamO2O-IQL's soon after 75k to save their 1M schedules' hours).
# THREADS: 2 gives a CQL-family run both cores (two such runs side by side total no more); IQL's
# update runs faster on one thread than on two, and beside another run loses little, so the study
# runs IQL-family jobs with THREADS=1 in a second lane (results README, "Cost").
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$1 name=$2 env=$3
runs=${O2O_RUNS:-$HOME/o2o_runs}/warmstart
store=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
[ -d "$store/o2o/$env/medium-v0" ] || .venv/bin/python -m rl.data generate env="$env" level=medium
agent=${name%_nodata}
# The CQL family: matmuls in bfloat16 (float32 weights), 1.9-3x faster where the CPU multiplies
# bfloat16 natively (AMX or AVX-512-BF16; experiments/bench/README.md) and within the spread of
# float32 for CQL over three seeds (results/peer_d3rlpy); IQL and FamO2O-IQL too since IQL passed
# the same test (48.6 ± 4.0 bf16, 58.6 ± 14.2 float32; its update 1.5x faster). Without native bf16
# a run is several times slower (rl.train warns): start it there with PRECISION=fp32 (a run keeps
# the precision it started with).
# IQL pre-trains on CORL's schedule (1M updates). Uni-O4 (float32: its arm ran before IQL's bf16
# result) adds its stated reduction, conf/experiment/warmstart_unio4.yaml, to either stage's preset.
experiment=warmstart_$stage
case $agent in
  iql|famo2o_iql)
    precision=${PRECISION:-bf16}
    schedule=(steps.offline=1000000) ;;
  unio4)
    precision=fp32
    experiment="[warmstart_$stage,warmstart_unio4]"
    schedule=() ;;
  *)
    precision=${PRECISION:-bf16}
    schedule=() ;;
esac
common=(agent="$agent" dataset="$env-medium" threads="${THREADS:-1}" progress=false precision="$precision")
case $stage in
  pretrain)
    exec .venv/bin/python -m rl.train "+experiment=$experiment" "${common[@]}" "${schedule[@]}" \
      "hydra.run.dir=$runs/pretrain-$agent-$env-medium" ;;
  finetune)
    seed=$4
    # With offline data: CQL, Cal-QL, IQL and FamO2O mix it 50/50 (Cal-QL's and RLPD's ratio);
    # WSRL and the *_nodata arms use none (offline_ratio=0, WSRL's own default).
    case $name in
      wsrl|unio4|*_nodata) ratio=0.0 ;;
      *) ratio=0.5 ;;
    esac
    exec .venv/bin/python -m rl.train "+experiment=$experiment" "${common[@]}" seed="$seed" \
      offline_ratio="$ratio" checkpoint="results/d4rl_o2o_warmstart/checkpoints/$agent-$env-medium.pt" \
      "hydra.run.dir=$runs/finetune-$name-$env-medium/seed$seed" ;;
  *) echo "warmstart.sh: unknown stage '$stage' (pretrain or finetune)" >&2; exit 2 ;;
esac
