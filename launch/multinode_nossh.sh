#!/usr/bin/env bash
# Several nodes without ssh between them: run this on every node, each with its NODE_RANK
# (0 on the node whose address is MASTER_ADDR). Each node's launcher starts only its own
# processes; they meet at MASTER_ADDR:MASTER_PORT.
#   node 0:  NODE_RANK=0 MASTER_ADDR=10.0.0.1 launch/multinode_nossh.sh --run-dir /shared/runs/1b ...
#   node 1:  NODE_RANK=1 MASTER_ADDR=10.0.0.1 launch/multinode_nossh.sh --run-dir /shared/runs/1b ...
# Two "nodes" on one machine (how the tests run it): MASTER_ADDR=127.0.0.1 and a hostfile
# whose lines name two labels, e.g. "node0 slots=1" and "node1 slots=1".
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK (0 .. number of nodes - 1)}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
HOSTFILE=${HOSTFILE:-$(dirname "$0")/hostfile.example}
NUM_NODES=${NUM_NODES:-$(grep -cv '^\s*\(#\|$\)' "$HOSTFILE")}
DS_CONFIG=${DS_CONFIG:-$(dirname "$0")/ds_zero1_bf16.json}
exec deepspeed --hostfile "$HOSTFILE" --no_ssh --num_nodes "$NUM_NODES" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
    --module elmo_dist.cli.pretrain --deepspeed-config "$DS_CONFIG" "$@"
