"""The default model (Gemma 3 270M Q4_K_M, real weights) against llama.cpp on the same file.

Same prompt token ids on both sides (tokenized by llama.cpp), llama.cpp on its reference
CPU kernels (oracle.py says why). Checks: logits at every position of a 64+ token prompt,
with the same top-1 token at >= 99% of the positions (the number of bit-identical rows and
max |diff| relative to the logit range are printed), and 32-token greedy continuations of
24 varied prompts (at least 10 identical; any divergence only where llama.cpp's own top
two tokens were nearly tied), and every intermediate tensor of a shorter prompt.

Pensieve keeps llama.cpp's float order in the dots, RoPE, softmax and attention (in the
lane width of the pinned AVX2 oracle, see oracle.py), so the logits are bit-identical in
the 8-lane kernel modes. The prompt's logits are also checked in every other kernel mode
the CPU runs (the scalar reference, the 16-lane order), and a configuration that changes
the order on purpose (an F32 KV cache, batches of 7), with the noise allowance below.
"""
import numpy as np
import pytest

from oracle import (ORACLE_ORDER_MODES, compare, exact_mode, llama_greedy, llama_logits,
                    llama_model, pensieve_env, pensieve_greedy, pensieve_logits, runnable_modes)

LONG_PROMPT = (
    "The history of the lighthouse at the edge of the harbour begins in 1842, when the "
    "town council voted to replace the old signal fire with a stone tower. Builders hauled "
    "granite from the quarry on the hill, and the lens, ground in Paris, arrived by ship the "
    "following spring. For a hundred years keepers climbed its spiral stairs every evening "
    "to trim the wick, wind the clockwork and write the weather in a leather logbook."
)

# Where the float order differs, last-bit differences (summation order, exp, rounding of
# 8-bit activations) are amplified by this small model to a few tenths of a logit (up to
# ~2 at the worst position); where llama.cpp's own top two are closer than this, either
# token is a fair answer.
NOISE = 1.0

GREEDY_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4, 5,",
    "The three primary colors are",
    "To make a cup of tea, first",
    "Photosynthesis is the process by which",
    "Dear Sir or Madam,\nI am writing to",
    "SELECT name, age FROM users WHERE",
    "The quick brown fox",
    "In 1969, astronauts",
    "Water boils at",
    "My favourite recipe for bread uses",
    "import numpy as np\n",
    "The weather today is",
    "Roses are red, violets are",
    "The largest planet in the solar system is",
    "for (int i = 0; i < n; i++) {",
    "Breaking news: scientists have discovered",
    "Monday, Tuesday, Wednesday,",
    "The recipe calls for two cups of flour and",
    "<html>\n<head>\n<title>",
    "It was the best of times, it was",
    "A haiku about autumn:\n",
]


@pytest.fixture(scope="module")
def llm(default_model):
    return llama_model(default_model, n_ctx=512)


def check_prompt_logits(ours, ref, label, same_order=True):
    """same_order: pensieve runs in llama.cpp's float order (the default configuration)."""
    c = compare(ours, ref)
    clear = c["gap"] > NOISE
    top1_clear = float(np.mean(c["agree"][clear]))
    exact = int(np.sum(np.all(ours == ref, axis=1)))
    print(f"\n{label}, {len(ref)} positions: {exact} bit-identical; max |diff| "
          f"{c['max_abs']:.4f} over a logit range of {c['range']:.2f} (relative {c['rel']:.4f}), "
          f"mean |diff| {float(np.mean(np.abs(ours - ref))):.4f}; top-1 agreement "
          f"{c['top1']:.4f} overall, {top1_clear:.4f} where llama.cpp's top two differ by more "
          f"than {NOISE}")
    assert c["rel"] < 0.05, c
    assert float(np.mean(np.abs(ours - ref))) < 0.01 * c["range"], c
    assert top1_clear >= 0.99, c
    assert c["top1"] >= (0.99 if same_order else 0.93), c


def test_prompt_logits_match_llama_cpp(pensieve_bin, default_model, llm, tmp_path):
    tokens = llm.tokenize(LONG_PROMPT.encode(), add_bos=True)
    assert len(tokens) >= 64
    ref = llama_logits(llm, tokens)
    ours = pensieve_logits(pensieve_bin, default_model, tokens, tmp_path)
    check_prompt_logits(ours, ref, f"default model, kernels {exact_mode(pensieve_bin)}")


