#!/bin/bash
# prepare.sh - fill .gpu/ (ignored, carried to the GPU machine with each device call) on
# the project machine: the CUDA binaries (make cuda, stripped), the shared libraries they
# need that the GPU machine lacks, the K-quant synthetic models (llama.cpp quantizes them
# here; the other types are generated there), and llama.cpp's trimmed source with the
# vocabulary for the random-weight benchmark models (shared/gpu-peer's recipe).
# Usage: bench/gpu/prepare.sh   (then `bash .gpu/run.sh check|bench` on the GPU machine,
# with .gpu carried; where the device tool sends another checkout than this one, copy
# .gpu into a folder of that checkout that git ignores and carry that)
set -euo pipefail
cd "$(dirname "$0")/../.."
G=.gpu
PEER=${PEER:-/work/shared/gpu-peer}
nice -n 10 make -j2 cuda
mkdir -p $G/bin $G/lib $G/models $G/peer
strip -o $G/bin/pensieve build/cuda/pensieve
strip -o $G/bin/cuda_check build/cuda/cuda_check
# every library ldd resolves, except the C library's own (the GPU machine has newer ones)
ldd build/cuda/pensieve | awk '/=> \//{print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
    *) cp -L "$lib" $G/lib/ ;;
  esac
done
# K-quants need llama.cpp's quantizer (llama-cpp-python here); the rest gen_model.py
# writes on the GPU machine with gguf-py from the llama.cpp tarball
for t in q2_k q3_k q4_k q5_k q6_k; do
  [ -f $G/models/qwen2-$t.gguf ] || .venv/bin/python tests/tools/gen_model.py --arch qwen2 --type $t --out $G/models/qwen2-$t.gguf
done
for a in llama gemma3 qwen3 phi3; do
  [ -f $G/models/$a-q4_k.gguf ] || .venv/bin/python tests/tools/gen_model.py --arch $a --type q4_k --out $G/models/$a-q4_k.gguf
done
cp tests/tools/gen_model.py $G/
# llama.cpp (llama-cpp-python 0.3.36's vendored tree, trimmed) and the qwen2 vocabulary
if [ ! -f $G/peer/llama.cpp-trim.tar.xz ]; then
  d=$(mktemp -d)
  .venv/bin/python -m pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$d"
  bash $PEER/make_trimmed_tarball.sh "$d"/llama_cpp_python-0.3.36.tar.gz $G/peer/llama.cpp-trim.tar.xz
  rm -rf "$d"
fi
cp $PEER/gen_qwen2_gguf.py $PEER/bw.py $PEER/summarize.py $G/peer/
if [ ! -f $G/peer/vocab.json ]; then
  d=$(mktemp -d)
  tar xJf $G/peer/llama.cpp-trim.tar.xz -C "$d" llama.cpp/gguf-py
  .venv/bin/python $PEER/gen_qwen2_gguf.py --out "$d/x" --shape 7b --wtype f16 \
    --vocab tests/.cache/vocab/ggml-vocab-deepseek-r1-qwen.gguf --gguf-py "$d/llama.cpp/gguf-py" \
    --dump-vocab $G/peer/vocab.json
  rm -rf "$d"
fi
# the scripts too: a device call may run a copy of another checkout with .gpu carried
cp bench/gpu/run.sh bench/gpu/summarize.py $G/
du -sh $G; du -sh $G/*
