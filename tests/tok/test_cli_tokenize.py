"""`pensieve tokenize` and `pensieve detokenize` against llama.cpp's tokenizer."""
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
QWEN2 = ROOT / "tests" / ".cache" / "vocab" / "ggml-vocab-qwen2.gguf"


def run(bin_path, *args, input=None):
    return subprocess.run([str(bin_path), *args], input=input, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def gemma(default_model):
    from llama_cpp import Llama
    return Llama(model_path=str(default_model), vocab_only=True, verbose=False)


def ids_of(r):
    assert r.returncode == 0, r.stderr.decode()
    return [int(x) for x in r.stdout.split()]


def test_tokenize_matches_llama_cpp(pensieve_bin, default_model, gemma):
    text = "Hello world! <start_of_turn>user\n  héllo 😀"
    r = run(pensieve_bin, "tokenize", "-m", str(default_model), text)
    assert ids_of(r) == gemma.tokenize(text.encode(), add_bos=True, special=False)
    r = run(pensieve_bin, "tokenize", "-m", str(default_model), "--no-bos", text)
    assert ids_of(r) == gemma.tokenize(text.encode(), add_bos=False, special=False)
    r = run(pensieve_bin, "tokenize", "-m", str(default_model), "--special", text)
    ids = ids_of(r)
    assert ids == gemma.tokenize(text.encode(), add_bos=True, special=True)
    assert 105 in ids  # <start_of_turn> only with --special


def test_tokenize_stdin_and_model_name(pensieve_bin, default_model, gemma):
    text = "line one\nline two\n\n\ttabbed   \n".encode()
    name = default_model.name[:-len(".gguf")]
    r = run(pensieve_bin, "tokenize", "-m", name, "-", input=text)
    assert ids_of(r) == gemma.tokenize(text, add_bos=True, special=False)


def test_tokenize_bpe_vocab(pensieve_bin):
    from llama_cpp import Llama
    llm = Llama(model_path=str(QWEN2), vocab_only=True, verbose=False)
    text = "def f(x):\n    return x ** 2  # 12345 中文"
    r = run(pensieve_bin, "tokenize", "-m", str(QWEN2), text)
    assert ids_of(r) == llm.tokenize(text.encode(), add_bos=True, special=False)


def test_pieces(pensieve_bin, default_model):
    r = run(pensieve_bin, "tokenize", "-m", str(default_model), "--pieces", "Hi there\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "2\t<bos>"
    pieces = [ln.split("\t", 1)[1] for ln in lines[1:]]
    assert "".join(pieces) == "Hi there\\n"


def test_detokenize_round_trip(pensieve_bin, default_model):
    text = "Round trip: 😀 中文, spaces   and\ttabs"
    ids = ids_of(run(pensieve_bin, "tokenize", "-m", str(default_model), text))
    r = run(pensieve_bin, "detokenize", "-m", str(default_model), "--skip-special",
            *map(str, ids))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == text + "\n"
    r = run(pensieve_bin, "detokenize", "-m", str(default_model), " ".join(map(str, ids)))
    assert r.stdout.decode() == "<bos>" + text + "\n"


def test_errors(pensieve_bin, default_model, tmp_path):
    r = run(pensieve_bin, "tokenize", "-m", "no-such-model", "x")
    assert r.returncode == 1 and b"not found" in r.stderr
    r = run(pensieve_bin, "detokenize", "-m", str(default_model), "999999999")
    assert r.returncode == 2 and b"not a token id" in r.stderr
    r = run(pensieve_bin, "tokenize", "-m", str(default_model))
    assert r.returncode == 2

    import gguf
    path = tmp_path / "bad-pre.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("frobnicate")
    w.add_token_list(["a", "b"])
    w.add_token_merges(["a b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run(pensieve_bin, "tokenize", "-m", str(path), "ab")
    assert r.returncode == 1
    assert b"pre-tokenizer 'frobnicate' is not supported" in r.stderr
