#!/usr/bin/env bash
# Distributed training with torchrun, as in MMPretrain / MMDetection:
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# NPROC processes on this node (one per GPU; on a machine without CUDA,
# CPU processes with the gloo backend). Several nodes: set NNODES,
# NODE_RANK, MASTER_ADDR and PORT on each, as in the stock scripts.
# PYTHON picks the interpreter (default: python, else python3).
set -eu
if [ $# -lt 2 ]; then
    echo "usage: bash $0 CONFIG NPROC [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
case "$GPUS" in
    '' | *[!0-9]* | 0)
        echo "$0: NPROC must be a whole number >= 1 (processes on this" \
             "node, one per GPU), got '$GPUS'" >&2
        exit 2 ;;
esac
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
HERE="$(cd "$(dirname "$0")" && pwd)"
PY=${PYTHON:-$(command -v python || command -v python3)}

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PY" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$HERE/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
