#!/bin/bash
# run.sh - the GPU machine's side of the CUDA backend's checks and benchmarks, one device
# call each. bench/gpu/prepare.sh fills the carried folder D (default: this script's
# folder's .gpu, or the folder holding this script when it was copied there) with the
# binaries, libraries, models and llama.cpp's source.
#
#   bash run.sh check           cuda_check on every synthetic model (all archs and types)
#   bash run.sh bench [QUICK]   pensieve bench (and llama-bench unless QUICK=1) on
#                               random-weight qwen2 files in real shapes, side by side
# Results and logs go to $OUT (the device tool brings them back).
set -u
D=${D:-$(cd "$(dirname "$0")" && pwd)}
[ -d "$D/bin" ] || D=$(cd "$(dirname "$0")/../../.gpu" && pwd)
OUT=${OUT:-/tmp/gpu-out}
W=/tmp/pv-gpu
mkdir -p "$OUT" $W
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(el)s] $*" | tee -a "$OUT/run.log"; }

# cuBLAS: the toolkit's, else the wheel PyTorch brings
CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.13 2>/dev/null | head -1)
[ -n "$CUBLAS" ] || CUBLAS=$(python3 -c "
import glob,os,sys
for p in sys.path:
    g=sorted(glob.glob(os.path.join(p,'nvidia','cu13','lib','libcublas.so*'))+glob.glob(os.path.join(p,'nvidia','cublas','lib','libcublas.so*')))
    if g: print(g[0]); break" 2>/dev/null)
export LD_LIBRARY_PATH="$D/lib${CUBLAS:+:$(dirname "$CUBLAS")}:${LD_LIBRARY_PATH:-}"
log "cublas: ${CUBLAS:-none}; $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1)"
mkdir -p $W/src
[ -d $W/src/llama.cpp ] || tar xJf "$D/peer/llama.cpp-trim.tar.xz" -C $W/src
GGUF_PY=$W/src/llama.cpp/gguf-py

mode=${1:-check}
if [ "$mode" = check ]; then
  M=$W/models; mkdir -p $M; cp "$D"/models/*.gguf $M/
  for t in f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1; do
    [ -f $M/qwen2-$t.gguf ] || PYTHONPATH=$GGUF_PY python3 "$D/gen_model.py" --arch qwen2 --type $t --out $M/qwen2-$t.gguf > /dev/null
  done
  for a in llama gemma3 qwen3 phi3; do
    [ -f $M/$a-f16.gguf ] || PYTHONPATH=$GGUF_PY python3 "$D/gen_model.py" --arch $a --type f16 --out $M/$a-f16.gguf > /dev/null
  done
  log "models: $(ls $M | tr '\n' ' ')"
  "$D/bin/cuda_check" $M/*.gguf > "$OUT/cuda_check.txt" 2>&1; rc=$?
  grep -E '^(FAIL|==)|cuda_check' "$OUT/cuda_check.txt" | grep -B1 -E 'FAIL|passed' | tail -40
  grep -E '^PASS model' "$OUT/cuda_check.txt" | head -12
  log "cuda_check rc=$rc"
  # greedy text, CPU and GPU, on one synthetic model of each arch
  for a in qwen2 llama gemma3; do
    for dev in cpu cuda; do
      "$D/bin/pensieve" run -m $M/$a-q4_k.gguf -p " hello world the cat" -n 24 --temperature 0 \
        --device $dev --print-ids 2>/dev/null > $W/greedy-$a-$dev.txt
    done
    if cmp -s $W/greedy-$a-cpu.txt $W/greedy-$a-cuda.txt; then log "greedy $a q4_k: same ids on cpu and cuda"
    else log "greedy $a q4_k: DIFFERENT: cpu $(cat $W/greedy-$a-cpu.txt | head -c 200) / cuda $(cat $W/greedy-$a-cuda.txt | head -c 200)"; fi
  done
  exit $rc
fi

# ---- bench ----
QUICK=${QUICK:-0}
BM=/dev/shm/pv-models; mkdir -p $BM
gen() {  # shape wtype
  local f=$BM/qwen2-$1-$2.gguf
  [ -f $f.json ] || python3 "$D/peer/gen_qwen2_gguf.py" --out $f --shape $1 --wtype $2 --vocab "$D/peer/vocab.json" --gguf-py $GGUF_PY >> $W/gen.log 2>&1
}
LB=$W/src/llama.cpp/b/bin/llama-bench
if [ "$QUICK" != 1 ] && [ ! -x $LB ]; then
  ( cd $W/src/llama.cpp && cmake -S . -B b -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > $W/cmake.log 2>&1 &&
    cmake --build b --target llama-bench -j16 > $W/build.log 2>&1; echo "llama.cpp build rc=$?" >> $W/build.log ) &
  BUILDPID=$!
fi
SPECS=${SPECS:-"7b q4km;1.5b q4km;7b q8_0;7b f16"}
IFS=';' read -ra SPEC <<< "$SPECS"
smi() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; }
pvb() {  # tag model args...
  local tag=$1 m=$2; shift 2
  local s0=$(smi)
  ( while sleep 0.5; do smi; done ) > $W/mem-$tag.txt 2>/dev/null & local mp=$!
  timeout 300 "$D/bin/pensieve" bench -m $m --device cuda "$@" > $W/pv-$tag.json 2> $W/pv-$tag.err
  local rc=$?
  kill $mp 2>/dev/null
  local peak=$(sort -n $W/mem-$tag.txt | tail -1)
  echo "{\"tag\": \"$tag\", \"rc\": $rc, \"gpu_mem_before_mib\": ${s0:-0}, \"gpu_mem_peak_mib\": ${peak:-0}, \"result\": $(cat $W/pv-$tag.json 2>/dev/null | tail -1 || echo null)}" >> "$OUT/pensieve.jsonl"
  log "pensieve $tag rc=$rc peak ${peak}MiB: $(cut -c1-300 $W/pv-$tag.json) $(tail -2 $W/pv-$tag.err)"
}
for spec in "${SPEC[@]}"; do
  set -- $spec; sh=$1; wt=$2; f=$BM/qwen2-$sh-$wt.gguf
  gen $sh $wt; cp $f.json "$OUT/" 2>/dev/null
  log "model $f: $(ls -la $f | awk '{print $5}') bytes"
  pvb $sh-$wt-p512 $f -p 512 -n 128 -r ${REPS:-3}
  pvb $sh-$wt-p4096 $f -p 4096 -n 0 -r ${REPS:-2} -b 4096
  if [ "${MIN:-0}" = 1 ]; then
    pvb $sh-$wt-par16 $f -p 512 -n 32 -r 1 --parallel 16
  elif [ "$sh" = 7b ] && [ "$wt" = q4km ]; then
    pvb $sh-$wt-d16k $f -p 16384 -n 128 -r 1 -b 4096
    pvb $sh-$wt-p20k $f -p 20000 -n 1 -r 1 -b 4096
    pvb $sh-$wt-par16 $f -p 512 -n 64 -r 1 --parallel 16
    pvb $sh-$wt-par64 $f -p 512 -n 64 -r 1 --parallel 64
  fi
done
[ "${MIN:-0}" = 1 ] || timeout 60 python3 "$D/peer/bw.py" > "$OUT/bw.txt" 2>&1   # after pensieve: the GPU alone
log "bw: $(grep -E 'copy 4|sum 4' "$OUT/bw.txt" | tr '\n' ';')"
if [ "$QUICK" != 1 ]; then
  wait $BUILDPID; tail -1 $W/build.log | tee -a "$OUT/run.log"
  for spec in "${SPEC[@]}"; do
    set -- $spec; f=$BM/qwen2-$1-$2.gguf; tag=$1-$2
    [ -x $LB ] || break
    timeout 240 $LB -m $f -ngl 99 -r 3 -o jsonl -p 512,4096 -n 128 -fa 0,1 > "$OUT/llama-$tag.jsonl" 2> $W/llama-$tag.err
    log "llama-bench $tag rc=$?: $(grep -c . "$OUT/llama-$tag.jsonl") rows"
    if [ "$tag" = 7b-q4km ]; then
      timeout 200 $LB -m $f -ngl 99 -r 2 -o jsonl -p 0 -n 128 -d 16384 -fa 0,1 > "$OUT/llama-$tag-d16k.jsonl" 2>> $W/llama-$tag.err
      log "llama-bench $tag d16k rc=$?"
    fi
  done
fi
S=$(dirname "$0")/summarize.py; [ -f "$S" ] || S=$D/summarize.py
python3 "$S" "$OUT" > "$OUT/table.md" 2>&1 && cat "$OUT/table.md"
log "done"
