#!/usr/bin/env bash
# Create (or update) mmgal's virtual environment with the pinned stack.
#
#   bash tools/setup_env.sh            # venv at ./.venv
#   MMGAL_VENV=/path bash tools/setup_env.sh
#
# Idempotent: a second run only checks what is already installed.
# mmcv 2.1.0 has no PyPI wheel. A prebuilt wheel is taken from
# $MMGAL_WHEELS (default ../shared/wheels beside the checkout) when there is
# one; otherwise mmcv is built from source with its C++ ops (20-40 min on
# 2 cores), which needs torch importable and --no-build-isolation.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMGAL_VENV:-$ROOT/.venv}"
WHEELS="${MMGAL_WHEELS:-$ROOT/../shared/wheels}"
PY="${PYTHON:-python3}"

log() { printf '[setup_env] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment at $VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# The machine's pip config may point find-links at a CPU-only torch build
# that the registry's torchvision cannot load against. Replace it with the
# mmcv wheel folder (or an empty folder when there is none).
if [ -d "$WHEELS" ]; then
    export PIP_FIND_LINKS="$(cd "$WHEELS" && pwd)"
else
    export PIP_FIND_LINKS="$(mktemp -d)"
    log "no prebuilt wheels at $WHEELS: mmcv will be built from source"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
PIP=("$VPY" -m pip install --quiet)

"${PIP[@]}" --upgrade pip "setuptools<82" wheel
"${PIP[@]}" torch==2.13.0 torchvision==0.28.0
if ! "$VPY" -c "import torch, torchvision; torchvision.ops.nms" 2>/dev/null; then
    log "ERROR: torchvision does not load against the installed torch:"
    "$VPY" -c "import torch, torchvision; print(torch.__version__, torchvision.__version__)" || true
    log "       (a CPU-only '+cpu' torch from a find-links folder is the usual cause)"
    exit 1
fi

if ! "$VPY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
    log "installing mmcv==2.1.0 (with C++ ops)"
    "${PIP[@]}" --no-build-isolation mmcv==2.1.0
fi
if ! "$VPY" -c "import mmcv.ops" 2>/dev/null; then
    log "ERROR: mmcv was installed without its C++ ops (mmcv._ext); mmdet needs them."
    log "       Rebuild with: $VPY -m pip install --no-build-isolation --force-reinstall --no-deps mmcv==2.1.0"
    exit 1
fi

"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/mm.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
"$VPY" -c "import mmgal, mmdet, mmpretrain, torchvision; print('[setup_env] ok: torch', __import__('torch').__version__, 'mmdet', mmdet.__version__, 'mmpretrain', mmpretrain.__version__)"
