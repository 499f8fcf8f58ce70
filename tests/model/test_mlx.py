"""MLX model directories against mlx-lm on the CPU (issue 16).

Every architecture is written by mlx-lm's own model class with random weights
(tests/model/mlx_gen.py), float or quantized by mlx's nn.quantize with bits 4 and 8 and
group sizes 32/64/128, and saved as mlx_lm.convert saves; Pensieve's logits at every
prompt position and its greedy continuation are compared with mlx-lm's.

Tolerances (max |diff| over the logit range of the reference, per model):
- f32 weights (quantized ones with f32 scales and biases): mlx-lm computes in f32, so the
  only differences are Pensieve's f16 KV cache and Gemma's fp16 GELU table (llama.cpp's
  choices: each value rounded to 11 significant bits, relative error <= 2^-11 = 4.9e-4);
  through a few layers that stays below 2e-3 (measured: <= 7.5e-4 for gemma3, <= 2.5e-4
  for the others).
- bf16 and f16 weights: first against mlx-lm on the same weights cast to f32 (exact), to
  the f32 tolerance: Pensieve computes in f32 with half-precision weights, except that an
  unquantized BF16 matmul rounds its input to bf16 as llama.cpp does (8 significant bits
  per matmul input: 1.5e-2, measured up to 7.3e-3 for gemma3). Then against
  mlx-lm as it runs them, rounding every activation to the weights' dtype (bf16 keeps 8
  significant bits: 2^-9 = 2e-3 relative per rounding, about ten roundings per layer),
  which Pensieve does not do: 8e-2 for bf16 (measured up to 4.4e-2 for the 7-layer
  gemma3), 1e-2 for f16 (11 bits; measured up to 7e-3).
Top-1 must agree at every position where mlx-lm's top two differ by more than twice the
tolerance; greedy ids may part only where mlx-lm's choice and ours are that close.
Tokenization is compared with the `tokenizers` library (NFC-normalized text: Pensieve, like
llama.cpp, does not apply the NFC normalizer of Qwen2's tokenizer.json).
"""
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import requests

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tok"))
import corpus as corpus_mod  # noqa: E402
import mlx_gen  # noqa: E402
from pensieve_tests import prompt_tokens  # noqa: E402

ROOT = HERE.parent.parent
TOK_BATCH = ROOT / "build" / "tools" / "tok_batch"
ARCHS = ["gemma3", "llama", "qwen2", "qwen3", "phi3"]
QUANTS = [(None, None), (4, 32), (4, 64), (8, 64), (8, 128)]
TOL_F32 = 2e-3
TOL_BF16_DOT = 1.5e-2
TOL = {"float32": TOL_F32, "bfloat16": 8e-2, "float16": 1e-2}


def run(pensieve_bin, *args, env=None, timeout=300):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(pensieve_bin), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("mlx")


@pytest.fixture(scope="module")
def tok_dir(root):
    mlx_gen.make_tokenizer(root / "tok")
    return root / "tok"


@pytest.fixture(scope="module")
def models(root, tok_dir):
    cache = {}

    def get(arch, bits=None, group_size=64, dtype="float32"):
        key = (arch, bits, group_size, dtype)
        if key not in cache:
            name = f"{arch}-{dtype}-" + (f"q{bits}g{group_size}" if bits else "float")
            cache[key] = mlx_gen.make_model(root / name, arch, tok_dir, bits=bits,
                                            group_size=group_size, dtype=dtype, seed=3)
        return cache[key]
    return get


def prompt_ids(n=40, seed=1):
    return [int(t) for t in np.random.default_rng(seed).integers(3, 390, n)]


def pensieve_logits(pensieve_bin, path, tokens, tmp_path):
    out = tmp_path / "logits.f32"
    r = run(pensieve_bin, "run", "-m", path, "--prompt-ids", " ".join(map(str, tokens)), "-n", 1,
            "--temperature", 0, "--all-logits", out)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)


def check_logits(ours, ref, tol, what):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    rng = float(ref.max() - ref.min())
    rel = float(np.abs(ours - ref).max()) / rng
    part = np.sort(ref, axis=1)
    clear = (part[:, -1] - part[:, -2]) > 2 * tol * rng
    agree = ours.argmax(1) == ref.argmax(1)
    print(f"\n{what}: max |diff| / range = {rel:.3g} (tolerance {tol}); top-1 {agree.mean():.3f}, "
          f"{clear.sum()} clear positions")
    assert rel < tol, what
    assert agree[clear].all(), (what, np.nonzero(~agree & clear))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("bits,group_size", QUANTS)
