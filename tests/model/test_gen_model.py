"""The synthetic model generator (tests/tools/gen_model.py) against llama.cpp and pensieve.

Every (architecture, weight type) file must load in llama.cpp (llama-cpp-python) and
evaluate a few tokens to finite, non-constant logits, and `pensieve info` must accept it
with the hyper-parameters the generator wrote. Files are generated once per session.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import gen_model  # noqa: E402

CASES = [(a, t) for a in gen_model.ARCHS for t in gen_model.WTYPES]


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gen_models")


def model_path(gen_dir, arch, wtype):
    path = gen_dir / f"{arch}-{wtype}.gguf"
    if not path.exists():
        gen_model.write_model(path, arch, wtype, seed=1)
    return path


def info(pensieve_bin, path):
    r = subprocess.run([str(pensieve_bin), "info", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    fields = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def parse_mix(text):
    """'21 (f32 7, q4_K 14)' -> {'f32': 7, 'q4_K': 14}"""
    inner = text[text.index("(") + 1 : text.rindex(")")]
    return {name: int(n) for name, n in (part.split() for part in inner.split(", "))}


@pytest.mark.parametrize("arch,wtype", CASES)
def test_llama_cpp_runs_generated_model(gen_dir, arch, wtype):
    import llama_cpp
    from llama_cpp import Llama

    path = model_path(gen_dir, arch, wtype)
    llm = Llama(model_path=str(path), vocab_only=False, n_ctx=64, n_threads=1, verbose=False)
    try:
        assert llm.n_vocab() == gen_model.SHAPES["n_vocab"]
        assert llm.n_embd() == gen_model.SHAPES["n_embd"]
        tokens = llm.tokenize(b"hello world the cat", add_bos=True)
        assert [llm.detokenize([t]) for t in tokens[1:]] == [b" hello", b" world", b" the", b" cat"]
        llm.eval(tokens)
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # the last token's logits
        logits = np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).astype(np.float64)
        assert logits.shape == (gen_model.SHAPES["n_vocab"],)
        assert np.all(np.isfinite(logits))
        assert logits.std() > 1e-3, "logits are constant: the weights do not reach the output"
    finally:
        llm.close()


@pytest.mark.parametrize("arch,wtype", CASES)
def test_pensieve_info_accepts_generated_model(pensieve_bin, gen_dir, arch, wtype):
    path = model_path(gen_dir, arch, wtype)
    f = info(pensieve_bin, path)
    s = gen_model.SHAPES
    assert f["architecture"] == arch
    assert f["name"] == f"synthetic {arch} {wtype}"
    assert int(f["embedding"]) == s["n_embd"]
    assert int(f["vocabulary"]) == s["n_vocab"]
    assert int(f["heads"]) == s["n_head"]
    assert int(f["kv heads"]) == s["n_head_kv"]
    assert int(f["feed-forward"]) == s["n_ff"]
    assert int(f["layers"]) == gen_model.DEFAULT_LAYERS.get(arch, 3)
    assert f["head size k/v"] == f"{s['head_dim']} / {s['head_dim']}"
    # Every matrix has the requested type; vectors stay f32.
    mix = parse_mix(f["tensors"])
    want = {"q2_k": "q2_K", "q3_k": "q3_K", "q4_k": "q4_K", "q5_k": "q5_K",
            "q6_k": "q6_K"}.get(wtype, wtype)
    assert set(mix) == {"f32", want}, mix
    if arch == "gemma3":
        assert f["sliding window"].startswith(f"{gen_model.SLIDING_WINDOW} tokens on 5 of 6")
        assert f["output"] == "tied to token_embd"
    else:
        assert f["output"] == "output.weight"


def test_generation_is_deterministic(tmp_path):
    a = gen_model.write_model(tmp_path / "a.gguf", "qwen2", "q8_0", seed=7)
    b = gen_model.write_model(tmp_path / "b.gguf", "qwen2", "q8_0", seed=7)
    c = gen_model.write_model(tmp_path / "c.gguf", "qwen2", "q8_0", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
