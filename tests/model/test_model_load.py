"""Model loading as a user sees it: `pensieve info` and `pensieve models`.

The values `pensieve info` prints for the default model are compared with what gguf-py's
GGUFReader reads from the same file; malformed and unsupported files must exit non-zero
with a message on stderr that says what is wrong.
"""
import collections
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGUFReader

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import gen_model  # noqa: E402


def run(pensieve_bin, *args, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(pensieve_bin), *args], capture_output=True, text=True,
                          timeout=120, env=full_env)


def info_fields(pensieve_bin, path, *extra):
    r = run(pensieve_bin, "info", str(path), *extra)
    assert r.returncode == 0, r.stderr
    fields = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def expected_kv_bytes(arch, n_layer, n_head_kv, hd_k, hd_v, n_swa, n_ctx):
    total = 0
    for il in range(n_layer):
        swa = arch == "gemma3" and il % 6 < 5
        total += n_head_kv * (hd_k + hd_v) * 2 * (min(n_ctx, n_swa) if swa else n_ctx)
    return total


def check_info_against_reader(pensieve_bin, path):
    """Every value `pensieve info` prints, checked against gguf-py reading the same file."""
    reader = GGUFReader(str(path))
    f = info_fields(pensieve_bin, path)
    arch = field(reader, "general.architecture")
    assert f["architecture"] == arch
    assert f["name"] == field(reader, "general.name")
    assert int(f["context length"]) == field(reader, f"{arch}.context_length")
    assert int(f["embedding"]) == field(reader, f"{arch}.embedding_length")
    assert int(f["layers"]) == field(reader, f"{arch}.block_count")
    n_head = field(reader, f"{arch}.attention.head_count")
    assert int(f["heads"]) == n_head
    assert int(f["kv heads"]) == field(reader, f"{arch}.attention.head_count_kv")
    assert int(f["feed-forward"]) == field(reader, f"{arch}.feed_forward_length")
    n_embd = field(reader, f"{arch}.embedding_length")
    hd_k = field(reader, f"{arch}.attention.key_length", n_embd // n_head)
    hd_v = field(reader, f"{arch}.attention.value_length", n_embd // n_head)
    assert f["head size k/v"] == f"{hd_k} / {hd_v}"
    assert int(f["vocabulary"]) == len(reader.fields["tokenizer.ggml.tokens"].data)
    n_swa = field(reader, f"{arch}.attention.sliding_window", 0)
    if arch == "gemma3":
        assert f["sliding window"].startswith(f"{n_swa} tokens")
    else:
        assert f["sliding window"] == "none"
    assert float(f["rms epsilon"]) == pytest.approx(
        field(reader, f"{arch}.attention.layer_norm_rms_epsilon"), rel=1e-5)
    assert f"base {field(reader, f'{arch}.rope.freq_base', 10000.0):g}" in f["rope"]
    assert f["rope"].startswith("norm" if arch == "llama" else "neox")
    assert f["tokenizer"] == (f"{field(reader, 'tokenizer.ggml.model')} "
                              f"(pre: {field(reader, 'tokenizer.ggml.pre', 'none')})")
    has_template = "tokenizer.chat_template" in reader.fields
    assert f["chat template"].startswith("present" if has_template else "absent")
    assert f["output"] == ("output.weight" if any(t.name == "output.weight"
                                                  for t in reader.tensors)
                           else "tied to token_embd")
    assert f["quantization"] == "Q4_K_M"
    size = path.stat().st_size
    assert f["file size"].endswith(f"({size} bytes)")

    # tensor count and the count of each type
    counts = collections.Counter(t.tensor_type.name.lower() for t in reader.tensors)
    mix = f["tensors"]
    assert int(mix.split()[0]) == len(reader.tensors)
    inner = mix[mix.index("(") + 1 : mix.rindex(")")]
    printed = {name.lower(): int(n) for name, n in (p.split() for p in inner.split(", "))}
    assert printed == dict(counts)

    # memory: the windowed minimum exactly; what a context allocates, at least a full cache
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    n_layer = field(reader, f"{arch}.block_count")
    n_head_kv = field(reader, f"{arch}.attention.head_count_kv")
    for n_ctx in (4096, 100):
        g = info_fields(pensieve_bin, path, "--ctx-size", str(n_ctx))
        least = weights + expected_kv_bytes(arch, n_layer, n_head_kv, hd_k, hd_v, n_swa, n_ctx)
        assert int(g["weights + kv"].split()[0]) == least, n_ctx
        full = weights + n_layer * n_ctx * n_head_kv * (hd_k + hd_v) * 2
        assert full < int(g["memory bytes"]) < full + 256 * 2**20, n_ctx
    return f


def test_info_matches_gguf_py(pensieve_bin, default_model):
    f = check_info_against_reader(pensieve_bin, default_model)
    assert f["architecture"] == "gemma3"


def test_info_matches_gguf_py_large_model(pensieve_bin, large_model):
    f = check_info_against_reader(pensieve_bin, large_model)
    assert f["architecture"] == "qwen2"
    assert f["tokenizer"] == "gpt2 (pre: deepseek-r1-qwen)"


def test_info_by_name_in_model_dir(pensieve_bin, default_model):
    r = run(pensieve_bin, "info", default_model.stem,
            env={"PENSIEVE_MODELS": str(default_model.parent)})
    assert r.returncode == 0, r.stderr
    assert "architecture:    gemma3" in r.stdout


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, default_model):
    d = tmp_path_factory.mktemp("bad_models")
    with open(default_model, "rb") as src:
        (d / "truncated.gguf").write_bytes(src.read(3_000_000))
    gen_model.write_model(d / "short.gguf", "gemma3", "q4_0")
    data = (d / "short.gguf").read_bytes()
    (d / "short.gguf").write_bytes(data[:-100])
    (d / "notgguf.gguf").write_bytes(b"this is not a model file at all\n" * 10)
    (d / "empty.gguf").write_bytes(b"")
    gen_model.write_model(d / "mamba.gguf", "llama", "q8_0", arch_name="mamba")
    gen_model.write_model(d / "missing.gguf", "llama", "f16",
                          tensor_hook=lambda n, a: None if n == "blk.1.ffn_up.weight" else a)
    gen_model.write_model(d / "shape.gguf", "qwen2", "f32",
                          tensor_hook=lambda n, a: a[:, :128] if n == "blk.2.attn_k.weight"
                          else a)
    gen_model.write_model(d / "f16norm.gguf", "qwen3", "f16",
                          tensor_hook=lambda n, a: a.astype(np.float16)
                          if n == "blk.0.attn_q_norm.weight" else a)

    # an unexpected extra tensor: an attn_output bias the llama recipe would ignore
    gen_model.write_model(d / "extra.gguf", "llama", "f32",
                          extra_tensors=[("blk.0.attn_output.bias",
                                          np.zeros(256, dtype=np.float32))])
    return d


@pytest.mark.parametrize("name,status_words", [
    ("truncated.gguf", ["file is truncated", "tokenizer.ggml.tokens", "offset"]),
    ("short.gguf", ["past the end of the file"]),
    ("notgguf.gguf", ["not a gguf file", "bad magic at offset 0"]),
    ("empty.gguf", ["file is empty"]),
    ("missing.gguf", ["tensor 'blk.1.ffn_up.weight' is missing"]),
    ("shape.gguf", ["tensor 'blk.2.attn_k.weight' has shape [128, 128], expected [256, 128]"]),
    ("f16norm.gguf", ["blk.0.attn_q_norm.weight", "f32"]),
    ("extra.gguf", ["tensor 'blk.0.attn_output.bias' is not used"]),
    ("mamba.gguf", ["architecture 'mamba' is not supported",
                    "supported: gemma3, llama, qwen2, qwen3, phi3"]),
])
def test_info_rejects_bad_files(pensieve_bin, bad_dir, name, status_words):
    path = bad_dir / name
    r = run(pensieve_bin, "info", str(path))
    assert r.returncode != 0
    assert r.stdout == ""
    assert str(path) in r.stderr, r.stderr
    for words in status_words:
        assert words in r.stderr, r.stderr


def test_info_missing_file(pensieve_bin, tmp_path):
    r = run(pensieve_bin, "info", str(tmp_path / "nope.gguf"))
    assert r.returncode != 0
    assert "not found" in r.stderr


def test_models_lists_arch_and_quant(pensieve_bin, bad_dir, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    gen_model.write_model(d / "small-llama.gguf", "llama", "q8_0")
    gen_model.write_model(d / "small-phi3.gguf", "phi3", "q6_k")
    for name in ("notgguf.gguf", "truncated.gguf", "mamba.gguf"):
        shutil.copy(bad_dir / name, d / name)
    r = run(pensieve_bin, "models", env={"PENSIEVE_MODELS": str(d)})
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[2:]}
    assert rows["small-llama.gguf"].split()[1:3] == ["llama", "Q8_0"]
    assert rows["small-phi3.gguf"].split()[1:3] == ["phi3", "Q6_K"]
    assert rows["mamba.gguf"].split()[1:3] == ["mamba", "Q8_0"]
    assert "not supported" in rows["mamba.gguf"]
    assert "invalid: not a gguf file" in rows["notgguf.gguf"]
    assert "invalid: file is truncated" in rows["truncated.gguf"]


def test_models_shows_default_model(pensieve_bin, default_model):
    r = run(pensieve_bin, "models", env={"PENSIEVE_MODELS": str(default_model.parent)})
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith(default_model.name))
    assert row.split()[1:3] == ["gemma3", "Q4_K_M"]