def test_logits_match_mlx_f32(pensieve_bin, models, tmp_path, arch, bits, group_size):
    path = models(arch, bits, group_size or 64)
    tokens = prompt_ids()  # 40 positions: past gemma3's sliding window of 8
    check_logits(pensieve_logits(pensieve_bin, path, tokens, tmp_path),
                 mlx_gen.mlx_logits(path, tokens), TOL_F32, path.name)


@pytest.mark.parametrize("bits,group_size", [(2, 32), (3, 64), (5, 128), (6, 32)])
def test_other_bits_match_mlx(pensieve_bin, models, tmp_path, bits, group_size):
    path = models("qwen3", bits, group_size)
    tokens = prompt_ids(seed=3)
    check_logits(pensieve_logits(pensieve_bin, path, tokens, tmp_path),
                 mlx_gen.mlx_logits(path, tokens), TOL_F32, path.name)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},  # all three bands at head size 16
    {"type": "linear", "factor": 4.0}])
def test_rope_scaling_matches_mlx(pensieve_bin, root, tok_dir, tmp_path, scaling):
    name = "llama-rope-" + scaling.get("rope_type", scaling.get("type"))
    path = mlx_gen.make_model(root / name, "llama", tok_dir, bits=4, group_size=32,
                              dtype="float32", seed=6, config_extra={"rope_scaling": scaling})
    tokens = prompt_ids(seed=5)
    check_logits(pensieve_logits(pensieve_bin, path, tokens, tmp_path),
                 mlx_gen.mlx_logits(path, tokens), TOL_F32, path.name)
    r = run(pensieve_bin, "info", path)
    assert r.returncode == 0, r.stderr
    assert ("frequency factors" in r.stdout) == (name.endswith("llama3"))


def test_mixed_quantization_matches_mlx(pensieve_bin, root, tok_dir, tmp_path):
    """Per-module entries of config.json's quantization (mlx-lm's mixed recipes): here the
    FFN down projections in 8 bits of 32, the value projections left in float, the rest
    4 bits of 64."""
    def predicate(path, module):
        if "down_proj" in path:
            return {"bits": 8, "group_size": 32}
        return "v_proj" not in path
    path = mlx_gen.make_model(root / "llama-mixed", "llama", tok_dir, bits=4, group_size=64,
                              dtype="float32", seed=5, quant_predicate=predicate)
    q = json.loads((path / "config.json").read_text())["quantization"]
    assert q["model.layers.0.mlp.down_proj"] == {"bits": 8, "group_size": 32}
    h, _ = read_st(path / "model.safetensors")  # float modules: found by their dtype
    assert h["model.layers.0.self_attn.v_proj.weight"]["dtype"] == "F32"
    tokens = prompt_ids(seed=4)
    check_logits(pensieve_logits(pensieve_bin, path, tokens, tmp_path),
                 mlx_gen.mlx_logits(path, tokens), TOL_F32, path.name)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype,bits", [("bfloat16", 4), ("bfloat16", None), ("float16", 8)])
