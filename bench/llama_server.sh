#!/bin/sh
# bench/llama_server.sh - build llama.cpp's server (CPU only) once, into build/llama.cpp/.
#
# The source is the llama.cpp tree vendored in the pinned llama-cpp-python sdist (the
# same code the oracle wheel is built from): taken from LLAMA_SDIST_DIR when set, else
# downloaded once with `pip download --no-binary :all: --no-deps` into build/llama.cpp/.
# Prints the path of the llama-server binary on its last line. Builds with nice, two jobs.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/build/llama.cpp"
VERSION=0.3.36
BIN="$OUT/build/bin/llama-server"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$OUT"
SRC="${LLAMA_SDIST_DIR:-}"
if [ -z "$SRC" ]; then
    SRC="$OUT/llama_cpp_python-$VERSION"
    if [ ! -d "$SRC/vendor/llama.cpp" ]; then
        PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
        "$PY" -m pip download --no-binary :all: --no-deps -d "$OUT" \
            "llama_cpp_python==$VERSION" >&2
        tar -xzf "$OUT/llama_cpp_python-$VERSION.tar.gz" -C "$OUT"
    fi
fi
[ -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ] || { echo "no vendor/llama.cpp under $SRC" >&2; exit 1; }
nice -n 10 cmake -S "$SRC/vendor/llama.cpp" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
nice -n 10 cmake --build "$OUT/build" --target llama-server -j 2 >&2
echo "$BIN"
