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

The oracle is one fixed build on every machine: scripts/setup builds llama-cpp-python for
AVX2 + FMA + F16C, without AVX-512, AVX-VNNI or AMX (GGML_NATIVE=OFF), so its F32/F16 dots,
SiLU and attention sum in 8 lanes whatever the CPU. Pensieve runs in one of its kernel
modes (PENSIEVE_KERNELS): scalar, avx2/8, avx2/16, avx2+vnni/8, avx2+vnni/16, of which
the CPU runs a subset (`pensieve --version` lists it). The 8-lane SIMD modes keep the
oracle's float order (bit-identical logits); the 16-lane modes keep the order of an AVX-512
llama.cpp build, and the scalar reference its own: both are held to tolerances instead.
MODES_RUN records what the tests exercised; tests/conftest.py prints it at the end.
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
    check_oracle_build()
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


ALL_MODES = ("scalar", "avx2/8", "avx2/16", "avx2+vnni/8", "avx2+vnni/16")
ORACLE_ORDER_MODES = ("avx2/8", "avx2+vnni/8")  # the oracle's float order
MODES_RUN = set()


def oracle_features():
    """The CPU features llama.cpp was built with, as it reports them."""
    import llama_cpp
    return llama_cpp.llama_print_system_info().decode()


def check_oracle_build():
    """The oracle is the pinned AVX2 build (scripts/setup), not a native one."""
    info = oracle_features()
    assert "AVX2 = 1" in info and "FMA = 1" in info, info
    for f in ("AVX512 = 1", "AVX512_VNNI = 1", "AVX512_BF16 = 1", "AVX_VNNI = 1", "AMX_INT8 = 1"):
        assert f not in info, f"llama-cpp-python is not the pinned AVX2 build ({f}): rerun scripts/setup\n{info}"


@functools.lru_cache(maxsize=None)
def runnable_modes(bin_path):
    """The kernel modes this CPU can run, as `pensieve --version` lists them."""
    r = subprocess.run([str(bin_path), "--version"], capture_output=True, text=True, timeout=60)
    line = next(l for l in r.stdout.splitlines() if "this CPU runs:" in l)
    modes = tuple(line.split("this CPU runs:")[1].strip(" )").split())
    assert modes and modes[0] == "scalar" and set(modes) <= set(ALL_MODES), modes
    return modes


def exact_mode(bin_path):
    """The mode the exactness tests run in: the widest 8-lane one the CPU has (the oracle's
    float order), or the scalar reference on a CPU without AVX2."""
    modes = runnable_modes(bin_path)
    for m in ("avx2+vnni/8", "avx2/8"):
        if m in modes:
            return m
    return "scalar"


def pensieve_env(bin_path=None, mode=None):
    """The environment of a pensieve run in kernel mode `mode` (default: exact_mode)."""
    env = dict(os.environ)
    env.pop("PENSIEVE_NO_AVX512", None)
    env["PENSIEVE_KERNELS"] = mode or exact_mode(bin_path)
    MODES_RUN.add(env["PENSIEVE_KERNELS"])
    return env


def pensieve(bin_path, model, *args, timeout=300, mode=None):
    r = subprocess.run([str(bin_path), "run", "-m", str(model), "--threads", "2", *args],
                       capture_output=True, text=True, timeout=timeout,
                       env=pensieve_env(bin_path, mode))
    assert r.returncode == 0, f"pensieve run failed ({r.returncode}): {r.stderr}"
    assert f"kernels {mode or exact_mode(bin_path)}" in r.stderr, r.stderr
    return r


def pensieve_logits(bin_path, model, tokens, tmp_path, *extra, mode=None):
    out = tmp_path / "logits.f32"
    pensieve(bin_path, model, "--prompt-ids", " ".join(map(str, tokens)), "-n", "1",
             "--temperature", "0", "--all-logits", str(out), *extra, mode=mode)
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