def test_logits_match_mlx_half(pensieve_bin, models, tmp_path, arch, dtype, bits):
    """Half-precision weights: against mlx-lm on the same weights cast to f32 (exact), to the
    f32 tolerance; and against mlx-lm computing in the weights' dtype, to its tolerance."""
    path = models(arch, bits, 64, dtype)
    tokens = prompt_ids(seed=2)
    ours = pensieve_logits(pensieve_bin, path, tokens, tmp_path)
    # an unquantized bf16 matmul rounds its input to bf16 (llama.cpp's BF16 dot type)
    tol = TOL_F32 if bits or dtype == "float16" else TOL_BF16_DOT
    check_logits(ours, mlx_gen.mlx_logits(path, tokens, upcast=True), tol,
                 path.name + " (mlx-lm in f32)")
    check_logits(ours, mlx_gen.mlx_logits(path, tokens), TOL[dtype], path.name)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_text_matches_mlx(pensieve_bin, models, tok_dir, arch):
    """`pensieve run -p TEXT` (tokenizer, generation, detokenizer) against mlx-lm's greedy
    continuation of the same ids, decoded by the tokenizers library."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    path = models(arch, 4, 64)
    text = "The quick brown fox jumps over the lazy dog. Numbers like 12345"
    n = 12
    r = run(pensieve_bin, "run", "-m", path, "-p", text, "-n", n, "--temperature", 0,
            "--ignore-eos", "--print-ids")
    assert r.returncode == 0, r.stderr
    ours = [int(t) for t in r.stdout.split()]
    ids = tok.encode(text).ids
    model = mlx_gen.load(path)
    ref = mlx_gen.mlx_greedy(path, ids, n, model=model)
    assert len(ours) == n
    if ours != ref:  # only where mlx-lm's choice and ours are within the tolerance
        i = next(k for k in range(n) if ours[k] != ref[k])
        logits = mlx_gen.mlx_logits(path, ids + ref[:i], model=model)[-1]
        rng = float(logits.max() - logits.min())
        assert logits[ref[i]] - logits[ours[i]] < 2 * TOL_F32 * rng, (i, ours, ref)
    else:
        r = run(pensieve_bin, "run", "-m", path, "-p", text, "-n", n, "--temperature", 0,
                "--ignore-eos")
        assert r.returncode == 0, r.stderr
        assert r.stdout == tok.decode(ref)


def test_sharded_checkpoint_loads_the_same(pensieve_bin, models, tmp_path):
    """model.safetensors split in two shards with an index: the same logits, bit for bit."""
    import mlx.core as mx
    src = models("qwen2", 4, 32)
    dst = tmp_path / "sharded"
    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    weights = mx.load(str(src / "model.safetensors"))
    names = sorted(weights)
    half = len(names) // 2
    wm = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        mx.save_safetensors(str(dst / fname), {k: weights[k] for k in part},
                            metadata={"format": "mlx"})
        wm.update({k: fname for k in part})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    tokens = prompt_ids(20)
    a = pensieve_logits(pensieve_bin, src, tokens, tmp_path)
    b = pensieve_logits(pensieve_bin, dst, tokens, tmp_path)
    assert np.array_equal(a, b)


def test_info_and_models_list_directories(pensieve_bin, models, tmp_path):
    path = models("llama", 4, 64)
    r = run(pensieve_bin, "info", path)
    assert r.returncode == 0, r.stderr
    f = {k.strip(): v.strip() for k, _, v in (l.partition(":") for l in r.stdout.splitlines())}
    assert f["format"] == "MLX directory (safetensors)"
    assert f["architecture"] == "llama" and f["quantization"] == "MLX_Q4_G64"
    assert f["layers"] == "2" and f["embedding"] == "64" and f["vocabulary"] == "400"
    assert f["tokenizer"] == "gpt2 (pre: qwen2)" and f["chat template"].startswith("present")
    assert "mlx_q4_g64" in f["tensors"]
    mdir = tmp_path / "models"
    mdir.mkdir()
    os.symlink(path, mdir / "tiny-llama")
    os.symlink(models("llama", 8, 128), mdir / "tiny-llama-8bit-groups-of-128-a-long-name")
    (mdir / "not-a-model").mkdir()
    env = {"PENSIEVE_MODELS": str(mdir)}
    r = run(pensieve_bin, "models", env=env)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("tiny-llama/"))
    assert line.split()[1:3] == ["llama", "MLX_Q4_G64"] and line.rstrip().endswith("yes")
    assert "not-a-model" not in r.stdout
    # the columns line up under the header, whatever the lengths of names and labels
    lines = r.stdout.splitlines()
    header = next(l for l in lines if l.startswith("FILE"))
    rows = [l for l in lines if l.startswith("tiny-llama")]
    assert len(rows) == 2 and any("MLX_Q8_G128" in row for row in rows)
    for row in rows:
        quant = row.split()[2]
        assert row.index(" " + quant + " ") + 1 == header.index("QUANT"), (header, row)
        assert row.index("yes") == header.index("CHAT"), (header, row)
    # -m by name in the model directory
    r = run(pensieve_bin, "run", "-m", "tiny-llama", "-p", "Hello", "-n", 3, "--temperature", 0,
            env=env)
    assert r.returncode == 0, r.stderr


def test_server_answers_messages(pensieve_bin, models, tok_dir, start_server):
    """The directory served: /v1/messages answers with mlx-lm's greedy continuation of the
    chat template's prompt (rendered by jinja2, tokenized by `tokenizers`)."""
    import jinja2
    from tokenizers import Tokenizer
    path = models("qwen3", 8, 64)
    srv = start_server(["-m", str(path)])
    msgs = [{"role": "user", "content": "Name three colours."}]
    r = requests.post(f"{srv.url}/v1/messages", timeout=120, json={
        "model": "pensieve", "max_tokens": 10, "temperature": 0, "messages": msgs})
    assert r.status_code == 200, r.text
    body = r.json()
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    prompt = jinja2.Template(mlx_gen.CHATML).render(messages=msgs, add_generation_prompt=True)
    ids = tok.encode(prompt).ids
    assert prompt_tokens(body["usage"]) == len(ids)
    ref = mlx_gen.mlx_greedy(path, ids, 10)
    eos = tok.token_to_id("<|im_end|>")
    if eos in ref:
        ref = ref[:ref.index(eos)]
    text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
    assert text == tok.decode(ref), (text, tok.decode(ref))
    r = requests.get(f"{srv.url}/v1/models", timeout=30)
    assert r.status_code == 200 and path.name in r.text


