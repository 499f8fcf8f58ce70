"""oracle.py - logits from pensieve and from llama.cpp, for the engine tests.

Both sides get the same model file and the same prompt token ids. llama.cpp runs through
llama-cpp-python (`Llama(..., logits_all=True).eval(tokens)`, `.scores`); pensieve runs
`pensieve run --prompt-ids ... --all-logits FILE` and writes f32 logits per position.

llama.cpp runs its reference CPU kernels, the plain per-type dot products, with weight
repacking off (its --no-repack) and its tiled K-quant batch matmul off (GGML_CPU_TILED_MM=0,
set in tests/conftest.py). Pensieve keeps the float order of those reference kernels and
gets the same bits on the default model. The fast paths differ from llama.cpp's own
reference by last-bit noise that a 270M model amplifies: with them on, llama.cpp agrees
with itself at about 98% of the top-1 tokens of the long prompt (measured 2026-11-26).

llama-cpp-python builds llama.cpp natively, so its attention sums in 16 lanes where the
CPU has AVX-512 and in 8 otherwise. Pensieve picks the same from the CPU; if llama.cpp was
built without AVX-512 on an AVX-512 machine, pensieve runs with PENSIEVE_NO_AVX512=1.
"""
import functools
import os
import contextlib
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tools"))


@contextlib.contextmanager
def _no_repack():
    """Model parameters with use_extra_bufts = False (llama.cpp's --no-repack) while a
    Llama is constructed; llama-cpp-python has no argument for it."""
    import llama_cpp.llama_cpp as lc
    default = lc.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lc.llama_model_default_params = params
    try:
        yield
    finally:
        lc.llama_model_default_params = default


def llama_model(path, n_ctx=512, n_batch=512):
    from llama_cpp import Llama
    with _no_repack():
        return Llama(str(path), n_ctx=n_ctx, n_batch=n_batch, logits_all=True, n_threads=2,
                     verbose=False)


def llama_logits(llm, tokens):
    """Logits of every position of `tokens`, evaluated from an empty cache."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def llama_greedy(llm, tokens, n):
    """n greedy tokens after `tokens` (end-of-generation tokens do not stop it)."""
    llm.reset()
    llm.eval(tokens)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        llm.eval([t])
    return out


@functools.lru_cache(maxsize=None)
def llama_has_avx512():
    import llama_cpp
    return b"AVX512 = 1" in llama_cpp.llama_print_system_info()


def pensieve_env():
    """The environment of a pensieve run: the lane order of the llama.cpp build."""
    env = dict(os.environ)
    if not llama_has_avx512():
        env["PENSIEVE_NO_AVX512"] = "1"
    return env


def pensieve(bin_path, model, *args, timeout=300):
    r = subprocess.run([str(bin_path), "run", "-m", str(model), "--threads", "2", *args],
                       capture_output=True, text=True, timeout=timeout, env=pensieve_env())
    assert r.returncode == 0, f"pensieve run failed ({r.returncode}): {r.stderr}"
    return r


def pensieve_logits(bin_path, model, tokens, tmp_path, *extra):
    out = tmp_path / "logits.f32"
    pensieve(bin_path, model, "--prompt-ids", " ".join(map(str, tokens)), "-n", "1",
             "--temperature", "0", "--all-logits", str(out), *extra)
    data = np.fromfile(out, dtype=np.float32)
    assert data.size % len(tokens) == 0
    return data.reshape(len(tokens), -1)


def pensieve_greedy(bin_path, model, tokens, n):
    r = pensieve(bin_path, model, "--prompt-ids", " ".join(map(str, tokens)), "-n", str(n),
                 "--temperature", "0", "--ignore-eos", "--print-ids")
    return [int(t) for t in r.stdout.split()]


def compare(ours, ref):
    """Max |diff| relative to the reference's logit range, and top-1 agreement."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = np.abs(ours - ref)
    rel = float(diff.max() / (ref.max() - ref.min()))
    top1 = float(np.mean(ours.argmax(1) == ref.argmax(1)))
    # positions where the reference's winner leads its runner-up clearly
    part = np.sort(ref, axis=1)
    gap = part[:, -1] - part[:, -2]
    return dict(max_abs=float(diff.max()), range=float(ref.max() - ref.min()), rel=rel,
                top1=top1, gap=gap, agree=ours.argmax(1) == ref.argmax(1))
