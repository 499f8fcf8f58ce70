"""A real MLX model directory end to end: the default chat model (Qwen2.5-Coder-0.5B-Instruct)
as a Mac user would have it from mlx-community.

The GGUF's tensors are dequantized into a Hugging Face checkpoint (bf16 safetensors,
config.json, tokenizer.json built from its vocabulary, its chat template), which
`mlx_lm convert -q` (4 bits, groups of 64) turns into an MLX directory, as mlx-lm converts
any Hugging Face model; nothing is downloaded. Pensieve serves that directory. The
conversion (2.5 minutes) is kept in tests/.cache/mlx, keyed by the GGUF's sha256, the
versions of mlx and mlx-lm and the converter's source, so it runs once per machine.

Logits are compared with mlx-lm running the same directory with its parameters cast to
f32 (mlx-lm otherwise computes in bf16): within 3e-3 of the logit range (24 layers of f32
arithmetic over an f16 KV cache; measured 1.1e-3) with the same top-1 at every position.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import requests

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "model"))
import mlx_gen  # noqa: E402

TOL = 3e-3


CACHE = HERE.parent / ".cache" / "mlx"
NAME = "qwen2.5-coder-0.5b-mlx-4bit"


def cache_key(gguf):
    """What the converted directory depends on: the GGUF's bytes, mlx and mlx-lm, and the
    converter (the source of mlx_gen's gguf_to_hf and what it uses)."""
    import inspect
    from importlib.metadata import version
    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    k = hashlib.sha256()
    converter = [inspect.getsource(mlx_gen.gguf_to_hf), inspect.getsource(mlx_gen.gguf_tokenizer),
                 repr(mlx_gen.GGUF_TO_HF), mlx_gen.QWEN2_SPLIT, mlx_gen.LLAMA3_SPLIT]
    for part in (h.hexdigest(), version("mlx"), version("mlx-lm"), *converter):
        k.update(part.encode() + b"\0")
    return k.hexdigest()[:16]


@pytest.fixture(scope="module")
def mlx_dir(tmp_path_factory, default_chat_model):
    """The converted directory, made once per machine: tests/.cache/mlx/NAME-KEY, written
    under a temporary name and renamed into place, so a run that stops halfway or a
    concurrent one never leaves a partial directory under the final name."""
    out = CACHE / f"{NAME}-{cache_key(default_chat_model)}"
    if out.is_dir():
        print(f"\nconverted directory from the cache: {out}")
        os.utime(out)  # in use
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=CACHE))
    try:
        mlx_gen.gguf_to_hf(default_chat_model, tmp / "hf")
        r = subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path",
                            str(tmp / "hf"), "--mlx-path", str(tmp / "mlx"), "-q", "--q-bits",
                            "4", "--q-group-size", "64"],
                           capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stderr
        assert (tmp / "mlx" / "chat_template.jinja").exists()  # as mlx-lm writes it now
        try:
            os.rename(tmp / "mlx", out)
        except OSError:  # another run put it there first: use that one
            assert out.is_dir()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # conversions by other converters unused for a week (other branches may use the others)
    for old in CACHE.glob(f"{NAME}-*"):
        if old != out and time.time() - old.stat().st_mtime > 7 * 86400:
            shutil.rmtree(old, ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def default_chat_model():
    from pensieve_tests import models_dir
    path = models_dir() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert path.exists(), f"default model {path} is missing: scripts/setup installs it"
    return path


def test_logits_match_mlx_lm(pensieve_bin, mlx_dir, tmp_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(mlx_dir / "tokenizer.json"))
    ids = tok.encode("def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n").ids
    out = tmp_path / "logits.f32"
    r = subprocess.run([str(pensieve_bin), "run", "-m", str(mlx_dir), "--prompt-ids",
                        " ".join(map(str, ids)), "-n", "1", "--temperature", "0",
                        "--all-logits", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ours = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
    ref = mlx_gen.mlx_logits(mlx_dir, ids, upcast=True)
    rel = float(np.abs(ours - ref).max() / (ref.max() - ref.min()))
    print(f"\nreal MLX model: max |diff| / range {rel:.3g} over {len(ids)} positions")
    assert rel < TOL
    assert (ours.argmax(1) == ref.argmax(1)).all()


def test_directory_answers_messages(pensieve_bin, mlx_dir, start_server):
    srv = start_server(["-m", str(mlx_dir)], timeout=180)
    r = requests.post(f"{srv.url}/v1/messages", timeout=600, json={
        "model": "pensieve", "max_tokens": 24, "temperature": 0,
        "messages": [{"role": "user",
                      "content": "What is the capital of France? Answer in one word."}]})
    assert r.status_code == 200, r.text
    body = r.json()
    text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
    print(f"\nanswer: {text!r}")
    assert "Paris" in text
    assert body["stop_reason"] == "end_turn"