def test_gemma3_tokenizer_directory_end_to_end(pensieve_bin, root, tmp_path, start_server):
    """A Gemma 3 directory as mlx-community has them (random weights, 4-bit, Gemma 3's
    262144-token SentencePiece-derived tokenizer.json): `pensieve run -p` continues mlx-lm's
    greedy ids and prints the text the tokenizers library decodes them to, and /v1/messages
    answers with mlx-lm's greedy continuation of the chat template's prompt."""
    import jinja2
    from tokenizers import Tokenizer
    from pensieve_tests import models_dir
    gguf = models_dir() / "gemma-3-270m-q4_k_m.gguf"
    assert gguf.exists(), f"{gguf} is missing: scripts/setup installs it"
    tok = mlx_gen.spm_tokenizer(gguf, root / "gemma3-tok", "gemma3")
    path = mlx_gen.make_model(root / "gemma3-spm-q4g64", "gemma3", root / "gemma3-tok", bits=4,
                              group_size=64, dtype="float32", seed=5)
    model = mlx_gen.load(path)
    n = 10

    def check_greedy(ours, ids, ref):
        if ours != ref:  # only where mlx-lm's choice and ours are within the tolerance
            i = next(k for k in range(len(ref)) if ours[k] != ref[k])
            logits = mlx_gen.mlx_logits(path, ids + ref[:i], model=model)[-1]
            rng = float(logits.max() - logits.min())
            assert logits[ref[i]] - logits[ours[i]] < 2 * TOL_F32 * rng, (i, ours, ref)
        return ours == ref

    text = "The quick brown fox jumps over the lazy dog.  Numbers like 12345\n\nand café"
    ids = [tok.token_to_id("<bos>")] + tok.encode(text).ids  # add_bos_token: true
    r = run(pensieve_bin, "run", "-m", path, "-p", text, "-n", n, "--temperature", 0,
            "--ignore-eos", "--print-ids")
    assert r.returncode == 0, r.stderr
    ours = [int(t) for t in r.stdout.split()]
    ref = mlx_gen.mlx_greedy(path, ids, n, model=model)
    if check_greedy(ours, ids, ref):
        r = run(pensieve_bin, "run", "-m", path, "-p", text, "-n", n, "--temperature", 0,
                "--ignore-eos")
        assert r.returncode == 0, r.stderr
        assert r.stdout == tok.decode(ref)

    srv = start_server(["-m", str(path)])
    msgs = [{"role": "user", "content": "Name three colours."}]
    r = requests.post(f"{srv.url}/v1/messages", timeout=120, json={
        "model": "pensieve", "max_tokens": n, "temperature": 0, "messages": msgs})
    assert r.status_code == 200, r.text
    body = r.json()
    prompt = jinja2.Template(mlx_gen.GEMMA_TEMPLATE).render(
        messages=msgs, add_generation_prompt=True, bos_token="<bos>")
    ids = tok.encode(prompt).ids
    assert ids[0] == tok.token_to_id("<bos>") and ids.count(ids[0]) == 1
    assert prompt_tokens(body["usage"]) == len(ids)
    ref = mlx_gen.mlx_greedy(path, ids, n, model=model)
    for stop in ("<end_of_turn>", "<eos>"):
        if tok.token_to_id(stop) in ref:
            ref = ref[:ref.index(tok.token_to_id(stop))]
    text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
    assert text == tok.decode(ref), (text, tok.decode(ref))


