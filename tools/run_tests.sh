#!/usr/bin/env bash
# Set up the environment (idempotent) and run the whole test suite.
#
#   bash tools/run_tests.sh              # everything, slow end-to-end too
#   bash tools/run_tests.sh -m "not slow"  # extra args go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
VPY="${MMGAL_VENV:-$ROOT/.venv}/bin/python"
# The regression data shipped beside the checkout (../shared/data).
if [ -z "${MMGAL_DATA_ROOT:-}" ] && [ -d "$ROOT/../shared/data" ]; then
    export MMGAL_DATA_ROOT="$(cd "$ROOT/../shared/data" && pwd)"
fi
cd "$ROOT"
set +e
"$VPY" -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "run_tests: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
