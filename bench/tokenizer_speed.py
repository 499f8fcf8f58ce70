#!/usr/bin/env python3
"""Tokenizer speed: Pensieve against llama.cpp (llama-cpp-python, vocab only), same file.

Tokenizes a ~200 KB mixed text (prose, code, JSON, CJK, emoji: tests/tok/corpus.py
text_200k) with BOS, best of N runs each, and prints tokens/s of both and the ratio, per
vocabulary: the default model's (Gemma 3, SPM) and llama.cpp's qwen2 and llama-bpe test
vocabularies (byte-level BPE); the 7B model's too when it is installed. Also with
parse_special, the path chat templates take. Checks that both give the same ids.

    .venv/bin/python bench/tokenizer_speed.py [--reps N] [--binary build/tools/tok_batch]
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tok"))
import corpus  # noqa: E402

DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
LARGE_MODEL_FILE = "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"


def models_dir() -> pathlib.Path:
    if os.environ.get("PENSIEVE_MODELS"):
        return pathlib.Path(os.environ["PENSIEVE_MODELS"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "pensieve" / "models"


def llama_best(llm, data, special, reps):
    best, ids = 1e30, None
    for _ in range(reps):
        t0 = time.perf_counter()
        ids = llm.tokenize(data, add_bos=True, special=special)
        best = min(best, time.perf_counter() - t0)
    return len(ids), best, ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--binary", default=str(ROOT / "build" / "tools" / "tok_batch"))
    args = ap.parse_args()
    from llama_cpp import Llama

    data = corpus.text_200k().encode()
    vocabs = [("gemma3 (spm)", models_dir() / DEFAULT_MODEL_FILE),
              ("qwen2 (bpe)", ROOT / "tests/.cache/vocab/ggml-vocab-qwen2.gguf"),
              ("llama-bpe (bpe)", ROOT / "tests/.cache/vocab/ggml-vocab-llama-bpe.gguf"),
              ("r1-distill-qwen-7b (bpe)", models_dir() / LARGE_MODEL_FILE)]
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(data)
        f.flush()
        print(f"text: {len(data)} bytes; best of {args.reps}")
        print(f"{'vocabulary':26} {'special':7} {'tokens':>7} {'pensieve tok/s':>15} "
              f"{'llama.cpp tok/s':>16} {'ratio':>6} same")
        for name, path in vocabs:
            if not path.exists():
                print(f"{name:26} (not installed: {path.name})")
                continue
            llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
            for special in (False, True):
                cmd = [args.binary, str(path), "bench", f.name, str(args.reps)]
                if special:
                    cmd.append("special")
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                n_ours, t_ours = out.split()
                n_ours, t_ours = int(n_ours), float(t_ours)
                n_ref, t_ref, _ = llama_best(llm, data, special, args.reps)
                print(f"{name:26} {str(special):7} {n_ref:7d} {n_ours / t_ours:15.0f} "
                      f"{n_ref / t_ref:16.0f} {t_ref / t_ours:6.2f} {n_ours == n_ref}")


if __name__ == "__main__":
    main()
