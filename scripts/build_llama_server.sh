#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the llama.cpp that llama-cpp-python vendors (same version, same
# instruction sets as scripts/test.sh builds the Python package with), once: the binary is cached under
# ~/.cache/backtrack_sampler/llama-server/<version>-<flags hash>/ and this script prints its path (its one
# line on stdout; the build's output goes to stderr). A second call while one builds waits for it.
# bench/server_throughput.py --setups llama-server runs it. About 10 minutes on 2 cores the first time.
#
#   bash scripts/build_llama_server.sh [VERSION]     (default: the installed llama-cpp-python's version)
#
# LLAMA_CPP_PYTHON_SDIST=path/llama_cpp_python-VERSION.tar.gz: build from that sdist instead of downloading it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
VERSION="${1:-$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')}"
FLAGS="$("$PYTHON" scripts/llama_cmake_args.py) -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release"
HASH="$(printf '%s' "$FLAGS" | sha256sum | cut -c1-12)"
DEST="${XDG_CACHE_HOME:-$HOME/.cache}/backtrack_sampler/llama-server/${VERSION}-${HASH}"
if [ -x "$DEST/llama-server" ]; then
  echo "$DEST/llama-server"
  exit 0
fi
command -v cmake >/dev/null || { echo "error: cmake is needed to build llama-server (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$(dirname "$DEST")"
exec 9>"$DEST.lock"
flock 9  # one build at a time; who waited finds the binary the other built
if [ -x "$DEST/llama-server" ]; then
  echo "$DEST/llama-server"
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SDIST="${LLAMA_CPP_PYTHON_SDIST:-}"
if [ -z "$SDIST" ]; then
  "$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==${VERSION}" -d "$WORK" >&2
  SDIST="$WORK/llama_cpp_python-${VERSION}.tar.gz"
fi
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_python-${VERSION}/vendor/llama.cpp"
[ -d "$SRC" ] || { echo "error: $SDIST holds no llama_cpp_python-${VERSION}/vendor/llama.cpp" >&2; exit 1; }
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$WORK/build" $FLAGS >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$DEST"
cp "$WORK/build/bin/llama-server" "$DEST/llama-server.tmp"
printf '%s\n' "$FLAGS" > "$DEST/cmake-flags.txt"
mv "$DEST/llama-server.tmp" "$DEST/llama-server"
echo "$DEST/llama-server"