# ---- bad files --------------------------------------------------------------------------

def read_st(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data, pad=True):
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def first(header, suffix):
    return next(k for k in header if k.endswith(suffix))


def mutate_truncate(d):
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def mutate_header_len(d):
    p = d / "model.safetensors"
    raw = p.read_bytes()
    p.write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])


def mutate_bad_json(d):
    p = d / "model.safetensors"
    raw = bytearray(p.read_bytes())
    raw[8] = ord("[")
    p.write_bytes(bytes(raw))


def mutate_overlap(d):
    p = d / "model.safetensors"
    h, data = read_st(p)
    names = [k for k in h if k != "__metadata__"]
    a, b = sorted(names, key=lambda k: h[k]["data_offsets"][0])[:2]
    size = h[b]["data_offsets"][1] - h[b]["data_offsets"][0]
    h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + size]
    write_st(p, h, data)


def mutate_dtype(d):
    p = d / "model.safetensors"
    h, data = read_st(p)
    h[first(h, "input_layernorm.weight")]["dtype"] = "I32"  # same 4 bytes as F32
    write_st(p, h, data)


def mutate_shape(d):
    p = d / "model.safetensors"
    h, data = read_st(p)
    t = h[first(h, "input_layernorm.weight")]  # same bytes, another shape
    t["shape"] = [t["shape"][0] // 2, 2]
    write_st(p, h, data)


def mutate_scales_shape(d):
    p = d / "model.safetensors"
    h, data = read_st(p)
    t = h[first(h, "mlp.up_proj.scales")]
    t["shape"] = [t["shape"][0] // 2, t["shape"][1] * 2]
    write_st(p, h, data)


def mutate_size(d):
    p = d / "model.safetensors"
    h, data = read_st(p)
    t = h[first(h, "input_layernorm.weight")]
    t["shape"] = [t["shape"][0] + 1]
    write_st(p, h, data)


def mutate_extra_tensor(d):
    p = d / "model.safetensors"
    h, data = read_st(p)
    h["model.layers.0.mystery.weight"] = {"dtype": "F32", "shape": [2],
                                          "data_offsets": [len(data), len(data) + 8]}
    write_st(p, h, data + bytes(8))


def mutate_config(**changes):
    def f(d):
        c = json.loads((d / "config.json").read_text())
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        (d / "config.json").write_text(json.dumps(c))
    return f


def mutate_remove(name):
    return lambda d: (d / name).unlink()


def mutate_index_shard(d):
    p = d / "model.safetensors.index.json"
    idx = json.loads(p.read_text())
    k = next(iter(idx["weight_map"]))
    idx["weight_map"][k] = "model-00002-of-00002.safetensors"
    p.write_text(json.dumps(idx))


def mutate_tokenizer(d):
    p = d / "tokenizer.json"
    p.write_text(p.read_text()[:1000])


def mutate_metaspace_split(d):
    """A SentencePiece-derived tokenizer whose Metaspace splits words (not supported)."""
    p = d / "tokenizer.json"
    spec = json.loads(p.read_text())
    spec["model"]["byte_fallback"] = True
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                             "prepend_scheme": "always", "split": True}
    p.write_text(json.dumps(spec))


BAD = {
    "truncated": (mutate_truncate, "past the end of the file"),
    "header length": (mutate_header_len, "header length"),
    "header not json": (mutate_bad_json, "not valid JSON"),
    "overlapping offsets": (mutate_overlap, "overlaps tensor"),
    "wrong dtype": (mutate_dtype, "dtype I32"),
    "wrong shape": (mutate_shape, "has shape"),
    "scales shape": (mutate_scales_shape, "does not match its scales"),
    "size mismatch": (mutate_size, "data bytes but its dtype"),
    "unknown tensor": (mutate_extra_tensor, "not used by pensieve"),
    "model type": (mutate_config(model_type="mamba"), "model_type 'mamba' is not supported"),
    "missing key": (mutate_config(hidden_size=None), "'hidden_size' is missing"),
    "bad quantization": (mutate_config(quantization={"bits": 7, "group_size": 64}),
                         "quantization needs"),
    "no tokenizer": (mutate_remove("tokenizer.json"), "tokenizer.json: cannot open"),
    "bad tokenizer": (mutate_tokenizer, "tokenizer.json: not valid JSON"),
    "metaspace split": (mutate_metaspace_split, "a byte_fallback BPE needs the SentencePiece forms"),
    "missing shard": (mutate_index_shard, "model-00002-of-00002.safetensors: cannot open"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_directories_fail_clearly(pensieve_bin, models, tmp_path, case):
    mutate, msg = BAD[case]
    d = tmp_path / "bad"
    shutil.copytree(models("llama", 4, 64), d)
    mutate(d)
    for args in (["run", "-m", d, "-p", "hi", "-n", 1], ["info", d]):
        r = run(pensieve_bin, *args)
        assert r.returncode == 1, (case, r.returncode, r.stderr)  # an error, not a crash
        assert msg in r.stderr, (case, r.stderr)


# ---- tokenizer.json against the tokenizers library ----------------------------------------

def tok_batch(path, texts, special):
    data = bytearray()
    for t in texts:
        b = t.encode()
        data += f"0 1\n{int(special)} {len(b)}\n".encode() + b
    r = subprocess.run([str(TOK_BATCH), str(path)], input=bytes(data), capture_output=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode().split("\n")
    return [[int(x) for x in lines[2 * i].split()] for i in range(len(texts))]


@pytest.mark.parametrize("vocab", ["trained", "qwen2.5", "qwen2.5-llama3-split", "smollm2",
                                   "gemma3", "llama2-legacy", "llama2-metaspace"])
def test_tokenizer_json_matches_tokenizers(tmp_path, tok_dir, vocab):
    import unicodedata
    from tokenizers import Tokenizer
    from pensieve_tests import models_dir
    if vocab == "trained":
        path, tok = tok_dir, Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        (tok_dir / "config.json").write_text(json.dumps(mlx_gen.base_config("qwen2", 400)))
    elif vocab in ("gemma3", "llama2-legacy", "llama2-metaspace"):
        # SentencePiece-derived forms over Gemma 3's vocabulary (262144 tokens)
        gguf = models_dir() / "gemma-3-270m-q4_k_m.gguf"
        assert gguf.exists(), f"{gguf} is missing: scripts/setup installs it"
        path = tmp_path / vocab
        tok = mlx_gen.spm_tokenizer(gguf, path, vocab)
    else:
        gguf = models_dir() / ("smollm2-135m-instruct-q4_1.gguf" if vocab == "smollm2"
                               else "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
        assert gguf.exists(), f"{gguf} is missing: scripts/setup installs it"
        pre = {"qwen2.5": "qwen2", "qwen2.5-llama3-split": "llama3", "smollm2": "smollm"}[vocab]
        path = tmp_path / vocab
        tok = mlx_gen.gguf_tokenizer(gguf, path, pre)
    # plain text (as message content reaches the tokenizer): the corpus without the texts
    # of special added tokens, which the tokenizers library always splits out (both split
    # out the others, such as Gemma's newline runs)
    added = [a["content"] for a in json.loads((path / "tokenizer.json").read_text())["added_tokens"]
             if a["special"]]
    texts = sorted({unicodedata.normalize("NFC", t) for t in corpus_mod.corpus()})
    texts = [t for t in texts if not any(a in t for a in added)]
    assert len(texts) >= 300
    # text with special tokens (as chat templates render them), parsed as such
    special = [f"{a}user\nhi there{b}\n{a}assistant\n" for a, b in
               [("<|im_start|>", "<|im_end|>"), ("<start_of_turn>", "<end_of_turn>")]
               if a in added and b in added] + [f"x{a} y" for a in added[:20]]
    bad = []
    for batch, flag in ((texts, False), (special, True)):
        ours = tok_batch(path, batch, flag)
        want = [e.ids for e in tok.encode_batch(batch)]
        bad += [(t, o, w) for t, o, w in zip(batch, ours, want) if o != w]
    n = len(texts) + len(special)
    print(f"\n{vocab}: {n - len(bad)}/{n} strings tokenized alike")
    assert not bad, bad[:3]
