#!/usr/bin/env bash
# Several processes on one machine: one per GPU, or several CPU ranks.
#   NPROC=4 launch/single_node.sh --run-dir runs/ptb --preset small --batch-size 128
# Extra arguments go to `elmo-dist pretrain` unchanged. DS_CONFIG picks ZeRO/precision
# (default ZeRO 0 fp32). LAUNCHER=torchrun uses torchrun instead of deepspeed, restarting the
# job up to MAX_RESTARTS (default 3) times when a rank dies: `--resume auto` makes every
# restart continue from the newest checkpoint (and the first start begin the run).
set -euo pipefail
NPROC=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
DS_CONFIG=${DS_CONFIG:-$(dirname "$0")/ds_zero0_fp32.json}
PORT=${MASTER_PORT:-29500}
if ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    # CPU ranks: split the cores between them, or every step runs 10-25x slower.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}
fi
if [ "${LAUNCHER:-deepspeed}" = torchrun ]; then
    exec torchrun --nproc_per_node "$NPROC" --master_port "$PORT" --max-restarts "${MAX_RESTARTS:-3}" \
        -m elmo_dist pretrain --resume auto --deepspeed-config "$DS_CONFIG" "$@"
fi
# deepspeed adds --local_rank=N right after the module name, so launch the pretrain module itself.
exec deepspeed --num_gpus "$NPROC" --master_port "$PORT" \
    --module elmo_dist.cli.pretrain --resume auto --deepspeed-config "$DS_CONFIG" "$@"