def test_prompt_logits_in_every_kernel_mode(pensieve_bin, default_model, llm, tmp_path):
    """Each kernel mode this CPU runs: the 8-lane ones bit-identical to llama.cpp, the
    scalar reference and the 16-lane order within the noise allowance (and the two
    16-lane modes, AVX2 and AVX2+VNNI, the same bits: their integer sums are exact)."""
    tokens = llm.tokenize(LONG_PROMPT.encode(), add_bos=True)
    ref = llama_logits(llm, tokens)
    got = {}
    for mode in runnable_modes(pensieve_bin):
        ours = got[mode] = pensieve_logits(pensieve_bin, default_model, tokens, tmp_path, mode=mode)
        same_order = mode in ORACLE_ORDER_MODES
        check_prompt_logits(ours, ref, f"default model, kernels {mode}", same_order=same_order)
        if same_order:
            assert np.array_equal(ours, ref), mode
    if "avx2+vnni/16" in got:
        assert np.array_equal(got["avx2+vnni/16"], got["avx2/16"])


def test_f32_kv_cache_and_small_batches(pensieve_bin, default_model, llm, tmp_path):
    tokens = llm.tokenize(LONG_PROMPT.encode(), add_bos=True)
    ref = llama_logits(llm, tokens)
    ours = pensieve_logits(pensieve_bin, default_model, tokens, tmp_path, "--kv-f32",
                           "--batch-size", "7")
    check_prompt_logits(ours, ref, "f32 kv cache, batches of 7", same_order=False)


def test_greedy_continuations_match_llama_cpp(pensieve_bin, default_model, llm):
    identical, report = 0, []
    for text in GREEDY_PROMPTS:
        tokens = llm.tokenize(text.encode(), add_bos=True)
        ref = llama_greedy(llm, tokens, 32)
        ours = pensieve_greedy(pensieve_bin, default_model, tokens, 32)
        assert len(ours) == 32
        if ours == ref:
            identical += 1
            continue
        # a divergence is acceptable only at a near-tie of llama.cpp's own top two
        k = next(i for i in range(32) if ours[i] != ref[i])
        scores = llama_logits(llm, tokens + ref[:k])[-1]
        top2 = np.sort(scores)[-2:]
        report.append((text, k, float(top2[1] - top2[0])))
        assert top2[1] - top2[0] < NOISE, (text, k, ours, ref)
    print(f"\ngreedy: {identical}/{len(GREEDY_PROMPTS)} identical; diverged at near-ties: {report}")
    assert identical >= 10, report


def test_intermediate_tensors_match_llama_cpp(pensieve_bin, default_model):
    """Every intermediate tensor of every layer (norms, q/k/v before and after QK-norm and
    RoPE, attention, Wo, FFN, residuals) equals llama.cpp's bit for bit, so a change that
    breaks the float order shows where (tests/tools/compare_tensors.py prints the table)."""
    from compare_tensors import compare, llama_with_callback
    llm, seen = llama_with_callback(default_model, fast_paths=False, threads=2)
    tokens = llm.tokenize(LONG_PROMPT[:160].encode(), add_bos=True)
    rows, ref, ours = compare(llm, seen, pensieve_bin, default_model, tokens, env=pensieve_env(pensieve_bin))
    assert len(rows) == 1 + 17 * 18, [r[0] for r in rows]  # every step of every layer
    differing = [r for r in rows if r[2] > 0]
    print(f"\n{len(rows)} tensors compared over {len(tokens)} tokens; differing: {differing[:5]}")
    assert not differing, differing[:5]
    assert np.array_equal(ref, ours)


def test_long_prompt_past_batch_and_sliding_window(pensieve_bin, default_model, tmp_path):
    """722 tokens: two batches of up to 512 on both sides, and Gemma 3's local layers
    (window 512) masking their oldest cells; still bit-identical."""
    llm = llama_model(default_model, n_ctx=1024)
    tokens = llm.tokenize(((LONG_PROMPT + " ") * 8).encode(), add_bos=True)
    assert len(tokens) > 512 + 64
    ref = llama_logits(llm, tokens)
    ours = pensieve_logits(pensieve_bin, default_model, tokens, tmp_path, "--ctx-size", "1024")
    exact = int(np.sum(np.all(ours == ref, axis=1)))
    print(f"\n{len(tokens)} positions: {exact} bit-identical")
    assert exact == len(tokens), compare(ours, ref)
