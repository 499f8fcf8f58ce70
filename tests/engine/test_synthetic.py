"""Synthetic random-weight models (tests/tools/gen_model.py) against llama.cpp.

One model per architecture (f32 weights: any difference is the engine's arithmetic, not
quantization) and one per weight type (llama architecture). The same prompt ids go to
both engines; logits at every position are compared. Tolerances, relative to the logit
range: f32 2e-3; f16 and bf16 5e-3; quantized types 2e-2 (8-bit activation rounding,
applied by both engines, flips differently on last-bit differences). Top-1 must agree
wherever llama.cpp's top two differ by more than 5% of the range of a position.

Every type keeps the float order of llama.cpp's reference kernels (oracle.py; BF16 that of
its build without AVX512-BF16, which the pinned oracle is),
so there the logits must also be bit-identical in the kernel modes of the oracle's 8-lane
order. Every model is run in every kernel mode the CPU can run: the scalar reference and
the 16-lane order are held to the tolerances above, and the two 16-lane modes (AVX2 and
AVX2+VNNI) to each other's bits.
"""
import numpy as np
import pytest

from oracle import (ORACLE_ORDER_MODES, compare, llama_logits, llama_model, pensieve_logits,
                    runnable_modes)

ARCHS = ["gemma3", "llama", "qwen2", "qwen3", "phi3"]
WTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k",
          "q4_k", "q5_k", "q6_k"]
TOLERANCE = {"f32": 2e-3, "f16": 5e-3, "bf16": 5e-3}


def prompt(n=60, seed=1):
    """BOS then n ids of ordinary tokens (byte tokens and words of the synthetic vocab)."""
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(3, 512, n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory, gen_model):
    root = tmp_path_factory.mktemp("synthetic")
    cache = {}

    def get(arch, wtype):
        if (arch, wtype) not in cache:
            cache[(arch, wtype)] = gen_model.write_model(root / f"{arch}-{wtype}.gguf", arch=arch,
                                                         wtype=wtype, seed=7)
        return cache[(arch, wtype)]
    return get


def check(pensieve_bin, path, wtype, tmp_path, tokens):
    llm = llama_model(path, n_ctx=256)
    ref = llama_logits(llm, tokens)
    tol = TOLERANCE.get(wtype, 2e-2)
    got = {}
    for mode in runnable_modes(pensieve_bin):
        ours = got[mode] = pensieve_logits(pensieve_bin, path, tokens, tmp_path, mode=mode)
        c = compare(ours, ref)
        exact = int(np.sum(np.all(ours == ref, axis=1)))
        print(f"\n{path.name} [{mode}]: {exact}/{len(tokens)} rows bit-identical; max |diff| "
              f"{c['max_abs']:.3g}, relative {c['rel']:.3g} (tolerance {tol}), top-1 {c['top1']:.3f}")
        if mode in ORACLE_ORDER_MODES:
            assert exact == len(tokens), (mode, c)
        assert c["rel"] < tol, (mode, c)
        clear = c["gap"] > 0.05 * (ref.max(axis=1) - ref.min(axis=1))
        assert clear.sum() >= len(tokens) // 4, "too few positions with a clear winner to judge"
        assert c["agree"][clear].all(), (mode, np.nonzero(~c["agree"] & clear), c)
    if "avx2+vnni/16" in got:
        assert np.array_equal(got["avx2+vnni/16"], got["avx2/16"])


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_matches_llama_cpp(pensieve_bin, models, tmp_path, arch):
    # 61 positions: past gemma3's sliding window of 16, so its local layers mask
    check(pensieve_bin, models(arch, "f32"), "f32", tmp_path, prompt())


@pytest.mark.parametrize("wtype", WTYPES)
def test_weight_type_matches_llama_cpp(pensieve_bin, models, tmp_path, wtype):
    check(pensieve_bin, models("llama", wtype), wtype, tmp_path, prompt(seed=2))


@pytest.mark.parametrize("wtype", ["q8_0", "q4_k"])
def test_quantized_gemma3_matches_llama_cpp(pensieve_bin, models, tmp_path, wtype):
    # GELU, QK-norm, post-norms and the tied head over quantized weights
    check(pensieve_bin, models("gemma3", wtype), wtype, tmp_path, prompt(seed=3))


def test_llama3_rope_frequency_factors(pensieve_bin, gen_model, tmp_path):
    # rope_freqs.weight divides each rotation frequency (llama 3.x long-context scaling)
    ff = np.linspace(1.0, 32.0, gen_model.SHAPES["head_dim"] // 2).astype(np.float32)
    path = gen_model.write_model(tmp_path / "llama-ff.gguf", arch="llama", wtype="f32", seed=7,
                                 extra_tensors=[("rope_freqs.weight", ff)])
    plain = gen_model.write_model(tmp_path / "llama.gguf", arch="llama", wtype="f32", seed=7)
    tokens = prompt(seed=4)
    check(pensieve_bin, path, "f32", tmp_path, tokens)
    # and the factors change the result, so the check above saw them applied
    a = pensieve_logits(pensieve_bin, path, tokens, tmp_path)
    b = pensieve_logits(pensieve_bin, plain, tokens, tmp_path)
    assert np.abs(a - b).max() > 1e-2


@pytest.mark.parametrize("arch,wtype", [("llama", "f32"), ("llama", "f16"), ("llama", "q8_0"),
                                        ("llama", "q4_k"), ("gemma3", "q5_0"), ("phi3", "q6_k")])
def test_one_token_steps_bit_identical(pensieve_bin, models, tmp_path, arch, wtype):
    """Batches of one token take llama.cpp's one-token kernels (ggml's vec_dot, not its
    matrix multiply): prompts fed a token at a time on both sides, as decoding does."""
    path = models(arch, wtype)
    tokens = prompt(n=40, seed=4)
    ref = llama_logits(llama_model(path, n_ctx=256, n_batch=1), tokens)
    ours = pensieve_logits(pensieve_bin, path, tokens, tmp_path, "--batch-size", "1")
    exact = int(np.sum(np.all(ours == ref, axis=1)))
    print(f"\n{path.name}, one token at a time: {exact}/{len(tokens)} rows bit-identical")
    assert exact == len(tokens), compare(ours, ref)
