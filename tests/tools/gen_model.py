"""gen_model.py - synthetic random-weight GGUF models for the engine and loader tests.

Writes a small but structurally real model of one architecture and weight type: several
layers, GQA (4 query heads, 2 KV heads, head size 64), n_embd 256, n_ff 512, an SPM
("llama") vocabulary of 512 tokens that llama.cpp accepts (<unk> <s> </s>, the 256 byte
tokens <0x00>..<0xFF>, single characters and every prefix of some common words with
descending scores, so " hello world the cat" is 4 tokens, and the control tokens <|end|>
<|endoftext|> last), deterministic weights from a seed.

Architectures (ARCHS): gemma3 (q/k norms, post norms, tied output, GELU; 6 layers so
layer 5 is global, sliding window 16), llama (NORM rope), qwen2 (q/k/v biases), qwen3
(q/k norms), phi3 (fused attn_qkv, ffn_up holding gate then up). All but gemma3 have a
separate output.weight.

Weight types (WTYPES): f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 (quantized by
gguf.quants.quantize) and q2_k q3_k q4_k q5_k q6_k (gguf-py cannot quantize K-quants, so
an f32 file is written and quantized by llama.cpp itself through llama-cpp-python's
llama_model_quantize with pure=True: every matrix gets the one type). Norms and biases
stay f32, as in real files. Matrices are N(0, std), embeddings N(0, embd_std), norm
weights 1 + N(0, 0.05), biases N(0, std).

CLI:
    .venv/bin/python tests/tools/gen_model.py --arch llama --type q4_0 --out /tmp/m.gguf
        [--seed 0] [--layers N] [--std 0.02] [--embd-std 0.1] [--ctx 2048]
API:
    from gen_model import write_model, ARCHS, WTYPES
    write_model(path, arch="llama", wtype="f32", seed=0, n_layer=None, std=0.02,
                embd_std=0.1, n_ctx=2048, arch_name=None, tensor_hook=None,
                extra_tensors=()) -> pathlib.Path
    SHAPES holds the fixed hyper-parameters (n_embd, n_head, n_head_kv, head_dim, n_ff,
    n_vocab) and VOCAB the token strings.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import os
import pathlib
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

ARCHS = ("gemma3", "llama", "qwen2", "qwen3", "phi3")

# GGUF-py quantizable types, and K-quants with llama.cpp's ftype that makes them (pure).
_PY_TYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0,
    "q4_1": QT.Q4_1, "q5_0": QT.Q5_0, "q5_1": QT.Q5_1,
}
_K_FTYPES = {"q2_k": 10, "q3_k": 11, "q4_k": 14, "q5_k": 16, "q6_k": 18}
_FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8,
               "q5_1": 9}
WTYPES = tuple(_PY_TYPES) + tuple(_K_FTYPES)

SHAPES = dict(n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, n_vocab=512)
DEFAULT_LAYERS = {"gemma3": 6}  # others: 3
SLIDING_WINDOW = 16


def _vocab():
    """Token texts, scores and types of the SPM vocabulary (512 tokens, ids fixed)."""
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    # Single characters, then every prefix of some words ("\u2581h", "\u2581he", ...), so
    # SPM merges can reach whole words; earlier pieces score higher.
    pieces = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               ".,!?;:'\"()-")
    words = ("the hello world cat dog of and to in is it that for on with as was at by be "
             "this are or from an not have but all they one can had her his which there were "
             "what when your will model token test data code run fast slow small large red "
             "green blue sun moon tree stone water fire").split()
    # Two control tokens close the vocabulary; llama.cpp's phi3 loader needs <|endoftext|>.
    tail = ["<|end|>", "<|endoftext|>"]
    budget = SHAPES["n_vocab"] - len(toks) - len(pieces) - len(tail)
    for w in words:  # whole words only, so every listed word is one token
        new = ["\u2581" + w[:k] for k in range(1, len(w) + 1)]
        new = [p for p in new if p not in pieces]
        if len(new) > budget:
            continue
        pieces += new
        budget -= len(new)
    pieces += ["\u2581" * k for k in range(2, budget + 2)]  # runs of spaces fill the rest
    seen = set(toks)
    normal = []
    for p in pieces:
        if p not in seen:
            seen.add(p)
            normal.append(p)
    assert len(toks) + len(normal) + len(tail) == SHAPES["n_vocab"], len(normal)
    scores = [0.0] * len(toks) + [-float(i) for i in range(len(normal))] + [0.0] * len(tail)
    return toks + normal + tail, scores, types + [1] * len(normal) + [3] * len(tail)


VOCAB, _SCORES, _TOKEN_TYPES = _vocab()


def _tensors(arch: str, n_layer: int, rng: np.random.Generator, std: float, embd_std: float):
    """(name, float32 array in numpy order [rows=ne1, cols=ne0]) for every tensor."""
    E, F, V = SHAPES["n_embd"], SHAPES["n_ff"], SHAPES["n_vocab"]
    hd, nh, nkv = SHAPES["head_dim"], SHAPES["n_head"], SHAPES["n_head_kv"]

    def mat(rows, cols, s=std):
        return rng.normal(0.0, s, (rows, cols)).astype(np.float32)

    def norm(n):
        return (1.0 + rng.normal(0.0, 0.05, n)).astype(np.float32)

    out = [("token_embd.weight", mat(V, E, embd_std)), ("output_norm.weight", norm(E))]
    if arch != "gemma3":
        out.append(("output.weight", mat(V, E, embd_std)))
    for il in range(n_layer):
        p = f"blk.{il}."
        out.append((p + "attn_norm.weight", norm(E)))
        if arch == "phi3":
            out.append((p + "attn_qkv.weight", mat(nh * hd + 2 * nkv * hd, E)))
        else:
            out.append((p + "attn_q.weight", mat(nh * hd, E)))
            out.append((p + "attn_k.weight", mat(nkv * hd, E)))
            out.append((p + "attn_v.weight", mat(nkv * hd, E)))
        if arch == "qwen2":
            out.append((p + "attn_q.bias", rng.normal(0, std, nh * hd).astype(np.float32)))
            out.append((p + "attn_k.bias", rng.normal(0, std, nkv * hd).astype(np.float32)))
            out.append((p + "attn_v.bias", rng.normal(0, std, nkv * hd).astype(np.float32)))
        out.append((p + "attn_output.weight", mat(E, nh * hd)))
        if arch in ("gemma3", "qwen3"):
            out.append((p + "attn_q_norm.weight", norm(hd)))
            out.append((p + "attn_k_norm.weight", norm(hd)))
        if arch == "gemma3":
            out.append((p + "post_attention_norm.weight", norm(E)))
        out.append((p + "ffn_norm.weight", norm(E)))
        if arch == "phi3":
            out.append((p + "ffn_up.weight", mat(2 * F, E)))
        else:
            out.append((p + "ffn_gate.weight", mat(F, E)))
            out.append((p + "ffn_up.weight", mat(F, E)))
        out.append((p + "ffn_down.weight", mat(E, F)))
        if arch == "gemma3":
            out.append((p + "post_ffw_norm.weight", norm(E)))
    return out


def _write_gguf(path: pathlib.Path, arch: str, wtype: str, n_layer: int, seed: int,
                std: float, embd_std: float, n_ctx: int, name: str, arch_name=None,
                tensor_hook=None, extra_tensors=()) -> None:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch_name or arch)
    w.add_name(name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(SHAPES["n_embd"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(SHAPES["n_ff"])
    w.add_head_count(SHAPES["n_head"])
    w.add_head_count_kv(SHAPES["n_head_kv"])
    w.add_key_length(SHAPES["head_dim"])
    w.add_value_length(SHAPES["head_dim"])
    w.add_rope_dimension_count(SHAPES["head_dim"])
    w.add_layer_norm_rms_eps(1e-6 if arch in ("gemma3", "qwen2", "qwen3") else 1e-5)
    w.add_rope_freq_base(1000000.0 if arch in ("gemma3", "qwen3") else 10000.0)
    if arch == "gemma3":
        w.add_sliding_window(SLIDING_WINDOW)
    if wtype in _FILE_TYPES:
        w.add_file_type(_FILE_TYPES[wtype])
    w.add_tokenizer_model("llama")
    w.add_token_list(VOCAB)
    w.add_token_scores(_SCORES)
    w.add_token_types(_TOKEN_TYPES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    qtype = _PY_TYPES.get(wtype, QT.F32)
    tensors = _tensors(arch, n_layer, rng, std, embd_std)
    if tensor_hook:
        tensors = [(n, a) for n, a in ((n, tensor_hook(n, a)) for n, a in tensors) if a is not None]
    tensors += list(extra_tensors)
    for name, arr in tensors:
        if arr.ndim == 1 or qtype == QT.F32:
            w.add_tensor(name, arr)
        elif qtype == QT.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _llama_quantize(src: pathlib.Path, dst: pathlib.Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 1
    params.ftype = ftype
    params.pure = True
    # llama.cpp logs every tensor to stderr: keep that in a file, shown only on failure.
    # (native code writes to fd 2, llama-cpp-python's log callback to sys.stderr).
    with tempfile.TemporaryFile() as log, io.StringIO() as pylog:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stderr(pylog):
                rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                                    ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if rc != 0:
            log.seek(0)
            tail = (log.read().decode(errors="replace") + pylog.getvalue())[-4000:]
            raise RuntimeError(f"llama_model_quantize({src} -> {dst}, ftype {ftype}) failed: "
                               f"{rc}\n{tail}")


def write_model(path, arch: str = "llama", wtype: str = "f32", seed: int = 0,
                n_layer: int | None = None, std: float = 0.02, embd_std: float = 0.1,
                n_ctx: int = 2048, arch_name: str | None = None,
                tensor_hook=None, extra_tensors=()) -> pathlib.Path:
    """Write a synthetic model to `path` and return it as a Path. Same arguments, same bytes.

    For malformed-file tests: arch_name writes another general.architecture (and key
    prefix) over `arch`'s tensors; tensor_hook(name, array) returns the array to write
    (changed or not) or None to drop the tensor; extra_tensors, a list of (name, array),
    are appended. Only with gguf-py weight types.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; one of {', '.join(ARCHS)}")
    if wtype not in WTYPES:
        raise ValueError(f"unknown weight type {wtype!r}; one of {', '.join(WTYPES)}")
    path = pathlib.Path(path)
    n_layer = n_layer or DEFAULT_LAYERS.get(arch, 3)
    name = f"synthetic {arch} {wtype}"
    if wtype in _PY_TYPES:
        _write_gguf(path, arch, wtype, n_layer, seed, std, embd_std, n_ctx, name, arch_name,
                    tensor_hook, extra_tensors)
        return path
    if arch_name or tensor_hook or extra_tensors:
        raise ValueError("arch_name and tensor_hook need a gguf-py weight type")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        f32 = pathlib.Path(tmp) / "f32.gguf"
        _write_gguf(f32, arch, "f32", n_layer, seed, std, embd_std, n_ctx, name)
        _llama_quantize(f32, path, _K_FTYPES[wtype])
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="write a synthetic random-weight GGUF model")
    ap.add_argument("--arch", choices=ARCHS, required=True)
    ap.add_argument("--type", dest="wtype", choices=WTYPES, default="f32")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--embd-std", type=float, default=0.1)
    ap.add_argument("--ctx", type=int, default=2048)
    a = ap.parse_args(argv)
    write_model(a.out, a.arch, a.wtype, a.seed, a.layers, a.std, a.embd_std, a.ctx)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
