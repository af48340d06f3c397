#!/usr/bin/env bash
# Several nodes that reach each other by passwordless ssh: run this once, on the first node
# of the hostfile. DeepSpeed starts every node's processes over ssh (pdsh if installed).
#   HOSTFILE=launch/hostfile launch/multinode_ssh.sh --run-dir /shared/runs/1b --preset original \
#       --corpus '/shared/1b/training/*' --vocab /shared/1b/vocab.txt --batch-size 128
# Needs: the same Python environment and paths on every node, and --run-dir on a filesystem
# all nodes see (rank 0 writes it; every rank reads it on --resume).
set -euo pipefail
HOSTFILE=${HOSTFILE:-$(dirname "$0")/hostfile.example}
DS_CONFIG=${DS_CONFIG:-$(dirname "$0")/ds_zero1_bf16.json}
MASTER_ADDR=${MASTER_ADDR:-$(awk '!/^#/ && NF {print $1; exit}' "$HOSTFILE")}
exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
    --module elmo_dist.cli.pretrain --deepspeed-config "$DS_CONFIG" "$@"
