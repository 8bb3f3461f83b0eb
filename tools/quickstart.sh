#!/usr/bin/env bash
# The main job on an embedded default: set up the environment (idempotent),
# write scikit-learn's digits as an image folder, train MMPretrain's stock
# ResNet-18 CIFAR config with GAL on it, evaluate it every epoch and save
# checkpoints under work_dirs/quickstart_gal.
#   bash tools/quickstart.sh [extra tools/train.py args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
VPY="${MMGAL_VENV:-$ROOT/.venv}/bin/python"
cd "$ROOT"
"$VPY" tools/make_digits.py data/digits
"$VPY" tools/train.py configs/mmpretrain/digits/resnet18_gal_1xb32_digits.py \
    --work-dir work_dirs/quickstart_gal "$@"
echo "quickstart: checkpoints and logs in $ROOT/work_dirs/quickstart_gal"
